/* The sync state: judgement and the master agent's record. */
#include <config.h>
#include "status.h"

#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *
status_state_name(enum sync_state state)
{
	static const char *const names[] = {
		[SYNC_STATE_UNKNOWN] = "unknown",
		[SYNC_STATE_STANDALONE] = "standalone",
		[SYNC_STATE_NOT_INITIALIZED] = "not_initialized",
		[SYNC_STATE_INITIALIZING] = "initializing",
		[SYNC_STATE_IN_SYNC] = "in_sync",
		[SYNC_STATE_OUT_OF_SYNC] = "out_of_sync",
	};

	return names[state];
}

const char *
status_level_name(enum status_level level)
{
	static const char *const names[] = {"OK", "WARNING", "CRITICAL",
					    "UNKNOWN"};

	return names[level];
}

static void
judge(struct status_judgement *out, enum sync_state state,
      enum status_level level, long long since, const char *reason)
{
	out->state = state;
	out->level = level;
	out->since = since;
	snprintf(out->reason, sizeof(out->reason), "%s", reason);
}

void
status_judge(const struct status_input *in, long long now,
	     struct status_judgement *out)
{
	long long limit = (long long)in->out_of_sync_after;

	if (in->init_running) {
		judge(out, SYNC_STATE_INITIALIZING, STATUS_WARNING, 0,
		      "an initial replication is running");
		return;
	}
	if (!in->init_found || !in->init_ok) {
		if (in->master)
			judge(out, SYNC_STATE_NOT_INITIALIZED, STATUS_CRITICAL,
			      0,
			      in->init_found
				      ? "the last initial replication failed; "
					"run mailrepl init"
				      : "no initial replication has run; run "
					"mailrepl init");
		else
			judge(out, SYNC_STATE_NOT_INITIALIZED, STATUS_CRITICAL,
			      0,
			      in->init_found
				      ? "the last initial replication failed; "
					"run mailrepl init on the master, or "
					"mailrepl init --request here"
				      : "no initial replication has run; run "
					"mailrepl init on the master, or "
					"mailrepl init --request here");
		return;
	}
	if (!in->agent_running && in->master) {
		judge(out, SYNC_STATE_UNKNOWN, STATUS_CRITICAL, 0,
		      "mailrepld is not running, so changes are not "
		      "replicated; start it");
		return;
	}
	if (in->figures_at == 0) {
		judge(out, SYNC_STATE_UNKNOWN, STATUS_UNKNOWN, 0,
		      "no figures from the master yet");
		return;
	}
	/* A replica judges by the figures its master last sent, which grow
	 * stale when the master stops sending them. */
	if (!in->master) {
		long long stale =
			limit > STATUS_STALE_MIN ? limit : STATUS_STALE_MIN;

		if (now - in->figures_at > stale) {
			judge(out, SYNC_STATE_OUT_OF_SYNC, STATUS_CRITICAL,
			      in->figures_at + stale,
			      "no status from the master for longer than "
			      "out_of_sync_after");
			return;
		}
	}
	if (in->pending == 0 || in->oldest_queued == 0 ||
	    now - in->oldest_queued < limit) {
		/* Messages the replica rejected are missing there for good,
		 * which the admin must look at, though nothing is pending. */
		if (in->init_partial)
			judge(out, SYNC_STATE_IN_SYNC, STATUS_WARNING, 0,
			      "the last initial replication skipped messages "
			      "the replica rejected; see mailrepl log");
		else
			judge(out, SYNC_STATE_IN_SYNC, STATUS_OK, 0, "");
		return;
	}
	judge(out, SYNC_STATE_OUT_OF_SYNC, STATUS_CRITICAL,
	      in->oldest_queued + limit,
	      "changes have been pending for longer than out_of_sync_after");
}

/* Record as JSON */

static void
add_int(struct json_object *obj, const char *key, long long value)
{
	json_object_object_add(obj, key, json_object_new_int64(value));
}

static void
add_str(struct json_object *obj, const char *key, const char *value)
{
	json_object_object_add(obj, key, json_object_new_string(value));
}

struct json_object *
status_record_to_json(const struct agent_record *rec)
{
	struct json_object *obj = json_object_new_object();
	struct json_object *judged = json_object_new_object();

	add_int(obj, "pid", (long long)rec->pid);
	add_int(obj, "started", rec->started);
	add_int(obj, "updated", rec->updated);
	add_str(obj, "peer_state", rec->peer_state);
	add_int(obj, "peer_since", rec->peer_since);
	add_int(obj, "pending", (long long)rec->pending);
	add_int(obj, "oldest_queued", rec->oldest_queued);
	add_int(obj, "applied", (long long)rec->applied);
	add_int(obj, "last_applied", rec->last_applied);
	add_str(obj, "last_user", rec->last_user);
	add_str(obj, "last_folder", rec->last_folder);
	json_object_object_add(obj, "rate_per_min",
			       json_object_new_double(rec->rate_per_min));
	add_str(obj, "waiting_for", rec->waiting_for);
	add_str(obj, "last_error", rec->last_error);
	add_int(obj, "last_error_at", rec->last_error_at);
	add_str(judged, "state", status_state_name(rec->judgement.state));
	add_str(judged, "level", status_level_name(rec->judgement.level));
	add_int(judged, "since", rec->judgement.since);
	add_str(judged, "reason", rec->judgement.reason);
	json_object_object_add(obj, "judgement", judged);
	return obj;
}

