/* "mailrepl status": print the gathered figures as text or as the JSON
 * object documented in doc/status.md. */
#include <config.h>

#include "status_cmd_private.h"
#include "util.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NOT_RUNNING "mailrepld is not running"

static bool
is_master(const struct status_view *v)
{
	return v->cfg != NULL && v->cfg->mode == CFG_MODE_MASTER;
}

static bool
is_replica(const struct status_view *v)
{
	return v->cfg != NULL && v->cfg->mode == CFG_MODE_REPLICA;
}

/* Seconds since the oldest pending change was queued, 0 when none. */
static long long
oldest_age(const struct status_view *v)
{
	if (is_replica(v))
		return (long long)v->figures.oldest_age_s;
	if (v->pending == 0 || v->oldest_queued == 0 ||
	    v->now < v->oldest_queued)
		return 0;
	return v->now - v->oldest_queued;
}

static unsigned long long
pending_count(const struct status_view *v)
{
	return is_replica(v) ? v->figures.pending : v->pending;
}

/* Whether the pending figures are known at all. */
static bool
have_pending(const struct status_view *v)
{
	if (v->fatal[0] != '\0' || v->cfg == NULL)
		return false;
	return is_master(v) || (is_replica(v) && v->figures.found);
}

static const char *
state_words(const struct status_view *v)
{
	static const char *const words[] = {
		[SYNC_STATE_UNKNOWN] = "unknown",
		[SYNC_STATE_STANDALONE] = "standalone",
		[SYNC_STATE_NOT_INITIALIZED] = "not initialized",
		[SYNC_STATE_INITIALIZING] = "initializing",
		[SYNC_STATE_IN_SYNC] = "in sync",
		[SYNC_STATE_OUT_OF_SYNC] = "out of sync",
	};

	/* A master whose agent is down is judged "unknown", so name the cause. */
	if (is_master(v) && !v->agent_running &&
	    v->judgement.state == SYNC_STATE_UNKNOWN && v->fatal[0] == '\0')
		return "agent down";
	return words[v->judgement.state];
}

/* JSON */

/* ISO 8601 in UTC, or JSON null for 0 ("never" or "not known"). */
/* The changes applied in the last minute. The agent writes its record
 * when something changes, so after a quiet minute the figure in it is
 * old: no change applied for 60 s means a rate of 0. */
static double
current_rate(const struct status_view *v)
{
	if (!v->agent_running || v->rec.last_applied == 0 ||
	    v->now - v->rec.last_applied >= 60)
		return 0;
	return v->rec.rate_per_min;
}

static struct json_object *
json_time(long long t)
{
	char buf[32];
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0)
		return NULL;
	gmtime_r(&tt, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
	return json_object_new_string(buf);
}

/* A string, or JSON null for "". */
static struct json_object *
json_text(const char *s)
{
	return s[0] != '\0' ? json_object_new_string(s) : NULL;
}

static struct json_object *
json_count(unsigned long long n)
{
	return json_object_new_int64((int64_t)n);
}

static void
add(struct json_object *obj, const char *key, struct json_object *value)
{
	json_object_object_add(obj, key, value);
}

static struct json_object *
json_agent(const struct status_view *v)
{
	struct json_object *obj = json_object_new_object();
	const struct agent_record *rec = v->have_record ? &v->rec : NULL;

	add(obj, "running", json_object_new_boolean(v->agent_running));
	add(obj, "pid", v->pid > 0 ? json_object_new_int(v->pid) : NULL);
	add(obj, "started", json_time(rec != NULL ? rec->started : 0));
	add(obj, "record_updated", json_time(rec != NULL ? rec->updated : 0));
	add(obj, "record_error", json_text(v->record_error));
	return obj;
}

static struct json_object *
json_figures(const struct status_figures *fig)
{
	struct json_object *obj;

	if (!fig->found)
		return NULL;
	obj = json_object_new_object();
	add(obj, "pending", json_count(fig->pending));
	add(obj, "oldest_age_s", json_count(fig->oldest_age_s));
	add(obj, "last_applied", json_time(fig->last_applied));
	add(obj, "last_error", json_text(fig->last_error));
	add(obj, "received", json_time(fig->received));
	return obj;
}

