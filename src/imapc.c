/* IMAP client for the replica on libetpan: session set-up, capabilities,
 * and the one place where libetpan results become failure classes
 * (imapc_fail). Mailbox commands live in imapc_mailbox.c, message
 * commands in imapc_message.c, MULTIAPPEND in imapc_append.c and
 * certificate checks in imapc_tls.c. */
#include <config.h>
#include "imapc.h"
#include "imapc_private.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------ */
/* Failure classification                                              */

/* libetpan keeps the raw lines of the last response in imap_stream_buffer,
 * and the tagged line, or an untagged BYE, comes last. Its imap_response
 * field is not used because after a BAD it still contains the text of the
 * previous command (libetpan 1.9.4). */
void
imapc_last_response(struct imapc *c, char *buf, size_t size)
{
	MMAPString *raw = c->imap != NULL ? c->imap->imap_stream_buffer : NULL;
	const char *line, *end;
	char tag[16];
	size_t n, taglen;

	buf[0] = '\0';
	if (raw == NULL || raw->str == NULL || raw->len == 0)
		return;
	end = raw->str + raw->len;
	while (end > raw->str && (end[-1] == '\n' || end[-1] == '\r'))
		end--;
	line = end;
	while (line > raw->str && line[-1] != '\n')
		line--;

	taglen = (size_t)snprintf(tag, sizeof(tag), "%d ", c->imap->imap_tag);
	if ((size_t)(end - line) > taglen && memcmp(line, tag, taglen) == 0)
		line += taglen;
	else if (end - line > 6 && memcmp(line, "* BYE ", 6) == 0)
		line += 2;
	else
		return;

	n = (size_t)(end - line) < size - 1 ? (size_t)(end - line) : size - 1;
	for (size_t i = 0; i < n; i++)
		buf[i] = isprint((unsigned char)line[i]) ? line[i] : '?';
	buf[n] = '\0';
}

void
imapc_response_code(const char *text, char *code, size_t size)
{
	const char *p = strchr(text, ' ');
	size_t n;

	code[0] = '\0';
	if (p == NULL || p[1] != '[')
		return;
	p += 2;
	n = strcspn(p, " ]");
	if (n >= size)
		n = size - 1;
	memcpy(code, p, n);
	code[n] = '\0';
}

/* Response codes (RFC 5530) after which the same command can succeed
 * later. Any other NO is final until something changes. A NO without a
 * code is treated as temporary too, so nothing is dropped on a guess. */
static enum mrerr_retry
no_retry(const char *text)
{
	static const char *const temporary[] = {
		"", "INUSE", "UNAVAILABLE", "SERVERBUG", "OVERQUOTA",
		"EXPUNGEISSUED",
	};
	char code[32];

	imapc_response_code(text, code, sizeof(code));
	for (size_t i = 0; i < sizeof(temporary) / sizeof(*temporary); i++)
		if (strcasecmp(code, temporary[i]) == 0)
			return MRERR_RETRY_LATER;
	return MRERR_RETRY_NEVER;
}

/* Close the stream without LOGOUT, because after a stream error the peer
 * may never respond and mailimap_free() would wait for it. */
static void
mark_dead(struct imapc *c)
{
	c->dead = true;
	xfree(&c->selected);
	if (c->imap == NULL)
		return;
	if (c->imap->imap_stream != NULL) {
		mailstream_close(c->imap->imap_stream);
		c->imap->imap_stream = NULL;
	}
	c->imap->imap_state = MAILIMAP_STATE_DISCONNECTED;
}

static const char *
connection_reason(int r)
{
	switch (r) {
	case MAILIMAP_ERROR_STREAM:
		return "the connection was closed, or the server did not "
		       "answer in time";
	case MAILIMAP_ERROR_PARSE:
		return "the server's response could not be parsed";
	case MAILIMAP_ERROR_FATAL:
	case MAILIMAP_ERROR_DONT_ACCEPT_CONNECTION:
		return "the server ended the session";
	case MAILIMAP_ERROR_SSL:
		return "the TLS handshake failed; check that [master] imap_tls "
		       "matches what the replica offers on imap_port";
	case MAILIMAP_ERROR_BAD_STATE:
		return "the session was not in the state the command needs "
		       "(a bug in mailrepl)";
	case MAILIMAP_ERROR_MEMORY:
		return "libetpan ran out of memory";
	case MAILIMAP_ERROR_PROTOCOL:
		return "the server's response did not match the command";
	default:
		return "the command failed";
	}
}

