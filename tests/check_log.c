/* Tests of the logfmt log and of the progress line. */
#include <config.h>
#include "log.h"
#include "progress.h"
#include "testutil.h"
#include "util.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

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

int
main(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, line_has_timestamp_level_event);
	tcase_add_test(tc, values_quoted_and_escaped);
	tcase_add_test(tc, debug_not_in_file);
	tcase_add_test(tc, level_names_parse);
	tcase_add_test(tc, progress_line_counts_and_eta);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
