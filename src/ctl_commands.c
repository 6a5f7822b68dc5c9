/* The control protocol's request handlers (doc/protocol.md). */
#include <config.h>
#include "ctl_peer.h"
#include "ctl_private.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

void
ctl_cmd_capa(struct ctl_session *s, const struct ctl_request *req)
{
	char *capa;

	if (req->argc != 0) {
		ctl_session_send(s, "BAD CAPA takes no arguments");
		return;
	}
	capa = ctl_session_capabilities(s);
	ctl_session_send(s, "* %s", capa);
	ctl_session_send(s, "OK CAPA completed");
	free(capa);
}

void
ctl_cmd_starttls(struct ctl_session *s, const struct ctl_request *req)
{
	if (req->argc != 0)
		ctl_session_send(s, "BAD STARTTLS takes no arguments");
	else if (s->transport == CTL_TRANSPORT_LOCAL)
		ctl_session_send(s, "NO STARTTLS is not available on the "
				    "local socket");
	else if (s->tls != NULL)
		ctl_session_send(s, "BAD TLS is already active");
	else if (s->authenticated)
		ctl_session_send(s, "BAD STARTTLS is not allowed after AUTH");
	else if (s->settings->tls_creds == NULL)
		ctl_session_send(s, "NO [STARTTLS] TLS is not configured on "
				    "this replica");
	else if (ctl_session_send(s, "OK begin TLS negotiation") == 0)
		s->start_tls = true;
}

void
ctl_cmd_version(struct ctl_session *s, const struct ctl_request *req)
{
	char *end;
	unsigned long version;

	if (req->argc != 1) {
		ctl_session_send(s, "BAD expected VERSION <number>");
		return;
	}
	errno = 0;
	version = strtoul(req->argv[0], &end, 10);
	if (*end != '\0' || req->argv[0][0] < '0' || req->argv[0][0] > '9' ||
	    errno != 0)
		ctl_session_send(s, "BAD expected VERSION <number>");
	else if (version == CTL_PROTO_VERSION)
		ctl_session_send(s, "OK using version %d", CTL_PROTO_VERSION);
	else
		ctl_session_send(s,
				 "NO [VERSION %d] version %lu is not "
				 "supported",
				 CTL_PROTO_VERSION, version);
}

static void
log_auth(struct ctl_session *s, const char *user, const char *result,
	 const char *detail)
{
	struct logline *line = log_begin(
		strcmp(result, "ok") == 0 ? LOG_LVL_INFO : LOG_LVL_WARN,
		"ctl_auth");

	log_str(line, "peer", s->peer);
	log_str(line, "user", user);
	log_str(line, "result", result);
	if (detail != NULL)
		log_str(line, "reason", detail);
	log_end(line);
}

/* Checks done before the credentials are looked at. Returns false after
 * sending the final line. */
static bool
auth_allowed(struct ctl_session *s, const struct ctl_request *req)
{
	unsigned wait;

	if (s->authenticated) {
		ctl_session_send(s, "BAD already authenticated");
		return false;
	}
	if (req->argc != 2) {
		ctl_session_send(s, "BAD expected AUTH PLAIN <base64>");
		return false;
	}
	if (strcasecmp(req->argv[0], "PLAIN") != 0) {
		ctl_session_send(s, "NO [AUTH] mechanism is not supported; "
				    "use PLAIN");
		return false;
	}
	if (!s->loopback && s->tls == NULL) {
		ctl_session_send(s, "NO [STARTTLS] %s",
				 s->settings->tls_creds != NULL
					 ? "send STARTTLS before AUTH"
					 : "TLS is not configured on this "
					   "replica");
		return false;
	}
	pthread_mutex_lock(&s->ctx->lock);
	wait = ctl_ratelimit_wait(&s->ctx->rate, s->peer, time(NULL));
	pthread_mutex_unlock(&s->ctx->lock);
	if (wait > 0) {
		ctl_session_send(s,
				 "NO [UNAVAILABLE] too many failed logins, "
				 "try again in %u s",
				 wait);
		return false;
	}
	return true;
}

