/* Tests of the sync-state judgement and of "mailrepl status" in each
 * state, on state stores, agent records and peer.json files made in a
 * temporary directory. A running agent is a copy of sleep(1) named
 * mailrepld, which is what the pid-file check looks for; the end-to-end
 * test (tests/e2e/status.sh) runs the real agents. */
#include <config.h>
#include "cfg.h"
#include "ctl_peer.h"
#include "status.h"
#include "status_cmd.h"
#include "store.h"
#include "testutil.h"
#include "util.h"

#include <check.h>
#include <errno.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The administrator's password in every configuration here; no output
 * may contain it. */
#define PASSWORD "Pw-7f3k-NeverShown"

/* Judgement table */

struct judge_case {
	const char *name;
	struct status_input in;
	long long now;
	enum sync_state state;
	enum status_level level;
	long long since;
};

#define NOW 1800000000LL

/* clang-format off: one case per row reads better than one field per
 * line. */
static const struct judge_case judge_cases[] = {
	{"init running",
	 {.master = true,
	  .agent_running = true,
	  .init_found = true,
	  .init_running = true,
	  .figures_at = NOW,
	  .out_of_sync_after = 60},
	 NOW,
	 SYNC_STATE_INITIALIZING,
	 STATUS_WARNING,
	 0},
	{"never initialized",
	 {.master = true,
	  .agent_running = true,
	  .figures_at = NOW,
	  .out_of_sync_after = 60},
	 NOW,
	 SYNC_STATE_NOT_INITIALIZED,
	 STATUS_CRITICAL,
	 0},
	{"last init failed",
	 {.master = true,
	  .agent_running = true,
	  .init_found = true,
	  .figures_at = NOW,
	  .out_of_sync_after = 60},
	 NOW,
	 SYNC_STATE_NOT_INITIALIZED,
	 STATUS_CRITICAL,
	 0},
	{"init before agent check",
	 {.master = true,
	  .agent_running = false,
	  .figures_at = NOW,
	  .out_of_sync_after = 60},
	 NOW,
	 SYNC_STATE_NOT_INITIALIZED,
	 STATUS_CRITICAL,
	 0},
	{"master agent down",
	 {.master = true,
	  .agent_running = false,
	  .init_found = true,
	  .init_ok = true,
	  .figures_at = NOW,
	  .out_of_sync_after = 60},
	 NOW,
	 SYNC_STATE_UNKNOWN,
	 STATUS_CRITICAL,
	 0},
	{"nothing pending",
	 {.master = true,
	  .agent_running = true,
	  .init_found = true,
	  .init_ok = true,
	  .figures_at = NOW,
	  .out_of_sync_after = 60},
	 NOW,
	 SYNC_STATE_IN_SYNC,
	 STATUS_OK,
	 0},
	{"pending within limit",
	 {.master = true,
	  .agent_running = true,
	  .init_found = true,
	  .init_ok = true,
	  .pending = 5,
	  .oldest_queued = NOW - 59,
	  .figures_at = NOW,
	  .out_of_sync_after = 60},
	 NOW,
	 SYNC_STATE_IN_SYNC,
	 STATUS_OK,
	 0},
	{"pending at limit",
	 {.master = true,
	  .agent_running = true,
	  .init_found = true,
	  .init_ok = true,
	  .pending = 5,
	  .oldest_queued = NOW - 60,
	  .figures_at = NOW,
	  .out_of_sync_after = 60},
	 NOW,
	 SYNC_STATE_OUT_OF_SYNC,
	 STATUS_CRITICAL,
	 NOW},
	{"pending past limit",
	 {.master = true,
	  .agent_running = true,
	  .init_found = true,
	  .init_ok = true,
	  .pending = 1,
	  .oldest_queued = NOW - 600,
	  .figures_at = NOW,
	  .out_of_sync_after = 60},
	 NOW,
	 SYNC_STATE_OUT_OF_SYNC,
	 STATUS_CRITICAL,
	 NOW - 540},
	{"pending without time",
	 {.master = true,
	  .agent_running = true,
	  .init_found = true,
	  .init_ok = true,
	  .pending = 3,
	  .figures_at = NOW,
	  .out_of_sync_after = 60},
	 NOW,
	 SYNC_STATE_IN_SYNC,
	 STATUS_OK,
	 0},
	{"replica no figures",
	 {.master = false,
	  .init_found = true,
	  .init_ok = true,
	  .out_of_sync_after = 60},
	 NOW,
	 SYNC_STATE_UNKNOWN,
	 STATUS_UNKNOWN,
	 0},
	{"replica fresh figures",
	 {.master = false,
	  .init_found = true,
	  .init_ok = true,
	  .pending = 2,
	  .oldest_queued = NOW - 3,
	  .figures_at = NOW - 1,
	  .out_of_sync_after = 60},
	 NOW,
	 SYNC_STATE_IN_SYNC,
	 STATUS_OK,
	 0},
	{"replica stale figures",
	 {.master = false,
	  .init_found = true,
	  .init_ok = true,
	  .figures_at = NOW - 100,
	  .out_of_sync_after = 60},
	 NOW,
	 SYNC_STATE_OUT_OF_SYNC,
	 STATUS_CRITICAL,
	 NOW - 40},
	{"replica agent down ignored",
	 {.master = false,
	  .agent_running = false,
	  .init_found = true,
	  .init_ok = true,
	  .figures_at = NOW,
	  .out_of_sync_after = 60},
	 NOW,
	 SYNC_STATE_IN_SYNC,
	 STATUS_OK,
	 0},
	{"replica lasting lag",
	 {.master = false,
	  .init_found = true,
	  .init_ok = true,
	  .pending = 9,
	  .oldest_queued = NOW - 90,
	  .figures_at = NOW - 5,
	  .out_of_sync_after = 60},
	 NOW,
	 SYNC_STATE_OUT_OF_SYNC,
	 STATUS_CRITICAL,
	 NOW - 30},
	{"replica init running",
	 {.master = false,
	  .init_found = true,
	  .init_running = true,
	  .out_of_sync_after = 60},
	 NOW,
	 SYNC_STATE_INITIALIZING,
	 STATUS_WARNING,
	 0},
	/* The master reports every 10 s: a short out_of_sync_after must
	 * not turn one late report into an out-of-sync replica. */
	{"replica short limit, late report",
	 {.master = false,
	  .init_found = true,
	  .init_ok = true,
	  .figures_at = NOW - 20,
	  .out_of_sync_after = 5},
	 NOW,
	 SYNC_STATE_IN_SYNC,
	 STATUS_OK,
	 0},
	{"replica short limit, silent master",
	 {.master = false,
	  .init_found = true,
	  .init_ok = true,
	  .figures_at = NOW - 31,
	  .out_of_sync_after = 5},
	 NOW,
	 SYNC_STATE_OUT_OF_SYNC,
	 STATUS_CRITICAL,
	 NOW - 1},
	/* Rejected messages are missing on the replica for good. */
	{"master init rejected some",
	 {.master = true,
	  .agent_running = true,
	  .init_found = true,
	  .init_ok = true,
	  .init_partial = true,
	  .figures_at = NOW,
	  .out_of_sync_after = 60},
	 NOW,
	 SYNC_STATE_IN_SYNC,
	 STATUS_WARNING,
	 0},
};
/* clang-format on */

