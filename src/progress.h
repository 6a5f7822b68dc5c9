/* The progress line of "mailrepl init" on a terminal:
 *
 *   folders 12/45  messages 3,210/6,046  34.1/61.0 MB  1,530 msg/s  ETA 0:02
 *
 * Counters are updated by worker threads without locks; a background
 * thread redraws the line twice a second. */
#ifndef MAILREPL_PROGRESS_H
#define MAILREPL_PROGRESS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct progress {
	atomic_ullong folders_done, folders_total;
	atomic_ullong messages_done, messages_total;
	atomic_ullong bytes_done, bytes_total;
};

struct progress_display;

/* Start redrawing p on fd when enabled; returns NULL otherwise. */
struct progress_display *progress_start(struct progress *p, int fd,
					bool enabled);
/* Draw the final line, end it with a newline, and stop. */
void progress_stop(struct progress_display **display);
/* Format one progress line into buf (for tests). elapsed_ms > 0. */
void progress_format(const struct progress *p, long long elapsed_ms,
		     char *buf, size_t size);

#endif