/* Check the decoded credentials; returns the result and *detail_r. */
static enum ctl_auth_result
auth_check(struct ctl_session *s, const char *authzid, const char *authcid,
	   const char *password, char **detail_r)
{
	const char *admin = s->settings->admin_user;

	if (admin == NULL) {
		*detail_r = xstrdup("[replica] admin_user is not set");
		return CTL_AUTH_REJECTED;
	}
	if (strcmp(authcid, admin) != 0) {
		*detail_r = xstrdup("not the replica's admin_user");
		return CTL_AUTH_REJECTED;
	}
	if (authzid[0] != '\0' && strcmp(authzid, authcid) != 0) {
		*detail_r = xstrdup("authorization identity differs");
		return CTL_AUTH_REJECTED;
	}
	return s->ctx->check_password(s->settings, password, detail_r);
}

static void
auth_finish(struct ctl_session *s, const char *user,
	    enum ctl_auth_result result, const char *detail)
{
	pthread_mutex_lock(&s->ctx->lock);
	if (result == CTL_AUTH_OK)
		ctl_ratelimit_clear(&s->ctx->rate, s->peer);
	else if (result == CTL_AUTH_REJECTED)
		ctl_ratelimit_fail(&s->ctx->rate, s->peer, time(NULL));
	pthread_mutex_unlock(&s->ctx->lock);

	if (result == CTL_AUTH_OK) {
		log_auth(s, user, "ok", NULL);
		s->authenticated = true;
		ctl_session_send(s, "OK authenticated");
	} else if (result == CTL_AUTH_REJECTED) {
		log_auth(s, user, "rejected", detail);
		ctl_session_send(s, "NO [AUTHENTICATIONFAILED] invalid "
				    "credentials");
	} else {
		log_auth(s, user, "unavailable", detail);
		ctl_session_send(s, "NO [UNAVAILABLE] cannot check the "
				    "password now, try again later");
	}
}

void
ctl_cmd_auth(struct ctl_session *s, const struct ctl_request *req)
{
	char *authzid = NULL, *authcid = NULL, *password = NULL;
	char *detail = NULL;
	const char *error;
	enum ctl_auth_result result;

	if (!auth_allowed(s, req))
		return;
	if (ctl_proto_decode_plain(req->argv[1], &authzid, &authcid, &password,
				   &error) < 0) {
		ctl_session_send(s, "BAD %s", error);
		return;
	}
	result = auth_check(s, authzid, authcid, password, &detail);
	auth_finish(s, authcid, result, detail);
	free(authzid);
	free(authcid);
	secret_free(&password);
	free(detail);
}

/* Load peer.json under the context lock. Returns the object, or NULL
 * after sending NO and unlocking. */
static struct json_object *
peer_begin(struct ctl_session *s)
{
	struct json_object *peer;
	char *error = NULL;

	pthread_mutex_lock(&s->ctx->lock);
	if (ctl_peer_load(s->settings->state_dir, &peer, &error) == 0)
		return peer;
	pthread_mutex_unlock(&s->ctx->lock);
	log_msg(LOG_LVL_ERROR, "ctl_state", "%s", error);
	ctl_session_send(s, "NO [SERVERBUG] cannot read the peer state");
	free(error);
	return NULL;
}

/* Save peer (when save) and unlock. Returns 0, or -1 after logging. */
static int
peer_end(struct ctl_session *s, struct json_object *peer, bool save)
{
	char *error = NULL;
	int ret = 0;

	if (save && ctl_peer_save(s->settings->state_dir, peer, &error) < 0)
		ret = -1;
	pthread_mutex_unlock(&s->ctx->lock);
	json_object_put(peer);
	if (ret < 0) {
		log_msg(LOG_LVL_ERROR, "ctl_state", "%s", error);
		free(error);
	}
	return ret;
}