START_TEST(judge_table)
{
	const struct judge_case *c = &judge_cases[_i];
	struct status_judgement j;

	memset(&j, 0x5a, sizeof(j));
	status_judge(&c->in, c->now, &j);
	ck_assert_msg(j.state == c->state, "%s: state %s, expected %s", c->name,
		      status_state_name(j.state), status_state_name(c->state));
	ck_assert_msg(j.level == c->level, "%s: level %s, expected %s", c->name,
		      status_level_name(j.level), status_level_name(c->level));
	ck_assert_msg(j.since == c->since, "%s: since %lld, expected %lld",
		      c->name, j.since, c->since);
	ck_assert_msg((j.reason[0] == '\0') == (j.level == STATUS_OK),
		      "%s: reason \"%s\"", c->name, j.reason);
}
END_TEST

START_TEST(judge_names)
{
	ck_assert_str_eq(status_state_name(SYNC_STATE_IN_SYNC), "in_sync");
	ck_assert_str_eq(status_state_name(SYNC_STATE_OUT_OF_SYNC),
			 "out_of_sync");
	ck_assert_str_eq(status_state_name(SYNC_STATE_NOT_INITIALIZED),
			 "not_initialized");
	ck_assert_str_eq(status_level_name(STATUS_OK), "OK");
	ck_assert_str_eq(status_level_name(STATUS_WARNING), "WARNING");
	ck_assert_str_eq(status_level_name(STATUS_CRITICAL), "CRITICAL");
	ck_assert_str_eq(status_level_name(STATUS_UNKNOWN), "UNKNOWN");
}
END_TEST

/* Options */

START_TEST(parse_options)
{
	char *both[] = {"status", "--json", "--peer", NULL};
	char *bad[] = {"status", "--frobnicate", NULL};
	char *extra[] = {"status", "now", NULL};
	char *help[] = {"status", "-h", NULL};
	struct status_options o;

	optind = 1;
	ck_assert_int_eq(status_cmd_parse(3, both, &o), 0);
	ck_assert(o.json);
	ck_assert(o.peer);
	ck_assert(!o.help);
	optind = 1;
	opterr = 0;
	ck_assert_int_eq(status_cmd_parse(2, bad, &o), -1);
	optind = 1;
	ck_assert_int_eq(status_cmd_parse(2, extra, &o), -1);
	optind = 1;
	ck_assert_int_eq(status_cmd_parse(2, help, &o), 0);
	ck_assert(o.help);
}
END_TEST

