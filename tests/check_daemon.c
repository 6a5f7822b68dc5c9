/* Tests of the agent: cfg_edit's rewrite of [general] mode, the real
 * src/mailrepld run as a child (pid file, signals, reload, log reopen),
 * and the mailrepl mode command against it. */
#include <config.h>
#include "cfg.h"
#include "cfg_edit.h"
#include "testutil.h"
#include "util.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N_ELEMS(a) (sizeof(a) / sizeof(*(a)))

/* ---- cfg_edit_set_mode: the whole output is compared. ---- */

struct edit_case {
	const char *name;
	const char *input;
	const char *expected;
};

static const struct edit_case edit_cases[] = {
	{"comments around the line",
	 "# top\n[general]\n# the role\nmode = standalone\n# after\n"
	 "log_file = /x\n",
	 "# top\n[general]\n# the role\nmode = master\n# after\n"
	 "log_file = /x\n"},
	{"inline comment kept", "[general]\nmode = replica ; was standalone\n",
	 "[general]\nmode = master ; was standalone\n"},
	{"hash comment without space", "[general]\nmode = replica# old\n",
	 "[general]\nmode = master# old\n"},
	{"spacing and key case kept",
	 "[general]\n  Mode\t=\t  replica   \nstate_dir = /s\n",
	 "[general]\n  Mode\t=\t  master   \nstate_dir = /s\n"},
	{"no spaces around equals", "[general]\nmode=replica\n",
	 "[general]\nmode=master\n"},
	{"CRLF line replaced",
	 "[general]\r\nmode = replica\r\nstate_dir = /s\r\n",
	 "[general]\r\nmode = master\r\nstate_dir = /s\r\n"},
	{"CRLF line inserted", "[general]\r\nstate_dir = /s\r\n",
	 "[general]\r\nmode = master\r\nstate_dir = /s\r\n"},
	{"no mode line", "[general]\nstate_dir = /s\n\n[master]\nworkers = 2\n",
	 "[general]\nmode = master\nstate_dir = /s\n\n[master]\n"
	 "workers = 2\n"},
	{"no general section", "# mailrepl\n[master]\nreplica_host = r\n",
	 "[general]\nmode = master\n\n# mailrepl\n[master]\n"
	 "replica_host = r\n"},
	{"empty file", "", "[general]\nmode = master\n"},
	{"header on last line without newline", "[general]",
	 "[general]\nmode = master\n"},
	{"mode in another section untouched",
	 "[replica]\nmode = replica\n[general]\nmode = standalone\n",
	 "[replica]\nmode = replica\n[general]\nmode = master\n"},
	{"mode only in another section", "[alert]\nmode = x\n",
	 "[general]\nmode = master\n\n[alert]\nmode = x\n"},
	{"commented-out mode skipped",
	 "[general]\n# mode = replica\n;mode = replica\nmode = standalone\n",
	 "[general]\n# mode = replica\n;mode = replica\nmode = master\n"},
	{"double quotes kept", "[general]\nmode = \"replica\" # quoted\n",
	 "[general]\nmode = \"master\" # quoted\n"},
	{"single quotes kept", "[general]\nmode = 'replica'\n",
	 "[general]\nmode = 'master'\n"},
	{"section name case and spaces", "[ General ]\nmode = replica\n",
	 "[ General ]\nmode = master\n"},
	{"second general header",
	 "[general]\nstate_dir = /s\n[master]\nworkers = 2\n[general]\n"
	 "mode = replica\n",
	 "[general]\nstate_dir = /s\n[master]\nworkers = 2\n[general]\n"
	 "mode = master\n"},
	{"continued line before mode",
	 "[general]\nstate_dir = /a\\\nmode = x\nmode = replica\n",
	 "[general]\nstate_dir = /a\\\nmode = x\nmode = master\n"},
	{"no newline at end", "[general]\nmode = replica",
	 "[general]\nmode = master"},
	{"key that only starts with mode", "[general]\nmodes = x\n",
	 "[general]\nmode = master\nmodes = x\n"},
};

