/* Tests of the logfmt log (format, repeat limit, reopen), of the
 * "mailrepl log" command run as a program, of the events a real
 * "mailrepl init" logs, and of the progress line. */
#include <config.h>
#include "log.h"
#include "progress.h"
#include "testutil.h"
#include "util.h"

#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char *
log_one_line(void (*emit)(void))
{
	char *dir = tu_tempdir("log"), *path = xasprintf("%s/x.log", dir);
	char *error = NULL, *text;

	ck_assert_int_eq(log_open(path, false, "test", &error), 0);
	emit();
	log_close();
	text = tu_read_file(path, NULL);
	ck_assert_ptr_nonnull(text);
	tu_rmrf(dir);
	free(dir);
	free(path);
	return text;
}

static void
emit_plain(void)
{
	struct logline *l = log_begin(LOG_LVL_INFO, "append");

	log_str(l, "user", "alice");
	log_str(l, "folder", "INBOX");
	log_int(l, "count", 50);
	log_end(l);
}

static void
emit_quoted(void)
{
	struct logline *l = log_begin(LOG_LVL_WARN, "reject");

	log_str(l, "reason", "NO Can't save a \"zero\" byte message");
	log_str(l, "folder", "a=b");
	log_str(l, "empty", "");
	log_str(l, "ctl", "x\ny\x01");
	log_end(l);
}

static void
emit_debug(void)
{
	log_msg(LOG_LVL_DEBUG, "noise", "not written to the file");
	log_msg(LOG_LVL_INFO, "kept", "written");
}

START_TEST(line_has_timestamp_level_event)
{
	char *text = log_one_line(emit_plain);

	ck_assert_msg(strncmp(text, "ts=", 3) == 0, "line: %s", text);
	ck_assert_ptr_nonnull(strstr(text, "Z level=info event=append "
					   "user=alice folder=INBOX "
					   "count=50\n"));
	free(text);
}
END_TEST

START_TEST(values_quoted_and_escaped)
{
	char *text = log_one_line(emit_quoted);

	ck_assert_ptr_nonnull(strstr(
		text, "reason=\"NO Can't save a \\\"zero\\\" byte message\""));
	ck_assert_ptr_nonnull(strstr(text, "folder=\"a=b\""));
	ck_assert_ptr_nonnull(strstr(text, "empty=\"\""));
	ck_assert_ptr_nonnull(strstr(text, "ctl=\"x\\ny\\x01\""));
	ck_assert_ptr_null(strchr(text, '\x01'));
	free(text);
}
END_TEST

START_TEST(debug_not_in_file)
{
	char *text = log_one_line(emit_debug);

	ck_assert_ptr_null(strstr(text, "noise"));
	ck_assert_ptr_nonnull(strstr(text, "event=kept msg=written"));
	free(text);
}
END_TEST

START_TEST(level_names_parse)
{
	enum log_level level;

	ck_assert_int_eq(log_level_parse("WARN", &level), 0);
	ck_assert_int_eq(level, LOG_LVL_WARN);
	ck_assert_int_eq(log_level_parse("verbose", &level), -1);
}
END_TEST

START_TEST(progress_line_counts_and_eta)
{
	struct progress p = {0};
	char buf[256];

	atomic_store(&p.folders_done, 3);
	atomic_store(&p.folders_total, 10);
	atomic_store(&p.messages_done, 1000);
	atomic_store(&p.messages_total, 6046);
	atomic_store(&p.bytes_done, 5000000);
	atomic_store(&p.bytes_total, 30000000);
	progress_format(&p, 2000, buf, sizeof(buf));
	ck_assert_str_eq(buf, "folders 3/10  messages 1,000/6,046  "
			      "5.0/30.0 MB  500 msg/s  ETA 0:10");
}
END_TEST

/* ---- helpers ---- */

static void
sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

static size_t
count_of(const char *text, const char *needle)
{
	size_t n = 0;

	for (const char *p = strstr(text, needle); p != NULL;
	     p = strstr(p + 1, needle))
		n++;
	return n;
}

/* The sum of N over the "event=repeated count=N" lines of text. */
static unsigned long long
repeated_total(const char *text)
{
	const char *needle = "event=repeated count=";
	unsigned long long total = 0;

	for (const char *p = strstr(text, needle); p != NULL;
	     p = strstr(p + 1, needle))
		total += strtoull(p + strlen(needle), NULL, 10);
	return total;
}

