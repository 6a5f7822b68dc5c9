/* A message's IMAP flags: the system flags as bits and the keywords as a
 * sorted, de-duplicated list. \Recent is never part of a flag set, and the
 * Maildir P flag is the keyword $Forwarded. */
#ifndef MAILREPL_FLAGS_H
#define MAILREPL_FLAGS_H

#include <stdbool.h>
#include <stddef.h>

enum {
	FLAG_SEEN = 1 << 0,	/* S */
	FLAG_ANSWERED = 1 << 1, /* R */
	FLAG_FLAGGED = 1 << 2,	/* F */
	FLAG_DELETED = 1 << 3,	/* T */
	FLAG_DRAFT = 1 << 4,	/* D */
};

struct flagset {
	unsigned sys;	 /* FLAG_* bits */
	char **keywords; /* owned; sorted case-insensitively, unique */
	size_t nkeywords;
};

void flagset_init(struct flagset *fs);
void flagset_clear(struct flagset *fs);
void flagset_copy(struct flagset *dst, const struct flagset *src);
/* Add a keyword (copied); a case-insensitive duplicate is ignored. */
void flagset_add_keyword(struct flagset *fs, const char *keyword);
/* Add an IMAP flag atom: "\Seen" and friends set bits, "\Recent" and other
 * backslash flags are ignored, anything else is a keyword. */
void flagset_add_imap(struct flagset *fs, const char *flag);
/* Keywords compare case-insensitively, as IMAP servers treat them. */
bool flagset_equal(const struct flagset *a, const struct flagset *b);
/* Canonical text: system flags in a fixed order, then keywords, separated
 * by single spaces ("\Seen \Flagged $Forwarded"). Caller frees. */
char *flagset_format(const struct flagset *fs);
/* Parse the canonical text back. Returns 0, or -1 on a malformed text. */
int flagset_parse(struct flagset *fs, const char *text);

#endif