START_TEST(edit_sets_mode_line)
{
	const struct edit_case *c = &edit_cases[_i];
	char *out = NULL, *error = NULL;
	size_t len = 0;

	ck_assert_msg(cfg_edit_set_mode(c->input, strlen(c->input), "master",
					&out, &len, &error) == 0,
		      "%s: %s", c->name, error);
	ck_assert_msg(strcmp(out, c->expected) == 0,
		      "%s:\n--- got\n%s\n--- expected\n%s", c->name, out,
		      c->expected);
	ck_assert_uint_eq(len, strlen(c->expected));
	free(out);
}
END_TEST

START_TEST(edit_rejects_unsafe_lines)
{
	static const char *const inputs[] = {
		"[general]\nmode = \"replica\n",
		"[general]\nmode = rep\\\nlica\n",
	};
	char *out = NULL, *error = NULL;
	size_t len;

	for (size_t i = 0; i < N_ELEMS(inputs); i++) {
		ck_assert_int_eq(cfg_edit_set_mode(inputs[i], strlen(inputs[i]),
						   "master", &out, &len,
						   &error),
				 -1);
		ck_assert_ptr_null(out);
		ck_assert_ptr_nonnull(error);
		xfree(&error);
	}
}
END_TEST

/* ---- cfg_edit_write_mode on real files. ---- */

static char *tmpdir;

static void
setup(void)
{
	tmpdir = tu_tempdir("daemon");
}

static void
teardown(void)
{
	tu_rmrf(tmpdir);
	xfree(&tmpdir);
}

static char *
write_conf(const char *name, const char *text, mode_t mode)
{
	char *path = xasprintf("%s/%s", tmpdir, name);

	tu_write_file(path, text, strlen(text), mode);
	chmod(path, mode);
	return path;
}

START_TEST(write_mode_keeps_other_bytes)
{
	const char *before = "# role\r\n[general]\r\nmode = standalone  ; x\r\n"
			     "state_dir = /var/lib/mailrepl\r\n";
	const char *after = "# role\r\n[general]\r\nmode = replica  ; x\r\n"
			    "state_dir = /var/lib/mailrepl\r\n";
	char *path = write_conf("a.conf", before, 0640), *error = NULL;
	struct config *cfg = NULL;
	struct stat st;
	char *text;

	ck_assert_msg(cfg_edit_write_mode(path, "replica", &cfg, &error) == 0,
		      "%s", error);
	ck_assert_int_eq(cfg->mode, CFG_MODE_REPLICA);
	ck_assert_str_eq(cfg->path, path);
	text = tu_read_file(path, NULL);
	ck_assert_str_eq(text, after);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0640);
	ck_assert_int_eq(
		tu_run("test -z \"$(ls -A '%s' | grep -v a.conf)\"", tmpdir),
		0);
	config_free(&cfg);
	free(text);
	free(path);
}
END_TEST

START_TEST(write_mode_follows_symlink)
{
	char *path = write_conf("real.conf", "[general]\n", 0600);
	char *link = xasprintf("%s/link.conf", tmpdir), *error = NULL, *text;
	struct stat st;

	ck_assert_int_eq(symlink(path, link), 0);
	ck_assert_msg(cfg_edit_write_mode(link, "replica", NULL, &error) == 0,
		      "%s", error);
	ck_assert_int_eq(lstat(link, &st), 0);
	ck_assert(S_ISLNK(st.st_mode));
	text = tu_read_file(path, NULL);
	ck_assert_str_eq(text, "[general]\nmode = replica\n");
	free(text);
	free(link);
	free(path);
}
END_TEST

