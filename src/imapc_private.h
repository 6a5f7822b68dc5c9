/* Internals shared by imapc.c (session), imapc_mailbox.c and
 * imapc_message.c (commands), imapc_tls.c (certificate checks) and
 * imapc_append.c (MULTIAPPEND). */
#ifndef MAILREPL_IMAPC_PRIVATE_H
#define MAILREPL_IMAPC_PRIVATE_H

#include <libetpan/libetpan.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imapc.h"

struct imapc {
	mailimap *imap;
	char *host;
	char *user;	    /* the user we act for */
	char *selected;	    /* selected mailbox, or NULL */
	char separator;	    /* hierarchy separator; '.' until LIST returns it */
	bool literal_plus;  /* LITERAL+ (RFC 7888) offered */
	bool literal_minus; /* LITERAL- offered: non-sync up to 4096 bytes */
	bool multiappend;   /* MULTIAPPEND (RFC 3502) offered */
	uint64_t appendlimit;
	bool dead;	    /* stream failed: never send LOGOUT */
	bool logged_in;	    /* imap_connected was logged: log imap_close */
	unsigned port;	    /* the replica's IMAP port, for messages */
};

/* Classify a libetpan result code of a command, with the server's text
 * when there is one, into err. A connection failure also closes the
 * stream and sets c->dead, so that imapc_free() sends no LOGOUT.
 * Returns -1. */
int imapc_fail(struct imapc *c, int r, const char *command,
	       struct mrerr *err);

/* Room for the server's response text in messages. */
#define IMAPC_RESPONSE_TEXT_MAX 320

/* Copy the server's response to the last command, without its tag, into
 * buf ("NO [ALREADYEXISTS] Mailbox already exists"), or "" when the last
 * line read is not that response. Call it before the next command. */
void imapc_last_response(struct imapc *c, char *buf, size_t size);
/* Copy the response code of such a text ("ALREADYEXISTS") into code, or
 * "" when it has none. */
void imapc_response_code(const char *text, char *code, size_t size);
/* Return 0 when c can send command (and, for imapc_check_selected, a
 * mailbox is selected), or -1 with *err. */
int imapc_check_alive(struct imapc *c, const char *command,
		      struct mrerr *err);
int imapc_check_selected(struct imapc *c, const char *command,
			 struct mrerr *err);
/* Whether the selected mailbox keeps keyword (NULL: any new keyword)
 * permanently, by its PERMANENTFLAGS. */
bool imapc_keyword_allowed(struct imapc *c, const char *keyword);

#endif
