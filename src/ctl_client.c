/* The master's side of the control channel. */
#include <config.h>
#include "ctl_client.h"

#include "ctl_net.h"
#include "ctl_proto.h"
#include "imapc.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

struct ctl_client {
	int fd;
	gnutls_session_t tls; /* NULL until STARTTLS */
	gnutls_certificate_credentials_t creds;
	char *host;
	unsigned port;
	unsigned timeout_ms;
	char buf[CTL_LINE_MAX];
	size_t len;
	char last[CTL_LINE_MAX]; /* the last final line, for messages */
	bool dead;		 /* I/O failed: send nothing more */
};

static int
fail_io(struct ctl_client *c, const char *what, struct mrerr *err)
{
	c->dead = true;
	return mrerr_set(err, MRERR_CONNECTION, MRERR_RETRY_LATER,
			 "control channel to %s:%u: %s", c->host, c->port,
			 what);
}

static int
wait_fd(struct ctl_client *c, short events)
{
	struct pollfd p = {.fd = c->fd, .events = events};

	if (c->tls != NULL && (events & POLLIN) &&
	    gnutls_record_check_pending(c->tls) > 0)
		return 1;
	return poll(&p, 1, (int)c->timeout_ms);
}

static int
send_line(struct ctl_client *c, const char *line, struct mrerr *err)
{
	char *text = xasprintf("%s\r\n", line);
	size_t len = strlen(text), off = 0;
	int ret = 0;

	while (off < len && ret == 0) {
		ssize_t n;

		if (wait_fd(c, POLLOUT) <= 0) {
			ret = fail_io(c, "timed out sending", err);
			break;
		}
		n = c->tls != NULL
			    ? gnutls_record_send(c->tls, text + off, len - off)
			    : send(c->fd, text + off, len - off, MSG_NOSIGNAL);
		if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED ||
		    (n < 0 && c->tls == NULL && errno == EINTR))
			continue;
		if (n <= 0)
			ret = fail_io(c, "connection lost while sending", err);
		else
			off += (size_t)n;
	}
	explicit_bzero(text, len);
	free(text);
	return ret;
}

/* Read one line (without its line end) into line[CTL_LINE_MAX]. */
static int
read_line(struct ctl_client *c, char *line, struct mrerr *err)
{
	for (;;) {
		size_t line_len, consumed;
		int found = ctl_proto_find_line(c->buf, c->len, &line_len,
						&consumed);
		ssize_t n;

		if (found < 0)
			return fail_io(c, "the agent sent an over-long line",
				       err);
		if (found > 0) {
			memcpy(line, c->buf, line_len);
			line[line_len] = '\0';
			memmove(c->buf, c->buf + consumed, c->len - consumed);
			c->len -= consumed;
			return 0;
		}
		if (wait_fd(c, POLLIN) <= 0)
			return fail_io(c, "no answer from the agent in time",
				       err);
		n = c->tls != NULL
			    ? gnutls_record_recv(c->tls, c->buf + c->len,
						 sizeof(c->buf) - c->len)
			    : recv(c->fd, c->buf + c->len,
				   sizeof(c->buf) - c->len, 0);
		if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED ||
		    (n < 0 && c->tls == NULL && errno == EINTR))
			continue;
		if (n <= 0)
			return fail_io(c, "the agent closed the connection",
				       err);
		c->len += (size_t)n;
	}
}

/* Send a request and read its response: each data line ("* ...") goes to
 * on_data when it is not NULL; returns 0 for OK, 1 for NO or BAD (the
 * final line is in c->last), or -1 with *err. */
static int
request(struct ctl_client *c, const char *line,
	void (*on_data)(const char *data, void *ctx), void *ctx,
	struct mrerr *err)
{
	char reply[CTL_LINE_MAX];

	if (line != NULL && send_line(c, line, err) < 0)
		return -1;
	for (;;) {
		if (read_line(c, reply, err) < 0)
			return -1;
		if (strncmp(reply, "* ", 2) == 0) {
			if (on_data != NULL)
				on_data(reply + 2, ctx);
			continue;
		}
		snprintf(c->last, sizeof(c->last), "%s", reply);
		return strncmp(reply, "OK", 2) == 0 &&
				       (reply[2] == ' ' || reply[2] == '\0')
			       ? 0
			       : 1;
	}
}