/* The command in each state */

static char *tmp;
static char *state_dir;
static struct config *cfg;
static pid_t fake_agent;

static void
setup(void)
{
	char *pw;

	tmp = tu_tempdir("status");
	state_dir = xasprintf("%s/state", tmp);
	pw = xasprintf("%s/pw", tmp);
	tu_write_file(pw, PASSWORD "\n", strlen(PASSWORD) + 1, 0600);
	free(pw);
	cfg = NULL;
	fake_agent = 0;
}

static void
teardown(void)
{
	int wstatus;

	if (fake_agent > 0) {
		kill(fake_agent, SIGKILL);
		waitpid(fake_agent, &wstatus, 0);
	}
	config_free(&cfg);
	tu_rmrf(tmp);
	free(tmp);
	free(state_dir);
}

/* Load a configuration of mode with out_of_sync_after and the master's
 * control port (0 for none). */
static void
load_config(const char *mode, unsigned out_of_sync_after, unsigned control_port)
{
	char *path = xasprintf("%s/mailrepl.conf", tmp);
	char *text = xasprintf("[general]\n"
			       "mode = %s\n"
			       "state_dir = %s\n"
			       "log_file = %s/mailrepl.log\n"
			       "control_socket = %s/run/control.sock\n"
			       "out_of_sync_after = %u\n"
			       "[maildir]\n"
			       "root = %s/mail\n"
			       "[master]\n"
			       "replica_host = 127.0.0.1\n"
			       "imap_port = 1143\n"
			       "control_port = %u\n"
			       "admin_user = repladmin\n"
			       "admin_password_file = %s/pw\n"
			       "[replica]\n"
			       "admin_user = repladmin\n",
			       mode, state_dir, tmp, tmp, out_of_sync_after,
			       tmp, control_port, tmp);
	char *error = NULL;

	tu_write_file(path, text, strlen(text), 0600);
	config_free(&cfg);
	ck_assert_msg(config_load(path, &cfg, &error) == 0, "config: %s",
		      error);
	free(text);
	free(path);
}

/* Start a process whose name is mailrepld and write its pid file where
 * the agent would. */
static void
start_fake_agent(void)
{
	char *exe = xasprintf("%s/mailrepld", tmp);
	char *pidfile = xasprintf("%s/run/mailrepld.pid", tmp);
	char *text;

	ck_assert_int_eq(tu_run("cp /bin/sleep '%s'", exe), 0);
	fake_agent = fork();
	ck_assert_int_ge(fake_agent, 0);
	if (fake_agent == 0) {
		execl(exe, "mailrepld", "60", (char *)NULL);
		_exit(127);
	}
	text = xasprintf("%ld\n", (long)fake_agent);
	tu_write_file(pidfile, text, strlen(text), 0644);
	/* exec has replaced the name once /proc shows mailrepld. */
	for (int i = 0; i < 100; i++) {
		char *comm = xasprintf("/proc/%ld/comm", (long)fake_agent);
		char *name = tu_read_file(comm, NULL);
		bool done = name != NULL && strncmp(name, "mailrepld", 9) == 0;

		free(name);
		free(comm);
		if (done)
			break;
		usleep(10000);
	}
	free(text);
	free(pidfile);
	free(exe);
}

static struct store *
open_store(void)
{
	struct store *store = NULL;
	char *error = NULL;

	ck_assert_msg(store_open(state_dir, &store, &error) == 0, "%s", error);
	return store;
}

/* Record a finished initial replication. */
static void
add_init(enum store_run_result result, const char *error)
{
	struct store *store = open_store();
	struct store_run run = {0};

	ck_assert_int_eq(store_run_start(store, "init", &run.id), 0);
	run.result = result;
	run.messages = 120;
	run.bytes = 4096;
	run.uploaded = 100;
	run.adopted = 20;
	run.rejected = result == RUN_REJECTED ? 2 : 0;
	run.error = (char *)error;
	ck_assert_int_eq(store_run_finish(store, &run), 0);
	store_close(&store);
}

static void
queue_changes(unsigned n)
{
	struct store *store = open_store();

	for (unsigned i = 0; i < n; i++) {
		char folder[32];

		snprintf(folder, sizeof(folder), "F%u", i);
		ck_assert_int_eq(store_queue_add(store, "alice", folder, "x"),
				 0);
	}
	store_close(&store);
}

