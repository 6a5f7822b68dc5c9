/* The agent's figures in the Prometheus text exposition format, written
 * to [general] metrics_file for node_exporter's textfile collector.
 *
 * Every metric name starts with "mailrepl_". The file carries no sample
 * timestamps, because the textfile collector rejects them; its age is
 * in mailrepl_status_updated_timestamp_seconds (and in node_exporter's
 * own node_textfile_mtime_seconds). */
#ifndef MAILREPL_METRICS_H
#define MAILREPL_METRICS_H

#include "status.h"
#include "store.h"

/* What one write exports. The pointers are borrowed for the call. */
struct metrics_input {
	const struct agent_record *rec; /* required */
	const struct store_run *init;   /* the last initial replication, or
					 * NULL when none was recorded */
	unsigned long long errors;      /* changes dropped after an error since
					 * the agent started */
};

struct metrics;

/* A writer for path, which it copies. It remembers the last write error
 * so that a failing file is logged once per distinct error, not at each
 * write. Free with metrics_free(). */
struct metrics *metrics_new(const char *path);
void metrics_free(struct metrics **metrics);

/* The exposition text of in, ending in a newline. Pure: the same input
 * gives the same bytes. Caller frees. */
char *metrics_format(const struct metrics_input *in);

/* Replace the metrics file with the text of in: write a temporary file
 * in the same directory, make it mode 0644 and rename(2) it over the
 * file, so that a reader sees the old or the new file, never part of
 * one. Costs one small write and a rename, so the status thread calls
 * it each time it saves the agent record. A failure is logged (once
 * per distinct error, and once when writing works again) and returns
 * -1; the caller goes on. metrics may be NULL (no metrics file is
 * configured): then nothing happens and 0 is returned. */
int metrics_write(struct metrics *metrics, const struct metrics_input *in);

#endif