static char *
builddir_path(const char *relative)
{
	const char *dir = getenv("MAILREPL_BUILDDIR");

	return xasprintf("%s/%s", dir != NULL ? dir : ".", relative);
}

/* A log file in a new temporary directory, opened as the sink. */
struct logfile {
	char *dir;
	char *path;
};

static void
logfile_open(struct logfile *lf, long long window_ms)
{
	char *error = NULL;

	lf->dir = tu_tempdir("log");
	lf->path = xasprintf("%s/x.log", lf->dir);
	log_set_repeat_window(window_ms);
	ck_assert_msg(log_open(lf->path, false, "test", &error) == 0, "%s",
		      error);
}

static char *
logfile_text(const struct logfile *lf)
{
	char *text = tu_read_file(lf->path, NULL);

	ck_assert_msg(text != NULL, "%s missing", lf->path);
	return text;
}

static void
logfile_free(struct logfile *lf)
{
	log_close();
	log_set_repeat_window(60000);
	tu_rmrf(lf->dir);
	free(lf->dir);
	free(lf->path);
}

static void
log_error_line(const char *user, const char *folder, const char *error,
	       long long ms)
{
	struct logline *l = log_begin(LOG_LVL_ERROR, "error");

	log_str(l, "scope", "connection");
	log_str(l, "user", user);
	log_str(l, "folder", folder);
	log_str(l, "error", error);
	log_int(l, "ms", ms);
	log_end(l);
}

static void
log_upload_line(const char *user, long long uid)
{
	struct logline *l = log_begin(LOG_LVL_INFO, "upload");

	log_str(l, "user", user);
	log_str(l, "folder", "INBOX");
	log_str(l, "file", "1500000000.M1P1.test");
	log_int(l, "uid", uid);
	log_int(l, "size", 120);
	log_end(l);
}

/* ---- the repeat limit ---- */

START_TEST(repeat_burst_one_line_and_summary)
{
	struct logfile lf;
	char *text;
	const char *first, *summary;

	logfile_open(&lf, 60000);
	for (int i = 0; i < 50; i++)
		log_error_line("alice", "INBOX",
			       "connect to 127.0.0.1:143 failed", i);
	log_close();
	text = logfile_text(&lf);

	ck_assert_uint_eq(count_of(text, " event=error "), 1);
	ck_assert_uint_eq(count_of(text, "event=repeated "), 1);
	summary = strstr(
		text, "level=error event=repeated count=49 user=alice "
		      "of=\"event=error scope=connection user=alice "
		      "folder=INBOX error=\\\"connect to 127.0.0.1:143 "
		      "failed\\\"\"\n");
	ck_assert_msg(summary != NULL, "log:\n%s", text);
	first = strstr(text, " event=error ");
	ck_assert_msg(first < summary, "summary before the line:\n%s", text);
	free(text);
	logfile_free(&lf);
}
END_TEST

START_TEST(repeat_distinct_lines_kept)
{
	struct logfile lf;
	char *text;

	logfile_open(&lf, 60000);
	for (int i = 0; i < 30; i++) {
		char folder[32];

		snprintf(folder, sizeof(folder), "F%d", i);
		log_error_line("alice", folder, "replica down", 0);
	}
	/* Equal info lines: each is a change pushed, never merged. */
	for (int i = 0; i < 30; i++)
		log_upload_line("alice", 7);
	for (int i = 0; i < 30; i++)
		log_msg(LOG_LVL_WARN, "peer_down", "attempt %d failed", i);
	log_close();
	text = logfile_text(&lf);

	ck_assert_uint_eq(count_of(text, " event=error "), 30);
	ck_assert_uint_eq(count_of(text, "event=upload "), 30);
	ck_assert_uint_eq(count_of(text, "event=peer_down "), 30);
	ck_assert_uint_eq(count_of(text, "event=repeated"), 0);
	free(text);
	logfile_free(&lf);
}
END_TEST