START_TEST(write_mode_invalid_result_unchanged)
{
	const char *before = "[general]\nmode = standalone\n";
	char *path = write_conf("b.conf", before, 0600), *error = NULL, *text;

	/* master needs [master] replica_host, which this file lacks. */
	ck_assert_int_eq(cfg_edit_write_mode(path, "master", NULL, &error), -1);
	ck_assert_ptr_nonnull(strstr(error, path));
	ck_assert_ptr_nonnull(strstr(error, "replica_host"));
	ck_assert_ptr_null(strstr(error, ".b.conf."));
	text = tu_read_file(path, NULL);
	ck_assert_str_eq(text, before);
	ck_assert_int_eq(
		tu_run("test -z \"$(ls -A '%s' | grep -v b.conf)\"", tmpdir),
		0);
	free(text);
	free(error);
	free(path);
}
END_TEST

START_TEST(write_mode_missing_file)
{
	char *path = xasprintf("%s/none.conf", tmpdir), *error = NULL;

	ck_assert_int_eq(cfg_edit_write_mode(path, "replica", NULL, &error),
			 -1);
	ck_assert_ptr_nonnull(strstr(error, path));
	free(error);
	free(path);
}
END_TEST

/* ---- The real agent, run as a child. ---- */

/* A standalone configuration whose files all live in tmpdir. */
struct agent_env {
	char *conf, *log, *pidfile, *socket, *out;
	pid_t pid;
};

static char *
builddir_path(const char *relative)
{
	const char *dir = getenv("MAILREPL_BUILDDIR");

	return xasprintf("%s/%s", dir != NULL ? dir : ".", relative);
}

static char *
conf_text(const char *mode)
{
	return xasprintf("# test agent\n[general]\nmode = %s\n"
			 "state_dir = %s/state\nlog_file = %s/log/agent.log\n"
			 "control_socket = %s/run/control.sock\n\n"
			 "[maildir]\nroot = %s/mail\n\n"
			 "[master]\nreplica_host = 127.0.0.1\n"
			 "# a closed port: the agent must not reach any "
			 "server here\nimap_port = 9\nimap_tls = none\n"
			 "admin_user = admin\n"
			 "admin_password_file = %s/admin.pw\n",
			 mode, tmpdir, tmpdir, tmpdir, tmpdir, tmpdir);
}

static void
env_init(struct agent_env *e)
{
	char *text = conf_text("standalone"), *dir;

	memset(e, 0, sizeof(*e));
	e->conf = write_conf("agent.conf", text, 0600);
	e->log = xasprintf("%s/log/agent.log", tmpdir);
	e->pidfile = xasprintf("%s/run/mailrepld.pid", tmpdir);
	e->socket = xasprintf("%s/run/control.sock", tmpdir);
	e->out = xasprintf("%s/agent.out", tmpdir);
	free(write_conf("admin.pw", "secret\n", 0600));
	dir = xasprintf("%s/log", tmpdir);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	free(dir);
	/* A master watches its mail tree from the start. */
	dir = xasprintf("%s/mail", tmpdir);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	free(dir);
	free(text);
}

static void
env_free(struct agent_env *e)
{
	if (e->pid > 0) {
		kill(e->pid, SIGKILL);
		waitpid(e->pid, NULL, 0);
	}
	free(e->conf);
	free(e->log);
	free(e->pidfile);
	free(e->socket);
	free(e->out);
}

static void
sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* Wait up to 5 s until path contains needle. */
static bool
wait_for_text(const char *path, const char *needle)
{
	for (int i = 0; i < 250; i++) {
		char *text = tu_read_file(path, NULL);
		bool found = text != NULL && strstr(text, needle) != NULL;

		free(text);
		if (found)
			return true;
		sleep_ms(20);
	}
	return false;
}

static long
read_pidfile(const char *path)
{
	char *text = tu_read_file(path, NULL);
	long pid = text != NULL ? strtol(text, NULL, 10) : 0;

	free(text);
	return pid;
}

