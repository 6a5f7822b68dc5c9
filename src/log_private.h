/* Shared between log.c (formatting and sinks) and log_repeat.c (the
 * limit on repeated lines). Not for other modules. */
#ifndef MAILREPL_LOG_PRIVATE_H
#define MAILREPL_LOG_PRIVATE_H

#include "log.h"

#include <stddef.h>

struct logline {
	enum log_level level;
	char *buf;
	size_t len, cap;
	size_t body; /* offset of "event=", where syslog's text starts */
	/* The " ms=..." field, left out when lines are compared as
	 * repeats; ms_end is 0 when the line has none. */
	size_t ms_begin, ms_end;
	char *user; /* value of the user field, or NULL */
};

/* Like log_end(), without the repeat check: for the summary lines. */
void log_end_unlimited(struct logline *line);

/* Decide whether a finished line repeats one written within the repeat
 * window. Returns true when the caller must not write it: it was counted
 * for the summary line. Safe from any thread. */
bool log_repeat_hold(const struct logline *line);

/* Write the summaries of every counted repeat now. With forget, also
 * drop every tracked line and stop the timer thread (log_close). */
void log_repeat_flush(bool forget);

#endif