START_TEST(repeat_summary_at_window_end)
{
	struct logfile lf;
	char *text;

	logfile_open(&lf, 200);
	for (int i = 0; i < 3; i++)
		log_error_line("bob", "INBOX", "replica down", i);
	/* The window ends at 200 ms with a summary; the next window sees no
	 * repeat and frees the line. */
	sleep_ms(1000);
	text = logfile_text(&lf);
	ck_assert_msg(count_of(text, "event=repeated count=2 user=bob ") == 1,
		      "no summary after the window:\n%s", text);
	free(text);

	log_error_line("bob", "INBOX", "replica down", 9);
	log_close();
	text = logfile_text(&lf);
	ck_assert_uint_eq(count_of(text, " event=error "), 2);
	ck_assert_uint_eq(count_of(text, "event=repeated "), 1);
	free(text);
	logfile_free(&lf);
}
END_TEST

START_TEST(repeat_window_zero_writes_all)
{
	struct logfile lf;
	char *text;

	logfile_open(&lf, 0);
	for (int i = 0; i < 5; i++)
		log_error_line("bob", "INBOX", "replica down", 0);
	log_close();
	text = logfile_text(&lf);
	ck_assert_uint_eq(count_of(text, " event=error "), 5);
	ck_assert_uint_eq(count_of(text, "event=repeated"), 0);
	free(text);
	logfile_free(&lf);
}
END_TEST

#define SMOKE_THREADS 8
#define SMOKE_LINES 500

static void *
smoke_thread(void *arg)
{
	long long id = (long long)(intptr_t)arg;

	for (int i = 0; i < SMOKE_LINES; i++) {
		log_upload_line("carol", id * SMOKE_LINES + i);
		log_error_line("carol", "INBOX", "replica down", i);
	}
	return NULL;
}

/* Many threads log at once while the timer thread ends 5 ms windows:
 * every line stays whole, no upload is lost and no error is counted
 * twice or lost. */
