/* The control server: settings, listeners, accept threads and the
 * thread of each connection. The protocol itself is in ctl_session.c and
 * ctl_commands.c. */
#include <config.h>
#include "ctl_server.h"
#include "ctl_private.h"
#include "imapc.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Seconds for each step of the login that checks an AUTH password. */
#define AUTH_IMAP_TIMEOUT_S 30

struct ctl_listener {
	struct ctl_server *server;
	enum ctl_transport transport;
	char *spec; /* the listen address or the socket path */
	int fd;
	int stop_pipe[2];
	pthread_t thread;
};

struct ctl_server {
	struct ctl_ctx ctx;
	struct ctl_listener *tcp;   /* NULL unless in replica mode */
	struct ctl_listener *local; /* the control socket */
};

static int
load_tls(struct ctl_settings *st, const struct config *cfg, char **error_r)
{
	int r;

	if (cfg->tls_cert_file == NULL || cfg->tls_key_file == NULL)
		return 0;
	gnutls_certificate_allocate_credentials(&st->tls_creds);
	r = gnutls_certificate_set_x509_key_file(
		st->tls_creds, cfg->tls_cert_file, cfg->tls_key_file,
		GNUTLS_X509_FMT_PEM);
	if (r < 0) {
		*error_r = xasprintf("cannot load [replica] tls_cert_file %s "
				     "and tls_key_file %s: %s",
				     cfg->tls_cert_file, cfg->tls_key_file,
				     gnutls_strerror(r));
		return -1;
	}
	return 0;
}

struct ctl_settings *
ctl_settings_new(const struct config *cfg, char **error_r)
{
	struct ctl_settings *st = xcalloc(1, sizeof(*st));

	st->refs = 1;
	st->mode = cfg->mode;
	st->state_dir = xstrdup(cfg->state_dir);
	if (cfg->replica_admin_user != NULL)
		st->admin_user = xstrdup(cfg->replica_admin_user);
	st->imap_host = xstrdup(cfg->replica_imap_host);
	st->imap_port = cfg->replica_imap_port;
	st->imap_timeout = AUTH_IMAP_TIMEOUT_S;
	if (ctl_net_parse_networks(cfg->trusted_networks, &st->nets,
				   &st->net_count, error_r) < 0 ||
	    load_tls(st, cfg, error_r) < 0)
		ctl_settings_unref(&st);
	return st;
}

void
ctl_settings_unref(struct ctl_settings **settings)
{
	struct ctl_settings *st = *settings;

	*settings = NULL;
	if (st == NULL || --st->refs > 0)
		return;
	free(st->state_dir);
	free(st->admin_user);
	free(st->imap_host);
	free(st->nets);
	if (st->tls_creds != NULL)
		gnutls_certificate_free_credentials(st->tls_creds);
	free(st);
}

enum ctl_auth_result
ctl_check_password_imap(const struct ctl_settings *settings,
			const char *password, char **detail_r)
{
	bool loopback = ctl_net_host_is_loopback(settings->imap_host);
	struct imapc_params params = {
		.host = settings->imap_host,
		.port = settings->imap_port,
		/* A loopback IMAP server counts the connection as secured,
		 * so a plain login works and needs no certificate. */
		.tls = loopback ? CFG_TLS_NONE : CFG_TLS_STARTTLS,
		.admin_user = settings->admin_user,
		.password = password,
		.timeout = settings->imap_timeout,
	};
	struct mrerr err;
	struct imapc *c;

	mrerr_clear(&err);
	c = imapc_connect(&params, settings->admin_user, &err);
	if (c != NULL) {
		imapc_free(&c);
		return CTL_AUTH_OK;
	}
	/* imapc classifies a rejected login as a configuration or user
	 * error. A connection failure does not show whether the password is
	 * wrong. imapc's text speaks of the master's settings, so a rejected
	 * login gets a text of its own. */
	if (err.scope != MRERR_CONFIG && err.scope != MRERR_USER) {
		*detail_r = xstrdup(err.text);
		return CTL_AUTH_UNAVAILABLE;
	}
	*detail_r = xasprintf("the IMAP server %s:%u rejected the login of "
			      "[replica] admin_user %s",
			      settings->imap_host, settings->imap_port,
			      settings->admin_user);
	return CTL_AUTH_REJECTED;
}