static int
fail_connection(struct imapc *c, int r, const char *command,
		const char *text, struct mrerr *err)
{
	unsigned timeout = (unsigned)mailimap_get_timeout(c->imap);

	mark_dead(c);
	if (r == MAILIMAP_ERROR_CONNECTION_REFUSED)
		return mrerr_set(err, MRERR_CONNECTION, MRERR_RETRY_LATER,
				 "cannot connect to replica %s:%u: connection "
				 "refused, unreachable or no answer within "
				 "%u s; check [master] replica_host and "
				 "imap_port",
				 c->host, c->port, timeout);
	return mrerr_set(err, MRERR_CONNECTION,
			 r == MAILIMAP_ERROR_BAD_STATE ? MRERR_RETRY_NOW
						       : MRERR_RETRY_LATER,
			 "connection to replica %s:%u failed during %s: %s "
			 "(libetpan error %d, timeout %u s)%s%s",
			 c->host, c->port, command, connection_reason(r), r,
			 timeout, text[0] ? ": " : "", text);
}

static int
fail_login(struct imapc *c, const char *command, const char *text,
	   struct mrerr *err)
{
	const char *shown = strncmp(text, "NO ", 3) == 0 ? text + 3 : text;
	char code[32];

	imapc_response_code(text, code, sizeof(code));
	if (strcasecmp(code, "UNAVAILABLE") == 0) {
		mark_dead(c);
		return mrerr_set(err, MRERR_CONNECTION, MRERR_RETRY_LATER,
				 "%s on %s failed for now: %s", command,
				 c->host, shown);
	}
	/* The administrator's own credentials were accepted, but it may not
	 * act for this user: with a master-user passdb that means the user
	 * does not exist on the replica. That fails one user, not the run. */
	if (strcasecmp(code, "AUTHORIZATIONFAILED") == 0)
		return mrerr_set(err, MRERR_USER, MRERR_RETRY_NEVER,
				 "%s on %s was rejected (%s); user %s does not "
				 "exist on the replica, or the administrator "
				 "may not act for it: create the user there "
				 "first",
				 command, c->host, shown, c->user);
	return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
			 "%s on %s was rejected (%s); check [master] "
			 "admin_user and the password file, and that user %s "
			 "exists on the replica",
			 command, c->host, shown[0] ? shown : "(no response)",
			 c->user);
}

static int
fail_bad(struct imapc *c, const char *command, const char *text,
	 struct mrerr *err)
{
	enum mrerr_scope scope = MRERR_FOLDER;

	if (c->imap->imap_state == MAILIMAP_STATE_NON_AUTHENTICATED)
		scope = MRERR_CONFIG;
	return mrerr_set(err, scope, MRERR_RETRY_NEVER,
			 "%s on %s was rejected as invalid: %s", command,
			 c->host, text);
}