START_TEST(repeat_threads_smoke)
{
	pthread_t tid[SMOKE_THREADS];
	struct logfile lf;
	char *text, *line, *save = NULL;
	size_t lines = 0;

	logfile_open(&lf, 5);
	for (long i = 0; i < SMOKE_THREADS; i++)
		ck_assert_int_eq(pthread_create(&tid[i], NULL, smoke_thread,
						(void *)(intptr_t)i),
				 0);
	for (int i = 0; i < SMOKE_THREADS; i++)
		pthread_join(tid[i], NULL);
	log_close();
	text = logfile_text(&lf);

	ck_assert_uint_eq(count_of(text, "event=upload "),
			  SMOKE_THREADS * SMOKE_LINES);
	ck_assert_uint_eq(count_of(text, " event=error ") +
				  repeated_total(text),
			  SMOKE_THREADS * SMOKE_LINES);
	for (line = strtok_r(text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		ck_assert_msg(strncmp(line, "ts=", 3) == 0, "line: %s", line);
		ck_assert_uint_eq(count_of(line, " event="), 1);
		lines++;
	}
	ck_assert_uint_gt(lines, SMOKE_THREADS * SMOKE_LINES);
	free(text);
	logfile_free(&lf);
}
END_TEST

/* ---- secrets and reopen ---- */

START_TEST(url_password_hidden)
{
	struct logfile lf;
	struct logline *l;
	char *text;

	logfile_open(&lf, 60000);
	l = log_begin(LOG_LVL_WARN, "alert_failed");
	log_str(l, "url", "smtps://ops:hunter2@mail.example.org:465/");
	log_str(l, "error",
		"POST https://tok:s3cret@hooks.example.org/x failed; "
		"https://plain.example.org/a@b kept");
	log_end(l);
	log_close();
	text = logfile_text(&lf);

	ck_assert_ptr_null(strstr(text, "hunter2"));
	ck_assert_ptr_null(strstr(text, "s3cret"));
	ck_assert_ptr_nonnull(
		strstr(text, "url=smtps://ops:***@mail.example.org:465/ "));
	ck_assert_ptr_nonnull(
		strstr(text, "https://tok:***@hooks.example.org/x failed"));
	ck_assert_ptr_nonnull(strstr(text, "https://plain.example.org/a@b"));
	free(text);
	logfile_free(&lf);
}
END_TEST

START_TEST(reopen_after_rename)
{
	struct logfile lf;
	char *rotated, *old_text, *new_text, *error = NULL;

	logfile_open(&lf, 60000);
	rotated = xasprintf("%s.1", lf.path);
	log_msg(LOG_LVL_INFO, "before", "first file");
	log_error_line("dave", "INBOX", "replica down", 0);
	log_error_line("dave", "INBOX", "replica down", 1);
	ck_assert_int_eq(rename(lf.path, rotated), 0);
	log_msg(LOG_LVL_INFO, "still_old", "written before the reopen");
	ck_assert_msg(log_reopen(&error) == 0, "%s", error);
	log_msg(LOG_LVL_INFO, "after", "second file");
	log_close();

	old_text = tu_read_file(rotated, NULL);
	new_text = logfile_text(&lf);
	ck_assert_ptr_nonnull(old_text);
	ck_assert_ptr_nonnull(strstr(old_text, "event=before "));
	ck_assert_ptr_nonnull(strstr(old_text, "event=still_old "));
	/* The count so far belongs to the rotated file. */
	ck_assert_ptr_nonnull(strstr(old_text, "event=repeated count=1 "));
	ck_assert_ptr_null(strstr(old_text, "event=after "));
	ck_assert_ptr_nonnull(strstr(new_text, "event=after "));
	ck_assert_ptr_null(strstr(new_text, "event=before "));
	free(old_text);
	free(new_text);
	free(rotated);
	logfile_free(&lf);
}
END_TEST

/* ---- mailrepl log, run as a program ---- */

static const char *const fixture[] = {
	"ts=2026-01-01T00:00:01.000Z level=info event=upload user=alice "
	"folder=INBOX file=1.M1 uid=1 size=100\n",
	"ts=2026-01-01T00:00:02.000Z level=warn event=retry user=\"john doe\" "
	"folder=INBOX attempt=1 error=\"connect failed\"\n",
	"ts=2026-01-01T00:00:03.000Z level=error event=error scope=connection "
	"user=bob error=\"user=alice in a text\"\n",
	"ts=2026-01-01T00:00:04.000Z level=info event=batch user=alicex "
	"folder=INBOX count=1 bytes=100 ms=3\n",
	"ts=2026-01-01T00:00:05.000Z level=debug event=imap_connected "
	"user=alice host=127.0.0.1\n",
	"ts=2026-01-01T00:00:06.000Z level=error event=repeated count=4 "
	"user=alice of=\"event=error user=alice\"\n",
	"ts=2026-01-01T00:00:07.000Z level=info event=upload "
	"user=\"al\\\"ice\" folder=Sent file=2.M2 uid=2 size=5\n",
	"ts=2026-01-01T00:00:08.000Z level=info event=agent_start "
	"mode=master\n",
};

/* A directory with mailrepl.conf naming log_file (relative to it). */
struct cmd_env {
	char *dir;
	char *conf;
	char *log;
};

static void
cmd_env_init(struct cmd_env *e, const char *log_name)
{
	char *text;

	e->dir = tu_tempdir("logcmd");
	e->conf = xasprintf("%s/mailrepl.conf", e->dir);
	e->log = xasprintf("%s/%s", e->dir, log_name);
	text = xasprintf("[general]\nmode = standalone\nstate_dir = %s/state\n"
			 "log_file = %s\n",
			 e->dir, e->log);
	tu_write_file(e->conf, text, strlen(text), 0600);
	free(text);
}

static void
cmd_env_free(struct cmd_env *e)
{
	tu_rmrf(e->dir);
	free(e->dir);
	free(e->conf);
	free(e->log);
}

static void
write_fixture(const struct cmd_env *e)
{
	char *text = xstrdup("");

	for (size_t i = 0; i < sizeof(fixture) / sizeof(*fixture); i++) {
		char *next = xasprintf("%s%s", text, fixture[i]);

		free(text);
		text = next;
	}
	tu_write_file(e->log, text, strlen(text), 0640);
	free(text);
}

/* Run "mailrepl -c conf log ARGS"; returns the exit code and sets
 * *out_r and *err_r (caller frees). */
static int
run_log_cmd(const struct cmd_env *e, const char *args, char **out_r,
	    char **err_r)
{
	char *bin = builddir_path("src/mailrepl");
	int rc = tu_run("'%s' -c '%s' log %s </dev/null >'%s/out' "
			"2>'%s/err'",
			bin, e->conf, args, e->dir, e->dir);
	char *out = xasprintf("%s/out", e->dir), *err;

	err = xasprintf("%s/err", e->dir);
	*out_r = tu_read_file(out, NULL);
	*err_r = tu_read_file(err, NULL);
	ck_assert_ptr_nonnull(*out_r);
	ck_assert_ptr_nonnull(*err_r);
	free(out);
	free(err);
	free(bin);
	return rc;
}

/* Expected output as indexes into fixture, -1 ends the list. */
static const struct {
	const char *args;
	int lines[9];
} filter_cases[] = {
	{"", {0, 1, 2, 3, 4, 5, 6, 7, -1}},
	{"-n 2", {6, 7, -1}},
	{"-n 0", {-1}},
	{"--user alice", {0, 4, 5, -1}},
	{"--user 'john doe'", {1, -1}},
	{"--user 'al\"ice'", {6, -1}},
	{"--user nobody", {-1}},
	{"--level warn", {1, 2, 5, -1}},
	{"--level ERROR -n 1", {5, -1}},
	{"--user alice --level info -n 1", {5, -1}},
	{"--level debug -n 3", {5, 6, 7, -1}},
};

START_TEST(log_cmd_filters)
{
	struct cmd_env e;
	char *out, *err, *expected = xstrdup("");

	cmd_env_init(&e, "x.log");
	write_fixture(&e);
	for (int i = 0; filter_cases[_i].lines[i] >= 0; i++) {
		char *next = xasprintf("%s%s", expected,
				       fixture[filter_cases[_i].lines[i]]);

		free(expected);
		expected = next;
	}
	ck_assert_msg(run_log_cmd(&e, filter_cases[_i].args, &out, &err) == 0,
		      "log %s: %s", filter_cases[_i].args, err);
	ck_assert_msg(strcmp(out, expected) == 0,
		      "log %s printed:\n%s\nexpected:\n%s",
		      filter_cases[_i].args, out, expected);
	ck_assert_str_eq(err, "");
	free(out);
	free(err);
	free(expected);
	cmd_env_free(&e);
}
END_TEST

static const struct {
	const char *args;
	const char *error;
} usage_cases[] = {
	{"--level loud", "invalid --level loud; use debug, info, warn or error"},
	{"-n -3", "invalid -n -3; give a number of lines, 0 or more"},
	{"-n 5x", "invalid -n 5x"},
	{"stray", "unexpected argument stray"},
	{"--colour", "--colour"},
};

START_TEST(log_cmd_invalid_options)
{
	struct cmd_env e;
	char *out, *err;

	cmd_env_init(&e, "x.log");
	write_fixture(&e);
	ck_assert_int_eq(run_log_cmd(&e, usage_cases[_i].args, &out, &err),
			 64);
	ck_assert_msg(strstr(err, usage_cases[_i].error) != NULL,
		      "log %s: %s", usage_cases[_i].args, err);
	ck_assert_str_eq(out, "");
	free(out);
	free(err);
	cmd_env_free(&e);
}
END_TEST

START_TEST(log_cmd_missing_file)
{
	struct cmd_env e;
	char *out, *err;

	cmd_env_init(&e, "none/x.log");
	ck_assert_int_eq(run_log_cmd(&e, "-n 5", &out, &err), 1);
	ck_assert_msg(strstr(err, e.log) != NULL, "%s", err);
	ck_assert_msg(strstr(err, "does not exist") != NULL, "%s", err);
	ck_assert_msg(strstr(err, "[general] log_file") != NULL, "%s", err);
	ck_assert_str_eq(out, "");
	free(out);
	free(err);
	cmd_env_free(&e);
}
END_TEST

START_TEST(log_cmd_directory_rejected)
{
	struct cmd_env e;
	char *out, *err;

	cmd_env_init(&e, "logdir");
	ck_assert_int_eq(mkdir(e.log, 0700), 0);
	ck_assert_int_eq(run_log_cmd(&e, "", &out, &err), 1);
	ck_assert_msg(strstr(err, "is not a regular file") != NULL, "%s", err);
	ck_assert_msg(strstr(err, e.log) != NULL, "%s", err);
	free(out);
	free(err);
	cmd_env_free(&e);
}
END_TEST

/* Lines found far from the end of a file larger than the read block,
 * a line longer than the block, and a last line without '\n'. */
START_TEST(log_cmd_large_file)
{
	struct cmd_env e;
	size_t filler = 3000, cap = 0, len = 0;
	char *text = NULL, *out, *err, *long_value = xmalloc(100001);

	cmd_env_init(&e, "x.log");
	memset(long_value, 'v', 100000);
	long_value[100000] = '\0';
	text = xgrow(text, &cap, 600000, 1);
	len += (size_t)sprintf(text + len,
			       "ts=1 level=info event=a user=first\n");
	len += (size_t)sprintf(text + len,
			       "ts=2 level=info event=b user=long text=%s\n",
			       long_value);
	for (size_t i = 0; i < filler; i++)
		len += (size_t)sprintf(text + len,
				       "ts=3 level=info event=filler "
				       "user=bob seq=%zu padding=%s\n",
				       i, "................................");
	len += (size_t)sprintf(text + len, "ts=4 level=info event=z user=last");
	tu_write_file(e.log, text, len, 0640);

	ck_assert_int_eq(run_log_cmd(&e, "--user first", &out, &err), 0);
	ck_assert_str_eq(out, "ts=1 level=info event=a user=first\n");
	free(out);
	free(err);

	ck_assert_int_eq(run_log_cmd(&e, "--user long", &out, &err), 0);
	ck_assert_uint_eq(strlen(out), strlen("ts=2 level=info event=b "
					      "user=long text=\n") +
					       100000);
	free(out);
	free(err);

	ck_assert_int_eq(run_log_cmd(&e, "-n 2", &out, &err), 0);
	ck_assert_msg(strstr(out, "seq=2999 ") != NULL, "%s", out);
	ck_assert_msg(strstr(out, "event=z user=last\n") != NULL, "%s", out);
	ck_assert_uint_eq(count_of(out, "\n"), 2);
	free(out);
	free(err);

	free(long_value);
	free(text);
	cmd_env_free(&e);
}
END_TEST

static void
append_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "a");

	ck_assert_msg(f != NULL, "cannot open %s", path);
	fputs(text, f);
	ck_assert_int_eq(fclose(f), 0);
}

