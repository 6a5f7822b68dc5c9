/* Internals shared by the maildir*.c files. */
#ifndef MAILREPL_MAILDIR_PRIVATE_H
#define MAILREPL_MAILDIR_PRIVATE_H

#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>

#include "maildir.h"

/* 1990-01-01T00:00:00Z. An earlier mtime or name epoch is taken as a
 * broken clock or a bad restore, not as a real delivery time. */
#define PLAUSIBLE_MIN ((time_t)631152000)
#define PLAUSIBLE_FUTURE ((time_t)86400)
#define READ_CHUNK (64 * 1024)
/* A message whose header section has no end within this many bytes is
 * not searched further for a Date field. */
#define MAX_HEADER_BYTES (256 * 1024)
#define N_KEYWORDS 26

/* stats, or *dummy cleared when stats is NULL. */
struct md_stats *md_stats_or_dummy(struct md_stats *stats,
				   struct md_stats *dummy);
/* Append s[0..n) to the growing string *buf. */
void md_buf_append(char **buf, size_t *len, size_t *cap, const char *s,
		   size_t n);
/* A directory entry that is a directory, following symlinks, because
 * sites link user or folder directories to other disks. */
bool md_entry_is_dir(int dir_fd, const struct dirent *de);

#endif
