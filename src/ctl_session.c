/* One control connection: reading lines, dispatching requests, TLS. */
#include <config.h>
#include "ctl_private.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void
ctl_session_init(struct ctl_session *s, struct ctl_ctx *ctx, int fd,
		 enum ctl_transport transport, const char *peer, bool loopback)
{
	memset(s, 0, sizeof(*s));
	s->ctx = ctx;
	s->fd = fd;
	s->transport = transport;
	s->loopback = loopback;
	/* The local socket's peer was checked to be root or our own user
	 * before the session started. */
	s->authenticated = transport == CTL_TRANSPORT_LOCAL;
	snprintf(s->peer, sizeof(s->peer), "%s", peer);

	pthread_mutex_lock(&ctx->lock);
	s->settings = ctx->settings;
	s->settings->refs++;
	pthread_mutex_unlock(&ctx->lock);
}

void
ctl_session_deinit(struct ctl_session *s)
{
	if (s->tls != NULL) {
		gnutls_deinit(s->tls);
		s->tls = NULL;
	}
	pthread_mutex_lock(&s->ctx->lock);
	ctl_settings_unref(&s->settings);
	pthread_mutex_unlock(&s->ctx->lock);
	xfree(&s->master_id);
}

static int
write_fd(struct ctl_session *s, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n;

		if (s->tls != NULL)
			n = gnutls_record_send(s->tls, data, len);
		else
			n = send(s->fd, data, len, MSG_NOSIGNAL);
		if (n < 0 && (errno == EINTR || n == GNUTLS_E_INTERRUPTED ||
			      n == GNUTLS_E_AGAIN))
			continue;
		if (n <= 0)
			return -1;
		data += n;
		len -= n;
	}
	return 0;
}

int
ctl_session_send(struct ctl_session *s, const char *fmt, ...)
{
	va_list ap;
	char *text, *line;
	int ret;

	va_start(ap, fmt);
	text = xvasprintf(fmt, ap);
	va_end(ap);
	line = xasprintf("%s\r\n", text);
	if (s->write_fn != NULL)
		ret = s->write_fn(s, line, strlen(line));
	else
		ret = write_fd(s, line, strlen(line));
	if (ret < 0)
		s->close = true;
	free(text);
	free(line);
	return ret;
}

char *
ctl_session_capabilities(struct ctl_session *s)
{
	bool tcp = s->transport == CTL_TRANSPORT_TCP;
	bool offer_tls = tcp && s->tls == NULL && !s->authenticated &&
			 s->settings->tls_creds != NULL;

	return xasprintf("MAILREPL %d %s%s%s", CTL_PROTO_VERSION,
			 cfg_mode_name(s->settings->mode),
			 offer_tls ? " STARTTLS" : "",
			 tcp && !s->authenticated ? " AUTH=PLAIN" : "");
}

/* Commands that need no AUTH: the ones that lead to it. */
static bool
allowed_before_auth(enum ctl_cmd cmd)
{
	return cmd == CTL_CMD_CAPA || cmd == CTL_CMD_STARTTLS ||
	       cmd == CTL_CMD_AUTH || cmd == CTL_CMD_VERSION ||
	       cmd == CTL_CMD_QUIT;
}

static void
dispatch(struct ctl_session *s, const struct ctl_request *req)
{
	switch (req->cmd) {
	case CTL_CMD_CAPA:
		ctl_cmd_capa(s, req);
		break;
	case CTL_CMD_STARTTLS:
		ctl_cmd_starttls(s, req);
		break;
	case CTL_CMD_AUTH:
		ctl_cmd_auth(s, req);
		break;
	case CTL_CMD_VERSION:
		ctl_cmd_version(s, req);
		break;
	case CTL_CMD_MODE:
		ctl_cmd_mode(s, req);
		break;
	case CTL_CMD_BIND:
		ctl_cmd_bind(s, req);
		break;
	case CTL_CMD_INIT:
		ctl_cmd_init(s, req);
		break;
	case CTL_CMD_STATUS:
		ctl_cmd_status(s, req);
		break;
	case CTL_CMD_QUIT:
		ctl_session_send(s, "OK bye");
		s->close = true;
		break;
	case CTL_CMD_UNKNOWN:
		ctl_session_send(s, "BAD unknown command");
		break;
	}
}

void
ctl_session_handle_line(struct ctl_session *s, const char *line, size_t len)
{
	struct ctl_request req;
	const char *error;

	if (ctl_proto_parse(line, len, &req, &error) < 0) {
		ctl_session_send(s, "BAD %s", error);
		return;
	}
	if (!s->authenticated && !allowed_before_auth(req.cmd) &&
	    req.cmd != CTL_CMD_UNKNOWN)
		ctl_session_send(s, "NO [AUTH] %s needs AUTH first", req.word);
	else
		dispatch(s, &req);
	ctl_request_clear(&req);
}

