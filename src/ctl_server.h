/* The agent's control server: the TCP 2005 listener of a replica, and the
 * local UNIX socket that the mailrepl command uses in every mode. Both
 * speak the line protocol of doc/protocol.md.
 *
 * The server runs in its own threads (an accept thread per listener, and
 * one thread per connection, up to a limit), so the daemon's main thread
 * only starts, reloads and stops it. */
#ifndef MAILREPL_CTL_SERVER_H
#define MAILREPL_CTL_SERVER_H

#include "cfg.h"

struct ctl_server;

/* Bind the listeners that cfg asks for: [replica] listen when cfg->mode
 * is replica, and [general] control_socket (mode 0600) always. Returns 0
 * and *server_r, or -1 with *error_r (caller frees) naming the address
 * and the cause. cfg is copied where needed; the caller may free it
 * after ctl_server_reload() or ctl_server_stop(). */
int ctl_server_start(const struct config *cfg, struct ctl_server **server_r,
		     char **error_r);
/* Apply a reloaded configuration: rebind listeners whose address
 * changed, and use the new trusted networks and credentials for new
 * connections. Returns 0, or -1 with *error_r (the old settings stay). */
int ctl_server_reload(struct ctl_server *server, const struct config *cfg,
		      char **error_r);
/* Report for INIT BEGIN whether the replica stores mail already: return
 * 1 (yes), 0 (no) or -1 (unknown). Called on a connection thread, so it
 * must be thread-safe; context is passed through. */
typedef int (*ctl_holds_mail_fn)(void *context);
/* Set the INIT BEGIN check; without one (or with fn NULL) the replica
 * reports "unknown". Call it before connections arrive or at any time:
 * the next INIT BEGIN uses the new check. */
void ctl_server_set_holds_mail(struct ctl_server *server, ctl_holds_mail_fn fn,
			       void *context);
/* Close the listeners, end every connection, join the threads and free
 * the server; sets *server to NULL. */
void ctl_server_stop(struct ctl_server **server);

#endif
