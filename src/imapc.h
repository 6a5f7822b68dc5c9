/* IMAP client for the replica, on libetpan.
 *
 * One struct imapc is one connection, logged in as the replica's
 * administrator on behalf of one user. It is used by one thread at a time.
 * Every failure is returned as a struct mrerr, classified here, where the
 * libetpan code and the server's response are known: callers never look
 * at libetpan codes. */
#ifndef MAILREPL_IMAPC_H
#define MAILREPL_IMAPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "cfg.h"
#include "flags.h"
#include "mrerr.h"

struct imapc_params {
	const char *host;
	unsigned port;
	enum cfg_tls tls;
	const char *ca_file;	 /* NULL: the system trust store */
	const char *fingerprint; /* "sha256:<64 hex>" pin, or NULL */
	const char *admin_user;
	const char *password;	 /* borrowed; never logged */
	unsigned timeout;	 /* seconds per network operation */
};

struct imapc;

/* Fill params from the [master] section; password is borrowed. */
void imapc_params_from_config(struct imapc_params *params,
			      const struct config *cfg, const char *password);

/* Connect, set up TLS and verify the server certificate (against the CA
 * file or the pin, and the host name) before any credential is sent, then
 * log in as params->admin_user on behalf of user: SASL PLAIN with user as
 * the authorization identity, or LOGIN "user*admin" when the server offers
 * no AUTH=PLAIN. Fails with MRERR_CONFIG when the server lacks UIDPLUS.
 * Returns a connection (free with imapc_free) or NULL with *err set. */
struct imapc *imapc_connect(const struct imapc_params *params,
			    const char *user, struct mrerr *err);
/* Log out (when the stream is alive), close and free; sets *c to NULL. */
void imapc_free(struct imapc **c);
bool imapc_has_capability(struct imapc *c, const char *name);
/* The hierarchy separator of the personal namespace ('.' or '/'). */
char imapc_separator(struct imapc *c);
/* The server's APPENDLIMIT, 0 when it announces none. */
uint64_t imapc_appendlimit(struct imapc *c);

/* The replica's name for a Maildir++ folder name ('.' between levels):
 * the same hierarchy with the replica's separator. Caller frees. */
char *imapc_replica_name(struct imapc *c, const char *folder);
/* The reverse: the Maildir++ name of a replica mailbox. Caller frees. */
char *imapc_master_name(struct imapc *c, const char *name);

/* Mailbox names below are replica names (modified UTF-7, the server's
 * separator). */
struct imapc_mailbox {
	char *name;
	bool noselect;
};
/* LIST "" "*" (subscribed_only: LSUB "" "*"). Free with
 * imapc_mailboxes_free. */
int imapc_list(struct imapc *c, bool subscribed_only,
	       struct imapc_mailbox **list_r, size_t *count_r,
	       struct mrerr *err);
void imapc_mailboxes_free(struct imapc_mailbox **list, size_t count);
/* CREATE; an existing mailbox is success. */
int imapc_create(struct imapc *c, const char *name, struct mrerr *err);
/* DELETE; a missing mailbox is success. Deleting the selected mailbox
 * unselects it first. */
int imapc_delete(struct imapc *c, const char *name, struct mrerr *err);
/* RENAME from to, with from's children. */
int imapc_rename(struct imapc *c, const char *from, const char *to,
		 struct mrerr *err);
int imapc_subscribe(struct imapc *c, const char *name, bool subscribe,
		    struct mrerr *err);

struct imapc_status {
	uint32_t uidvalidity;
	uint32_t uidnext;
	uint32_t exists;
	bool keywords_allowed; /* PERMANENTFLAGS has \* */
};
/* SELECT name (read-write) and report its state. SELECT is sent even
 * when name is selected already, so the state is current. */
int imapc_select(struct imapc *c, const char *name,
		 struct imapc_status *status_r, struct mrerr *err);

/* One message of the selected mailbox. */
struct imapc_msg {
	uint32_t uid;
	struct flagset flags;
	uint64_t size;	     /* RFC822.SIZE */
	time_t internaldate; /* UTC seconds */
};
/* UID FETCH first:* (UID FLAGS RFC822.SIZE INTERNALDATE), sorted by UID.
 * Free with imapc_msgs_free. */
int imapc_fetch_all(struct imapc *c, uint32_t first_uid,
		    struct imapc_msg **msgs_r, size_t *count_r,
		    struct mrerr *err);
void imapc_msgs_free(struct imapc_msg **msgs, size_t count);
/* UID FETCH uid BODY.PEEK[]: the whole message. Caller frees *data_r. */
int imapc_fetch_body(struct imapc *c, uint32_t uid, char **data_r,
		     size_t *len_r, struct mrerr *err);

/* A message to append. The file is streamed from disk in CRLF form. */
struct imapc_append {
	const char *path;
	const struct flagset *flags;
	time_t internaldate; /* sent in UTC; 0: the server sets it */
	/* The file's size in CRLF form (the literal length) when the caller
	 * knows it already; 0: imapc_append_batch counts it. */
	uint64_t crlf_size;
	/* Set by imapc_append_batch: */
	uint32_t uid;	    /* from APPENDUID; 0 when not appended */
	struct mrerr error; /* why this message was not appended */
};
/* Append msgs to mailbox in one MULTIAPPEND command (with LITERAL+ when
 * offered, synchronising literals otherwise), or one APPEND per message
 * when the server lacks MULTIAPPEND. On success every msgs[i].uid is set
 * from the APPENDUID set and *uidvalidity_r is set. When the server
 * rejects the batch with NO, the messages are retried one by one so that
 * a bad message is isolated: its uid stays 0 and its error has scope
 * MRERR_MESSAGE with the server's text, and the call still returns 0.
 * Returns -1 only for failures beyond single messages (connection,
 * folder), with *err set; a message whose uid is set even then was
 * stored before the failure. A file that changes size while it is sent
 * makes the literal wrong: the connection is then closed (c is dead,
 * MRERR_CONNECTION) so that the replica stores nothing of that command. */
int imapc_append_batch(struct imapc *c, const char *mailbox,
		       struct imapc_append *msgs, size_t count,
		       uint32_t *uidvalidity_r, struct mrerr *err);

/* UID STORE uid FLAGS.SILENT (flags): replace the flag set. */
int imapc_store_flags(struct imapc *c, uint32_t uid,
		      const struct flagset *flags, struct mrerr *err);
/* Mark uids \Deleted and UID EXPUNGE exactly them (never a plain
 * EXPUNGE). */
int imapc_expunge_uids(struct imapc *c, const uint32_t *uids, size_t count,
		       struct mrerr *err);

/* UID MOVE uid from the selected mailbox to mailbox (RFC 6851). Sets
 * *new_uid_r from the COPYUID response (0 when the server sent none) and
 * *uidvalidity_r to the destination's UIDVALIDITY. Fails with
 * MRERR_FOLDER when the server lacks MOVE. */
int imapc_move_uid(struct imapc *c, uint32_t uid, const char *mailbox,
		   uint32_t *uidvalidity_r, uint32_t *new_uid_r,
		   struct mrerr *err);

/* Verify a DER certificate: against the CA file (or the system trust
 * store) and the host name, or by its SHA-256 fingerprint when one is
 * given. Exposed for tests. Returns 0, or -1 with *err (MRERR_CONFIG). */
int imapc_verify_certificate(const unsigned char *der, size_t len,
			     const char *host, const char *ca_file,
			     const char *fingerprint, struct mrerr *err);

#endif