/* Start src/mailrepld -f and wait until its pid file names it. */
static void
agent_start(struct agent_env *e)
{
	char *bin = builddir_path("src/mailrepld"), *expected;

	e->pid = fork();
	ck_assert_int_ge(e->pid, 0);
	if (e->pid == 0) {
		int fd = open(e->out, O_WRONLY | O_CREAT | O_APPEND, 0600);

		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		execl(bin, "mailrepld", "-f", "-c", e->conf, (char *)NULL);
		_exit(127);
	}
	expected = xasprintf("%ld\n", (long)e->pid);
	ck_assert_msg(wait_for_text(e->pidfile, expected),
		      "%s did not write %s", bin, e->pidfile);
	ck_assert_msg(wait_for_text(e->log, "event=agent_start"),
		      "no agent_start in %s", e->log);
	free(expected);
	free(bin);
}

/* Send sig and wait up to 5 s for the exit. Returns the exit code, or -1
 * when the agent did not exit or was killed by a signal. */
static int
agent_signal_exit(struct agent_env *e, int sig)
{
	int status;

	ck_assert_int_eq(kill(e->pid, sig), 0);
	for (int i = 0; i < 250; i++) {
		pid_t r = waitpid(e->pid, &status, WNOHANG);

		if (r == e->pid) {
			e->pid = 0;
			return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
		}
		sleep_ms(20);
	}
	return -1;
}

static void
assert_alive(const struct agent_env *e)
{
	ck_assert_int_eq(waitpid(e->pid, NULL, WNOHANG), 0);
	ck_assert_int_eq(kill(e->pid, 0), 0);
}

START_TEST(agent_pidfile_and_clean_stop)
{
	struct agent_env e;
	struct stat st;

	env_init(&e);
	agent_start(&e);
	ck_assert_int_eq(read_pidfile(e.pidfile), e.pid);
	ck_assert_int_eq(stat(e.socket, &st), 0);
	ck_assert(wait_for_text(e.log, "mode=standalone"));

	ck_assert_int_eq(agent_signal_exit(&e, SIGTERM), 0);
	ck_assert_int_eq(access(e.pidfile, F_OK), -1);
	ck_assert(wait_for_text(e.log, "event=agent_stop"));
	/* -f also logs to stderr. */
	ck_assert(wait_for_text(e.out, "event=agent_stop"));
	env_free(&e);
}
END_TEST

START_TEST(agent_sigint_stops)
{
	struct agent_env e;

	env_init(&e);
	agent_start(&e);
	ck_assert_int_eq(agent_signal_exit(&e, SIGINT), 0);
	ck_assert_int_eq(access(e.pidfile, F_OK), -1);
	ck_assert(wait_for_text(e.log, "stopped by SIGINT"));
	env_free(&e);
}
END_TEST

START_TEST(agent_sighup_reloads)
{
	struct agent_env e;

	env_init(&e);
	agent_start(&e);
	ck_assert_int_eq(kill(e.pid, SIGHUP), 0);
	ck_assert(wait_for_text(e.log, "event=reload "));
	assert_alive(&e);
	ck_assert_int_eq(read_pidfile(e.pidfile), e.pid);
	ck_assert_int_eq(agent_signal_exit(&e, SIGTERM), 0);
	env_free(&e);
}
END_TEST

START_TEST(agent_reopens_rotated_log)
{
	struct agent_env e;
	char *rotated;
	char *old_text;

	env_init(&e);
	agent_start(&e);
	rotated = xasprintf("%s.1", e.log);
	ck_assert_int_eq(rename(e.log, rotated), 0);
	ck_assert_int_eq(kill(e.pid, SIGHUP), 0);

	ck_assert_msg(wait_for_text(e.log, "event=reload "),
		      "no new %s after SIGHUP", e.log);
	old_text = tu_read_file(rotated, NULL);
	ck_assert_ptr_nonnull(strstr(old_text, "event=agent_start"));
	ck_assert_ptr_null(strstr(old_text, "event=reload"));
	ck_assert_int_eq(agent_signal_exit(&e, SIGTERM), 0);
	ck_assert(wait_for_text(e.log, "event=agent_stop"));
	free(old_text);
	free(rotated);
	env_free(&e);
}
END_TEST