int
imapc_fail(struct imapc *c, int r, const char *command, struct mrerr *err)
{
	char text[IMAPC_RESPONSE_TEXT_MAX];

	imapc_last_response(c, text, sizeof(text));
	switch (r) {
	case MAILIMAP_ERROR_LOGIN:
		return fail_login(c, command, text, err);
	case MAILIMAP_ERROR_STARTTLS:
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				 "STARTTLS on replica %s:%u was rejected: %s; "
				 "set [master] imap_tls = imaps, or none for a "
				 "loopback replica",
				 c->host, c->port, text);
	case MAILIMAP_ERROR_INVAL:
		return mrerr_set(err, MRERR_FOLDER, MRERR_RETRY_NEVER,
				 "%s: libetpan rejected an argument as invalid "
				 "before sending it",
				 command);
	case MAILIMAP_ERROR_PROTOCOL:
		/* libetpan returns PROTOCOL both for a BAD and for a response
		 * with the wrong tag. Only the latter breaks the session. A
		 * BAD before login concerns no folder. */
		if (strncmp(text, "BAD", 3) != 0)
			break;
		return fail_bad(c, command, text, err);
	case MAILIMAP_ERROR_STREAM:
	case MAILIMAP_ERROR_PARSE:
	case MAILIMAP_ERROR_CONNECTION_REFUSED:
	case MAILIMAP_ERROR_MEMORY:
	case MAILIMAP_ERROR_FATAL:
	case MAILIMAP_ERROR_DONT_ACCEPT_CONNECTION:
	case MAILIMAP_ERROR_SSL:
	case MAILIMAP_ERROR_BAD_STATE:
	case MAILIMAP_ERROR_NEEDS_MORE_DATA:
	case MAILIMAP_ERROR_CAPABILITY:
	case MAILIMAP_ERROR_NOOP:
	case MAILIMAP_ERROR_LOGOUT:
		break;
	default:
		/* Every other code is a NO to the named command. */
		return mrerr_set(err, MRERR_FOLDER, no_retry(text),
				 "%s on %s failed: %s", command, c->host,
				 strncmp(text, "NO ", 3) == 0 ? text + 3
							      : text);
	}
	return fail_connection(c, r, command, text, err);
}

int
imapc_check_alive(struct imapc *c, const char *command, struct mrerr *err)
{
	if (!c->dead)
		return 0;
	return mrerr_set(err, MRERR_CONNECTION, MRERR_RETRY_NOW,
			 "%s: the connection to replica %s:%u was closed "
			 "after an earlier failure; reconnect",
			 command, c->host, c->port);
}

int
imapc_check_selected(struct imapc *c, const char *command, struct mrerr *err)
{
	if (imapc_check_alive(c, command, err) < 0)
		return -1;
	if (c->selected != NULL)
		return 0;
	return mrerr_set(err, MRERR_FOLDER, MRERR_RETRY_NEVER,
			 "%s needs a selected mailbox; call imapc_select "
			 "first (a bug in mailrepl)",
			 command);
}

/* ------------------------------------------------------------------ */
/* Session set-up                                                      */

static void
ignore_sigpipe_once(void)
{
	struct sigaction old, ign;

	/* A write to a closed socket must fail with EPIPE, not kill the
	 * process. A handler that the program installed is left alone. */
	if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL) {
		memset(&ign, 0, sizeof(ign));
		ign.sa_handler = SIG_IGN;
		sigemptyset(&ign.sa_mask);
		sigaction(SIGPIPE, &ign, NULL);
	}
}

static void
ignore_sigpipe(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, ignore_sigpipe_once);
}

/* libetpan's TLS context callback: send SNI for a DNS name (RFC 6066
 * does not allow an IP address there). */
static void
set_server_name(struct mailstream_ssl_context *ctx, void *data)
{
	struct imapc *c = data;
	unsigned char addr[sizeof(struct in6_addr)];

	if (inet_pton(AF_INET, c->host, addr) == 1 ||
	    inet_pton(AF_INET6, c->host, addr) == 1)
		return;
	mailstream_ssl_set_server_name(ctx, c->host);
}

/* Drop the cached capability list, so that the next response that
 * carries one, or an explicit CAPABILITY, fills it again. */
static void
forget_capabilities(struct imapc *c)
{
	struct mailimap_connection_info *info = c->imap->imap_connection_info;

	if (info != NULL && info->imap_capability != NULL) {
		mailimap_capability_data_free(info->imap_capability);
		info->imap_capability = NULL;
	}
}

static int
load_capabilities(struct imapc *c, struct mrerr *err)
{
	struct mailimap_capability_data *caps = NULL;
	struct mailimap_connection_info *info = c->imap->imap_connection_info;
	int r;

	if (info != NULL && info->imap_capability != NULL)
		return 0;
	r = mailimap_capability(c->imap, &caps);
	if (r != MAILIMAP_NO_ERROR)
		return imapc_fail(c, r, "CAPABILITY", err);
	mailimap_capability_data_free(caps);
	return 0;
}