static struct json_object *
json_peer_view(const struct status_peer_view *pv)
{
	struct json_object *obj;

	if (!pv->queried || pv->error[0] != '\0')
		return NULL;
	obj = json_object_new_object();
	add(obj, "mode", json_text(pv->mode));
	add(obj, "bound", json_text(pv->bound));
	add(obj, "init_result", json_text(pv->init_result));
	add(obj, "init_finished", json_time(pv->init_finished));
	add(obj, "init_requested", json_object_new_boolean(pv->init_requested));
	add(obj, "master_figures", json_figures(&pv->figures));
	return obj;
}

/* The master's peer is its replica; a replica's peer is its master. */
static struct json_object *
json_peer(const struct status_view *v)
{
	struct json_object *obj = json_object_new_object();
	const struct config *cfg = v->cfg;

	if (is_replica(v)) {
		add(obj, "role", json_object_new_string("master"));
		add(obj, "id", json_text(v->bound));
		add(obj, "bound_at", json_time(v->bound_at));
		add(obj, "init_requested",
		    json_object_new_boolean(v->init_requested_at != 0));
		add(obj, "init_requested_at", json_time(v->init_requested_at));
		add(obj, "figures", json_figures(&v->figures));
		return obj;
	}
	add(obj, "role", json_object_new_string("replica"));
	add(obj, "host",
	    json_text(cfg->replica_host != NULL ? cfg->replica_host : ""));
	add(obj, "imap_port", json_object_new_int((int)cfg->imap_port));
	add(obj, "control_port",
	    cfg->control_port != 0 ? json_object_new_int((int)cfg->control_port)
				   : NULL);
	add(obj, "state", v->have_record ? json_text(v->rec.peer_state) : NULL);
	add(obj, "since", json_time(v->have_record ? v->rec.peer_since : 0));
	add(obj, "view", json_peer_view(&v->peer));
	add(obj, "view_error",
	    v->peer.queried ? json_text(v->peer.error) : NULL);
	return obj;
}

static struct json_object *
json_initial(const struct status_view *v)
{
	const struct status_init *init = &v->init;
	struct json_object *obj;

	if (!init->found)
		return NULL;
	obj = json_object_new_object();
	add(obj, "result", json_text(init->result));
	add(obj, "started", json_time(init->started));
	add(obj, "finished", json_time(init->finished));
	add(obj, "messages", json_count(init->messages));
	add(obj, "bytes", json_count(init->bytes));
	add(obj, "uploaded", init->local ? json_count(init->uploaded) : NULL);
	add(obj, "adopted", init->local ? json_count(init->adopted) : NULL);
	add(obj, "rejected", json_count(init->rejected));
	add(obj, "skipped", init->local ? json_count(init->skipped) : NULL);
	add(obj, "error", json_text(init->error));
	return obj;
}

static struct json_object *
json_pending(const struct status_view *v)
{
	struct json_object *obj = json_object_new_object();
	bool known = have_pending(v);

	add(obj, "count", known ? json_count(pending_count(v)) : NULL);
	add(obj, "oldest_age_s",
	    known && pending_count(v) > 0 ? json_object_new_int64(oldest_age(v))
					  : NULL);
	return obj;
}

/* Running replication. The master's figures come from the agent's
 * record. A replica has only the time its master last applied a change. */
static struct json_object *
json_running(const struct status_view *v)
{
	struct json_object *obj = json_object_new_object();
	const struct agent_record *rec =
		is_master(v) && v->have_record ? &v->rec : NULL;
	const char *waiting = "";

	if (is_master(v))
		waiting = !v->agent_running ? NOT_RUNNING
			  : rec != NULL     ? rec->waiting_for
					    : "";
	add(obj, "applied", rec != NULL ? json_count(rec->applied) : NULL);
	add(obj, "last_applied",
	    json_time(rec != NULL     ? rec->last_applied
		      : is_replica(v) ? v->figures.last_applied
				      : 0));
	add(obj, "last_user", rec != NULL ? json_text(rec->last_user) : NULL);
	add(obj, "last_folder",
	    rec != NULL && rec->last_user[0] != '\0'
		    ? json_object_new_string(rec->last_folder)
		    : NULL);
	add(obj, "rate_per_min",
	    rec != NULL ? json_object_new_double(current_rate(v)) : NULL);
	add(obj, "waiting_for", json_text(waiting));
	return obj;
}