static int
connect_tcp(struct ctl_client *c, struct mrerr *err)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
	char port[16];
	int r;

	snprintf(port, sizeof(port), "%u", c->port);
	r = getaddrinfo(c->host, port, &hints, &res);
	if (r != 0)
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_LATER,
				 "cannot resolve [master] replica_host %s: %s",
				 c->host, gai_strerror(r));
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		c->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
			       ai->ai_protocol);
		if (c->fd >= 0 && connect(c->fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (c->fd >= 0)
			close(c->fd);
		c->fd = -1;
	}
	freeaddrinfo(res);
	if (c->fd < 0)
		return mrerr_set(err, MRERR_CONNECTION, MRERR_RETRY_LATER,
				 "cannot connect to the replica's agent on "
				 "%s:%u (%s); check that mailrepld runs there "
				 "in replica mode, that [master] control_port "
				 "is its port, and the firewall",
				 c->host, c->port, strerror(errno));
	return 0;
}

/* STARTTLS, then the same certificate checks as for IMAP, before the
 * password is sent. */
static int
start_tls(struct ctl_client *c, const struct config *cfg, struct mrerr *err)
{
	const gnutls_datum_t *chain;
	unsigned n = 0;
	int r;

	r = request(c, "STARTTLS", NULL, NULL, err);
	if (r != 0)
		return r < 0 ? -1
			     : mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
					 "the replica's agent on %s refused "
					 "STARTTLS (%s); set [replica] "
					 "tls_cert_file and tls_key_file there",
					 c->host, c->last);
	gnutls_certificate_allocate_credentials(&c->creds);
	gnutls_init(&c->tls, GNUTLS_CLIENT);
	gnutls_set_default_priority(c->tls);
	gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, c->creds);
	if (!ctl_net_host_is_loopback(c->host))
		gnutls_server_name_set(c->tls, GNUTLS_NAME_DNS, c->host,
				       strlen(c->host));
	gnutls_transport_set_int(c->tls, c->fd);
	gnutls_handshake_set_timeout(c->tls, c->timeout_ms);
	do {
		r = gnutls_handshake(c->tls);
	} while (r < 0 && !gnutls_error_is_fatal(r));
	if (r < 0)
		return fail_io(c, gnutls_strerror(r), err);

	chain = gnutls_certificate_get_peers(c->tls, &n);
	if (chain == NULL || n == 0)
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				 "the replica's agent on %s sent no "
				 "certificate", c->host);
	if (imapc_verify_certificate(chain[0].data, chain[0].size, c->host,
				     cfg->tls_ca_file, cfg->tls_fingerprint,
				     err) < 0) {
		char why[sizeof(err->text)];

		snprintf(why, sizeof(why), "%s", err->text);
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				 "control channel to %s:%u: %s", c->host,
				 c->port, why);
	}
	return 0;
}

static int
authenticate(struct ctl_client *c, const struct config *cfg,
	     const char *password, struct mrerr *err)
{
	char *plain = ctl_proto_encode_plain("", cfg->admin_user, password);
	char *line = xasprintf("AUTH PLAIN %s", plain);
	int r = request(c, line, NULL, NULL, err);

	explicit_bzero(plain, strlen(plain));
	explicit_bzero(line, strlen(line));
	free(plain);
	free(line);
	if (r <= 0)
		return r;
	return mrerr_set(err,
			 strstr(c->last, "[UNAVAILABLE]") ? MRERR_CONNECTION
							  : MRERR_CONFIG,
			 MRERR_RETRY_LATER,
			 "login to the replica's agent on %s as %s was "
			 "rejected (%s); check [master] admin_user and the "
			 "password file against [replica] admin_user there",
			 c->host, cfg->admin_user, c->last);
}

static bool
offers_starttls(const char *greeting)
{
	char *copy = xstrdup(greeting), *save = NULL;
	bool found = false;

	for (char *w = strtok_r(copy, " ", &save); w != NULL && !found;
	     w = strtok_r(NULL, " ", &save))
		found = strcasecmp(w, "STARTTLS") == 0;
	free(copy);
	return found;
}