/* Wait up to 10 s until path contains needle. */
static bool
wait_for_text(const char *path, const char *needle)
{
	for (int i = 0; i < 500; i++) {
		char *text = tu_read_file(path, NULL);
		bool found = text != NULL && strstr(text, needle) != NULL;

		free(text);
		if (found)
			return true;
		sleep_ms(20);
	}
	return false;
}

static pid_t
start_follower(const struct cmd_env *e, const char *out)
{
	char *bin = builddir_path("src/mailrepl");
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		if (freopen(out, "w", stdout) == NULL)
			_exit(127);
		execl(bin, "mailrepl", "-c", e->conf, "log", "-f", "-n", "5",
		      "--user", "alice", (char *)NULL);
		_exit(127);
	}
	free(bin);
	return pid;
}

START_TEST(log_cmd_follows_rename_and_truncate)
{
	struct cmd_env e;
	char *out, *rotated, *text;
	const char *want[] = {"seq=0 ", "seq=1 ", "seq=2 ", "seq=3 ",
			      "seq=4 "};
	const char *prev = NULL;
	pid_t pid;

	cmd_env_init(&e, "x.log");
	out = xasprintf("%s/follow.out", e.dir);
	rotated = xasprintf("%s.1", e.log);
	tu_write_file(e.log, "", 0, 0640);
	append_text(e.log, "ts=1 level=info event=t seq=0 user=alice\n"
			   "ts=1 level=info event=t user=bob\n");
	pid = start_follower(&e, out);
	ck_assert_msg(wait_for_text(out, "seq=0 "), "no first line");

	append_text(e.log, "ts=2 level=info event=t seq=1 user=alice\n"
			   "ts=2 level=info event=t user=bob\n");
	ck_assert_msg(wait_for_text(out, "seq=1 "), "no appended line");

	/* logrotate renames; the writer appends to the old file until it
	 * reopens, then writes to a new file at the path. */
	ck_assert_int_eq(rename(e.log, rotated), 0);
	append_text(rotated, "ts=3 level=info event=t seq=2 user=alice\n");
	append_text(e.log, "ts=4 level=info event=t seq=3 user=alice "
			   "padding=........................................\n"
			   "ts=4 level=info event=t user=bob\n");
	ck_assert_msg(wait_for_text(out, "seq=3 "), "new file not followed");

	/* copytruncate: the same file, emptied, then a shorter line. */
	ck_assert_int_eq(truncate(e.log, 0), 0);
	append_text(e.log, "ts=5 level=info event=t seq=4 user=alice\n");
	ck_assert_msg(wait_for_text(out, "seq=4 "), "truncated file lost");

	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	text = tu_read_file(out, NULL);
	ck_assert_ptr_null(strstr(text, "user=bob"));
	for (size_t i = 0; i < sizeof(want) / sizeof(*want); i++) {
		const char *at = strstr(text, want[i]);

		ck_assert_msg(at != NULL, "%s missing:\n%s", want[i], text);
		ck_assert_msg(prev == NULL || at > prev, "%s out of order:\n%s",
			      want[i], text);
		ck_assert_uint_eq(count_of(text, want[i]), 1);
		prev = at;
	}
	free(text);
	free(rotated);
	free(out);
	cmd_env_free(&e);
}
END_TEST