static void
save_record(const char *peer_state, long long updated, enum sync_state state,
	    long long since)
{
	struct agent_record rec = {0};
	char *error = NULL;

	rec.pid = fake_agent;
	rec.started = updated - 100;
	rec.updated = updated;
	snprintf(rec.peer_state, sizeof(rec.peer_state), "%s", peer_state);
	rec.peer_since = updated - 50;
	rec.applied = 57;
	rec.last_applied = updated - 10;
	snprintf(rec.last_user, sizeof(rec.last_user), "alice");
	snprintf(rec.last_folder, sizeof(rec.last_folder), "INBOX");
	rec.rate_per_min = 3;
	if (strcmp(peer_state, "connected") != 0)
		snprintf(rec.waiting_for, sizeof(rec.waiting_for),
			 "the replica's IMAP server");
	rec.judgement.state = state;
	rec.judgement.since = since;
	mkdir(state_dir, 0700);
	ck_assert_msg(status_record_save(state_dir, &rec, &error) == 0, "%s",
		      error);
}

struct result {
	int code;
	char *text;
	struct json_object *json;
};

static char *
capture(bool json, bool peer, int *code_r)
{
	struct status_options opts = {.json = json, .peer = peer};
	char *buf = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&buf, &len);

	ck_assert_ptr_nonnull(out);
	*code_r = status_cmd_run(cfg, &opts, out);
	fclose(out);
	ck_assert_msg(strstr(buf, PASSWORD) == NULL,
		      "the password is in the output:\n%s", buf);
	return buf;
}

static void
check_schema(struct json_object *obj)
{
	static const char *const keys[] = {
		"schema",     "mode",    "generated", "agent",   "peer",
		"initial",    "pending", "running",   "in_sync", "sync",
		"last_error", "error",   "exit_code", NULL};
	struct json_object *v;

	for (size_t i = 0; keys[i] != NULL; i++)
		ck_assert_msg(json_object_object_get_ex(obj, keys[i], NULL),
			      "no member %s", keys[i]);
	ck_assert(json_object_object_get_ex(obj, "schema", &v));
	ck_assert_int_eq(json_object_get_int(v), STATUS_SCHEMA_VERSION);
}

/* Run status as text and as JSON; both must give the same exit code. */
static void
run_status(bool peer, struct result *r)
{
	int json_code;
	char *json_text;

	r->text = capture(false, peer, &r->code);
	json_text = capture(true, peer, &json_code);
	ck_assert_int_eq(json_code, r->code);
	r->json = json_tokener_parse(json_text);
	ck_assert_msg(r->json != NULL, "not JSON:\n%s", json_text);
	free(json_text);
	check_schema(r->json);
	ck_assert_int_eq(json_object_get_int(
				 json_object_object_get(r->json, "exit_code")),
			 r->code);
}

static void
result_clear(struct result *r)
{
	free(r->text);
	json_object_put(r->json);
}

/* The member at a dotted path, such as "sync.state"; NULL for null. */
static struct json_object *
at(struct json_object *obj, const char *path)
{
	char *copy = xstrdup(path), *save = NULL;

	for (char *key = strtok_r(copy, ".", &save); key != NULL && obj;
	     key = strtok_r(NULL, ".", &save)) {
		struct json_object *next = NULL;

		ck_assert_msg(json_object_object_get_ex(obj, key, &next),
			      "no member %s in %s", key, path);
		obj = next;
	}
	free(copy);
	return obj;
}

static const char *
str_at(struct json_object *obj, const char *path)
{
	struct json_object *v = at(obj, path);

	ck_assert_msg(v != NULL, "%s is null", path);
	return json_object_get_string(v);
}

static long long
int_at(struct json_object *obj, const char *path)
{
	struct json_object *v = at(obj, path);

	ck_assert_msg(v != NULL, "%s is null", path);
	return (long long)json_object_get_int64(v);
}

static bool
bool_at(struct json_object *obj, const char *path)
{
	return json_object_get_boolean(at(obj, path));
}

static void
assert_first_line(const char *text, const char *prefix)
{
	ck_assert_msg(strncmp(text, prefix, strlen(prefix)) == 0,
		      "first line does not start with \"%s\":\n%s", prefix,
		      text);
}

static void
assert_contains(const char *text, const char *part)
{
	ck_assert_msg(strstr(text, part) != NULL, "no \"%s\" in:\n%s", part,
		      text);
}

START_TEST(master_never_initialized)
{
	struct result r;
	char *db;

	load_config("master", 60, 0);
	run_status(false, &r);
	ck_assert_int_eq(r.code, STATUS_CRITICAL);
	assert_first_line(r.text, "MAILREPL CRITICAL - not initialized");
	assert_contains(r.text, "initial replication: never run");
	assert_contains(r.text, "no figures recorded by an agent");
	ck_assert_ptr_null(at(r.json, "initial"));
	ck_assert_str_eq(str_at(r.json, "mode"), "master");
	ck_assert_str_eq(str_at(r.json, "sync.state"), "not_initialized");
	ck_assert_int_eq(int_at(r.json, "pending.count"), 0);
	ck_assert(!bool_at(r.json, "agent.running"));
	ck_assert(!bool_at(r.json, "in_sync"));
	ck_assert_ptr_null(at(r.json, "peer.control_port"));
	/* status creates nothing in the state directory. */
	db = xasprintf("%s/state.db", state_dir);
	ck_assert_int_ne(access(db, F_OK), 0);
	free(db);
	result_clear(&r);
}
END_TEST