static struct json_object *
json_sync(const struct status_view *v)
{
	struct json_object *obj = json_object_new_object();
	const struct status_judgement *j = &v->judgement;

	add(obj, "state", json_object_new_string(status_state_name(j->state)));
	add(obj, "level", json_object_new_string(status_level_name(j->level)));
	add(obj, "since", json_time(j->since));
	add(obj, "reason", json_text(j->reason));
	return obj;
}

static struct json_object *
json_last_error(const struct status_view *v)
{
	struct json_object *obj;

	if (v->last_error[0] == '\0')
		return NULL;
	obj = json_object_new_object();
	add(obj, "text", json_object_new_string(v->last_error));
	add(obj, "at", json_time(v->last_error_at));
	return obj;
}

void
status_print_json(const struct status_view *v, FILE *out)
{
	struct json_object *obj = json_object_new_object();
	bool standalone = v->cfg != NULL && v->cfg->mode == CFG_MODE_STANDALONE;

	add(obj, "schema", json_object_new_int(STATUS_SCHEMA_VERSION));
	add(obj, "mode",
	    v->cfg != NULL ? json_object_new_string(cfg_mode_name(v->cfg->mode))
			   : NULL);
	add(obj, "generated", json_time(v->now));
	add(obj, "agent", json_agent(v));
	add(obj, "peer", v->cfg != NULL && !standalone ? json_peer(v) : NULL);
	add(obj, "initial", json_initial(v));
	add(obj, "pending", json_pending(v));
	add(obj, "running", json_running(v));
	add(obj, "in_sync",
	    json_object_new_boolean(v->judgement.state == SYNC_STATE_IN_SYNC));
	add(obj, "sync", json_sync(v));
	add(obj, "last_error", json_last_error(v));
	add(obj, "error", json_text(v->fatal));
	add(obj, "exit_code", json_object_new_int(v->exit_code));
	fprintf(out, "%s\n",
		json_object_to_json_string_ext(
			obj, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
				     JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(obj);
}

/* Text */

#define LABEL "%-15s "

/* Local time with its UTC offset, for people; "-" for 0. */
static const char *
local_time(long long t, char *buf, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (t <= 0)
		return "-";
	localtime_r(&tt, &tm);
	strftime(buf, size, "%Y-%m-%d %H:%M:%S %z", &tm);
	return buf;
}

static void
print_time(FILE *out, const char *label, long long t)
{
	char buf[64];

	fprintf(out, LABEL "%s\n", label, local_time(t, buf, sizeof(buf)));
}

void
status_print_summary(const struct status_view *v, FILE *out)
{
	const struct status_judgement *j = &v->judgement;
	unsigned long long pending = pending_count(v);

	fprintf(out, "MAILREPL %s - %s",
		status_level_name((enum status_level)v->exit_code),
		state_words(v));
	if (have_pending(v))
		fprintf(out, ", %llu pending", pending);
	if (j->reason[0] != '\0')
		fprintf(out, ": %s", j->reason);
	if (v->peer.queried && v->peer.error[0] != '\0')
		fprintf(out, "; the replica's agent cannot be queried");
	if (have_pending(v))
		fprintf(out, " | pending=%llu;;;0 oldest_age=%llds;;;0",
			pending, oldest_age(v));
	fputc('\n', out);
}

static void
print_agent(const struct status_view *v, FILE *out)
{
	char buf[64];

	if (v->agent_running && v->pid > 0)
		fprintf(out, LABEL "running (pid %ld)\n",
			"agent:", (long)v->pid);
	else if (v->agent_running)
		fprintf(out, LABEL "running (accepts connections on %s)\n",
			"agent:", v->cfg->control_socket);
	else if (is_master(v) && v->have_record)
		fprintf(out, LABEL "not running; figures as of %s\n",
			"agent:", local_time(v->rec.updated, buf, sizeof(buf)));
	else if (is_master(v))
		fprintf(out,
			LABEL "not running; no figures recorded by an "
			      "agent yet\n",
			"agent:");
	else
		fprintf(out, LABEL "not running\n", "agent:");
	if (v->record_error[0] != '\0')
		fprintf(out, LABEL "%s\n", "agent record:", v->record_error);
}

static void
print_sync(const struct status_view *v, FILE *out)
{
	const struct status_judgement *j = &v->judgement;
	char buf[64];

	fprintf(out, LABEL "%s", "sync:", state_words(v));
	if (j->since != 0)
		fprintf(out, " since %s",
			local_time(j->since, buf, sizeof(buf)));
	fprintf(out, " (%s)\n", status_level_name(j->level));
	if (j->reason[0] != '\0')
		fprintf(out, LABEL "%s\n", "", j->reason);
}

static void
print_initial(const struct status_view *v, FILE *out)
{
	const struct status_init *init = &v->init;

	if (!init->found) {
		fprintf(out, "initial replication: never run\n");
		return;
	}
	fprintf(out, "initial replication: %s%s\n", init->result,
		init->local ? "" : " (as the master reported it)");
	print_time(out, "  started:", init->started);
	print_time(out, "  finished:", init->finished);
	fprintf(out, LABEL "%llu, %llu bytes, %llu rejected",
		"  messages:", init->messages, init->bytes, init->rejected);
	if (init->local)
		fprintf(out, " (%llu uploaded, %llu adopted, %llu skipped)",
			init->uploaded, init->adopted, init->skipped);
	fputc('\n', out);
	if (init->error[0] != '\0')
		fprintf(out, LABEL "%s\n", "  error:", init->error);
}

static void
print_pending(const struct status_view *v, FILE *out)
{
	unsigned long long n = pending_count(v);

	if (!have_pending(v)) {
		fprintf(out, LABEL "unknown (no figures from the master yet)\n",
			"pending:");
		return;
	}
	fprintf(out, LABEL "%llu change%s", "pending:", n, n == 1 ? "" : "s");
	if (n > 0)
		fprintf(out, ", the oldest queued %lld s ago", oldest_age(v));
	if (is_replica(v))
		fprintf(out, " (as the master reported)");
	fputc('\n', out);
}

/* The master's running replication, from the agent's record. */
static void
print_running(const struct status_view *v, FILE *out)
{
	const struct agent_record *rec = &v->rec;
	char buf[64];

	if (!v->have_record)
		return;
	fprintf(out, LABEL "%s", "last applied:",
		local_time(rec->last_applied, buf, sizeof(buf)));
	if (rec->last_user[0] != '\0')
		fprintf(out, " (user %s, folder %s)", rec->last_user,
			rec->last_folder[0] != '\0' ? rec->last_folder
						    : "(folder list)");
	fputc('\n', out);
	fprintf(out,
		LABEL "%.0f changes in the last minute, %llu since the "
		      "agent started\n",
		"rate:", current_rate(v), rec->applied);
	if (v->agent_running && rec->waiting_for[0] != '\0')
		fprintf(out, LABEL "%s\n", "waiting for:", rec->waiting_for);
}

static void
print_replica_host(const struct status_view *v, FILE *out)
{
	const struct config *cfg = v->cfg;

	fprintf(out, LABEL "%s (IMAP port %u, ", "replica:",
		cfg->replica_host != NULL ? cfg->replica_host : "(not set)",
		cfg->imap_port);
	if (cfg->control_port != 0)
		fprintf(out, "control port %u)\n", cfg->control_port);
	else
		fprintf(out, "no control channel)\n");
}

static void
print_peer_state(const struct status_view *v, FILE *out)
{
	char buf[64];

	if (!v->have_record)
		return;
	if (strcmp(v->rec.peer_state, "none") == 0) {
		fprintf(out, LABEL "none (no control channel)\n", "peer:");
		return;
	}
	fprintf(out, LABEL "%s since %s%s\n", "peer:", v->rec.peer_state,
		local_time(v->rec.peer_since, buf, sizeof(buf)),
		v->agent_running ? "" : " (when the agent stopped)");
}

static void
print_figures(const struct status_figures *fig, FILE *out)
{
	char buf[64];

	if (!fig->found) {
		fprintf(out, "  no figures received from the master yet\n");
		return;
	}
	print_time(out, "  received:", fig->received);
	fprintf(out, LABEL "%llu, the oldest %llu s old\n",
		"  pending:", fig->pending, fig->oldest_age_s);
	fprintf(out, LABEL "%s\n", "  last applied:",
		local_time(fig->last_applied, buf, sizeof(buf)));
	fprintf(out, LABEL "%s\n", "  last error:",
		fig->last_error[0] != '\0' ? fig->last_error : "-");
}

/* --peer on a master: the response of the replica's agent. */
static void
print_peer_view(const struct status_view *v, FILE *out)
{
	const struct status_peer_view *pv = &v->peer;
	char buf[64];

	if (!pv->queried)
		return;
	if (pv->error[0] != '\0') {
		fprintf(out, "replica's view: not available: %s\n", pv->error);
		return;
	}
	fprintf(out, "replica's view:\n");
	fprintf(out, LABEL "%s\n", "  mode:", pv->mode);
	fprintf(out, LABEL "%s\n",
		"  bound to:", pv->bound[0] != '\0' ? pv->bound : "no master");
	fprintf(out, LABEL "%s, finished %s\n", "  initial:",
		pv->init_result[0] != '\0' ? pv->init_result : "none recorded",
		local_time(pv->init_finished, buf, sizeof(buf)));
	fprintf(out, LABEL "%s\n",
		"  init request:", pv->init_requested ? "yes" : "no");
	fprintf(out, "  figures it last received from this master:\n");
	print_figures(&pv->figures, out);
}

static void
print_master_peer(const struct status_view *v, FILE *out)
{
	char buf[64];

	if (v->bound[0] == '\0')
		fprintf(out, LABEL "none bound yet\n", "master:");
	else
		fprintf(out, LABEL "%s (bound since %s)\n", "master:", v->bound,
			local_time(v->bound_at, buf, sizeof(buf)));
	if (v->init_requested_at != 0)
		fprintf(out, LABEL "requested %s\n", "new init:",
			local_time(v->init_requested_at, buf, sizeof(buf)));
	if (v->opts != NULL && v->opts->peer) {
		fprintf(out, "master's last STATUS:\n");
		print_figures(&v->figures, out);
	} else if (v->figures.found) {
		print_time(out, "last applied:", v->figures.last_applied);
	}
}

static void
print_last_error(const struct status_view *v, FILE *out)
{
	char buf[64];

	if (v->last_error[0] == '\0') {
		fprintf(out, LABEL "-\n", "last error:");
		return;
	}
	fprintf(out, LABEL "%s (%s)\n", "last error:", v->last_error,
		local_time(v->last_error_at, buf, sizeof(buf)));
}

void
status_print_text(const struct status_view *v, FILE *out)
{
	status_print_summary(v, out);
	if (v->cfg == NULL) {
		fprintf(out, "%s\n", v->fatal);
		return;
	}
	fprintf(out, LABEL "%s\n", "mode:", cfg_mode_name(v->cfg->mode));
	if (is_master(v))
		print_replica_host(v, out);
	print_agent(v, out);
	if (v->fatal[0] != '\0') {
		fprintf(out, LABEL "%s\n", "error:", v->fatal);
		return;
	}
	if (v->cfg->mode == CFG_MODE_STANDALONE) {
		print_sync(v, out);
		return;
	}
	if (is_master(v))
		print_peer_state(v, out);
	else
		print_master_peer(v, out);
	print_sync(v, out);
	print_initial(v, out);
	print_pending(v, out);
	if (is_master(v))
		print_running(v, out);
	print_last_error(v, out);
	print_peer_view(v, out);
}