static int
start_tls(struct imapc *c, unsigned timeout, struct mrerr *err)
{
	int r;

	if (load_capabilities(c, err) < 0)
		return -1;
	if (!imapc_has_capability(c, "STARTTLS"))
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				 "replica %s:%u does not offer STARTTLS; set "
				 "[master] imap_tls = imaps, or none for a "
				 "loopback replica",
				 c->host, c->port);
	r = mailimap_socket_starttls_with_callback(c->imap, set_server_name,
						   c);
	if (r != MAILIMAP_NO_ERROR)
		return imapc_fail(c, r, "STARTTLS", err);

	/* The new TLS layer may not inherit the session's timeout. */
	mailstream_low_set_timeout(mailstream_get_low(c->imap->imap_stream),
				   timeout);
	/* Capabilities seen before TLS may have been forged (RFC 3501,
	 * 6.2.1). */
	forget_capabilities(c);
	return 0;
}

static int
verify_peer(struct imapc *c, const struct imapc_params *params,
	    struct mrerr *err)
{
	unsigned char *der = NULL;
	ssize_t len;
	int ret;

	len = mailstream_ssl_get_certificate(c->imap->imap_stream, &der);
	if (len <= 0) {
		free(der);
		return mrerr_set(err, MRERR_CONNECTION, MRERR_RETRY_LATER,
				 "replica %s:%u sent no TLS certificate",
				 c->host, c->port);
	}
	ret = imapc_verify_certificate(der, (size_t)len, c->host,
				       params->ca_file, params->fingerprint,
				       err);
	free(der);
	return ret;
}

/* The [master] imap_tls value of a mode. */
static const char *
tls_mode_name(enum cfg_tls tls)
{
	switch (tls) {
	case CFG_TLS_STARTTLS:
		return "starttls";
	case CFG_TLS_IMAPS:
		return "imaps";
	case CFG_TLS_NONE:
		return "none";
	}
	return "unknown";
}

static int
open_session(struct imapc *c, const struct imapc_params *params,
	     struct mrerr *err)
{
	int r;

	if (params->tls == CFG_TLS_IMAPS)
		r = mailimap_ssl_connect_with_callback(
			c->imap, params->host, (uint16_t)params->port,
			set_server_name, c);
	else
		r = mailimap_socket_connect(c->imap, params->host,
					    (uint16_t)params->port);
	if (r == MAILIMAP_NO_ERROR_AUTHENTICATED)
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				 "replica %s:%u logged the connection in "
				 "without credentials (PREAUTH), so mailrepl "
				 "cannot act for a user there",
				 c->host, c->port);
	if (r == MAILIMAP_ERROR_STREAM) {
		/* Typical of a plain connection to the IMAPS port, where the
		 * server waits for a TLS handshake. */
		mark_dead(c);
		return mrerr_set(err, MRERR_CONNECTION, MRERR_RETRY_LATER,
				 "replica %s:%u sent no IMAP greeting within "
				 "%u s; check that [master] imap_port is the "
				 "port for imap_tls = %s",
				 c->host, c->port, params->timeout,
				 tls_mode_name(params->tls));
	}
	/* A connect succeeds with any of the three NO_ERROR codes. */
	if (r != MAILIMAP_NO_ERROR && r != MAILIMAP_NO_ERROR_NON_AUTHENTICATED)
		return imapc_fail(c, r, "connect", err);

	if (params->tls == CFG_TLS_STARTTLS &&
	    start_tls(c, params->timeout, err) < 0)
		return -1;
	if (params->tls != CFG_TLS_NONE && verify_peer(c, params, err) < 0)
		return -1;
	return load_capabilities(c, err);
}

/* SASL PLAIN with the user as authorization identity. Returns 0, -1 with
 * *err, or 1 when the local SASL library could not run PLAIN at all (it
 * needs libsasl2-modules) and nothing was sent. */