START_TEST(master_initializing)
{
	struct store *store;
	struct result r;
	long long id;

	load_config("master", 60, 0);
	store = open_store();
	/* A run of this (live) process that has not finished. */
	ck_assert_int_eq(store_run_start(store, "init", &id), 0);
	store_close(&store);
	run_status(false, &r);
	ck_assert_int_eq(r.code, STATUS_WARNING);
	assert_first_line(r.text, "MAILREPL WARNING - initializing");
	ck_assert_str_eq(str_at(r.json, "initial.result"), "running");
	ck_assert_ptr_null(at(r.json, "initial.finished"));
	ck_assert_str_eq(str_at(r.json, "sync.state"), "initializing");
	ck_assert_str_eq(str_at(r.json, "sync.since"),
			 str_at(r.json, "initial.started"));
	result_clear(&r);
}
END_TEST

START_TEST(master_in_sync)
{
	long long now = time(NULL);
	struct result r;

	load_config("master", 60, 2005);
	add_init(RUN_OK, NULL);
	start_fake_agent();
	save_record("connected", now, SYNC_STATE_IN_SYNC, 1700000000);
	run_status(false, &r);
	ck_assert_int_eq(r.code, STATUS_OK);
	assert_first_line(r.text, "MAILREPL OK - in sync, 0 pending | "
				  "pending=0;;;0 oldest_age=0s;;;0\n");
	assert_contains(r.text, "running (pid");
	assert_contains(r.text, "connected since");
	assert_contains(r.text, "(user alice, folder INBOX)");
	ck_assert(bool_at(r.json, "in_sync"));
	ck_assert(bool_at(r.json, "agent.running"));
	ck_assert_int_eq(int_at(r.json, "agent.pid"), fake_agent);
	ck_assert_str_eq(str_at(r.json, "peer.state"), "connected");
	ck_assert_int_eq(int_at(r.json, "peer.control_port"), 2005);
	ck_assert_str_eq(str_at(r.json, "initial.result"), "ok");
	ck_assert_int_eq(int_at(r.json, "initial.messages"), 120);
	ck_assert_int_eq(int_at(r.json, "initial.uploaded"), 100);
	ck_assert_int_eq(int_at(r.json, "initial.adopted"), 20);
	ck_assert_ptr_null(at(r.json, "initial.error"));
	ck_assert_int_eq(int_at(r.json, "running.applied"), 57);
	ck_assert_str_eq(str_at(r.json, "running.last_user"), "alice");
	ck_assert_str_eq(str_at(r.json, "running.last_folder"), "INBOX");
	ck_assert_ptr_null(at(r.json, "running.waiting_for"));
	ck_assert_str_eq(str_at(r.json, "sync.level"), "OK");
	/* The state began when the agent's record shows it did. */
	ck_assert_str_eq(str_at(r.json, "sync.since"), "2023-11-14T22:13:20Z");
	ck_assert_ptr_null(at(r.json, "last_error"));
	result_clear(&r);
}
END_TEST

START_TEST(master_pending_replica_down)
{
	long long now = time(NULL);
	struct result r;

	load_config("master", 60, 2005);
	add_init(RUN_OK, NULL);
	queue_changes(2);
	start_fake_agent();
	save_record("down", now, SYNC_STATE_IN_SYNC, now - 100);
	run_status(false, &r);
	ck_assert_int_eq(r.code, STATUS_OK);
	assert_first_line(r.text, "MAILREPL OK - in sync, 2 pending");
	assert_contains(r.text, "2 changes, the oldest queued");
	assert_contains(r.text, "waiting for:    the replica's IMAP server");
	ck_assert(bool_at(r.json, "in_sync"));
	ck_assert_int_eq(int_at(r.json, "pending.count"), 2);
	ck_assert_int_le(int_at(r.json, "pending.oldest_age_s"), 5);
	ck_assert_str_eq(str_at(r.json, "peer.state"), "down");
	ck_assert_str_eq(str_at(r.json, "running.waiting_for"),
			 "the replica's IMAP server");
	result_clear(&r);
}
END_TEST

