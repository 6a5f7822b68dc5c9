/* The progress line of "mailrepl init". */
#include <config.h>
#include "progress.h"
#include "util.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct progress_display {
	struct progress *p;
	int fd;
	long long started_ms;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stopping;
};

void
progress_format(const struct progress *p, long long elapsed_ms, char *buf,
		size_t size)
{
	unsigned long long msgs = p->messages_done, total = p->messages_total;
	unsigned long long bytes = p->bytes_done;
	double rate = elapsed_ms > 0 ? msgs * 1000.0 / elapsed_ms : 0;
	char done_s[32], total_s[32], rate_s[32], eta[32] = "-";

	util_format_count(msgs, done_s, sizeof(done_s));
	util_format_count(total, total_s, sizeof(total_s));
	util_format_count((unsigned long long)rate, rate_s, sizeof(rate_s));
	if (rate > 0 && total > msgs) {
		long long left = (long long)((total - msgs) / rate);

		snprintf(eta, sizeof(eta), "%lld:%02lld", left / 60,
			 left % 60);
	} else if (total <= msgs) {
		snprintf(eta, sizeof(eta), "0:00");
	}
	snprintf(buf, size,
		 "folders %llu/%llu  messages %s/%s  %.1f/%.1f MB  "
		 "%s msg/s  ETA %s",
		 (unsigned long long)p->folders_done,
		 (unsigned long long)p->folders_total, done_s, total_s,
		 bytes / 1e6, (unsigned long long)p->bytes_total / 1e6, rate_s,
		 eta);
}

static void
draw(struct progress_display *d, bool final)
{
	char line[256], out[300];
	int n;

	progress_format(d->p, monotonic_ms() - d->started_ms, line,
			sizeof(line));
	/* \r and erase-to-end keep one line updated in place. */
	n = snprintf(out, sizeof(out), "\r%s\033[K%s", line,
		     final ? "\n" : "");
	if (n > 0 && write(d->fd, out, (size_t)n) < 0)
		return;
}

static void *
redraw_loop(void *arg)
{
	struct progress_display *d = arg;
	struct timespec until;

	pthread_mutex_lock(&d->lock);
	while (!d->stopping) {
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 500000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&d->wake, &d->lock, &until);
		if (!d->stopping)
			draw(d, false);
	}
	pthread_mutex_unlock(&d->lock);
	return NULL;
}

struct progress_display *
progress_start(struct progress *p, int fd, bool enabled)
{
	struct progress_display *d;

	if (!enabled)
		return NULL;
	d = xcalloc(1, sizeof(*d));
	d->p = p;
	d->fd = fd;
	d->started_ms = monotonic_ms();
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->wake, NULL);
	if (pthread_create(&d->thread, NULL, redraw_loop, d) != 0) {
		free(d);
		return NULL;
	}
	return d;
}

void
progress_stop(struct progress_display **display)
{
	struct progress_display *d = *display;

	if (d == NULL)
		return;
	pthread_mutex_lock(&d->lock);
	d->stopping = true;
	pthread_cond_signal(&d->wake);
	pthread_mutex_unlock(&d->lock);
	pthread_join(d->thread, NULL);
	draw(d, true);
	pthread_mutex_destroy(&d->lock);
	pthread_cond_destroy(&d->wake);
	free(d);
	*display = NULL;
}