static int
login_sasl(struct imapc *c, const struct imapc_params *params,
	   const char *what, struct mrerr *err)
{
	int tag = c->imap->imap_tag;
	int r;

	forget_capabilities(c);
	r = mailimap_authenticate(c->imap, "PLAIN", c->host, NULL, NULL,
				  c->user, params->admin_user,
				  params->password, NULL);
	if (r == MAILIMAP_NO_ERROR)
		return 0;
	if (r == MAILIMAP_ERROR_LOGIN && c->imap->imap_tag == tag)
		return 1;
	return imapc_fail(c, r, what, err);
}

static int
login(struct imapc *c, const struct imapc_params *params, struct mrerr *err)
{
	char *name = xasprintf("%s*%s", c->user, params->admin_user);
	char *what = xasprintf("login as %s", name);
	/* Read before any login attempt drops the capability cache. */
	bool login_disabled = imapc_has_capability(c, "LOGINDISABLED");
	int r, ret = -1;

	if (imapc_has_capability(c, "AUTH=PLAIN")) {
		r = login_sasl(c, params, what, err);
		if (r <= 0) {
			ret = r;
			goto out;
		}
		log_msg(LOG_LVL_WARN, "imap_sasl_unavailable",
			"SASL PLAIN failed in the client before anything was "
			"sent (is libsasl2-modules installed?); using LOGIN "
			"%s instead",
			name);
	}
	if (login_disabled) {
		mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
			  "replica %s:%u refuses LOGIN on this connection "
			  "(LOGINDISABLED) and offers no AUTH=PLAIN; set "
			  "[master] imap_tls = starttls or imaps",
			  c->host, c->port);
		goto out;
	}

	/* Dovecot reads "user*admin" as the master user admin acting for
	 * user (auth_master_user_separator = *). */
	forget_capabilities(c);
	r = mailimap_login(c->imap, name, params->password);
	if (r != MAILIMAP_NO_ERROR) {
		imapc_fail(c, r, what, err);
		goto out;
	}
	ret = 0;
out:
	free(what);
	free(name);
	return ret;
}

/* The value of a capability "NAME=value", or NULL. */
static const char *
capability_value(struct imapc *c, const char *prefix)
{
	struct mailimap_connection_info *info = c->imap->imap_connection_info;
	size_t len = strlen(prefix);
	clistiter *it;

	if (info == NULL || info->imap_capability == NULL)
		return NULL;
	for (it = clist_begin(info->imap_capability->cap_list); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_capability *cap = clist_content(it);

		if (cap->cap_type == MAILIMAP_CAPABILITY_NAME &&
		    strncasecmp(cap->cap_data.cap_name, prefix, len) == 0)
			return cap->cap_data.cap_name + len;
	}
	return NULL;
}

static int
read_separator(struct imapc *c, struct mrerr *err)
{
	clist *list = NULL;
	int r;

	r = mailimap_list(c->imap, "", "", &list);
	if (r != MAILIMAP_NO_ERROR) {
		if (list != NULL)
			mailimap_list_result_free(list);
		return imapc_fail(c, r, "LIST \"\" \"\"", err);
	}
	if (clist_begin(list) != NULL) {
		struct mailimap_mailbox_list *mb =
			clist_content(clist_begin(list));

		/* NIL (a flat namespace) keeps the default. */
		if (mb->mb_delimiter != '\0')
			c->separator = mb->mb_delimiter;
	}
	mailimap_list_result_free(list);
	return 0;
}

static int
after_login(struct imapc *c, struct mrerr *err)
{
	const char *limit;

	/* Dovecot sends the full list in the login response. Other servers
	 * may not, and the list from before login is incomplete. */
	if (load_capabilities(c, err) < 0)
		return -1;
	if (!imapc_has_capability(c, "UIDPLUS"))
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				 "replica %s:%u does not offer UIDPLUS (RFC "
				 "4315), which mailrepl needs to map messages",
				 c->host, c->port);

	c->literal_plus = imapc_has_capability(c, "LITERAL+");
	c->literal_minus = imapc_has_capability(c, "LITERAL-");
	c->multiappend = imapc_has_capability(c, "MULTIAPPEND");
	limit = capability_value(c, "APPENDLIMIT=");
	c->appendlimit = limit != NULL ? strtoull(limit, NULL, 10) : 0;
	return read_separator(c, err);
}