START_TEST(master_lasting_out_of_sync)
{
	long long now = time(NULL);
	struct result r;
	char since[32];
	time_t expected;

	load_config("master", 1, 2005);
	add_init(RUN_OK, NULL);
	queue_changes(3);
	expected = (time_t)time(NULL) + 1;
	start_fake_agent();
	save_record("down", now, SYNC_STATE_IN_SYNC, now - 100);
	sleep(3);
	run_status(false, &r);
	ck_assert_int_eq(r.code, STATUS_CRITICAL);
	assert_first_line(r.text, "MAILREPL CRITICAL - out of sync, 3 pending: "
				  "changes have been pending for longer");
	assert_contains(r.text, "out of sync since");
	ck_assert(!bool_at(r.json, "in_sync"));
	ck_assert_str_eq(str_at(r.json, "sync.state"), "out_of_sync");
	ck_assert_str_eq(str_at(r.json, "sync.level"), "CRITICAL");
	ck_assert_int_ge(int_at(r.json, "pending.oldest_age_s"), 3);
	/* Out of sync from when the oldest change passed the limit. */
	strftime(since, sizeof(since), "%Y-%m-%dT%H:%M:%SZ", gmtime(&expected));
	ck_assert_msg(strcmp(str_at(r.json, "sync.since"), since) <= 0,
		      "since %s, expected %s or earlier",
		      str_at(r.json, "sync.since"), since);
	result_clear(&r);
}
END_TEST

START_TEST(master_agent_down)
{
	long long now = time(NULL) - 30;
	struct result r;
	char updated[32];
	time_t t = (time_t)now;

	load_config("master", 60, 2005);
	add_init(RUN_OK, NULL);
	queue_changes(1);
	save_record("connected", now, SYNC_STATE_IN_SYNC, now - 100);
	run_status(false, &r);
	ck_assert_int_eq(r.code, STATUS_CRITICAL);
	assert_first_line(r.text, "MAILREPL CRITICAL - agent down, 1 pending: "
				  "mailrepld is not running");
	assert_contains(r.text, "agent:          not running; figures as of");
	assert_contains(r.text, "(when the agent stopped)");
	ck_assert(!bool_at(r.json, "agent.running"));
	ck_assert_ptr_null(at(r.json, "agent.pid"));
	strftime(updated, sizeof(updated), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
	ck_assert_str_eq(str_at(r.json, "agent.record_updated"), updated);
	/* The agent stopped replicating when it last wrote its record. */
	ck_assert_str_eq(str_at(r.json, "sync.since"), updated);
	ck_assert_str_eq(str_at(r.json, "sync.state"), "unknown");
	ck_assert_int_eq(int_at(r.json, "pending.count"), 1);
	ck_assert_str_eq(str_at(r.json, "running.waiting_for"),
			 "mailrepld is not running");
	ck_assert(json_object_get_double(at(r.json, "running.rate_per_min")) ==
		  0.0);
	result_clear(&r);
}
END_TEST

START_TEST(master_init_failed)
{
	struct result r;

	load_config("master", 60, 0);
	add_init(RUN_FAILED, "cannot log in to the replica as repladmin");
	run_status(false, &r);
	ck_assert_int_eq(r.code, STATUS_CRITICAL);
	assert_contains(r.text, "the last initial replication failed");
	assert_contains(r.text, "error:        cannot log in");
	ck_assert_str_eq(str_at(r.json, "initial.result"), "failed");
	ck_assert_str_eq(str_at(r.json, "initial.error"),
			 "cannot log in to the replica as repladmin");
	ck_assert_str_eq(str_at(r.json, "last_error.text"),
			 "cannot log in to the replica as repladmin");
	ck_assert_str_eq(str_at(r.json, "last_error.at"),
			 str_at(r.json, "initial.finished"));
	result_clear(&r);
}
END_TEST

/* A port that nothing listens on: bound, then closed. */
static unsigned
closed_port(void)
{
	struct sockaddr_in addr = {.sin_family = AF_INET};
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	unsigned port;

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
	port = ntohs(addr.sin_port);
	close(fd);
	return port;
}

START_TEST(master_peer_unreachable)
{
	long long now = time(NULL);
	struct result r;

	load_config("master", 60, closed_port());
	add_init(RUN_OK, NULL);
	start_fake_agent();
	save_record("connected", now, SYNC_STATE_IN_SYNC, now - 100);
	run_status(true, &r);
	/* In sync, but the replica's view is missing: at least WARNING. */
	ck_assert_int_eq(r.code, STATUS_WARNING);
	assert_first_line(r.text, "MAILREPL WARNING - in sync, 0 pending; the "
				  "replica's agent cannot be queried");
	assert_contains(r.text, "replica's view: not available: cannot "
				"connect");
	ck_assert(bool_at(r.json, "in_sync"));
	ck_assert_str_eq(str_at(r.json, "sync.level"), "OK");
	ck_assert_ptr_null(at(r.json, "peer.view"));
	ck_assert_ptr_nonnull(
		strstr(str_at(r.json, "peer.view_error"), "cannot connect"));
	result_clear(&r);
}
END_TEST

START_TEST(master_peer_no_channel)
{
	struct result r;

	load_config("master", 60, 0);
	add_init(RUN_OK, NULL);
	run_status(true, &r);
	/* The agent is down, which is worse than the missing view. */
	ck_assert_int_eq(r.code, STATUS_CRITICAL);
	assert_contains(r.text, "no control channel");
	ck_assert_str_eq(str_at(r.json, "peer.view_error"),
			 "no control channel ([master] control_port is 0)");
	result_clear(&r);
}
END_TEST

START_TEST(master_store_unreadable)
{
	struct result r;
	char *db = xasprintf("%s/state.db", state_dir);
	static const char junk[] = "this is not an SQLite database, not at "
				   "all, and it is long enough to be read\n";

	load_config("master", 60, 0);
	tu_write_file(db, junk, sizeof(junk) - 1, 0600);
	run_status(false, &r);
	ck_assert_int_eq(r.code, STATUS_UNKNOWN);
	assert_first_line(r.text, "MAILREPL UNKNOWN - unknown");
	ck_assert_ptr_nonnull(at(r.json, "error"));
	ck_assert_str_eq(str_at(r.json, "sync.level"), "UNKNOWN");
	ck_assert_ptr_null(at(r.json, "pending.count"));
	result_clear(&r);
	free(db);
}
END_TEST

START_TEST(config_unreadable)
{
	struct status_options text = {0}, json = {.json = true};
	char *buf = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&buf, &len);
	struct json_object *obj;

	ck_assert_int_eq(status_cmd_fail(&text, "x.conf: not found", out),
			 STATUS_UNKNOWN);
	fclose(out);
	assert_first_line(buf, "MAILREPL UNKNOWN - unknown: x.conf: not found");
	free(buf);

	out = open_memstream(&buf, &len);
	ck_assert_int_eq(status_cmd_fail(&json, "x.conf: not found", out),
			 STATUS_UNKNOWN);
	fclose(out);
	obj = json_tokener_parse(buf);
	ck_assert_ptr_nonnull(obj);
	check_schema(obj);
	ck_assert_ptr_null(at(obj, "mode"));
	ck_assert_str_eq(str_at(obj, "error"), "x.conf: not found");
	ck_assert_int_eq(int_at(obj, "exit_code"), 3);
	json_object_put(obj);
	free(buf);
}
END_TEST

