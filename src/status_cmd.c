/* "mailrepl status": gather the figures and judge them. Printing is in
 * status_cmd_print.c. */
#include <config.h>
#include "status_cmd.h"

#include "ctl_client.h"
#include "ctl_peer.h"
#include "daemon.h"
#include "status_cmd_private.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int
status_cmd_parse(int argc, char **argv, struct status_options *opts_r)
{
	static const struct option options[] = {
		{"json", no_argument, NULL, 'j'},
		{"peer", no_argument, NULL, 'p'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;

	memset(opts_r, 0, sizeof(*opts_r));
	while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		if (c == 'j')
			opts_r->json = true;
		else if (c == 'p')
			opts_r->peer = true;
		else if (c == 'h')
			opts_r->help = true;
		else
			return -1;
	}
	if (optind < argc) {
		fprintf(stderr, "mailrepl status: unexpected argument %s\n",
			argv[optind]);
		return -1;
	}
	return 0;
}

static void
set_fatal(struct status_view *v, const char *text)
{
	if (v->fatal[0] == '\0')
		snprintf(v->fatal, sizeof(v->fatal), "%s", text);
}

/* The agent is alive when its pid file names a live mailrepld. An agent
 * whose pid file was removed still accepts connections on its socket. */
static void
check_agent(struct status_view *v)
{
	char *path = daemon_pidfile_path(v->cfg);
	struct ctl_client *c;
	struct mrerr err;

	v->pid = daemon_pidfile_running(path);
	free(path);
	if (v->pid > 0) {
		v->agent_running = true;
		return;
	}
	mrerr_clear(&err);
	c = ctl_client_local(v->cfg, &err);
	if (c != NULL) {
		v->agent_running = true;
		ctl_client_free(&c);
	}
}

static void
load_record(struct status_view *v)
{
	char *error = NULL;
	int r = status_record_load(v->cfg->state_dir, &v->rec, &error);

	if (r < 0) {
		snprintf(v->record_error, sizeof(v->record_error), "%s", error);
		free(error);
		return;
	}
	v->have_record = r == 1;
}

static void
init_from_run(struct status_init *init, const struct store_run *run)
{
	init->found = true;
	init->local = true;
	snprintf(init->result, sizeof(init->result), "%s",
		 store_run_result_name(run->result));
	init->started = run->started;
	init->finished = run->finished;
	init->messages = run->messages;
	init->bytes = run->bytes;
	init->rejected = run->rejected;
	init->uploaded = run->uploaded;
	init->adopted = run->adopted;
	init->skipped = run->skipped;
	snprintf(init->error, sizeof(init->error), "%s",
		 run->error != NULL ? run->error : "");
}

/* Read the last initial replication and the change queue. A state store
 * that does not exist yet means neither has happened; it is not created
 * here, because status is read-only. */
static void
read_store(struct status_view *v)
{
	char *db = xasprintf("%s/state.db", v->cfg->state_dir);
	struct store *store = NULL;
	struct store_run run;
	char *error = NULL;
	bool found = false;
	long long oldest_ms = 0;

	if (access(db, F_OK) < 0 && errno == ENOENT)
		goto out;
	if (store_open(v->cfg->state_dir, &store, &error) < 0) {
		set_fatal(v, error);
		goto out;
	}
	if (store_run_last(store, "init", &run, &found) < 0 ||
	    store_queue_stats(store, &v->pending, &oldest_ms) < 0) {
		char *text = xasprintf("cannot read the state store in %s: %s",
				       v->cfg->state_dir, store_error(store));

		set_fatal(v, text);
		free(text);
		goto out;
	}
	if (found) {
		init_from_run(&v->init, &run);
		store_run_clear(&run);
	}
	v->oldest_queued = oldest_ms / 1000;
out:
	if (store != NULL)
		store_close(&store);
	free(error);
	free(db);
}

static void
copy_str(struct json_object *obj, const char *key, char *buf, size_t size)
{
	const char *s = ctl_peer_get_str(obj, key);

	snprintf(buf, size, "%s", s != NULL ? s : "");
}

static struct json_object *
member(struct json_object *obj, const char *key)
{
	struct json_object *m = NULL;

	if (!json_object_object_get_ex(obj, key, &m) ||
	    !json_object_is_type(m, json_type_object))
		return NULL;
	return m;
}

static void
figures_from_json(struct json_object *obj, struct status_figures *fig)
{
	if (obj == NULL)
		return;
	fig->found = true;
	fig->pending = (unsigned long long)ctl_peer_get_int(obj, "pending");
	fig->oldest_age_s =
		(unsigned long long)ctl_peer_get_int(obj, "oldest_age_s");
	fig->last_applied = ctl_peer_get_int(obj, "last_applied");
	fig->received = ctl_peer_get_int(obj, "received");
	copy_str(obj, "last_error", fig->last_error, sizeof(fig->last_error));
}

/* Read the replica's record of the initial replication, which is what
 * INIT BEGIN and INIT END reported. One is running when the last BEGIN
 * is newer than the last END. */
static void
init_from_peer(struct json_object *peer, struct status_init *init)
{
	struct json_object *begin = member(peer, "init_begin");
	struct json_object *end = member(peer, "init_end");

	if (begin == NULL && end == NULL)
		return;
	init->found = true;
	init->started = ctl_peer_get_int(begin, "started");
	if (end != NULL) {
		copy_str(end, "result", init->result, sizeof(init->result));
		init->finished = ctl_peer_get_int(end, "finished");
		init->messages =
			(unsigned long long)ctl_peer_get_int(end, "messages");
		init->bytes =
			(unsigned long long)ctl_peer_get_int(end, "bytes");
		init->rejected =
			(unsigned long long)ctl_peer_get_int(end, "rejected");
	}
	if (end == NULL || init->started > init->finished) {
		snprintf(init->result, sizeof(init->result), "running");
		init->finished = 0;
	}
}

static void
read_peer_file(struct status_view *v)
{
	struct json_object *peer = NULL;
	char *error = NULL;

	if (ctl_peer_load(v->cfg->state_dir, &peer, &error) < 0) {
		set_fatal(v, error);
		free(error);
		return;
	}
	copy_str(peer, "bound_master", v->bound, sizeof(v->bound));
	v->bound_at = ctl_peer_get_int(peer, "bound_at");
	v->init_requested_at =
		ctl_peer_get_int(member(peer, "init_requested"), "requested");
	/* An empty record of a request still counts as a request, as the
	 * agent's STATUS response counts it. */
	if (v->init_requested_at == 0 && member(peer, "init_requested"))
		v->init_requested_at = -1;
	init_from_peer(peer, &v->init);
	figures_from_json(member(peer, "master_status"), &v->figures);
	json_object_put(peer);
}

static bool
key_is(const char *arg, size_t klen, const char *key)
{
	return strlen(key) == klen && strncmp(arg, key, klen) == 0;
}

static unsigned long long
to_count(const char *value)
{
	return strtoull(value, NULL, 10);
}

/* One key=value of the replica's "* STATUS" or "* MASTER-STATUS" line.
 * Keys this version does not know are ignored, as doc/protocol.md requires. */
static void
peer_field(struct status_peer_view *pv, const char *line, const char *arg,
	   size_t klen, const char *value)
{
	struct status_figures *fig = &pv->figures;

	if (strcmp(line, "STATUS") == 0) {
		if (key_is(arg, klen, "mode"))
			snprintf(pv->mode, sizeof(pv->mode), "%s", value);
		else if (key_is(arg, klen, "bound") && strcmp(value, "-") != 0)
			snprintf(pv->bound, sizeof(pv->bound), "%s", value);
		else if (key_is(arg, klen, "init_result"))
			snprintf(pv->init_result, sizeof(pv->init_result), "%s",
				 value);
		else if (key_is(arg, klen, "init_finished"))
			pv->init_finished = (long long)to_count(value);
		return;
	}
	if (strcmp(line, "MASTER-STATUS") != 0)
		return;
	if (key_is(arg, klen, "pending"))
		fig->pending = to_count(value);
	else if (key_is(arg, klen, "oldest_age_s"))
		fig->oldest_age_s = to_count(value);
	else if (key_is(arg, klen, "last_applied"))
		fig->last_applied = (long long)to_count(value);
	else if (key_is(arg, klen, "received"))
		fig->received = (long long)to_count(value);
	else if (key_is(arg, klen, "last_error"))
		snprintf(fig->last_error, sizeof(fig->last_error), "%s", value);
}

/* --peer: one data line of the replica's STATUS response. */
static void
peer_line(const char *data, void *context)
{
	struct status_peer_view *pv = context;
	struct ctl_response resp;
	char *line = xasprintf("* %s", data);
	const char *error;

	if (ctl_proto_parse_response(line, strlen(line), &resp, &error) < 0) {
		free(line);
		return;
	}
	if (strcmp(resp.name, "INIT-REQUESTED") == 0 && resp.argc > 0)
		pv->init_requested = strcmp(resp.argv[0], "yes") == 0;
	if (strcmp(resp.name, "MASTER-STATUS") == 0)
		pv->figures.found = true;
	for (size_t i = 0; i < resp.argc; i++) {
		const char *value;
		size_t klen;

		if (!ctl_proto_split_kv(resp.argv[i], &klen, &value))
			continue;
		peer_field(pv, resp.name, resp.argv[i], klen, value);
	}
	ctl_response_clear(&resp);
	free(line);
}

static void
query_peer(struct status_view *v)
{
	struct status_peer_view *pv = &v->peer;
	struct ctl_client *c = NULL;
	struct mrerr err;

	pv->queried = true;
	mrerr_clear(&err);
	if (v->cfg->control_port == 0) {
		snprintf(pv->error, sizeof(pv->error),
			 "no control channel ([master] control_port is 0)");
		return;
	}
	c = ctl_client_connect(v->cfg, v->cfg->admin_password, &err);
	if (c == NULL || ctl_client_query(c, "STATUS", peer_line, pv, &err) < 0)
		snprintf(pv->error, sizeof(pv->error), "%s", err.text);
	ctl_client_free(&c);
}

static bool
init_ok(const struct status_init *init)
{
	return strcmp(init->result, "ok") == 0 ||
	       strcmp(init->result, "rejected") == 0;
}

static void
input_from_init(struct status_input *in, const struct status_init *init)
{
	in->init_found = init->found;
	in->init_running = init->found && strcmp(init->result, "running") == 0;
	in->init_ok = init->found && init_ok(init);
	in->init_partial = init->found && strcmp(init->result, "rejected") == 0;
}

/* status_judge() returns when an out-of-sync state began. For the other
 * states, take the start from the agent's record when it judged the
 * same, or else from the event that caused the state. */
static long long
since_for(const struct status_view *v)
{
	const struct status_judgement *j = &v->judgement;

	if (j->since != 0)
		return j->since;
	if (v->have_record && v->agent_running &&
	    v->rec.judgement.state == j->state)
		return v->rec.judgement.since;
	if (j->state == SYNC_STATE_INITIALIZING)
		return v->init.started;
	if (j->state == SYNC_STATE_NOT_INITIALIZED)
		return v->init.finished;
	/* A master agent that is down stopped replicating when it last
	 * wrote its record. */
	if (j->state == SYNC_STATE_UNKNOWN && !v->agent_running &&
	    v->have_record)
		return v->rec.updated;
	return 0;
}

/* Judge with the live figures, as the agent does: the liveness check,
 * the last initial replication and the queue in the state store. */
static void
judge_master(struct status_view *v)
{
	struct status_input in = {.master = true};

	in.agent_running = v->agent_running;
	input_from_init(&in, &v->init);
	in.pending = v->pending;
	in.oldest_queued = v->oldest_queued;
	in.figures_at = v->now;
	in.out_of_sync_after = v->cfg->out_of_sync_after;
	status_judge(&in, v->now, &v->judgement);
}

/* A replica judges by the figures its master last sent. */
static void
judge_replica(struct status_view *v)
{
	struct status_input in = {.master = false};
	const struct status_figures *fig = &v->figures;

	in.agent_running = v->agent_running;
	input_from_init(&in, &v->init);
	if (fig->found) {
		in.pending = fig->pending;
		if (fig->pending > 0)
			in.oldest_queued =
				fig->received - (long long)fig->oldest_age_s;
		in.figures_at = fig->received;
	}
	in.out_of_sync_after = v->cfg->out_of_sync_after;
	status_judge(&in, v->now, &v->judgement);
}

static void
set_judgement(struct status_judgement *j, enum sync_state state,
	      enum status_level level, const char *reason)
{
	j->state = state;
	j->level = level;
	j->since = 0;
	/* A long reason is cut; the full text is in the "error" field. */
	snprintf(j->reason, sizeof(j->reason), "%.*s",
		 (int)sizeof(j->reason) - 1, reason);
}

static void
pick_last_error(struct status_view *v)
{
	const struct status_init *init = &v->init;

	if (v->cfg->mode == CFG_MODE_REPLICA) {
		if (v->figures.last_error[0] != '\0') {
			snprintf(v->last_error, sizeof(v->last_error), "%s",
				 v->figures.last_error);
			v->last_error_at = v->figures.received;
		}
		return;
	}
	if (v->have_record && v->rec.last_error[0] != '\0') {
		snprintf(v->last_error, sizeof(v->last_error), "%s",
			 v->rec.last_error);
		v->last_error_at = v->rec.last_error_at;
	}
	if (init->found && init->error[0] != '\0' &&
	    (v->last_error[0] == '\0' || init->finished > v->last_error_at)) {
		snprintf(v->last_error, sizeof(v->last_error), "%s",
			 init->error);
		v->last_error_at = init->finished;
	}
}

/* The exit code: the judgement's level, at least WARNING when --peer
 * could not reach the replica, UNKNOWN when the state is unreadable. */
static void
finish(struct status_view *v)
{
	enum status_level level;

	if (v->fatal[0] != '\0')
		set_judgement(&v->judgement, SYNC_STATE_UNKNOWN, STATUS_UNKNOWN,
			      v->fatal);
	else
		v->judgement.since = since_for(v);
	level = v->judgement.level;
	if (v->peer.queried && v->peer.error[0] != '\0' && level == STATUS_OK)
		level = STATUS_WARNING;
	v->exit_code = (int)level;
}

int
status_cmd_run(const struct config *cfg, const struct status_options *opts,
	       FILE *out)
{
	struct status_view *v = xcalloc(1, sizeof(*v));
	int code;

	v->cfg = cfg;
	v->opts = opts;
	v->now = (long long)time(NULL);
	check_agent(v);
	if (cfg->mode == CFG_MODE_MASTER) {
		load_record(v);
		read_store(v);
		if (opts->peer)
			query_peer(v);
		judge_master(v);
	} else if (cfg->mode == CFG_MODE_REPLICA) {
		read_peer_file(v);
		judge_replica(v);
	} else {
		set_judgement(&v->judgement, SYNC_STATE_STANDALONE, STATUS_OK,
			      "");
	}
	pick_last_error(v);
	finish(v);

	if (opts->json)
		status_print_json(v, out);
	else
		status_print_text(v, out);
	code = v->exit_code;
	free(v);
	return code;
}

int
status_cmd_fail(const struct status_options *opts, const char *error, FILE *out)
{
	struct status_view *v = xcalloc(1, sizeof(*v));

	v->opts = opts;
	v->now = (long long)time(NULL);
	set_fatal(v, error);
	finish(v);
	if (opts->json)
		status_print_json(v, out);
	else
		status_print_text(v, out);
	free(v);
	return STATUS_UNKNOWN;
}
