/* "mailrepl verify": compare the master's Maildir with the replica over
 * IMAP, independently of the state store. Messages pair by content (a
 * SHA-256 of the CRLF form), so a wrong map cannot hide a difference. */
#ifndef MAILREPL_VERIFY_H
#define MAILREPL_VERIFY_H

#include <stdio.h>

#include "cfg.h"

struct verify_options {
	const struct config *cfg;
	const char *password; /* borrowed */
	char *const *users;   /* only these users, or NULL for all */
	size_t nusers;
};

struct verify_counts {
	unsigned long long users, folders, messages;
	unsigned long long differences; /* every line printed */
	unsigned long long skipped;	/* master files not readable */
};

/* Print one line per difference to out. Returns 0 when the replica
 * equals the master, 1 when there are differences, or -1 with *error_r
 * (caller frees) when the comparison could not be done. */
int verify_run(const struct verify_options *options, FILE *out,
	       struct verify_counts *counts_r, char **error_r);

#endif