/* ---- a real mailrepl init ---- */

static struct tu_dovecot *dovecot;

static void
start_dovecot(void)
{
	setenv("DOVECOT_TEST_USERS", "logu", 1);
	dovecot = tu_dovecot_start();
}

static void
stop_dovecot(void)
{
	tu_dovecot_stop(&dovecot);
}

static void
put_messages(const char *maildir, const char *sub, const char *suffix,
	     int count)
{
	for (int i = 0; i < count; i++) {
		char *path = xasprintf("%s/%s/150000000%d.M%dP1.test%s",
				       maildir, sub, i, i, suffix);
		char *body = xasprintf("From: a@example.org\nSubject: %d\n"
				       "Message-ID: <%d.%s@example.org>\n\n"
				       "Body %d.\n",
				       i, i, sub, i);

		tu_write_file(path, body, strlen(body), 0644);
		free(path);
		free(body);
	}
}

static char *
write_init_config(const char *dir)
{
	char *conf = xasprintf("%s/mailrepl.conf", dir);
	char *pw = xasprintf("%s/admin.pw", dir);
	char *pw_text = xasprintf("%s\n", dovecot->admin_password);
	char *text = xasprintf(
		"[general]\nmode = master\nstate_dir = %s/state\n"
		"log_file = %s/mailrepl.log\n"
		"[maildir]\nroot = %s/mail\n"
		"[master]\nreplica_host = 127.0.0.1\nimap_port = %u\n"
		"imap_tls = starttls\ntls_ca_file = %s\nadmin_user = %s\n"
		"admin_password_file = %s\nworkers = 2\ncontrol_port = 0\n"
		"batch_messages = 2\n"
		"[alert]\nurl = smtps://alerts:alertsecret9@127.0.0.1:1/\n"
		"mail_to = ops@example.org\n",
		dir, dir, dir, dovecot->imap_port, dovecot->ca_file,
		dovecot->admin, pw);

	tu_write_file(pw, pw_text, strlen(pw_text), 0600);
	tu_write_file(conf, text, strlen(text), 0600);
	free(text);
	free(pw_text);
	free(pw);
	return conf;
}

