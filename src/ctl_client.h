/* The master's side of the control channel: one connection to the
 * replica's agent, in the protocol of doc/protocol.md. Blocking I/O with
 * a timeout; one thread uses one connection. */
#ifndef MAILREPL_CTL_CLIENT_H
#define MAILREPL_CTL_CLIENT_H

#include <stdbool.h>
#include <time.h>

#include "cfg.h"
#include "mrerr.h"

struct ctl_client;

/* Connect to [master] replica_host:control_port, read the greeting, run
 * STARTTLS when the agent offers it (required off loopback; the
 * certificate is verified like the IMAP server's, before the password is
 * sent), and AUTH as
 * [master] admin_user with password (borrowed). Returns a connection or
 * NULL with *err: MRERR_CONFIG for a rejected login or certificate,
 * MRERR_CONNECTION when the agent cannot be reached. */
struct ctl_client *ctl_client_connect(const struct config *cfg,
				      const char *password, struct mrerr *err);
/* Connect to the local agent's [general] control_socket, where no AUTH
 * is needed. Returns NULL with *err (MRERR_CONNECTION when no agent
 * runs). */
struct ctl_client *ctl_client_local(const struct config *cfg,
				    struct mrerr *err);
/* Send one request line. Returns 0 for OK, or -1 with *err holding the
 * server's final line (NO or BAD) or the I/O failure. */
int ctl_client_command(struct ctl_client *c, const char *line,
		       struct mrerr *err);

/* Send one request line and pass each data line (without "* ") to
 * on_data. Returns 0 for OK, or -1 with *err as ctl_client_command(). */
int ctl_client_query(struct ctl_client *c, const char *line,
		     void (*on_data)(const char *data, void *context),
		     void *context, struct mrerr *err);

/* Send QUIT when the connection is alive, close and free; sets *c NULL. */
void ctl_client_free(struct ctl_client **c);

/* Make sure the peer is a replica that accepts this master: MODE, then
 * BIND master_id (with TAKEOVER when takeover). A standalone or master
 * peer, or a replica bound to another master without takeover, is an
 * MRERR_CONFIG error that says what to do. */
int ctl_client_bind(struct ctl_client *c, const char *master_id,
		    bool takeover, struct mrerr *err);
/* INIT BEGIN and INIT END of an initial replication. result is "ok",
 * "failed" or "rejected". */
int ctl_client_init_begin(struct ctl_client *c, const char *master_id,
			  struct mrerr *err);
int ctl_client_init_end(struct ctl_client *c, const char *result,
			unsigned long long messages, unsigned long long bytes,
			unsigned long long rejected, time_t finished,
			struct mrerr *err);

/* Send this master's figures with STATUS, and report whether the
 * replica's administrator asked for a new initial replication. */
int ctl_client_status(struct ctl_client *c, unsigned long long pending,
		      unsigned long long oldest_age_s, time_t last_applied,
		      const char *last_error, bool *init_requested_r,
		      struct mrerr *err);

/* This master's id on the control channel: its host name. Caller frees. */
char *ctl_client_master_id(void);

#endif