/* Write peer.json as the replica's agent keeps it. */
static void
save_peer(long long begin, long long end, long long received,
	  unsigned long long pending, unsigned long long age)
{
	struct json_object *peer = json_object_new_object();
	struct json_object *o;
	char *error = NULL;

	json_object_object_add(peer, "bound_master",
			       json_object_new_string("mail1.example.org"));
	json_object_object_add(peer, "bound_at",
			       json_object_new_int64(begin - 10));
	o = json_object_new_object();
	json_object_object_add(o, "started", json_object_new_int64(begin));
	json_object_object_add(peer, "init_begin", o);
	if (end != 0) {
		o = json_object_new_object();
		json_object_object_add(o, "result",
				       json_object_new_string("ok"));
		json_object_object_add(o, "messages",
				       json_object_new_int64(120));
		json_object_object_add(o, "bytes", json_object_new_int64(4096));
		json_object_object_add(o, "rejected", json_object_new_int64(0));
		json_object_object_add(o, "finished",
				       json_object_new_int64(end));
		json_object_object_add(peer, "init_end", o);
	}
	if (received != 0) {
		o = json_object_new_object();
		json_object_object_add(o, "pending",
				       json_object_new_int64((int64_t)pending));
		json_object_object_add(o, "oldest_age_s",
				       json_object_new_int64((int64_t)age));
		json_object_object_add(o, "last_applied",
				       json_object_new_int64(received - 2));
		json_object_object_add(o, "last_error",
				       json_object_new_string("disk full"));
		json_object_object_add(o, "received",
				       json_object_new_int64(received));
		json_object_object_add(peer, "master_status", o);
	}
	ck_assert_msg(ctl_peer_save(state_dir, peer, &error) == 0, "%s", error);
	json_object_put(peer);
}