static void
assert_no_secret(const char *what, const char *text)
{
	ck_assert_msg(strstr(text, dovecot->admin_password) == NULL,
		      "the administrator's password is in %s", what);
	ck_assert_msg(strstr(text, "alertsecret9") == NULL,
		      "the alert URL's password is in %s", what);
}

START_TEST(init_logs_uploads_no_password)
{
	char *dir = tu_tempdir("loginit"), *bin = builddir_path("src/mailrepl");
	char *maildir = xasprintf("%s/mail/logu/Maildir", dir);
	char *conf, *log, *out, *err, *path;
	int rc;

	tu_run("mkdir -p '%s/cur' '%s/new' '%s/tmp' '%s/.Sent/cur' "
	       "'%s/.Sent/new' '%s/.Sent/tmp'",
	       maildir, maildir, maildir, maildir, maildir, maildir);
	put_messages(maildir, "new", "", 3);
	put_messages(maildir, ".Sent/cur", ":2,S", 2);
	conf = write_init_config(dir);
	rc = tu_run("'%s' -c '%s' init </dev/null >'%s/out' 2>'%s/err'", bin,
		    conf, dir, dir);

	path = xasprintf("%s/mailrepl.log", dir);
	log = tu_read_file(path, NULL);
	free(path);
	path = xasprintf("%s/out", dir);
	out = tu_read_file(path, NULL);
	free(path);
	path = xasprintf("%s/err", dir);
	err = tu_read_file(path, NULL);
	free(path);
	ck_assert_ptr_nonnull(log);
	ck_assert_msg(rc == 0, "init exit %d: %s%s\n%s", rc, out, err, log);

	ck_assert_uint_eq(count_of(log, "level=info event=upload user=logu "),
			  5);
	ck_assert_uint_eq(count_of(log, "event=upload user=logu "
					"folder=Sent file="),
			  2);
	/* batch_messages = 2: INBOX in 2 + 1, Sent in 2. */
	ck_assert_uint_eq(count_of(log, "level=info event=batch user=logu "),
			  3);
	ck_assert_uint_eq(count_of(log, "event=batch user=logu folder=INBOX "
					"count=2 rejected=0 bytes="),
			  1);
	ck_assert_uint_ge(count_of(log, "level=info event=imap_connected "),
			  1);
	ck_assert_uint_ge(count_of(log, "level=info event=imap_close "), 1);
	ck_assert_uint_eq(count_of(log, "event=run_end result=ok"), 1);
	assert_no_secret("the log", log);
	assert_no_secret("stdout", out);
	assert_no_secret("stderr", err);
	free(out);
	free(err);

	/* The same log through mailrepl log --user. */
	rc = tu_run("'%s' -c '%s' log -n 100 --user logu --level info "
		    ">'%s/out' 2>'%s/err'",
		    bin, conf, dir, dir);
	ck_assert_int_eq(rc, 0);
	path = xasprintf("%s/out", dir);
	out = tu_read_file(path, NULL);
	free(path);
	ck_assert_uint_eq(count_of(out, "event=upload "), 5);
	ck_assert_ptr_null(strstr(out, "event=run_end"));
	free(out);

	free(log);
	free(conf);
	free(maildir);
	free(bin);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("core");
	TCase *repeat = tcase_create("repeat");
	TCase *cmd = tcase_create("command");
	TCase *init = tcase_create("init");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, line_has_timestamp_level_event);
	tcase_add_test(tc, values_quoted_and_escaped);
	tcase_add_test(tc, debug_not_in_file);
	tcase_add_test(tc, level_names_parse);
	tcase_add_test(tc, progress_line_counts_and_eta);
	tcase_add_test(tc, url_password_hidden);
	tcase_add_test(tc, reopen_after_rename);
	suite_add_tcase(s, tc);

	tcase_add_test(repeat, repeat_burst_one_line_and_summary);
	tcase_add_test(repeat, repeat_distinct_lines_kept);
	tcase_add_test(repeat, repeat_summary_at_window_end);
	tcase_add_test(repeat, repeat_window_zero_writes_all);
	tcase_add_test(repeat, repeat_threads_smoke);
	suite_add_tcase(s, repeat);

	tcase_set_timeout(cmd, 30);
	tcase_add_loop_test(cmd, log_cmd_filters, 0,
			    sizeof(filter_cases) / sizeof(*filter_cases));
	tcase_add_loop_test(cmd, log_cmd_invalid_options, 0,
			    sizeof(usage_cases) / sizeof(*usage_cases));
	tcase_add_test(cmd, log_cmd_missing_file);
	tcase_add_test(cmd, log_cmd_directory_rejected);
	tcase_add_test(cmd, log_cmd_large_file);
	tcase_add_test(cmd, log_cmd_follows_rename_and_truncate);
	suite_add_tcase(s, cmd);

	/* One private Dovecot for the tests that run mailrepl init. */
	tcase_set_timeout(init, 120);
	tcase_add_unchecked_fixture(init, start_dovecot, stop_dovecot);
	tcase_add_test(init, init_logs_uploads_no_password);
	suite_add_tcase(s, init);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
