/* Internals of the control server, shared by ctl_server.c (listeners,
 * threads, settings), ctl_session.c (one connection's protocol state)
 * and ctl_commands.c (the request handlers), and used by the fuzzer. */
#ifndef MAILREPL_CTL_PRIVATE_H
#define MAILREPL_CTL_PRIVATE_H

#include <gnutls/gnutls.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "cfg.h"
#include "ctl_server.h"
#include "ctl_net.h"
#include "ctl_proto.h"

/* Defaults of the limits; a test or the fuzzer may lower them in the
 * context before connections arrive. */
#define CTL_IDLE_TIMEOUT_S 300
#define CTL_MAX_CONNECTIONS 32

/* The settings that sessions use, built from a config. A session holds a
 * reference for its whole life, so a reload never changes the settings
 * under a running session. refs is protected by the context's lock. */
struct ctl_settings {
	int refs;
	enum cfg_mode mode;
	char *state_dir;
	char *admin_user; /* [replica] admin_user, NULL when not set */
	char *imap_host;
	unsigned imap_port;
	unsigned imap_timeout;
	struct ctl_network *nets;
	size_t net_count;
	gnutls_certificate_credentials_t tls_creds; /* NULL: no TLS */
};

enum ctl_auth_result {
	CTL_AUTH_OK,
	CTL_AUTH_REJECTED,
	CTL_AUTH_UNAVAILABLE, /* the check itself failed: not counted */
};
/* Check the administrator's password; *detail_r (caller frees) is the
 * reason for a result other than OK, never containing the password. */
typedef enum ctl_auth_result (*ctl_password_check_fn)(
	const struct ctl_settings *settings, const char *password,
	char **detail_r);

struct ctl_session;

/* State shared by all listeners and sessions of one server. */
struct ctl_ctx {
	pthread_mutex_t lock; /* everything below, and peer.json */
	pthread_cond_t idle;  /* signalled when a session ends */
	struct ctl_settings *settings;
	struct ctl_ratelimit rate;
	ctl_password_check_fn check_password;
	ctl_holds_mail_fn holds_mail; /* NULL: report "unknown" */
	void *holds_mail_context;
	unsigned idle_timeout_s;
	unsigned max_connections; /* per transport */
	struct ctl_session **sessions; /* running, for shutdown */
	size_t session_count, session_cap;
	bool stopping;
};

enum ctl_transport { CTL_TRANSPORT_TCP, CTL_TRANSPORT_LOCAL };

struct ctl_session {
	struct ctl_ctx *ctx;
	struct ctl_settings *settings; /* a reference, see ctl_settings */
	enum ctl_transport transport;
	int fd;
	gnutls_session_t tls; /* NULL until STARTTLS */
	bool loopback;
	bool authenticated;
	bool close;      /* set by a handler: close after this line */
	bool start_tls;  /* set by STARTTLS: handshake after the reply */
	char peer[64];   /* address text for logs and the rate limit */
	char *master_id; /* bound by BIND on this connection */
	/* Output sink; NULL writes to fd (or the TLS session). */
	int (*write_fn)(struct ctl_session *s, const char *data, size_t len);
	char in[CTL_LINE_MAX];
	size_t in_len;
};

struct ctl_settings *ctl_settings_new(const struct config *cfg, char **error_r);
/* Drop a reference; the last one frees. The caller holds ctx->lock
 * unless the settings were never shared. */
void ctl_settings_unref(struct ctl_settings **settings);

/* The check that logs in to the replica's own IMAP server with imapc. */
enum ctl_auth_result
ctl_check_password_imap(const struct ctl_settings *settings,
			const char *password, char **detail_r);

/* Set up s for a connection on fd; takes a settings reference. */
void ctl_session_init(struct ctl_session *s, struct ctl_ctx *ctx, int fd,
		      enum ctl_transport transport, const char *peer,
		      bool loopback);
/* End TLS, drop the reference and free what s owns (not fd). */
void ctl_session_deinit(struct ctl_session *s);
/* Send the greeting, then serve requests until QUIT, EOF, an error, the
 * idle timeout or shutdown. */
void ctl_session_run(struct ctl_session *s);
/* Send one line (CRLF appended) formatted from fmt. Returns 0 or -1. */
int ctl_session_send(struct ctl_session *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* The greeting and CAPA text: "MAILREPL 1 <mode> [capabilities]".
 * Caller frees. */
char *ctl_session_capabilities(struct ctl_session *s);
/* Handle one request line (without its line end); sets s->close when the
 * connection must end. Any byte sequence is accepted. */
void ctl_session_handle_line(struct ctl_session *s, const char *line,
			     size_t len);

/* Request handlers, in ctl_commands.c. Each sends the data lines and the
 * final line of its response. */
void ctl_cmd_capa(struct ctl_session *s, const struct ctl_request *req);
void ctl_cmd_starttls(struct ctl_session *s, const struct ctl_request *req);
void ctl_cmd_auth(struct ctl_session *s, const struct ctl_request *req);
void ctl_cmd_version(struct ctl_session *s, const struct ctl_request *req);
void ctl_cmd_mode(struct ctl_session *s, const struct ctl_request *req);
void ctl_cmd_bind(struct ctl_session *s, const struct ctl_request *req);
void ctl_cmd_init(struct ctl_session *s, const struct ctl_request *req);
void ctl_cmd_status(struct ctl_session *s, const struct ctl_request *req);

#endif