static void
reply_saved(struct ctl_session *s, int saved, const char *ok_text)
{
	if (saved < 0)
		ctl_session_send(s, "NO [SERVERBUG] cannot save the peer "
				    "state");
	else
		ctl_session_send(s, "OK %s", ok_text);
}

void
ctl_cmd_mode(struct ctl_session *s, const struct ctl_request *req)
{
	struct json_object *peer;
	const char *bound;
	char *quoted;

	if (req->argc != 0) {
		ctl_session_send(s, "BAD MODE takes no arguments");
		return;
	}
	ctl_session_send(s, "* MODE %s", cfg_mode_name(s->settings->mode));
	if (s->settings->mode == CFG_MODE_REPLICA) {
		if ((peer = peer_begin(s)) == NULL)
			return;
		bound = ctl_peer_get_str(peer, "bound_master");
		/* Quoted because peer.json may have been edited by hand. */
		quoted = ctl_proto_quote(bound != NULL ? bound : "-");
		ctl_session_send(s, "* BOUND %s", quoted);
		free(quoted);
		peer_end(s, peer, false);
	}
	ctl_session_send(s, "OK MODE completed");
}

/* Replica-only commands; sends NO and returns false elsewhere. */
static bool
require_replica(struct ctl_session *s, const struct ctl_request *req)
{
	if (s->settings->mode == CFG_MODE_REPLICA)
		return true;
	ctl_session_send(s,
			 "NO [MODE] %s needs replica mode; this agent is "
			 "in %s mode",
			 req->word, cfg_mode_name(s->settings->mode));
	return false;
}

static void
log_bind(struct ctl_session *s, const char *master, const char *old)
{
	struct logline *line = log_begin(LOG_LVL_INFO, "ctl_bind");

	log_str(line, "peer", s->peer);
	log_str(line, "master", master);
	if (old != NULL)
		log_str(line, "previous", old);
	log_end(line);
}

static void
log_bind_rejected(struct ctl_session *s, const char *master, const char *bound)
{
	struct logline *line = log_begin(LOG_LVL_WARN, "ctl_bind_rejected");

	log_str(line, "peer", s->peer);
	log_str(line, "master", master);
	log_str(line, "bound", bound);
	log_end(line);
}

void
ctl_cmd_bind(struct ctl_session *s, const struct ctl_request *req)
{
	bool takeover =
		req->argc == 2 && strcasecmp(req->argv[1], "TAKEOVER") == 0;
	struct json_object *peer;
	const char *bound;
	char *old;
	int saved;

	if (!require_replica(s, req))
		return;
	if ((req->argc != 1 && !takeover) ||
	    !ctl_proto_master_id_valid(req->argv[0])) {
		ctl_session_send(s, "BAD expected BIND <master-id> "
				    "[TAKEOVER]; a master id has 1 to 64 of "
				    "A-Z a-z 0-9 . _ - :");
		return;
	}
	if ((peer = peer_begin(s)) == NULL)
		return;
	bound = ctl_peer_get_str(peer, "bound_master");
	if (bound != NULL && strcmp(bound, req->argv[0]) != 0 && !takeover) {
		char *quoted = ctl_proto_quote(bound);

		log_bind_rejected(s, req->argv[0], bound);
		ctl_session_send(s,
				 "NO [BOUND-ELSEWHERE] bound to master %s; "
				 "send BIND %s TAKEOVER to rebind",
				 quoted, req->argv[0]);
		free(quoted);
		peer_end(s, peer, false);
		return;
	}
	if (bound != NULL && strcmp(bound, req->argv[0]) == 0) {
		peer_end(s, peer, false);
		free(s->master_id);
		s->master_id = xstrdup(req->argv[0]);
		ctl_session_send(s, "OK already bound");
		return;
	}
	old = bound != NULL ? xstrdup(bound) : NULL;
	json_object_object_add(peer, "bound_master",
			       json_object_new_string(req->argv[0]));
	json_object_object_add(peer, "bound_at",
			       json_object_new_int64(time(NULL)));
	saved = peer_end(s, peer, true);
	if (saved == 0) {
		log_bind(s, req->argv[0], old);
		free(s->master_id);
		s->master_id = xstrdup(req->argv[0]);
	}
	reply_saved(s, saved, old != NULL ? "rebound" : "bound");
	free(old);
}