struct imapc *
imapc_connect(const struct imapc_params *params, const char *user,
	      struct mrerr *err)
{
	struct imapc *c = xcalloc(1, sizeof(*c));
	long long started = monotonic_ms();
	struct logline *line;

	ignore_sigpipe();
	c->host = xstrdup(params->host);
	c->port = params->port;
	c->user = xstrdup(user);
	c->separator = '.';
	c->imap = mailimap_new(0, NULL);
	if (c->imap == NULL) {
		mrerr_set(err, MRERR_CONNECTION, MRERR_RETRY_LATER,
			  "libetpan ran out of memory");
		goto fail;
	}
	mailimap_set_timeout(c->imap, params->timeout);

	if (open_session(c, params, err) < 0 || login(c, params, err) < 0 ||
	    after_login(c, err) < 0)
		goto fail;

	line = log_begin(LOG_LVL_INFO, "imap_connected");
	log_str(line, "user", user);
	log_str(line, "host", c->host);
	log_int(line, "port", c->port);
	log_str(line, "tls", tls_mode_name(params->tls));
	log_int(line, "ms", monotonic_ms() - started);
	log_end(line);
	c->logged_in = true;
	return c;
fail:
	/* Nothing after a failed set-up is worth a LOGOUT. */
	mark_dead(c);
	imapc_free(&c);
	return NULL;
}

/* Only sessions that reached imap_connected get a closing line. */
static void
log_close_event(const struct imapc *c, bool logout)
{
	struct logline *line = log_begin(LOG_LVL_INFO, "imap_close");

	log_str(line, "user", c->user);
	log_str(line, "host", c->host);
	log_str(line, "how", logout ? "logout" : "dropped");
	log_end(line);
}

void
imapc_free(struct imapc **cp)
{
	struct imapc *c = *cp;

	if (c == NULL)
		return;
	if (c->imap != NULL) {
		bool open = !c->dead && c->imap->imap_stream != NULL;

		if (open)
			mailimap_logout(c->imap);
		mailimap_free(c->imap);
		if (c->logged_in)
			log_close_event(c, open);
	}
	free(c->host);
	free(c->user);
	free(c->selected);
	free(c);
	*cp = NULL;
}

bool
imapc_has_capability(struct imapc *c, const char *name)
{
	struct mailimap_connection_info *info = c->imap->imap_connection_info;
	bool auth = strncasecmp(name, "AUTH=", 5) == 0;
	clistiter *it;

	if (info == NULL || info->imap_capability == NULL)
		return false;
	for (it = clist_begin(info->imap_capability->cap_list); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_capability *cap = clist_content(it);

		if (auth && cap->cap_type == MAILIMAP_CAPABILITY_AUTH_TYPE &&
		    strcasecmp(cap->cap_data.cap_auth_type, name + 5) == 0)
			return true;
		if (!auth && cap->cap_type == MAILIMAP_CAPABILITY_NAME &&
		    strcasecmp(cap->cap_data.cap_name, name) == 0)
			return true;
	}
	return false;
}

char
imapc_separator(struct imapc *c)
{
	return c->separator;
}

uint64_t
imapc_appendlimit(struct imapc *c)
{
	return c->appendlimit;
}

void
imapc_params_from_config(struct imapc_params *params,
			 const struct config *cfg, const char *password)
{
	*params = (struct imapc_params){
		.host = cfg->replica_host,
		.port = cfg->imap_port,
		.tls = cfg->imap_tls,
		.ca_file = cfg->tls_ca_file,
		.fingerprint = cfg->tls_fingerprint,
		.admin_user = cfg->admin_user,
		.password = password,
		.timeout = cfg->imap_timeout,
	};
}