START_TEST(agent_second_instance_rejected)
{
	char *bin = builddir_path("src/mailrepld"), *err, *expected, *text;
	struct agent_env e;

	env_init(&e);
	agent_start(&e);
	err = xasprintf("%s/second.err", tmpdir);
	ck_assert_int_eq(tu_run("'%s' -f -c '%s' 2>'%s'", bin, e.conf, err), 1);
	expected = xasprintf("mailrepld already runs as pid %ld", (long)e.pid);
	text = tu_read_file(err, NULL);
	ck_assert_msg(strstr(text, expected) != NULL, "stderr: %s", text);

	/* The first agent and its files are untouched. */
	assert_alive(&e);
	ck_assert_int_eq(read_pidfile(e.pidfile), e.pid);
	ck_assert_int_eq(access(e.socket, F_OK), 0);
	ck_assert_int_eq(agent_signal_exit(&e, SIGTERM), 0);
	free(text);
	free(expected);
	free(err);
	free(bin);
	env_free(&e);
}
END_TEST

START_TEST(agent_stale_pidfile_replaced)
{
	struct agent_env e;
	char *dir;

	env_init(&e);
	dir = xasprintf("%s/run", tmpdir);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	/* pid 1 is alive but is not mailrepld. */
	free(write_conf("run/mailrepld.pid", "1\n", 0644));
	agent_start(&e);
	ck_assert_int_eq(read_pidfile(e.pidfile), e.pid);
	ck_assert_int_eq(agent_signal_exit(&e, SIGTERM), 0);
	free(dir);
	env_free(&e);
}
END_TEST

START_TEST(agent_bad_config_on_sighup)
{
	struct agent_env e;

	env_init(&e);
	agent_start(&e);
	free(write_conf("agent.conf", "[general]\nmode = primary\n", 0600));
	ck_assert_int_eq(kill(e.pid, SIGHUP), 0);
	ck_assert(wait_for_text(e.log, "event=reload_failed"));
	ck_assert(wait_for_text(e.log, "primary"));
	assert_alive(&e);

	/* It still handles signals with the old configuration. */
	ck_assert_int_eq(kill(e.pid, SIGHUP), 0);
	ck_assert_int_eq(agent_signal_exit(&e, SIGTERM), 0);
	ck_assert_int_eq(access(e.pidfile, F_OK), -1);
	env_free(&e);
}
END_TEST

START_TEST(agent_bad_config_at_start)
{
	char *bin = builddir_path("src/mailrepld"), *conf, *err, *text;

	conf = write_conf("bad.conf", "[general]\nmode = primary\n", 0600);
	err = xasprintf("%s/bad.err", tmpdir);
	ck_assert_int_eq(tu_run("'%s' -f -c '%s' 2>'%s'", bin, conf, err), 78);
	text = tu_read_file(err, NULL);
	ck_assert_ptr_nonnull(strstr(text, conf));
	ck_assert_ptr_nonnull(strstr(text, "primary"));
	free(text);
	free(err);
	free(conf);
	free(bin);
}
END_TEST

START_TEST(agent_background_detaches)
{
	char *bin = builddir_path("src/mailrepld");
	struct agent_env e;
	long pid;

	env_init(&e);
	ck_assert_int_eq(tu_run("'%s' -c '%s'", bin, e.conf), 0);
	/* The parent exits only after the daemon reported its start. */
	pid = read_pidfile(e.pidfile);
	ck_assert_int_gt(pid, 1);
	ck_assert_int_eq(kill((pid_t)pid, 0), 0);
	ck_assert(wait_for_text(e.log, "event=agent_start"));

	ck_assert_int_eq(kill((pid_t)pid, SIGTERM), 0);
	ck_assert(wait_for_text(e.log, "event=agent_stop"));
	for (int i = 0; i < 250 && access(e.pidfile, F_OK) == 0; i++)
		sleep_ms(20);
	ck_assert_int_eq(access(e.pidfile, F_OK), -1);
	free(bin);
	env_free(&e);
}
END_TEST