struct ctl_client *
ctl_client_connect(const struct config *cfg, const char *password,
		   struct mrerr *err)
{
	struct ctl_client *c = xcalloc(1, sizeof(*c));
	char greeting[CTL_LINE_MAX];

	c->fd = -1;
	c->host = xstrdup(cfg->replica_host);
	c->port = cfg->control_port;
	c->timeout_ms = cfg->imap_timeout * 1000u;
	if (connect_tcp(c, err) < 0 || read_line(c, greeting, err) < 0)
		goto fail;
	if (strncmp(greeting, "OK MAILREPL ", 12) != 0) {
		mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
			  "%s:%u is not a mailrepl agent (greeting \"%.60s\"); "
			  "check [master] control_port",
			  c->host, c->port, greeting);
		goto fail;
	}
	/* TLS whenever the agent offers it; off loopback it is required,
	 * because the password follows. */
	if (offers_starttls(greeting)) {
		if (start_tls(c, cfg, err) < 0)
			goto fail;
	} else if (!ctl_net_host_is_loopback(c->host)) {
		mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
			  "the replica's agent on %s does not offer STARTTLS; "
			  "set [replica] tls_cert_file and tls_key_file there",
			  c->host);
		goto fail;
	}
	if (authenticate(c, cfg, password, err) < 0)
		goto fail;
	return c;
fail:
	ctl_client_free(&c);
	return NULL;
}

void
ctl_client_free(struct ctl_client **cp)
{
	struct ctl_client *c = *cp;

	if (c == NULL)
		return;
	if (c->fd >= 0) {
		struct mrerr ignored;

		if (!c->dead)
			request(c, "QUIT", NULL, NULL, &ignored);
		if (c->tls != NULL)
			gnutls_bye(c->tls, GNUTLS_SHUT_WR);
		close(c->fd);
	}
	if (c->tls != NULL)
		gnutls_deinit(c->tls);
	if (c->creds != NULL)
		gnutls_certificate_free_credentials(c->creds);
	free(c->host);
	free(c);
	*cp = NULL;
}

struct mode_answer {
	char mode[16];
	char bound[CTL_MASTER_ID_MAX + 1];
};

static void
on_mode(const char *data, void *ctx)
{
	struct mode_answer *a = ctx;

	if (strncmp(data, "MODE ", 5) == 0)
		snprintf(a->mode, sizeof(a->mode), "%s", data + 5);
	else if (strncmp(data, "BOUND ", 6) == 0)
		snprintf(a->bound, sizeof(a->bound), "%s", data + 6);
}

int
ctl_client_bind(struct ctl_client *c, const char *master_id, bool takeover,
		struct mrerr *err)
{
	struct mode_answer a;
	char *line;
	int r;

	memset(&a, 0, sizeof(a));
	r = request(c, "MODE", on_mode, &a, err);
	if (r != 0)
		return r < 0 ? -1
			     : mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
					 "MODE on %s failed: %s", c->host,
					 c->last);
	if (strcmp(a.mode, "replica") != 0)
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				 "%s is in %s mode, not replica: refusing to "
				 "push to it. Run mailrepl mode replica there "
				 "first",
				 c->host, a.mode[0] ? a.mode : "an unknown");

	line = xasprintf("BIND %s%s", master_id, takeover ? " TAKEOVER" : "");
	r = request(c, line, NULL, NULL, err);
	free(line);
	if (r == 0) {
		log_msg(LOG_LVL_INFO, "bind", "replica %s is bound to this "
			"master (%s): %s", c->host, master_id, c->last + 3);
		return 0;
	}
	if (r < 0)
		return -1;
	if (strstr(c->last, "[BOUND-ELSEWHERE]") != NULL)
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				 "replica %s is bound to another master (%s): "
				 "refusing to push to it. If this master "
				 "replaces that one, run mailrepl init "
				 "--takeover",
				 c->host, a.bound[0] ? a.bound : "unknown");
	return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
			 "BIND on %s failed: %s", c->host, c->last);
}

