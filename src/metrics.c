/* The metrics file for node_exporter's textfile collector. */
#include <config.h>
#include "metrics.h"

#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct metrics {
	char *path;
	char *last_error; /* the error logged last, NULL after a success */
};

struct metrics *
metrics_new(const char *path)
{
	struct metrics *metrics = xcalloc(1, sizeof(*metrics));

	metrics->path = xstrdup(path);
	return metrics;
}

void
metrics_free(struct metrics **metrics)
{
	if (*metrics == NULL)
		return;
	free((*metrics)->path);
	free((*metrics)->last_error);
	xfree(metrics);
}

/* Formatting */

static void
put_header(FILE *out, const char *name, const char *type, const char *help)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
put_gauge(FILE *out, const char *name, const char *help, long long value)
{
	put_header(out, name, "gauge", help);
	fprintf(out, "%s %lld\n", name, value);
}

static void
put_counter(FILE *out, const char *name, const char *help,
	    unsigned long long value)
{
	put_header(out, name, "counter", help);
	fprintf(out, "%s %llu\n", name, value);
}

/* Time since a Unix time, 0 when the time is 0 (none) or in the future. */
static long long
age(long long now, long long then)
{
	return then != 0 && now > then ? now - then : 0;
}

static void
put_agent(FILE *out, const struct metrics_input *in)
{
	const struct agent_record *rec = in->rec;

	put_gauge(out, "mailrepl_agent_start_time_seconds",
		  "When the agent started, in Unix seconds.", rec->started);
	put_gauge(out, "mailrepl_status_updated_timestamp_seconds",
		  "When the agent last wrote these figures, in Unix seconds.",
		  rec->updated);
	put_gauge(out, "mailrepl_peer_connected",
		  "Whether the agent is connected to the replica's agent "
		  "(1) or not (0).",
		  strcmp(rec->peer_state, "connected") == 0);
}

static void
put_queue(FILE *out, const struct metrics_input *in)
{
	const struct agent_record *rec = in->rec;

	put_gauge(out, "mailrepl_pending_changes",
		  "Changes queued for the replica.", (long long)rec->pending);
	put_gauge(out, "mailrepl_oldest_pending_age_seconds",
		  "Age of the oldest queued change, 0 when none is queued.",
		  rec->pending > 0 ? age(rec->updated, rec->oldest_queued) : 0);
	put_counter(out, "mailrepl_changes_applied_total",
		    "Changes applied to the replica since the agent started.",
		    rec->applied);
	put_gauge(out, "mailrepl_last_applied_timestamp_seconds",
		  "When the last change was applied, in Unix seconds; 0 "
		  "when none was applied since the agent started.",
		  rec->last_applied);
	put_counter(out, "mailrepl_errors_total",
		    "Changes dropped after an error since the agent started.",
		    in->errors);
	put_gauge(out, "mailrepl_last_error_timestamp_seconds",
		  "When the last error occurred, in Unix seconds; 0 when "
		  "none occurred since the agent started.",
		  rec->last_error_at);
}

static void
put_sync_state(FILE *out, const struct status_judgement *judged)
{
	static const char state_name[] = "mailrepl_sync_state";

	put_gauge(out, "mailrepl_in_sync",
		  "Whether the replica holds every change except those of "
		  "the normal lag (1) or not (0).",
		  judged->state == SYNC_STATE_IN_SYNC);
	put_header(out, state_name, "gauge",
		   "The sync state: 1 for the current state, 0 for the "
		   "others.");
	for (int s = SYNC_STATE_UNKNOWN; s <= SYNC_STATE_OUT_OF_SYNC; s++)
		fprintf(out, "%s{state=\"%s\"} %d\n", state_name,
			status_state_name((enum sync_state)s),
			judged->state == (enum sync_state)s);
	put_gauge(out, "mailrepl_sync_state_since_timestamp_seconds",
		  "When the current sync state began, in Unix seconds; 0 "
		  "when not known.",
		  judged->since);
	put_gauge(out, "mailrepl_status_level",
		  "Monitoring level of mailrepl status: 0 OK, 1 WARNING, "
		  "2 CRITICAL, 3 UNKNOWN.",
		  (long long)judged->level);
}