/* Wait until fd is readable. Returns 1, 0 on the idle timeout, -1 on
 * error. TLS may hold decrypted bytes that poll cannot see. */
static int
wait_readable(struct ctl_session *s)
{
	struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
	int r;

	if (s->tls != NULL && gnutls_record_check_pending(s->tls) > 0)
		return 1;
	do
		r = poll(&pfd, 1, (int)s->ctx->idle_timeout_s * 1000);
	while (r < 0 && errno == EINTR);
	return r;
}

/* Read into the input buffer. Returns bytes read, 0 at EOF or on error,
 * -2 on the idle timeout. */
static ssize_t
read_more(struct ctl_session *s)
{
	size_t room = sizeof(s->in) - s->in_len;
	int ready = wait_readable(s);
	ssize_t n;

	if (ready == 0)
		return -2;
	if (ready < 0)
		return 0;
	do {
		if (s->tls != NULL)
			n = gnutls_record_recv(s->tls, s->in + s->in_len, room);
		else
			n = recv(s->fd, s->in + s->in_len, room, 0);
	} while ((n < 0 && errno == EINTR) || n == GNUTLS_E_INTERRUPTED ||
		 n == GNUTLS_E_AGAIN);
	if (n < 0)
		return 0;
	s->in_len += n;
	return n;
}

static void
log_session_end(struct ctl_session *s, const char *reason)
{
	struct logline *line = log_begin(LOG_LVL_INFO, "ctl_close");

	log_str(line, "peer", s->peer);
	log_str(line, "reason", reason);
	log_end(line);
}

static int
handshake(struct ctl_session *s)
{
	int r;

	/* Bytes pipelined after STARTTLS were sent in clear text; they must
	 * not be read as if they came through TLS. */
	s->in_len = 0;
	if (gnutls_init(&s->tls, GNUTLS_SERVER | GNUTLS_NO_SIGNAL) < 0)
		return -1;
	gnutls_set_default_priority(s->tls);
	gnutls_credentials_set(s->tls, GNUTLS_CRD_CERTIFICATE,
			       s->settings->tls_creds);
	gnutls_transport_set_int(s->tls, s->fd);
	gnutls_handshake_set_timeout(s->tls, 30 * 1000);
	do
		r = gnutls_handshake(s->tls);
	while (r < 0 && !gnutls_error_is_fatal(r));
	if (r < 0) {
		struct logline *line = log_begin(LOG_LVL_WARN, "ctl_tls");

		log_str(line, "peer", s->peer);
		log_str(line, "error", gnutls_strerror(r));
		log_end(line);
		return -1;
	}
	return 0;
}

/* Handle every complete line in the buffer. Returns a reason to close,
 * or NULL to read more. */
static const char *
handle_buffered(struct ctl_session *s)
{
	size_t line_len, consumed;
	int r;

	while ((r = ctl_proto_find_line(s->in, s->in_len, &line_len,
					&consumed)) == 1) {
		ctl_session_handle_line(s, s->in, line_len);
		memmove(s->in, s->in + consumed, s->in_len - consumed);
		s->in_len -= consumed;
		if (s->close)
			return "closed";
		if (s->start_tls) {
			s->start_tls = false;
			if (handshake(s) < 0)
				return "tls_failed";
		}
	}
	if (r < 0) {
		ctl_session_send(s, "BAD line too long");
		return "line_too_long";
	}
	return NULL;
}

void
ctl_session_run(struct ctl_session *s)
{
	char *capa = ctl_session_capabilities(s);
	const char *reason = NULL;
	struct logline *line = log_begin(LOG_LVL_INFO, "ctl_open");
	ssize_t n;

	log_str(line, "peer", s->peer);
	log_str(line, "transport",
		s->transport == CTL_TRANSPORT_TCP ? "tcp" : "local");
	log_end(line);
	if (ctl_session_send(s, "OK %s", capa) < 0)
		reason = "write_failed";
	free(capa);
	while (reason == NULL) {
		n = read_more(s);
		if (n == -2) {
			ctl_session_send(s,
					 "NO [TIMEOUT] idle for %u s, "
					 "closing",
					 s->ctx->idle_timeout_s);
			reason = "idle_timeout";
		} else if (n == 0) {
			reason = "eof";
		} else {
			reason = handle_buffered(s);
		}
	}
	log_session_end(s, reason);
}