/* INIT END and STATUS carry figures only for the master bound by BIND
 * on this connection, and only while no other master took over. */
static bool
require_bound(struct ctl_session *s, struct json_object *peer)
{
	const char *bound = ctl_peer_get_str(peer, "bound_master");

	if (s->master_id == NULL) {
		ctl_session_send(s, "NO [BIND] send BIND <master-id> first");
		return false;
	}
	if (bound == NULL || strcmp(bound, s->master_id) != 0) {
		ctl_session_send(s, "NO [BOUND-ELSEWHERE] another master took "
				    "over this replica");
		return false;
	}
	return true;
}

/* A decimal count: digits only, no sign, fits in 63 bits. */
static bool
parse_count(const char *text, long long *value_r)
{
	char *end;
	unsigned long long v;

	if (text[0] < '0' || text[0] > '9' || strlen(text) > 19)
		return false;
	errno = 0;
	v = strtoull(text, &end, 10);
	if (*end != '\0' || errno != 0 || v > (unsigned long long)INT64_MAX)
		return false;
	*value_r = (long long)v;
	return true;
}

/* A JSON string of text cut to CTL_TEXT_MAX bytes at a UTF-8 character
 * boundary. The STATUS response repeats stored text next to other fields,
 * and must still fit in one line. */
static struct json_object *
new_text(const char *text)
{
	size_t len = strlen(text);

	if (len <= CTL_TEXT_MAX)
		return json_object_new_string(text);
	len = CTL_TEXT_MAX;
	while (len > 0 && ((unsigned char)text[len] & 0xc0) == 0x80)
		len--;
	return json_object_new_string_len(text, (int)len);
}

/* Parse key=value arguments from req->argv[first] on into obj: keys in
 * counts as numbers, keys in strings as text; other keys are ignored so
 * that a newer peer may add fields. Returns NULL or the BAD text. */
static const char *
parse_fields(const struct ctl_request *req, size_t first,
	     const char *const *counts, const char *const *strings,
	     struct json_object *obj)
{
	for (size_t i = first; i < req->argc; i++) {
		const char *value;
		size_t key_len;
		long long n;
		char *key;

		if (!ctl_proto_split_kv(req->argv[i], &key_len, &value))
			return "expected key=value arguments";
		key = xstrndup(req->argv[i], key_len);
		for (size_t k = 0; counts[k] != NULL; k++) {
			if (strcmp(key, counts[k]) != 0)
				continue;
			if (!parse_count(value, &n)) {
				free(key);
				return "a count is not a non-negative integer";
			}
			json_object_object_add(obj, key,
					       json_object_new_int64(n));
		}
		for (size_t k = 0; strings[k] != NULL; k++)
			if (strcmp(key, strings[k]) == 0)
				json_object_object_add(obj, key,
						       new_text(value));
		free(key);
	}
	return NULL;
}

/* Run the HOLDS-MAIL hook and return its result as the protocol word.
 * The hook runs without the context lock because it may take long. */
static const char *
holds_mail(struct ctl_session *s)
{
	ctl_holds_mail_fn fn;
	void *context;
	int holds;

	pthread_mutex_lock(&s->ctx->lock);
	fn = s->ctx->holds_mail;
	context = s->ctx->holds_mail_context;
	pthread_mutex_unlock(&s->ctx->lock);
	if (fn == NULL)
		return "unknown";
	holds = fn(context);
	if (holds > 0)
		return "yes";
	if (holds == 0)
		return "no";
	return "unknown";
}