static size_t
count_sessions(const struct ctl_ctx *ctx, enum ctl_transport transport)
{
	size_t count = 0;

	for (size_t i = 0; i < ctx->session_count; i++)
		if (ctx->sessions[i]->transport == transport)
			count++;
	return count;
}

/* Session registry: the list lets ctl_server_stop() end every
 * connection. Each transport has its own limit, so that TCP peers
 * cannot lock the local administrator out. */
static bool
register_session(struct ctl_ctx *ctx, struct ctl_session *s)
{
	bool ok = false;

	pthread_mutex_lock(&ctx->lock);
	if (!ctx->stopping &&
	    count_sessions(ctx, s->transport) < ctx->max_connections) {
		ctx->sessions =
			xgrow(ctx->sessions, &ctx->session_cap,
			      ctx->session_count + 1, sizeof(*ctx->sessions));
		ctx->sessions[ctx->session_count++] = s;
		ok = true;
	}
	pthread_mutex_unlock(&ctx->lock);
	return ok;
}

static void
unregister_session(struct ctl_ctx *ctx, struct ctl_session *s)
{
	pthread_mutex_lock(&ctx->lock);
	for (size_t i = 0; i < ctx->session_count; i++) {
		if (ctx->sessions[i] != s)
			continue;
		ctx->sessions[i] = ctx->sessions[--ctx->session_count];
		break;
	}
	pthread_cond_broadcast(&ctx->idle);
	pthread_mutex_unlock(&ctx->lock);
}

static void *
session_thread(void *arg)
{
	struct ctl_session *s = arg;
	struct ctl_ctx *ctx = s->ctx;
	int fd = s->fd;

	ctl_session_run(s);
	/* Unregister before close: ctl_server_stop() calls shutdown() on
	 * registered descriptors, which must not be reused by then. */
	ctl_session_deinit(s);
	unregister_session(ctx, s);
	close(fd);
	free(s);
	return NULL;
}

static void
log_reject(const char *peer, const char *reason)
{
	struct logline *line = log_begin(LOG_LVL_WARN, "ctl_reject");

	log_str(line, "peer", peer);
	log_str(line, "reason", reason);
	log_end(line);
}

static void
start_session(struct ctl_ctx *ctx, int fd, enum ctl_transport transport,
	      const char *peer, bool loopback)
{
	struct ctl_session *s = xmalloc(sizeof(*s));
	pthread_attr_t attr;
	pthread_t thread;

	ctl_session_init(s, ctx, fd, transport, peer, loopback);
	if (!register_session(ctx, s)) {
		log_reject(peer, "too_many_connections");
		ctl_session_send(s, "NO [UNAVAILABLE] too many connections, "
				    "try again later");
		goto fail;
	}
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&thread, &attr, session_thread, s) != 0) {
		pthread_attr_destroy(&attr);
		unregister_session(ctx, s);
		log_reject(peer, "thread_create_failed");
		goto fail;
	}
	pthread_attr_destroy(&attr);
	return;
fail:
	ctl_session_deinit(s);
	close(fd);
	free(s);
}

/* A TCP peer outside the trusted networks is closed before any byte is
 * sent, so that it learns nothing about this service. */
