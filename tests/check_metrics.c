/* Tests of the Prometheus metrics file. */
#include <config.h>
#include "log.h"
#include "metrics.h"
#include "testutil.h"
#include "util.h"

#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A master agent out of sync after a rejected initial replication. */
static void
sample_input(struct agent_record *rec, struct store_run *run,
	     struct metrics_input *in)
{
	memset(rec, 0, sizeof(*rec));
	memset(run, 0, sizeof(*run));
	rec->pid = 4242;
	rec->started = 1700000000;
	rec->updated = 1700000600;
	snprintf(rec->peer_state, sizeof(rec->peer_state), "connected");
	rec->pending = 42;
	rec->oldest_queued = 1700000480;
	rec->applied = 1234;
	rec->last_applied = 1700000590;
	rec->last_error_at = 1700000100;
	rec->judgement.state = SYNC_STATE_OUT_OF_SYNC;
	rec->judgement.level = STATUS_CRITICAL;
	rec->judgement.since = 1700000540;
	run->started = 1699990000;
	run->finished = 1699993600;
	run->result = RUN_REJECTED;
	run->messages = 6046;
	run->bytes = 31457280;
	run->rejected = 2;
	in->rec = rec;
	in->init = run;
	in->errors = 3;
}

static const char expected_sample[] =
	"# HELP mailrepl_agent_start_time_seconds When the agent started, in "
	"Unix seconds.\n"
	"# TYPE mailrepl_agent_start_time_seconds gauge\n"
	"mailrepl_agent_start_time_seconds 1700000000\n"
	"# HELP mailrepl_status_updated_timestamp_seconds When the agent last "
	"wrote these figures, in Unix seconds.\n"
	"# TYPE mailrepl_status_updated_timestamp_seconds gauge\n"
	"mailrepl_status_updated_timestamp_seconds 1700000600\n"
	"# HELP mailrepl_peer_connected Whether the agent is connected to the "
	"replica's agent (1) or not (0).\n"
	"# TYPE mailrepl_peer_connected gauge\n"
	"mailrepl_peer_connected 1\n"
	"# HELP mailrepl_pending_changes Changes queued for the replica.\n"
	"# TYPE mailrepl_pending_changes gauge\n"
	"mailrepl_pending_changes 42\n"
	"# HELP mailrepl_oldest_pending_age_seconds Age of the oldest queued "
	"change, 0 when none is queued.\n"
	"# TYPE mailrepl_oldest_pending_age_seconds gauge\n"
	"mailrepl_oldest_pending_age_seconds 120\n"
	"# HELP mailrepl_changes_applied_total Changes applied to the replica "
	"since the agent started.\n"
	"# TYPE mailrepl_changes_applied_total counter\n"
	"mailrepl_changes_applied_total 1234\n"
	"# HELP mailrepl_last_applied_timestamp_seconds When the last change "
	"was applied, in Unix seconds; 0 when none was applied since the agent "
	"started.\n"
	"# TYPE mailrepl_last_applied_timestamp_seconds gauge\n"
	"mailrepl_last_applied_timestamp_seconds 1700000590\n"
	"# HELP mailrepl_errors_total Changes dropped after an error since the "
	"agent started.\n"
	"# TYPE mailrepl_errors_total counter\n"
	"mailrepl_errors_total 3\n"
	"# HELP mailrepl_last_error_timestamp_seconds When the last error "
	"occurred, in Unix seconds; 0 when none occurred since the agent "
	"started.\n"
	"# TYPE mailrepl_last_error_timestamp_seconds gauge\n"
	"mailrepl_last_error_timestamp_seconds 1700000100\n"
	"# HELP mailrepl_in_sync Whether the replica holds every change except "
	"those of the normal lag (1) or not (0).\n"
	"# TYPE mailrepl_in_sync gauge\n"
	"mailrepl_in_sync 0\n"
	"# HELP mailrepl_sync_state The sync state: 1 for the current state, 0 "
	"for the others.\n"
	"# TYPE mailrepl_sync_state gauge\n"
	"mailrepl_sync_state{state=\"unknown\"} 0\n"
	"mailrepl_sync_state{state=\"standalone\"} 0\n"
	"mailrepl_sync_state{state=\"not_initialized\"} 0\n"
	"mailrepl_sync_state{state=\"initializing\"} 0\n"
	"mailrepl_sync_state{state=\"in_sync\"} 0\n"
	"mailrepl_sync_state{state=\"out_of_sync\"} 1\n"
	"# HELP mailrepl_sync_state_since_timestamp_seconds When the current "
	"sync state began, in Unix seconds; 0 when not known.\n"
	"# TYPE mailrepl_sync_state_since_timestamp_seconds gauge\n"
	"mailrepl_sync_state_since_timestamp_seconds 1700000540\n"
	"# HELP mailrepl_status_level Monitoring level of mailrepl status: 0 "
	"OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.\n"
	"# TYPE mailrepl_status_level gauge\n"
	"mailrepl_status_level 2\n"
	"# HELP mailrepl_initial_replication_result Result of the last initial "
	"replication: 1 for its result, 0 for the others; all 0 when none was "
	"recorded.\n"
	"# TYPE mailrepl_initial_replication_result gauge\n"
	"mailrepl_initial_replication_result{result=\"running\"} 0\n"
	"mailrepl_initial_replication_result{result=\"ok\"} 0\n"
	"mailrepl_initial_replication_result{result=\"failed\"} 0\n"
	"mailrepl_initial_replication_result{result=\"rejected\"} 1\n"
	"mailrepl_initial_replication_result{result=\"interrupted\"} 0\n"
	"# HELP mailrepl_initial_replication_start_time_seconds When the last "
	"initial replication started, in Unix seconds; 0 when none was "
	"recorded.\n"
	"# TYPE mailrepl_initial_replication_start_time_seconds gauge\n"
	"mailrepl_initial_replication_start_time_seconds 1699990000\n"
	"# HELP mailrepl_initial_replication_finished_timestamp_seconds When "
	"the last initial replication finished, in Unix seconds; 0 while it "
	"runs or when none was recorded.\n"
	"# TYPE mailrepl_initial_replication_finished_timestamp_seconds gauge\n"
	"mailrepl_initial_replication_finished_timestamp_seconds 1699993600\n"
	"# HELP mailrepl_initial_replication_messages Messages the last "
	"initial replication found on the master.\n"
	"# TYPE mailrepl_initial_replication_messages gauge\n"
	"mailrepl_initial_replication_messages 6046\n"
	"# HELP mailrepl_initial_replication_bytes Size in bytes of the "
	"messages the last initial replication found on the master.\n"
	"# TYPE mailrepl_initial_replication_bytes gauge\n"
	"mailrepl_initial_replication_bytes 31457280\n"
	"# HELP mailrepl_initial_replication_rejected_messages Messages the "
	"replica rejected in the last initial replication.\n"
	"# TYPE mailrepl_initial_replication_rejected_messages gauge\n"
	"mailrepl_initial_replication_rejected_messages 2\n";