START_TEST(replica_in_sync)
{
	long long now = time(NULL);
	struct result r;

	load_config("replica", 60, 0);
	save_peer(now - 100, now - 50, now - 1, 1, 0);
	run_status(true, &r);
	ck_assert_int_eq(r.code, STATUS_OK);
	assert_first_line(r.text, "MAILREPL OK - in sync, 1 pending");
	assert_contains(r.text, "master:         mail1.example.org (bound");
	assert_contains(r.text, "(as the master reported it)");
	assert_contains(r.text, "master's last STATUS:");
	assert_contains(r.text, "  last error:   disk full");
	ck_assert_str_eq(str_at(r.json, "mode"), "replica");
	ck_assert_str_eq(str_at(r.json, "peer.role"), "master");
	ck_assert_str_eq(str_at(r.json, "peer.id"), "mail1.example.org");
	ck_assert(!bool_at(r.json, "peer.init_requested"));
	ck_assert_int_eq(int_at(r.json, "peer.figures.pending"), 1);
	ck_assert_str_eq(str_at(r.json, "initial.result"), "ok");
	ck_assert_ptr_null(at(r.json, "initial.uploaded"));
	ck_assert_int_eq(int_at(r.json, "pending.count"), 1);
	ck_assert_int_eq(int_at(r.json, "pending.oldest_age_s"), 0);
	ck_assert_str_eq(str_at(r.json, "last_error.text"), "disk full");
	ck_assert_ptr_nonnull(at(r.json, "running.last_applied"));
	ck_assert(bool_at(r.json, "in_sync"));
	result_clear(&r);
}
END_TEST

START_TEST(replica_stale_figures)
{
	long long now = time(NULL);
	struct result r;

	load_config("replica", 60, 0);
	save_peer(now - 1000, now - 900, now - 100, 0, 0);
	run_status(false, &r);
	ck_assert_int_eq(r.code, STATUS_CRITICAL);
	assert_contains(r.text, "no status from the master for longer than");
	ck_assert_str_eq(str_at(r.json, "sync.state"), "out_of_sync");
	result_clear(&r);
}
END_TEST

START_TEST(replica_initializing)
{
	long long now = time(NULL);
	struct result r;

	load_config("replica", 60, 0);
	/* An INIT BEGIN newer than the last INIT END. */
	save_peer(now - 10, now - 900, now - 950, 0, 0);
	run_status(false, &r);
	ck_assert_int_eq(r.code, STATUS_WARNING);
	ck_assert_str_eq(str_at(r.json, "initial.result"), "running");
	ck_assert_str_eq(str_at(r.json, "sync.state"), "initializing");
	result_clear(&r);
}
END_TEST

START_TEST(replica_never_bound)
{
	struct result r;

	load_config("replica", 60, 0);
	run_status(false, &r);
	ck_assert_int_eq(r.code, STATUS_CRITICAL);
	assert_contains(r.text, "master:         none bound yet");
	ck_assert_ptr_null(at(r.json, "peer.id"));
	ck_assert_ptr_null(at(r.json, "peer.figures"));
	ck_assert_ptr_null(at(r.json, "pending.count"));
	ck_assert_ptr_null(at(r.json, "initial"));
	result_clear(&r);
}
END_TEST

START_TEST(standalone_ok)
{
	struct result r;

	load_config("standalone", 60, 0);
	run_status(false, &r);
	ck_assert_int_eq(r.code, STATUS_OK);
	assert_first_line(r.text, "MAILREPL OK - standalone\n");
	ck_assert_str_eq(str_at(r.json, "mode"), "standalone");
	ck_assert_str_eq(str_at(r.json, "sync.state"), "standalone");
	ck_assert_ptr_null(at(r.json, "peer"));
	ck_assert(!bool_at(r.json, "in_sync"));
	result_clear(&r);
}
END_TEST

static Suite *
status_suite(void)
{
	Suite *s = suite_create("status");
	TCase *judge = tcase_create("judge");
	TCase *cmd = tcase_create("command");

	tcase_add_loop_test(judge, judge_table, 0,
			    sizeof(judge_cases) / sizeof(*judge_cases));
	tcase_add_test(judge, judge_names);
	tcase_add_test(judge, parse_options);
	suite_add_tcase(s, judge);

	tcase_add_checked_fixture(cmd, setup, teardown);
	tcase_set_timeout(cmd, 30);
	tcase_add_test(cmd, master_never_initialized);
	tcase_add_test(cmd, master_initializing);
	tcase_add_test(cmd, master_in_sync);
	tcase_add_test(cmd, master_pending_replica_down);
	tcase_add_test(cmd, master_lasting_out_of_sync);
	tcase_add_test(cmd, master_agent_down);
	tcase_add_test(cmd, master_init_failed);
	tcase_add_test(cmd, master_peer_unreachable);
	tcase_add_test(cmd, master_peer_no_channel);
	tcase_add_test(cmd, master_store_unreadable);
	tcase_add_test(cmd, config_unreadable);
	tcase_add_test(cmd, replica_in_sync);
	tcase_add_test(cmd, replica_stale_figures);
	tcase_add_test(cmd, replica_initializing);
	tcase_add_test(cmd, replica_never_bound);
	tcase_add_test(cmd, standalone_ok);
	suite_add_tcase(s, cmd);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(status_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
