/* The limit on repeated log lines.
 *
 * A failure that persists, such as the replica being down, makes every
 * worker log the same warning or error on every retry. The first such
 * line is written and opens a window. Equal lines within the window are
 * counted, not written. When the window ends, a summary line
 *
 *   level=error event=repeated count=12 user=alice of="event=error ..."
 *
 * reports the count and a new window starts. A window that ends with no
 * repeat frees the line, so its next occurrence is written in full.
 *
 * Only warn and error lines are compared. Info and debug lines are every
 * change pushed and every connection, and are always written. Two lines
 * are equal when everything but the time stamp and the ms field is equal,
 * so lines that name a different user, folder, file or error text are
 * never merged.
 *
 * A timer thread writes the summaries when windows end. It starts with
 * the first tracked line and exits when no line is tracked, so an idle
 * process runs no extra thread. */
#include <config.h>
#include "log_private.h"
#include "util.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REPEAT_WINDOW_MS 60000
/* Tracked lines; when all are in use, the one whose window ends first is
 * summarised early and its slot reused. */
#define REPEAT_SLOTS 256

struct repeat_slot {
	uint64_t hash;
	char *key; /* the line from "event=" on, without ms and '\n' */
	char *user;
	enum log_level level;
	long long window_end; /* monotonic ms */
	unsigned long long count;
};

/* A summary to write once the table lock is released. */
struct repeat_summary {
	enum log_level level;
	unsigned long long count;
	char *user;
	char *key;
};

static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* CLOCK_MONOTONIC, see init_once() */
	struct repeat_slot slot[REPEAT_SLOTS];
	size_t used;
	long long window_ms;
	bool timer_running;
	bool stopping;
} rep = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.window_ms = REPEAT_WINDOW_MS,
};

static pthread_once_t rep_once = PTHREAD_ONCE_INIT;

static void
before_fork(void)
{
	pthread_mutex_lock(&rep.lock);
}

static void
after_fork_parent(void)
{
	pthread_mutex_unlock(&rep.lock);
}

/* The child has no timer thread: the next tracked line starts one. */
static void
after_fork_child(void)
{
	rep.timer_running = false;
	pthread_mutex_unlock(&rep.lock);
}

static void
init_once(void)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&rep.cond, &attr);
	pthread_condattr_destroy(&attr);
	pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

void
log_set_repeat_window(long long ms)
{
	pthread_once(&rep_once, init_once);
	pthread_mutex_lock(&rep.lock);
	rep.window_ms = ms > 0 ? ms : 0;
	pthread_mutex_unlock(&rep.lock);
}

/* FNV-1a: only to skip most string compares. */
static uint64_t
hash_key(const char *key)
{
	uint64_t h = 1469598103934665603ULL;

	for (const unsigned char *p = (const unsigned char *)key; *p; p++)
		h = (h ^ *p) * 1099511628211ULL;
	return h;
}

static char *
line_key(const struct logline *line)
{
	size_t end = line->len - 1; /* without '\n' */
	char *key;

	if (line->ms_end == 0)
		return xstrndup(line->buf + line->body, end - line->body);
	key = xmalloc(end - line->body + 1);
	memcpy(key, line->buf + line->body, line->ms_begin - line->body);
	memcpy(key + (line->ms_begin - line->body), line->buf + line->ms_end,
	       end - line->ms_end);
	key[line->ms_begin - line->body + end - line->ms_end] = '\0';
	return key;
}

static void
slot_free(struct repeat_slot *s)
{
	free(s->key);
	free(s->user);
	memset(s, 0, sizeof(*s));
}

/* Move the count of s into *sum (when there is one) and restart s.
 * Call with rep.lock. */
static bool
take_summary(struct repeat_slot *s, struct repeat_summary *sum)
{
	if (s->count == 0)
		return false;
	sum->level = s->level;
	sum->count = s->count;
	sum->user = s->user != NULL ? xstrdup(s->user) : NULL;
	sum->key = xstrdup(s->key);
	s->count = 0;
	return true;
}

static void
write_summaries(struct repeat_summary *sums, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct logline *line = log_begin(sums[i].level, "repeated");

		log_int(line, "count", (long long)sums[i].count);
		if (sums[i].user != NULL)
			log_str(line, "user", sums[i].user);
		log_str(line, "of", sums[i].key);
		log_end_unlimited(line);
		free(sums[i].user);
		free(sums[i].key);
	}
}

/* Summarise the windows that ended and free the slots that saw no repeat.
 * Call with rep.lock; sums holds REPEAT_SLOTS entries. */
static size_t
end_windows(long long now, struct repeat_summary *sums)
{
	size_t n = 0;

	for (size_t i = 0; i < REPEAT_SLOTS; i++) {
		struct repeat_slot *s = &rep.slot[i];

		if (s->key == NULL || s->window_end > now)
			continue;
		if (take_summary(s, &sums[n])) {
			n++;
			s->window_end = now + rep.window_ms;
		} else {
			slot_free(s);
			rep.used--;
		}
	}
	return n;
}