int
ctl_client_init_begin(struct ctl_client *c, const char *master_id,
		      struct mrerr *err)
{
	char *line = xasprintf("INIT BEGIN %s", master_id);
	int r = request(c, line, NULL, NULL, err);

	free(line);
	if (r > 0)
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				 "INIT BEGIN on %s failed: %s", c->host,
				 c->last);
	return r;
}

int
ctl_client_init_end(struct ctl_client *c, const char *result,
		    unsigned long long messages, unsigned long long bytes,
		    unsigned long long rejected, time_t finished,
		    struct mrerr *err)
{
	char *line = xasprintf("INIT END result=%s messages=%llu bytes=%llu "
			       "rejected=%llu finished=%lld",
			       result, messages, bytes, rejected,
			       (long long)finished);
	int r = request(c, line, NULL, NULL, err);

	free(line);
	if (r > 0)
		return mrerr_set(err, MRERR_CONNECTION, MRERR_RETRY_LATER,
				 "INIT END on %s failed: %s", c->host,
				 c->last);
	return r;
}

char *
ctl_client_master_id(void)
{
	char host[256];

	if (gethostname(host, sizeof(host)) < 0 || host[0] == '\0')
		return xstrdup("master");
	host[sizeof(host) - 1] = '\0';
	/* A master id has at most 64 characters of a limited set. */
	for (char *p = host; *p; p++) {
		if (!strchr("abcdefghijklmnopqrstuvwxyz"
			    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-:", *p))
			*p = '-';
	}
	host[CTL_MASTER_ID_MAX] = '\0';
	return xstrdup(host);
}

struct ctl_client *
ctl_client_local(const struct config *cfg, struct mrerr *err)
{
	struct ctl_client *c = xcalloc(1, sizeof(*c));
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	char greeting[CTL_LINE_MAX];

	c->host = xstrdup(cfg->control_socket);
	c->timeout_ms = 10000;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s",
		 cfg->control_socket);
	if (c->fd < 0 ||
	    connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		mrerr_set(err, MRERR_CONNECTION, MRERR_RETRY_LATER,
			  "cannot reach the local agent on %s (%s); is "
			  "mailrepld running?",
			  cfg->control_socket, strerror(errno));
		goto fail;
	}
	if (read_line(c, greeting, err) < 0)
		goto fail;
	if (strncmp(greeting, "OK MAILREPL ", 12) != 0) {
		mrerr_set(err, MRERR_CONNECTION, MRERR_RETRY_LATER,
			  "the local agent on %s refused the connection: %s",
			  cfg->control_socket, greeting);
		goto fail;
	}
	return c;
fail:
	ctl_client_free(&c);
	return NULL;
}

int
ctl_client_command(struct ctl_client *c, const char *line, struct mrerr *err)
{
	int r = request(c, line, NULL, NULL, err);

	if (r > 0)
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER, "%s",
				 c->last);
	return r;
}

static void
on_status(const char *data, void *ctx)
{
	bool *requested = ctx;

	if (strcmp(data, "INIT-REQUESTED yes") == 0)
		*requested = true;
}

int
ctl_client_status(struct ctl_client *c, unsigned long long pending,
		  unsigned long long oldest_age_s, time_t last_applied,
		  const char *last_error, bool *init_requested_r,
		  struct mrerr *err)
{
	char *quoted = ctl_proto_quote(last_error != NULL ? last_error : "");
	char *line = xasprintf("STATUS pending=%llu oldest_age_s=%llu "
			       "last_applied=%lld last_error=%s",
			       pending, oldest_age_s, (long long)last_applied,
			       quoted);
	int r;

	*init_requested_r = false;
	r = request(c, line, on_status, init_requested_r, err);
	free(line);
	free(quoted);
	if (r > 0)
		return mrerr_set(err, MRERR_CONNECTION, MRERR_RETRY_LATER,
				 "STATUS on %s failed: %s", c->host, c->last);
	return r;
}

int
ctl_client_query(struct ctl_client *c, const char *line,
		 void (*on_data)(const char *data, void *context),
		 void *context, struct mrerr *err)
{
	int r = request(c, line, on_data, context, err);

	if (r > 0)
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER, "%s",
				 c->last);
	return r;
}