static void
init_begin(struct ctl_session *s, const struct ctl_request *req)
{
	struct json_object *peer, *begin;
	int saved;

	if (req->argc != 2 || !ctl_proto_master_id_valid(req->argv[1])) {
		ctl_session_send(s, "BAD expected INIT BEGIN <master-id>");
		return;
	}
	if ((peer = peer_begin(s)) == NULL)
		return;
	if (!require_bound(s, peer)) {
		peer_end(s, peer, false);
		return;
	}
	if (strcmp(req->argv[1], s->master_id) != 0) {
		peer_end(s, peer, false);
		ctl_session_send(s, "BAD INIT BEGIN must name the master "
				    "bound by BIND");
		return;
	}
	begin = json_object_new_object();
	json_object_object_add(begin, "master",
			       json_object_new_string(s->master_id));
	json_object_object_add(begin, "started",
			       json_object_new_int64(time(NULL)));
	json_object_object_add(peer, "init_begin", begin);
	/* A new run fulfils the admin's request for one, so the request is
	 * cleared. */
	json_object_object_del(peer, "init_requested");
	saved = peer_end(s, peer, true);
	if (saved == 0)
		ctl_session_send(s, "* HOLDS-MAIL %s", holds_mail(s));
	reply_saved(s, saved, "INIT BEGIN recorded");
}

static bool
result_valid(const char *result)
{
	return result != NULL &&
	       (strcmp(result, "ok") == 0 || strcmp(result, "failed") == 0 ||
		strcmp(result, "rejected") == 0);
}

static void
init_end(struct ctl_session *s, const struct ctl_request *req)
{
	static const char *const counts[] = {"messages", "bytes", "rejected",
					     "finished", NULL};
	static const char *const strings[] = {"result", NULL};
	struct json_object *end = json_object_new_object(), *peer;
	const char *error = parse_fields(req, 1, counts, strings, end);
	int saved;

	if (error == NULL && !result_valid(ctl_peer_get_str(end, "result")))
		error = "INIT END needs result=ok, result=failed or "
			"result=rejected";
	if (error != NULL) {
		ctl_session_send(s, "BAD %s", error);
		json_object_put(end);
		return;
	}
	if ((peer = peer_begin(s)) == NULL) {
		json_object_put(end);
		return;
	}
	if (!require_bound(s, peer)) {
		peer_end(s, peer, false);
		json_object_put(end);
		return;
	}
	if (ctl_peer_get_int(end, "finished") == 0)
		json_object_object_add(end, "finished",
				       json_object_new_int64(time(NULL)));
	json_object_object_add(end, "master",
			       json_object_new_string(s->master_id));
	json_object_object_add(peer, "init_end", end);
	saved = peer_end(s, peer, true);
	reply_saved(s, saved, "INIT END recorded");
}

static void
init_request(struct ctl_session *s, const struct ctl_request *req)
{
	struct json_object *peer, *request;
	int saved;

	if (req->argc != 1) {
		ctl_session_send(s, "BAD INIT REQUEST takes no arguments");
		return;
	}
	if (s->transport != CTL_TRANSPORT_LOCAL) {
		ctl_session_send(s, "NO [LOCAL] INIT REQUEST is accepted only "
				    "on the local socket");
		return;
	}
	if ((peer = peer_begin(s)) == NULL)
		return;
	request = json_object_new_object();
	json_object_object_add(request, "requested",
			       json_object_new_int64(time(NULL)));
	json_object_object_add(peer, "init_requested", request);
	saved = peer_end(s, peer, true);
	if (saved == 0)
		log_msg(LOG_LVL_INFO, "ctl_init_request",
			"new initial replication requested from the master");
	reply_saved(s, saved,
		    "INIT REQUEST recorded; the master sees it in "
		    "its next STATUS");
}

void
ctl_cmd_init(struct ctl_session *s, const struct ctl_request *req)
{
	const char *sub = req->argc > 0 ? req->argv[0] : "";

	if (!require_replica(s, req))
		return;
	if (strcasecmp(sub, "BEGIN") == 0)
		init_begin(s, req);
	else if (strcasecmp(sub, "END") == 0)
		init_end(s, req);
	else if (strcasecmp(sub, "REQUEST") == 0)
		init_request(s, req);
	else
		ctl_session_send(s, "BAD expected INIT BEGIN, INIT END or "
				    "INIT REQUEST");
}