START_TEST(agent_background_start_error)
{
	char *bin = builddir_path("src/mailrepld"), *err, *text, *conf;

	/* The log directory is missing, so the daemon fails after the
	 * fork, and the waiting parent must print its reason. */
	conf = write_conf("nolog.conf",
			  "[general]\nlog_file = "
			  "/nonexistent/mailrepl/agent.log\n",
			  0600);
	err = xasprintf("%s/nolog.err", tmpdir);
	ck_assert_int_eq(tu_run("'%s' -c '%s' 2>'%s'", bin, conf, err), 1);
	text = tu_read_file(err, NULL);
	ck_assert_msg(strstr(text, "/nonexistent/mailrepl/agent.log") != NULL,
		      "stderr: %s", text);
	free(text);
	free(err);
	free(conf);
	free(bin);
}
END_TEST

/* ---- mailrepl mode ---- */

/* Run mailrepl with args (shell words); stdout and stderr go to
 * tmpdir/mode.out and mode.err. Returns the exit code. */
static int
run_mailrepl(const char *conf, const char *args)
{
	char *bin = builddir_path("src/mailrepl");
	int rc = tu_run("'%s' -c '%s' %s <'/dev/null' >'%s/mode.out' "
			"2>'%s/mode.err'",
			bin, conf, args, tmpdir, tmpdir);

	free(bin);
	return rc;
}

static char *
read_output(const char *name)
{
	char *path = xasprintf("%s/%s", tmpdir, name);
	char *text = tu_read_file(path, NULL);

	ck_assert_msg(text != NULL, "%s missing", path);
	free(path);
	return text;
}

START_TEST(mode_shows_config_and_agent)
{
	struct agent_env e;
	char *out, *running;

	env_init(&e);
	ck_assert_int_eq(run_mailrepl(e.conf, "mode"), 0);
	out = read_output("mode.out");
	ck_assert_str_eq(out, "mode:  standalone\nagent: not running\n");
	free(out);

	agent_start(&e);
	ck_assert_int_eq(run_mailrepl(e.conf, "mode"), 0);
	out = read_output("mode.out");
	running = xasprintf("mode:  standalone\nagent: running (pid %ld)\n",
			    (long)e.pid);
	ck_assert_str_eq(out, running);
	ck_assert_int_eq(agent_signal_exit(&e, SIGTERM), 0);
	free(running);
	free(out);
	env_free(&e);
}
END_TEST

START_TEST(mode_switch_signals_agent)
{
	struct agent_env e;
	char *out, *told, *text, *expected = conf_text("master");

	env_init(&e);
	agent_start(&e);
	ck_assert_int_eq(run_mailrepl(e.conf, "mode master --yes"), 0);
	out = read_output("mode.out");
	told = xasprintf("told the running agent (pid %ld) to reload",
			 (long)e.pid);
	ck_assert_msg(strstr(out, told) != NULL, "output: %s", out);
	ck_assert_ptr_nonnull(strstr(out, "standalone -> master"));
	ck_assert_ptr_nonnull(strstr(out, "initial replication"));

	/* Only the value changed. */
	text = tu_read_file(e.conf, NULL);
	ck_assert_str_eq(text, expected);

	ck_assert(wait_for_text(e.log, "event=mode_change old=standalone "
				       "new=master"));
	ck_assert(wait_for_text(e.log, "event=reload "));
	ck_assert(wait_for_text(e.log, "mode=master"));
	assert_alive(&e);
	ck_assert_int_eq(agent_signal_exit(&e, SIGTERM), 0);
	free(text);
	free(told);
	free(out);
	free(expected);
	env_free(&e);
}
END_TEST