static void
accept_tcp(struct ctl_ctx *ctx, int fd)
{
	struct sockaddr_storage addr;
	socklen_t len = sizeof(addr);
	char peer[64];
	bool trusted;

	if (getpeername(fd, (struct sockaddr *)&addr, &len) < 0) {
		close(fd);
		return;
	}
	ctl_net_addr_text((struct sockaddr *)&addr, peer, sizeof(peer));
	pthread_mutex_lock(&ctx->lock);
	trusted = ctl_net_in_networks((struct sockaddr *)&addr,
				      ctx->settings->nets,
				      ctx->settings->net_count);
	pthread_mutex_unlock(&ctx->lock);
	if (!trusted) {
		log_reject(peer, "untrusted");
		close(fd);
		return;
	}
	start_session(ctx, fd, CTL_TRANSPORT_TCP, peer,
		      ctl_net_is_loopback((struct sockaddr *)&addr));
}

/* Only root and the agent's own user may use the local socket. */
static void
accept_local(struct ctl_ctx *ctx, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	char peer[64];

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
	    (cred.uid != 0 && cred.uid != getuid())) {
		snprintf(peer, sizeof(peer), "local uid=%ld",
			 len == sizeof(cred) ? (long)cred.uid : -1L);
		log_reject(peer, "uid_not_allowed");
		close(fd);
		return;
	}
	snprintf(peer, sizeof(peer), "local uid=%ld", (long)cred.uid);
	start_session(ctx, fd, CTL_TRANSPORT_LOCAL, peer, true);
}

/* Out of descriptors or memory, accept() fails at once again: pause so
 * that the thread does not spin, and log the cause. */
static void
accept_failed(struct ctl_listener *l)
{
	struct logline *line;

	if (errno == EINTR || errno == EAGAIN || errno == ECONNABORTED)
		return;
	line = log_begin(LOG_LVL_ERROR, "ctl_accept");
	log_str(line, "listen", l->spec);
	log_str(line, "error", strerror(errno));
	log_end(line);
	poll(NULL, 0, 100);
}

static void *
accept_thread(void *arg)
{
	struct ctl_listener *l = arg;
	struct pollfd pfd[2] = {{.fd = l->fd, .events = POLLIN},
				{.fd = l->stop_pipe[0], .events = POLLIN}};
	int fd;

	for (;;) {
		if (poll(pfd, 2, -1) < 0 && errno != EINTR) {
			log_msg(LOG_LVL_ERROR, "ctl_accept",
				"poll on %s failed: %s; no longer accepting",
				l->spec, strerror(errno));
			break;
		}
		if (pfd[1].revents != 0)
			break;
		if ((pfd[0].revents & POLLIN) == 0)
			continue;
		fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			accept_failed(l);
			continue;
		}
		if (l->transport == CTL_TRANSPORT_TCP)
			accept_tcp(&l->server->ctx, fd);
		else
			accept_local(&l->server->ctx, fd);
	}
	return NULL;
}

static int
bind_tcp(const char *spec, char **error_r)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE};
	struct addrinfo *res = NULL;
	char *host = NULL, *port = NULL;
	int fd = -1, one = 1, zero = 0, r;

	if (ctl_net_split_listen(spec, &host, &port, error_r) < 0)
		goto out;
	r = getaddrinfo(host, port, &hints, &res);
	if (r != 0) {
		*error_r = xasprintf("cannot resolve [replica] listen %s: %s",
				     spec, gai_strerror(r));
		goto out;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		/* "[::]" accepts IPv4 peers too, as IPv4-mapped addresses. */
		if (res->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero,
				   sizeof(zero));
	}
	if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 ||
	    listen(fd, 64) < 0) {
		*error_r = xasprintf("cannot listen on [replica] listen %s: "
				     "%s",
				     spec, strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
out:
	if (res != NULL)
		freeaddrinfo(res);
	free(host);
	free(port);
	return fd;
}

/* Create the socket's directory (0755) when missing, one level at a
 * time like mkdir -p. */
static int
make_parent_dirs(const char *path)
{
	char *copy = xstrdup(path);
	int ret = 0;

	for (char *p = copy + 1; *p != '\0' && ret == 0; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(copy, 0755) < 0 && errno != EEXIST)
			ret = -1;
		*p = '/';
	}
	free(copy);
	return ret;
}