START_TEST(format_exact_text)
{
	struct agent_record rec;
	struct store_run run;
	struct metrics_input in;
	char *text;

	sample_input(&rec, &run, &in);
	text = metrics_format(&in);
	ck_assert_str_eq(text, expected_sample);
	free(text);
}
END_TEST

/* Every line is a HELP or TYPE comment or a sample of the metric that
 * the last TYPE line named, as the text exposition format requires. */
START_TEST(format_lines_well_formed)
{
	struct agent_record rec;
	struct store_run run;
	struct metrics_input in;
	regex_t sample;
	char *text, *save = NULL, type_name[128] = "";
	int samples = 0;

	sample_input(&rec, &run, &in);
	text = metrics_format(&in);
	ck_assert_int_eq(
		regcomp(&sample,
			"^(mailrepl_[a-z_]+)(\\{[a-z]+=\"[a-z_]+\"\\})? "
			"-?[0-9]+$",
			REG_EXTENDED),
		0);
	for (char *line = strtok_r(text, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		regmatch_t m[2];

		if (sscanf(line, "# TYPE %127s", type_name) == 1 ||
		    strncmp(line, "# HELP mailrepl_", 16) == 0)
			continue;
		ck_assert_msg(regexec(&sample, line, 2, m, 0) == 0,
			      "malformed line: %s", line);
		ck_assert_msg(strlen(type_name) == (size_t)(m[1].rm_eo) &&
				      strncmp(line, type_name, m[1].rm_eo) == 0,
			      "sample without its TYPE line: %s", line);
		samples++;
	}
	ck_assert_int_eq(samples, 28);
	regfree(&sample);
	free(text);
}
END_TEST

START_TEST(format_without_initial_run)
{
	struct agent_record rec;
	struct store_run run;
	struct metrics_input in;
	char *text;

	sample_input(&rec, &run, &in);
	in.init = NULL;
	rec.pending = 0;
	rec.judgement.state = SYNC_STATE_NOT_INITIALIZED;
	text = metrics_format(&in);
	ck_assert_ptr_null(strstr(text, "_result{result=\"running\"} 1"));
	ck_assert_ptr_null(strstr(text, "_result{result=\"rejected\"} 1"));
	ck_assert_ptr_nonnull(
		strstr(text, "\nmailrepl_initial_replication_messages 0\n"));
	ck_assert_ptr_nonnull(strstr(
		text, "\nmailrepl_initial_replication_start_time_seconds 0\n"));
	ck_assert_ptr_nonnull(
		strstr(text, "\nmailrepl_oldest_pending_age_seconds 0\n"));
	ck_assert_ptr_nonnull(strstr(
		text, "\nmailrepl_sync_state{state=\"not_initialized\"} 1\n"));
	free(text);
}
END_TEST

START_TEST(format_running_run_not_finished)
{
	struct agent_record rec;
	struct store_run run;
	struct metrics_input in;
	char *text;

	sample_input(&rec, &run, &in);
	run.result = RUN_RUNNING;
	rec.judgement.state = SYNC_STATE_INITIALIZING;
	text = metrics_format(&in);
	ck_assert_ptr_nonnull(strstr(text, "\nmailrepl_initial_replication_"
					   "result{result=\"running\"} 1\n"));
	ck_assert_ptr_nonnull(strstr(text, "\nmailrepl_initial_replication_"
					   "finished_timestamp_seconds 0\n"));
	ck_assert_ptr_nonnull(strstr(text, "\nmailrepl_in_sync 0\n"));
	free(text);
}
END_TEST

static size_t
count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

/* A reader that opened the old file keeps reading all of it, which
 * shows the file was replaced by rename, not rewritten in place. */
START_TEST(write_replaces_by_rename)
{
	char *dir = tu_tempdir("metrics");
	char *path = xasprintf("%s/mailrepl.prom", dir);
	struct metrics *metrics = metrics_new(path);
	struct agent_record rec;
	struct store_run run;
	struct metrics_input in;
	struct stat before, after;
	char *text, old_text[sizeof(expected_sample) + 16];
	ssize_t n;
	int fd;

	sample_input(&rec, &run, &in);
	umask(077);
	ck_assert_int_eq(metrics_write(metrics, &in), 0);
	ck_assert_int_eq(stat(path, &before), 0);
	ck_assert_uint_eq(before.st_mode & 07777, 0644);
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);

	rec.applied = 99999;
	ck_assert_int_eq(metrics_write(metrics, &in), 0);
	ck_assert_int_eq(stat(path, &after), 0);
	ck_assert_uint_ne(before.st_ino, after.st_ino);
	ck_assert_uint_eq(after.st_mode & 07777, 0644);
	n = read(fd, old_text, sizeof(old_text) - 1);
	close(fd);
	ck_assert_int_eq(n, (ssize_t)strlen(expected_sample));
	old_text[n] = '\0';
	ck_assert_str_eq(old_text, expected_sample);

	text = tu_read_file(path, NULL);
	ck_assert_ptr_nonnull(
		strstr(text, "\nmailrepl_changes_applied_total 99999\n"));
	ck_assert_uint_eq(count_entries(dir), 1);
	free(text);
	metrics_free(&metrics);
	ck_assert_ptr_null(metrics);
	tu_rmrf(dir);
	free(dir);
	free(path);
}
END_TEST