START_TEST(mode_switch_without_agent)
{
	struct agent_env e;
	char *out, *text, *expected = conf_text("master");

	env_init(&e);
	ck_assert_int_eq(run_mailrepl(e.conf, "mode master --yes"), 0);
	out = read_output("mode.out");
	ck_assert_ptr_nonnull(strstr(out, "no agent runs"));
	ck_assert_ptr_nonnull(strstr(out, "mailrepl init"));
	text = tu_read_file(e.conf, NULL);
	ck_assert_str_eq(text, expected);
	free(text);
	free(out);

	/* The same mode again changes nothing. */
	ck_assert_int_eq(run_mailrepl(e.conf, "mode master --yes"), 0);
	out = read_output("mode.out");
	ck_assert_ptr_nonnull(strstr(out, "already master"));
	free(out);
	free(expected);
	env_free(&e);
}
END_TEST

START_TEST(mode_rejects_invalid_name)
{
	struct agent_env e;
	char *err, *before, *after;

	env_init(&e);
	before = tu_read_file(e.conf, NULL);
	ck_assert_int_eq(run_mailrepl(e.conf, "mode primary --yes"), 64);
	err = read_output("mode.err");
	ck_assert_str_eq(err, "mailrepl mode: invalid mode primary; use "
			      "standalone, master or replica\n");
	after = tu_read_file(e.conf, NULL);
	ck_assert_str_eq(after, before);
	free(after);
	free(before);
	free(err);
	env_free(&e);
}
END_TEST

START_TEST(mode_needs_yes_without_terminal)
{
	struct agent_env e;
	char *err, *before, *after;

	env_init(&e);
	before = tu_read_file(e.conf, NULL);
	ck_assert_int_eq(run_mailrepl(e.conf, "mode replica"), 1);
	err = read_output("mode.err");
	ck_assert_ptr_nonnull(strstr(err, "--yes"));
	ck_assert_ptr_nonnull(strstr(err, e.conf));
	after = tu_read_file(e.conf, NULL);
	ck_assert_str_eq(after, before);
	free(after);
	free(before);
	free(err);
	env_free(&e);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("daemon");
	TCase *edit = tcase_create("cfg_edit");
	TCase *agent = tcase_create("agent");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(edit, setup, teardown);
	tcase_add_loop_test(edit, edit_sets_mode_line, 0, N_ELEMS(edit_cases));
	tcase_add_test(edit, edit_rejects_unsafe_lines);
	tcase_add_test(edit, write_mode_keeps_other_bytes);
	tcase_add_test(edit, write_mode_follows_symlink);
	tcase_add_test(edit, write_mode_invalid_result_unchanged);
	tcase_add_test(edit, write_mode_missing_file);
	suite_add_tcase(s, edit);

	tcase_add_checked_fixture(agent, setup, teardown);
	tcase_set_timeout(agent, 30);
	tcase_add_test(agent, agent_pidfile_and_clean_stop);
	tcase_add_test(agent, agent_sigint_stops);
	tcase_add_test(agent, agent_sighup_reloads);
	tcase_add_test(agent, agent_reopens_rotated_log);
	tcase_add_test(agent, agent_second_instance_rejected);
	tcase_add_test(agent, agent_stale_pidfile_replaced);
	tcase_add_test(agent, agent_bad_config_on_sighup);
	tcase_add_test(agent, agent_bad_config_at_start);
	tcase_add_test(agent, agent_background_detaches);
	tcase_add_test(agent, agent_background_start_error);
	tcase_add_test(agent, mode_shows_config_and_agent);
	tcase_add_test(agent, mode_switch_signals_agent);
	tcase_add_test(agent, mode_switch_without_agent);
	tcase_add_test(agent, mode_rejects_invalid_name);
	tcase_add_test(agent, mode_needs_yes_without_terminal);
	suite_add_tcase(s, agent);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
