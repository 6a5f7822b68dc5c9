/* The replication log: one logfmt line per event, to a file, to syslog
 * and, for the command-line tool, to stderr.
 *
 *   ts=2026-12-04T20:30:06.123Z level=info event=append user=alice
 *   folder=INBOX count=50 ms=41
 *
 * Values are quoted when they contain a space, '=', '"' or a control
 * character. Callers never pass a secret; as a second guard, the password
 * of a URL ("scheme://user:password@host") in any value is written as
 * "***". The sink is process-wide and each line is written with one
 * write(2), so threads may log at once.
 *
 * A warn or error line that equals one written within the repeat window
 * in everything but ts and ms is counted instead of written. An
 * "event=repeated count=N of=..." line reports the count when the window
 * ends (see log_repeat.c). */
#ifndef MAILREPL_LOG_H
#define MAILREPL_LOG_H

#include <stdbool.h>

enum log_level {
	LOG_LVL_DEBUG = 0,
	LOG_LVL_INFO,
	LOG_LVL_WARN,
	LOG_LVL_ERROR,
};

/* Open the log file for appending (NULL for none), and syslog when
 * use_syslog and a syslog daemon listens on /dev/log. Returns 0, or -1
 * with *error_r (caller frees). */
int log_open(const char *path, bool use_syslog, const char *ident,
	     char **error_r);
/* Reopen the log file after logrotate moved it. The summaries of the
 * repeats counted so far are written to the old file first. */
int log_reopen(char **error_r);
/* Write the pending repeat summaries, then close the file and syslog. */
void log_close(void);
/* Set the repeat window in milliseconds (default 60000); 0 writes every
 * line. Tests shorten it. */
void log_set_repeat_window(long long ms);
/* Write the summaries of the repeats counted so far now, instead of when
 * their windows end. */
void log_flush_repeats(void);
/* Also print events at or above level to stderr (the CLI sets this). */
void log_set_stderr_level(enum log_level level);
void log_set_stderr(bool enabled);
const char *log_level_name(enum log_level level);
int log_level_parse(const char *name, enum log_level *level_r);

/* A line under construction: log_begin(), any number of log_str() and
 * log_int(), then log_end(), which writes and frees it. */
struct logline;
struct logline *log_begin(enum log_level level, const char *event);
void log_str(struct logline *line, const char *key, const char *value);
void log_int(struct logline *line, const char *key, long long value);
void log_end(struct logline *line);

/* Shorthand for an event with a single "msg" text. */
void log_msg(enum log_level level, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