static long long
earliest_end(void)
{
	long long earliest = 0;

	for (size_t i = 0; i < REPEAT_SLOTS; i++) {
		if (rep.slot[i].key != NULL &&
		    (earliest == 0 || rep.slot[i].window_end < earliest))
			earliest = rep.slot[i].window_end;
	}
	return earliest;
}

static void
wait_until(long long when)
{
	struct timespec ts = {when / 1000, (when % 1000) * 1000000L};

	pthread_cond_timedwait(&rep.cond, &rep.lock, &ts);
}

static void *
timer_main(void *arg)
{
	struct repeat_summary *sums = xcalloc(REPEAT_SLOTS, sizeof(*sums));

	pthread_mutex_lock(&rep.lock);
	while (!rep.stopping && rep.used > 0) {
		size_t n = end_windows(monotonic_ms(), sums);

		if (n > 0) {
			/* Unlocked: writing takes the sink's lock, and other
			 * threads keep logging meanwhile. */
			pthread_mutex_unlock(&rep.lock);
			write_summaries(sums, n);
			pthread_mutex_lock(&rep.lock);
			continue;
		}
		if (rep.used > 0)
			wait_until(earliest_end());
	}
	rep.timer_running = false;
	pthread_cond_broadcast(&rep.cond);
	pthread_mutex_unlock(&rep.lock);
	free(sums);
	return NULL;
}

/* Call with rep.lock. A thread that cannot start leaves the summaries to
 * the next flush (log_reopen or log_close). */
static void
start_timer(void)
{
	pthread_attr_t attr;
	pthread_t tid;

	if (rep.timer_running)
		return;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&tid, &attr, timer_main, NULL) == 0)
		rep.timer_running = true;
	pthread_attr_destroy(&attr);
}

static struct repeat_slot *
find_slot(uint64_t hash, const char *key)
{
	for (size_t i = 0; i < REPEAT_SLOTS; i++) {
		struct repeat_slot *s = &rep.slot[i];

		if (s->key != NULL && s->hash == hash &&
		    strcmp(s->key, key) == 0)
			return s;
	}
	return NULL;
}

/* A free slot, or the one whose window ends first after moving its count
 * into *sum (returns whether it had one in *evicted_r). */
static struct repeat_slot *
claim_slot(struct repeat_summary *sum, bool *evicted_r)
{
	struct repeat_slot *oldest = NULL;

	*evicted_r = false;
	for (size_t i = 0; i < REPEAT_SLOTS; i++) {
		struct repeat_slot *s = &rep.slot[i];

		if (s->key == NULL) {
			rep.used++;
			return s;
		}
		if (oldest == NULL || s->window_end < oldest->window_end)
			oldest = s;
	}
	*evicted_r = take_summary(oldest, sum);
	slot_free(oldest);
	return oldest;
}

bool
log_repeat_hold(const struct logline *line)
{
	struct repeat_summary sum;
	struct repeat_slot *s;
	bool evicted = false, hold = false;
	uint64_t hash;
	char *key;

	if (line->level < LOG_LVL_WARN)
		return false;
	pthread_once(&rep_once, init_once);
	key = line_key(line);
	hash = hash_key(key);

	pthread_mutex_lock(&rep.lock);
	if (rep.window_ms == 0) {
		free(key);
	} else if ((s = find_slot(hash, key)) != NULL) {
		s->count++;
		hold = true;
		free(key);
	} else {
		s = claim_slot(&sum, &evicted);
		s->hash = hash;
		s->key = key;
		s->user = line->user != NULL ? xstrdup(line->user) : NULL;
		s->level = line->level;
		s->window_end = monotonic_ms() + rep.window_ms;
		start_timer();
	}
	pthread_mutex_unlock(&rep.lock);

	if (evicted)
		write_summaries(&sum, 1);
	return hold;
}

void
log_repeat_flush(bool forget)
{
	struct repeat_summary *sums = xcalloc(REPEAT_SLOTS, sizeof(*sums));
	size_t n = 0;

	pthread_once(&rep_once, init_once);
	pthread_mutex_lock(&rep.lock);
	for (size_t i = 0; i < REPEAT_SLOTS; i++) {
		if (rep.slot[i].key != NULL &&
		    take_summary(&rep.slot[i], &sums[n]))
			n++;
		if (forget && rep.slot[i].key != NULL) {
			slot_free(&rep.slot[i]);
			rep.used--;
		}
	}
	if (forget) {
		/* The timer thread exits when it finds the table empty. */
		rep.stopping = true;
		pthread_cond_broadcast(&rep.cond);
		while (rep.timer_running)
			pthread_cond_wait(&rep.cond, &rep.lock);
		rep.stopping = false;
	}
	pthread_mutex_unlock(&rep.lock);

	write_summaries(sums, n);
	free(sums);
}

void
log_flush_repeats(void)
{
	log_repeat_flush(false);
}