static void
put_init(FILE *out, const struct store_run *run)
{
	static const char result_name[] = "mailrepl_initial_replication_result";
	struct store_run none = {0};

	put_header(out, result_name, "gauge",
		   "Result of the last initial replication: 1 for its "
		   "result, 0 for the others; all 0 when none was recorded.");
	for (int r = RUN_RUNNING; r <= RUN_INTERRUPTED; r++)
		fprintf(out, "%s{result=\"%s\"} %d\n", result_name,
			store_run_result_name((enum store_run_result)r),
			run != NULL && run->result == (enum store_run_result)r);
	if (run == NULL)
		run = &none;
	put_gauge(out, "mailrepl_initial_replication_start_time_seconds",
		  "When the last initial replication started, in Unix "
		  "seconds; 0 when none was recorded.",
		  (long long)run->started);
	put_gauge(out,
		  "mailrepl_initial_replication_finished_timestamp_seconds",
		  "When the last initial replication finished, in Unix "
		  "seconds; 0 while it runs or when none was recorded.",
		  run->result == RUN_RUNNING ? 0 : (long long)run->finished);
	put_gauge(out, "mailrepl_initial_replication_messages",
		  "Messages the last initial replication found on the master.",
		  (long long)run->messages);
	put_gauge(out, "mailrepl_initial_replication_bytes",
		  "Size in bytes of the messages the last initial "
		  "replication found on the master.",
		  (long long)run->bytes);
	put_gauge(out, "mailrepl_initial_replication_rejected_messages",
		  "Messages the replica rejected in the last initial "
		  "replication.",
		  (long long)run->rejected);
}

char *
metrics_format(const struct metrics_input *in)
{
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);

	if (out == NULL) {
		fputs("mailrepl: out of memory\n", stderr);
		abort();
	}
	put_agent(out, in);
	put_queue(out, in);
	put_sync_state(out, &in->rec->judgement);
	put_init(out, in->init);
	fclose(out);
	return text;
}

/* Writing */

/* Write text to a new temporary file next to path and rename it over
 * path. The temporary name does not end in ".prom", so the textfile
 * collector never reads it. There is no fsync, because the agent
 * rewrites the file at its next status change, so a system crash at
 * worst leaves an old or empty file until the agent writes again. */
static int
replace_file(const char *path, const char *text, char **error_r)
{
	char *temp = xasprintf("%s.XXXXXX", path);
	size_t len = strlen(text);
	int fd = mkstemp(temp), ret = -1;
	bool created = fd >= 0;

	if (fd < 0) {
		*error_r = xasprintf("cannot create a temporary file next to "
				     "%s: %s; check that the directory exists "
				     "and that the agent may write to it",
				     path, strerror(errno));
		goto out;
	}

	/* mkstemp() creates mode 0600, and node_exporter runs as another
	 * user. */
	errno = 0;
	if (fchmod(fd, 0644) < 0 || write(fd, text, len) != (ssize_t)len) {
		*error_r =
			xasprintf("cannot write %s: %s", temp,
				  errno != 0 ? strerror(errno) : "short write");
		goto out;
	}
	ret = close(fd);
	fd = -1;
	if (ret < 0 || rename(temp, path) < 0) {
		ret = -1;
		*error_r = xasprintf("cannot replace %s with %s: %s", path,
				     temp, strerror(errno));
		goto out;
	}
	created = false;
out:
	if (fd >= 0)
		close(fd);
	if (created)
		unlink(temp);
	free(temp);
	return ret;
}

static void
note_result(struct metrics *metrics, char *error)
{
	if (error == NULL) {
		if (metrics->last_error != NULL)
			log_msg(LOG_LVL_INFO, "metrics",
				"writing %s works again", metrics->path);
		xfree(&metrics->last_error);
		return;
	}
	if (metrics->last_error == NULL ||
	    strcmp(metrics->last_error, error) != 0) {
		log_msg(LOG_LVL_WARN, "error",
			"metrics file: %s; further identical errors are not "
			"logged",
			error);
		free(metrics->last_error);
		metrics->last_error = error;
		return;
	}
	free(error);
}

int
metrics_write(struct metrics *metrics, const struct metrics_input *in)
{
	char *text, *error = NULL;
	int ret;

	if (metrics == NULL)
		return 0;
	text = metrics_format(in);
	ret = replace_file(metrics->path, text, &error);
	note_result(metrics, error);
	free(text);
	return ret;
}
