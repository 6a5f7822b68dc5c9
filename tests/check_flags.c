/* Tests of flag sets and their canonical text. */
#include <config.h>
#include "flags.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

static const struct {
	const char *atoms[6];
	const char *canonical;
} format_cases[] = {
	{{NULL}, ""},
	{{"\\Seen", NULL}, "\\Seen"},
	{{"\\Draft", "\\Seen", "\\Flagged", NULL}, "\\Seen \\Flagged \\Draft"},
	{{"\\Recent", "\\Seen", NULL}, "\\Seen"},
	{{"\\seen", "\\ANSWERED", NULL}, "\\Seen \\Answered"},
	{{"Work", "$Forwarded", "work", NULL}, "$Forwarded Work"},
	{{"\\Deleted", "b", "A", NULL}, "\\Deleted A b"},
	{{"\\Unknown", NULL}, ""},
};

START_TEST(format_canonical_order)
{
	struct flagset fs;
	char *text;

	flagset_init(&fs);
	for (size_t i = 0; format_cases[_i].atoms[i] != NULL; i++)
		flagset_add_imap(&fs, format_cases[_i].atoms[i]);
	text = flagset_format(&fs);
	ck_assert_str_eq(text, format_cases[_i].canonical);
	free(text);
	flagset_clear(&fs);
}
END_TEST

START_TEST(parse_round_trip)
{
	struct flagset fs, back;
	char *text, *again;

	flagset_init(&fs);
	for (size_t i = 0; format_cases[_i].atoms[i] != NULL; i++)
		flagset_add_imap(&fs, format_cases[_i].atoms[i]);
	text = flagset_format(&fs);
	ck_assert_int_eq(flagset_parse(&back, text), 0);
	ck_assert(flagset_equal(&fs, &back));
	again = flagset_format(&back);
	ck_assert_str_eq(again, text);
	free(text);
	free(again);
	flagset_clear(&fs);
	flagset_clear(&back);
}
END_TEST

START_TEST(parse_rejects_unknown_system_flag)
{
	struct flagset fs;

	ck_assert_int_eq(flagset_parse(&fs, "\\Seen \\Bogus"), -1);
	ck_assert_uint_eq(fs.nkeywords, 0);
	ck_assert_uint_eq(fs.sys, 0);
}
END_TEST

START_TEST(equal_ignores_keyword_case)
{
	struct flagset a, b;

	flagset_init(&a);
	flagset_init(&b);
	flagset_add_imap(&a, "$Junk");
	flagset_add_imap(&b, "$junk");
	ck_assert(flagset_equal(&a, &b));
	flagset_add_imap(&b, "\\Seen");
	ck_assert(!flagset_equal(&a, &b));
	flagset_clear(&a);
	flagset_clear(&b);
}
END_TEST

START_TEST(copy_is_deep)
{
	struct flagset a, b;

	flagset_init(&a);
	flagset_add_imap(&a, "Work");
	flagset_add_imap(&a, "\\Flagged");
	flagset_copy(&b, &a);
	flagset_clear(&a);
	ck_assert_uint_eq(b.nkeywords, 1);
	ck_assert_str_eq(b.keywords[0], "Work");
	ck_assert_uint_eq(b.sys, FLAG_FLAGGED);
	flagset_clear(&b);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("flags");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;
	int ncases = sizeof(format_cases) / sizeof(*format_cases);

	tcase_add_loop_test(tc, format_canonical_order, 0, ncases);
	tcase_add_loop_test(tc, parse_round_trip, 0, ncases);
	tcase_add_test(tc, parse_rejects_unknown_system_flag);
	tcase_add_test(tc, equal_ignores_keyword_case);
	tcase_add_test(tc, copy_is_deep);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
