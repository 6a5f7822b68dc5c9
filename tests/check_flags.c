/* Tests of flags: not written yet. */
#include <config.h>
#include <check.h>
#include <stdlib.h>

START_TEST(placeholder_fails)
{
	ck_abort_msg("tests of flags are not written yet");
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("flags");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, placeholder_fails);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