/* Remove a socket file left by an agent that is gone. A socket that
 * still accepts connections belongs to a running agent: keep it. */
static int
remove_stale_socket(const char *path, struct sockaddr_un *sun, char **error_r)
{
	struct stat st;
	int fd;

	if (lstat(path, &st) < 0)
		return 0;
	if (!S_ISSOCK(st.st_mode)) {
		*error_r = xasprintf("[general] control_socket %s exists and "
				     "is not a socket; remove it or choose "
				     "another path",
				     path);
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)sun, sizeof(*sun)) == 0) {
		close(fd);
		*error_r = xasprintf("[general] control_socket %s is in use "
				     "by a running agent",
				     path);
		return -1;
	}
	if (fd >= 0)
		close(fd);
	unlink(path);
	return 0;
}

static int
bind_local(const char *path, char **error_r)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = -1;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		*error_r = xasprintf("[general] control_socket %s is longer "
				     "than %zu bytes",
				     path, sizeof(sun.sun_path) - 1);
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if (make_parent_dirs(path) < 0) {
		*error_r = xasprintf("cannot create the directory of "
				     "[general] control_socket %s: %s",
				     path, strerror(errno));
		return -1;
	}
	if (remove_stale_socket(path, &sun, error_r) < 0)
		return -1;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    chmod(path, 0600) < 0 || listen(fd, 16) < 0) {
		*error_r = xasprintf("cannot listen on [general] "
				     "control_socket %s: %s",
				     path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static void
listener_stop(struct ctl_listener **listener)
{
	struct ctl_listener *l = *listener;

	*listener = NULL;
	if (l == NULL)
		return;
	if (write(l->stop_pipe[1], "x", 1) < 0)
		log_msg(LOG_LVL_ERROR, "ctl_stop",
			"cannot wake the accept "
			"thread: %s",
			strerror(errno));
	pthread_join(l->thread, NULL);
	close(l->fd);
	close(l->stop_pipe[0]);
	close(l->stop_pipe[1]);
	if (l->transport == CTL_TRANSPORT_LOCAL)
		unlink(l->spec);
	free(l->spec);
	free(l);
}

static struct ctl_listener *
listener_start(struct ctl_server *server, enum ctl_transport transport,
	       const char *spec, char **error_r)
{
	struct ctl_listener *l;
	int fd = transport == CTL_TRANSPORT_TCP ? bind_tcp(spec, error_r)
						: bind_local(spec, error_r);

	if (fd < 0)
		return NULL;
	l = xcalloc(1, sizeof(*l));
	l->server = server;
	l->transport = transport;
	l->spec = xstrdup(spec);
	l->fd = fd;
	if (pipe2(l->stop_pipe, O_CLOEXEC) < 0 ||
	    pthread_create(&l->thread, NULL, accept_thread, l) != 0) {
		*error_r = xasprintf("cannot start the listener on %s: %s",
				     spec, strerror(errno));
		close(fd);
		free(l->spec);
		free(l);
		return NULL;
	}
	log_msg(LOG_LVL_INFO, "ctl_listen", "listening on %s", spec);
	return l;
}

/* Replace *current by a listener on spec (NULL: none) unless it listens
 * there already. When the new one cannot start, the old one is started
 * again, so the server keeps listening where it did. */
static int
listener_update(struct ctl_server *server, struct ctl_listener **current,
		enum ctl_transport transport, const char *spec, char **error_r)
{
	char *old_spec;
	char *ignored = NULL;

	if (*current != NULL && spec != NULL &&
	    strcmp((*current)->spec, spec) == 0)
		return 0;
	old_spec = *current != NULL ? xstrdup((*current)->spec) : NULL;
	/* The old listener goes first: the new address may overlap it,
	 * as [::]:2005 and 127.0.0.1:2005 do. */
	listener_stop(current);
	if (spec != NULL)
		*current = listener_start(server, transport, spec, error_r);
	if (spec != NULL && *current == NULL && old_spec != NULL) {
		*current =
			listener_start(server, transport, old_spec, &ignored);
		free(ignored);
	}
	free(old_spec);
	return spec != NULL && *current == NULL ? -1 : 0;
}

static const char *
tcp_spec(const struct config *cfg)
{
	return cfg->mode == CFG_MODE_REPLICA ? cfg->listen : NULL;
}

int
ctl_server_start(const struct config *cfg, struct ctl_server **server_r,
		 char **error_r)
{
	struct ctl_server *server = xcalloc(1, sizeof(*server));
	struct ctl_ctx *ctx = &server->ctx;

	*server_r = NULL;
	pthread_mutex_init(&ctx->lock, NULL);
	pthread_cond_init(&ctx->idle, NULL);
	ctx->check_password = ctl_check_password_imap;
	ctx->idle_timeout_s = CTL_IDLE_TIMEOUT_S;
	ctx->max_connections = CTL_MAX_CONNECTIONS;
	ctx->settings = ctl_settings_new(cfg, error_r);
	if (ctx->settings == NULL ||
	    listener_update(server, &server->local, CTL_TRANSPORT_LOCAL,
			    cfg->control_socket, error_r) < 0 ||
	    listener_update(server, &server->tcp, CTL_TRANSPORT_TCP,
			    tcp_spec(cfg), error_r) < 0) {
		ctl_server_stop(&server);
		return -1;
	}
	*server_r = server;
	return 0;
}

int
ctl_server_reload(struct ctl_server *server, const struct config *cfg,
		  char **error_r)
{
	struct ctl_settings *settings = ctl_settings_new(cfg, error_r);
	struct ctl_ctx *ctx = &server->ctx;

	if (settings == NULL)
		return -1;
	if (listener_update(server, &server->local, CTL_TRANSPORT_LOCAL,
			    cfg->control_socket, error_r) < 0 ||
	    listener_update(server, &server->tcp, CTL_TRANSPORT_TCP,
			    tcp_spec(cfg), error_r) < 0) {
		ctl_settings_unref(&settings);
		return -1;
	}
	/* Running sessions keep their reference to the old settings. */
	pthread_mutex_lock(&ctx->lock);
	ctl_settings_unref(&ctx->settings);
	ctx->settings = settings;
	pthread_mutex_unlock(&ctx->lock);
	log_msg(LOG_LVL_INFO, "ctl_reload",
		"control server settings "
		"reloaded");
	return 0;
}

void
ctl_server_set_holds_mail(struct ctl_server *server, ctl_holds_mail_fn fn,
			  void *context)
{
	pthread_mutex_lock(&server->ctx.lock);
	server->ctx.holds_mail = fn;
	server->ctx.holds_mail_context = context;
	pthread_mutex_unlock(&server->ctx.lock);
}

void
ctl_server_stop(struct ctl_server **server)
{
	struct ctl_server *srv = *server;
	struct ctl_ctx *ctx;

	*server = NULL;
	if (srv == NULL)
		return;
	ctx = &srv->ctx;
	listener_stop(&srv->tcp);
	listener_stop(&srv->local);

	/* shutdown() wakes each session from poll or recv; the session
	 * then ends and unregisters itself. */
	pthread_mutex_lock(&ctx->lock);
	ctx->stopping = true;
	for (size_t i = 0; i < ctx->session_count; i++)
		shutdown(ctx->sessions[i]->fd, SHUT_RDWR);
	while (ctx->session_count > 0)
		pthread_cond_wait(&ctx->idle, &ctx->lock);
	ctl_settings_unref(&ctx->settings);
	pthread_mutex_unlock(&ctx->lock);

	free(ctx->sessions);
	pthread_cond_destroy(&ctx->idle);
	pthread_mutex_destroy(&ctx->lock);
	free(srv);
}