int
status_record_save(const char *state_dir, const struct agent_record *rec,
		   char **error_r)
{
	char *path = xasprintf("%s/%s", state_dir, STATUS_FILE);
	char *tmp = xasprintf("%s.tmp", path);
	struct json_object *obj = status_record_to_json(rec);
	const char *text =
		json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PRETTY);
	size_t len = strlen(text);
	int fd, ret = -1;

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, text, len) != (ssize_t)len ||
	    write(fd, "\n", 1) != 1) {
		*error_r =
			xasprintf("cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (close(fd) < 0 || rename(tmp, path) < 0) {
		fd = -1;
		*error_r = xasprintf("cannot replace %s: %s", path,
				     strerror(errno));
		goto out;
	}
	fd = -1;
	ret = 0;
out:
	if (fd >= 0)
		close(fd);
	if (ret < 0)
		unlink(tmp);
	json_object_put(obj);
	free(tmp);
	free(path);
	return ret;
}

static long long
get_int(struct json_object *obj, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(obj, key, &v)
		       ? (long long)json_object_get_int64(v)
		       : 0;
}

static void
get_str(struct json_object *obj, const char *key, char *buf, size_t size)
{
	struct json_object *v;

	buf[0] = '\0';
	if (json_object_object_get_ex(obj, key, &v) &&
	    json_object_is_type(v, json_type_string))
		snprintf(buf, size, "%s", json_object_get_string(v));
}

static enum sync_state
state_by_name(const char *name)
{
	for (int s = SYNC_STATE_UNKNOWN; s <= SYNC_STATE_OUT_OF_SYNC; s++) {
		if (strcmp(status_state_name((enum sync_state)s), name) == 0)
			return (enum sync_state)s;
	}
	return SYNC_STATE_UNKNOWN;
}

static enum status_level
level_by_name(const char *name)
{
	for (int l = STATUS_OK; l <= STATUS_UNKNOWN; l++) {
		if (strcmp(status_level_name((enum status_level)l), name) == 0)
			return (enum status_level)l;
	}
	return STATUS_UNKNOWN;
}

static void
record_from_json(struct json_object *obj, struct agent_record *rec)
{
	struct json_object *judged = NULL;
	char name[32];
	struct json_object *v;

	memset(rec, 0, sizeof(*rec));
	rec->pid = (pid_t)get_int(obj, "pid");
	rec->started = get_int(obj, "started");
	rec->updated = get_int(obj, "updated");
	get_str(obj, "peer_state", rec->peer_state, sizeof(rec->peer_state));
	rec->peer_since = get_int(obj, "peer_since");
	rec->pending = (unsigned long long)get_int(obj, "pending");
	rec->oldest_queued = get_int(obj, "oldest_queued");
	rec->applied = (unsigned long long)get_int(obj, "applied");
	rec->last_applied = get_int(obj, "last_applied");
	get_str(obj, "last_user", rec->last_user, sizeof(rec->last_user));
	get_str(obj, "last_folder", rec->last_folder, sizeof(rec->last_folder));
	if (json_object_object_get_ex(obj, "rate_per_min", &v))
		rec->rate_per_min = json_object_get_double(v);
	get_str(obj, "waiting_for", rec->waiting_for, sizeof(rec->waiting_for));
	get_str(obj, "last_error", rec->last_error, sizeof(rec->last_error));
	rec->last_error_at = get_int(obj, "last_error_at");
	if (!json_object_object_get_ex(obj, "judgement", &judged))
		return;
	get_str(judged, "state", name, sizeof(name));
	rec->judgement.state = state_by_name(name);
	get_str(judged, "level", name, sizeof(name));
	rec->judgement.level = level_by_name(name);
	rec->judgement.since = get_int(judged, "since");
	get_str(judged, "reason", rec->judgement.reason,
		sizeof(rec->judgement.reason));
}

int
status_record_load(const char *state_dir, struct agent_record *rec_r,
		   char **error_r)
{
	char *path = xasprintf("%s/%s", state_dir, STATUS_FILE);
	struct json_object *obj;
	int ret = -1;

	if (access(path, F_OK) < 0 && errno == ENOENT) {
		free(path);
		return 0;
	}
	obj = json_object_from_file(path);
	if (obj == NULL || !json_object_is_type(obj, json_type_object)) {
		*error_r = xasprintf("%s is not a JSON object (%s); the agent "
				     "writes it again within a second when "
				     "it runs",
				     path,
				     json_util_get_last_err() != NULL
					     ? json_util_get_last_err()
					     : "wrong type");
		goto out;
	}
	record_from_json(obj, rec_r);
	ret = 1;
out:
	if (obj != NULL)
		json_object_put(obj);
	free(path);
	return ret;
}