/* Append " key=value" for key of obj when it is set. */
static void
append_field(char **text, struct json_object *obj, const char *key,
	     const char *wire_key)
{
	struct json_object *v;
	char *value, *joined;

	if (obj == NULL || !json_object_object_get_ex(obj, key, &v))
		return;
	if (json_object_is_type(v, json_type_string))
		value = ctl_proto_quote(json_object_get_string(v));
	else
		value = xasprintf("%lld", (long long)json_object_get_int64(v));
	joined = xasprintf("%s %s=%s", *text, wire_key, value);
	free(*text);
	free(value);
	*text = joined;
}

static void
send_status(struct ctl_session *s, struct json_object *peer)
{
	struct json_object *end = NULL, *master = NULL, *requested = NULL;
	const char *bound = ctl_peer_get_str(peer, "bound_master");
	char *quoted = ctl_proto_quote(bound != NULL ? bound : "-");
	char *text = xasprintf("* STATUS mode=replica bound=%s", quoted);

	json_object_object_get_ex(peer, "init_end", &end);
	json_object_object_get_ex(peer, "master_status", &master);
	json_object_object_get_ex(peer, "init_requested", &requested);
	append_field(&text, end, "result", "init_result");
	append_field(&text, end, "finished", "init_finished");
	ctl_session_send(s, "%s", text);
	ctl_session_send(s, "* INIT-REQUESTED %s",
			 requested != NULL ? "yes" : "no");
	free(text);
	free(quoted);

	if (master == NULL)
		return;
	text = xstrdup("* MASTER-STATUS");
	append_field(&text, master, "pending", "pending");
	append_field(&text, master, "oldest_age_s", "oldest_age_s");
	append_field(&text, master, "last_applied", "last_applied");
	append_field(&text, master, "last_error", "last_error");
	append_field(&text, master, "received", "received");
	ctl_session_send(s, "%s", text);
	free(text);
}

/* Store the figures that the master sent; false after sending NO/BAD. */
static bool
store_master_status(struct ctl_session *s, const struct ctl_request *req,
		    struct json_object *peer)
{
	static const char *const counts[] = {"pending", "oldest_age_s",
					     "last_applied", NULL};
	static const char *const strings[] = {"last_error", NULL};
	struct json_object *status = json_object_new_object();
	const char *error;

	if (!require_bound(s, peer)) {
		json_object_put(status);
		return false;
	}
	error = parse_fields(req, 0, counts, strings, status);
	if (error != NULL) {
		ctl_session_send(s, "BAD %s", error);
		json_object_put(status);
		return false;
	}
	json_object_object_add(status, "received",
			       json_object_new_int64(time(NULL)));
	json_object_object_add(peer, "master_status", status);
	return true;
}

void
ctl_cmd_status(struct ctl_session *s, const struct ctl_request *req)
{
	struct json_object *peer;
	char *error = NULL;
	int saved = 0;

	if (s->settings->mode != CFG_MODE_REPLICA && req->argc == 0) {
		ctl_session_send(s, "* STATUS mode=%s",
				 cfg_mode_name(s->settings->mode));
		ctl_session_send(s, "OK STATUS completed");
		return;
	}
	if (!require_replica(s, req) || (peer = peer_begin(s)) == NULL)
		return;
	if (req->argc > 0) {
		if (!store_master_status(s, req, peer)) {
			peer_end(s, peer, false);
			return;
		}
		saved = ctl_peer_save(s->settings->state_dir, peer, &error);
	}
	if (saved < 0) {
		log_msg(LOG_LVL_ERROR, "ctl_state", "%s", error);
		free(error);
	}
	send_status(s, peer);
	peer_end(s, peer, false);
	reply_saved(s, saved, "STATUS completed");
}