static size_t
count_matches(const char *text, const char *needle)
{
	size_t n = 0;

	for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

START_TEST(write_failure_logged_once)
{
	char *dir = tu_tempdir("metrics");
	char *missing = xasprintf("%s/missing", dir);
	char *path = xasprintf("%s/mailrepl.prom", missing);
	char *log_path = xasprintf("%s/agent.log", dir);
	struct metrics *metrics = metrics_new(path);
	struct agent_record rec;
	struct store_run run;
	struct metrics_input in;
	char *error = NULL, *log_text;

	sample_input(&rec, &run, &in);
	ck_assert_int_eq(log_open(log_path, false, "test", &error), 0);
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(metrics_write(metrics, &in), -1);
	ck_assert_int_eq(mkdir(missing, 0755), 0);
	ck_assert_int_eq(metrics_write(metrics, &in), 0);
	tu_rmrf(missing);
	ck_assert_int_eq(metrics_write(metrics, &in), -1);
	log_close();

	log_text = tu_read_file(log_path, NULL);
	ck_assert_ptr_nonnull(log_text);
	ck_assert_uint_eq(
		count_matches(log_text, "metrics file: cannot create"), 2);
	ck_assert_uint_eq(count_matches(log_text, "works again"), 1);
	ck_assert_ptr_nonnull(strstr(log_text, missing));
	free(log_text);
	metrics_free(&metrics);
	tu_rmrf(dir);
	free(dir);
	free(missing);
	free(path);
	free(log_path);
}
END_TEST

START_TEST(write_without_writer_does_nothing)
{
	struct agent_record rec;
	struct store_run run;
	struct metrics_input in;

	sample_input(&rec, &run, &in);
	ck_assert_int_eq(metrics_write(NULL, &in), 0);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("metrics");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, format_exact_text);
	tcase_add_test(tc, format_lines_well_formed);
	tcase_add_test(tc, format_without_initial_run);
	tcase_add_test(tc, format_running_run_not_finished);
	tcase_add_test(tc, write_replaces_by_rename);
	tcase_add_test(tc, write_failure_logged_once);
	tcase_add_test(tc, write_without_writer_does_nothing);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
