/* Internals shared by imapc.c (session, commands), imapc_tls.c
 * (certificate checks) and imapc_append.c (MULTIAPPEND). */
#ifndef MAILREPL_IMAPC_PRIVATE_H
#define MAILREPL_IMAPC_PRIVATE_H

#include <libetpan/libetpan.h>
#include <stdbool.h>
#include <stdint.h>

#include "imapc.h"

struct imapc {
	mailimap *imap;
	char *host;
	char *user;	    /* the user we act for */
	char *selected;	    /* selected mailbox, or NULL */
	char separator;	    /* hierarchy separator, '.' until LIST says */
	bool literal_plus;  /* LITERAL+ (RFC 7888) offered */
	bool literal_minus; /* LITERAL- offered: non-sync up to 4096 bytes */
	bool multiappend;   /* MULTIAPPEND (RFC 3502) offered */
	uint64_t appendlimit;
	bool dead;	    /* stream failed: never send LOGOUT */
};

/* Classify a libetpan result code of a command, with the server's text
 * when there is one, into err. Returns -1. */
int imapc_fail(struct imapc *c, int r, const char *command,
	       struct mrerr *err);

#endif
