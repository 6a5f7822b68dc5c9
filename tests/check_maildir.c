/* Tests of the Maildir++ reader on fixture trees built in temp dirs. */
#include <config.h>
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cfg.h"
#include "flags.h"
#include "log.h"
#include "maildir.h"
#include "testutil.h"
#include "util.h"

/* The uid and gid of "nobody" on Debian, used to make permission bits
 * matter while the tests run as root. */
#define NOBODY_ID 65534

/* ---- Fixture helpers -------------------------------------------------- */

static void
make_dirs(const char *path)
{
	char *copy = xstrdup(path);

	for (char *p = copy + 1;; p++) {
		char c = *p;

		if (c != '/' && c != '\0')
			continue;
		*p = '\0';
		if (mkdir(copy, 0755) < 0 && errno != EEXIST)
			ck_abort_msg("mkdir %s: %s", copy, strerror(errno));
		*p = c;
		if (c == '\0')
			break;
	}
	free(copy);
}

static char *
make_path(const char *dir, const char *rel)
{
	return xasprintf("%s/%s", dir, rel);
}

static void
make_subdir(const char *dir, const char *rel)
{
	char *path = make_path(dir, rel);

	make_dirs(path);
	free(path);
}

/* Create dir/rel with its cur/, new/ and tmp/ subdirectories. */
static void
make_maildir(const char *dir, const char *rel)
{
	static const char *const subdirs[] = {"cur", "new", "tmp"};

	for (size_t i = 0; i < 3; i++) {
		char *path = xasprintf("%s/%s/%s", dir, rel, subdirs[i]);

		make_dirs(path);
		free(path);
	}
}

static void
put_file(const char *dir, const char *rel, const char *content)
{
	char *path = make_path(dir, rel);

	tu_write_file(path, content, strlen(content), 0644);
	free(path);
}

static void
set_mtime(const char *path, time_t mtime)
{
	struct timespec times[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_sec = mtime}};

	ck_assert_msg(utimensat(AT_FDCWD, path, times, 0) == 0,
		      "utimensat %s: %s", path, strerror(errno));
}

/* Make the temp dir traversable by "nobody" for the privilege tests. */
static char *
open_tempdir(const char *tag)
{
	char *dir = tu_tempdir(tag);

	ck_assert_int_eq(chmod(dir, 0755), 0);
	return dir;
}

/* Check file access as "nobody" from here on, so that a mode 000 file
 * is really unreadable: root's CAP_DAC_OVERRIDE is dropped from the
 * effective set while the filesystem uid is not 0. */
static void
drop_fs_privileges(void)
{
	if (geteuid() != 0)
		return;
	setfsgid(NOBODY_ID);
	setfsuid(NOBODY_ID);
	/* setfsuid() reports the current id when given an invalid one. */
	ck_assert_int_eq(setfsuid((uid_t)-1), NOBODY_ID);
}

static void
restore_fs_privileges(void)
{
	if (geteuid() != 0)
		return;
	setfsuid(0);
	setfsgid(0);
	ck_assert_int_eq(setfsuid((uid_t)-1), 0);
}

static struct config *
make_config(const char *root, const char *user_path)
{
	struct config *cfg = xcalloc(1, sizeof(*cfg));

	cfg->maildir_root = xstrdup(root);
	cfg->user_path = xstrdup(user_path);
	return cfg;
}

static void
free_config(struct config *cfg)
{
	free(cfg->maildir_root);
	free(cfg->user_path);
	free(cfg);
}

/* ---- File names ------------------------------------------------------- */

static const struct {
	const char *name;
	int ret;
	const char *uniq;
	const char *letters;
} filename_cases[] = {
	{"1700000000.M1P1.host,S=1200:2,RS", 0, "1700000000.M1P1.host,S=1200",
	 "RS"},
	{"1700000000.M1P1.host", 0, "1700000000.M1P1.host", ""},
	{"1700000000.123_1.host,U=7:2:2,RS", -1, NULL, NULL},
	/* A stale ",U=" token from another tool is part of the identity. */
	{"1700000000.M1P1.host,U=12:2,S", 0, "1700000000.M1P1.host,U=12",
	 "S"},
	{"1700000000.M1P1.host:2,", 0, "1700000000.M1P1.host", ""},
	{".1700000000.M1P1.host:2,S", -1, NULL, NULL},
	/* Experimental info: identity kept, flags not understood. */
	{"1700000000.M1P1.host:1,xyz", 0, "1700000000.M1P1.host", ""},
	{"", -1, NULL, NULL},
	{":2,S", -1, NULL, NULL},
	{"1700000000.M1P1.host:2,S:x", -1, NULL, NULL},
	{"a:b:c", -1, NULL, NULL},
	{"1700000000.M1P1.host:2,Sab", 0, "1700000000.M1P1.host", "Sab"},
};

START_TEST(parse_filename_table)
{
	char *uniq, *letters;
	int ret;

	ret = md_parse_filename(filename_cases[_i].name, &uniq, &letters);
	ck_assert_msg(ret == filename_cases[_i].ret, "%s: returned %d",
		      filename_cases[_i].name, ret);
	if (ret < 0) {
		ck_assert_ptr_null(uniq);
		ck_assert_ptr_null(letters);
		return;
	}
	ck_assert_str_eq(uniq, filename_cases[_i].uniq);
	ck_assert_str_eq(letters, filename_cases[_i].letters);
	free(uniq);
	free(letters);
}
END_TEST

/* ---- Flags and keywords ----------------------------------------------- */

static const struct {
	const char *letters;
	const char *flags; /* flagset_format() text */
	unsigned unmapped;
} letter_cases[] = {
	{"D", "\\Draft", 0},
	{"F", "\\Flagged", 0},
	{"P", "$Forwarded", 0},
	{"R", "\\Answered", 0},
	{"S", "\\Seen", 0},
	{"T", "\\Deleted", 0},
	{"", "", 0},
	/* 'a' maps to $Forwarded too: still one keyword. */
	{"Pa", "$Forwarded", 0},
	{"b", "Work", 0},
	{"c", "", 1},
	{"z", "", 1},
	{"DFPRSTbd", "\\Seen \\Answered \\Flagged \\Deleted \\Draft "
		     "$Forwarded Junk Work",
	 0},
	{"FRSbcz", "\\Seen \\Answered \\Flagged Work", 2},
	{"XY1,=", "", 0},
};

START_TEST(letters_to_flags_table)
{
	char *keywords[26] = {NULL};
	struct flagset fs;
	unsigned unmapped;
	char *text;

	keywords[0] = "$Forwarded";
	keywords[1] = "Work";
	keywords[3] = "Junk";
	unmapped = md_letters_to_flags(letter_cases[_i].letters, keywords, 26,
				       &fs);
	text = flagset_format(&fs);
	ck_assert_msg(strcmp(text, letter_cases[_i].flags) == 0,
		      "letters \"%s\": flags \"%s\", expected \"%s\"",
		      letter_cases[_i].letters, text, letter_cases[_i].flags);
	ck_assert_uint_eq(unmapped, letter_cases[_i].unmapped);
	free(text);
	flagset_clear(&fs);
}
END_TEST

START_TEST(letters_without_keyword_table)
{
	struct flagset fs;

	ck_assert_uint_eq(md_letters_to_flags("Sab", NULL, 0, &fs), 2);
	ck_assert_uint_eq(fs.sys, FLAG_SEEN);
	ck_assert_uint_eq(fs.nkeywords, 0);
	flagset_clear(&fs);
}
END_TEST

START_TEST(read_keywords_file)
{
	char *dir = tu_tempdir("kw"), *error = NULL, *keywords[26];

	put_file(dir, "dovecot-keywords",
		 "0 $Forwarded\n1 Work\n3 Junk Mail\nbad line\n30 TooFar\n"
		 "2\n4 \n");
	ck_assert_int_eq(md_read_keywords(dir, keywords, &error), 0);
	ck_assert_str_eq(keywords[0], "$Forwarded");
	ck_assert_str_eq(keywords[1], "Work");
	ck_assert_ptr_null(keywords[2]);
	ck_assert_str_eq(keywords[3], "Junk Mail");
	ck_assert_ptr_null(keywords[4]);
	for (int i = 5; i < 26; i++)
		ck_assert_ptr_null(keywords[i]);
	md_keywords_free(keywords);
	ck_assert_ptr_null(keywords[0]);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

START_TEST(read_keywords_missing_file)
{
	char *dir = tu_tempdir("kw"), *error = NULL, *keywords[26];

	ck_assert_int_eq(md_read_keywords(dir, keywords, &error), 0);
	for (int i = 0; i < 26; i++)
		ck_assert_ptr_null(keywords[i]);
	ck_assert_ptr_null(error);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

/* ---- Folders ---------------------------------------------------------- */

static char *
make_folder_tree(void)
{
	char *dir = tu_tempdir("folders");

	make_maildir(dir, "");
	make_maildir(dir, ".A");
	make_maildir(dir, ".A.B");
	make_maildir(dir, ".A-x");
	make_maildir(dir, ".Entw&APw-rfe");
	make_maildir(dir, ".R&-D");
	make_maildir(dir, ".X.Y");
	make_maildir(dir, "..DOVECOT-TRASHED");
	make_maildir(dir, ".bad..name");
	make_maildir(dir, ".trailing.");
	make_subdir(dir, ".NoMaildir/tmp");
	make_subdir(dir, "courierimapkeywords");
	put_file(dir, ".notadir", "x");
	put_file(dir, "dovecot-uidlist", "3 V1 N1\n");
	return dir;
}

START_TEST(folders_listed_in_order)
{
	static const char *const expected[] = {
		"INBOX", "A", "A.B", "A-x", "Entw&APw-rfe", "R&-D", "X.Y",
	};
	char *dir = make_folder_tree(), *error = NULL, *path;
	struct md_stats stats = {0};
	struct md_folder *folders;
	size_t count;

	ck_assert_int_eq(
		md_list_folders(dir, &folders, &count, &stats, &error), 0);
	ck_assert_uint_eq(count, sizeof(expected) / sizeof(*expected));
	for (size_t i = 0; i < count; i++)
		ck_assert_str_eq(folders[i].name, expected[i]);

	/* .bad..name, .trailing. and .NoMaildir */
	ck_assert_uint_eq(stats.skipped_folders, 3);
	ck_assert_str_eq(folders[0].path, dir);
	path = make_path(dir, ".Entw&APw-rfe");
	ck_assert_str_eq(folders[4].path, path);
	free(path);
	md_folders_free(&folders, count);
	ck_assert_ptr_null(folders);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

START_TEST(folders_missing_user_dir)
{
	char *dir = tu_tempdir("folders"), *error = NULL, *missing;
	struct md_folder *folders;
	size_t count;

	missing = make_path(dir, "nobody-here");
	ck_assert_int_eq(
		md_list_folders(missing, &folders, &count, NULL, &error), -1);
	ck_assert_ptr_nonnull(error);
	ck_assert_ptr_nonnull(strstr(error, missing));
	ck_assert_ptr_null(folders);
	free(error);
	free(missing);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

/* ---- Subscriptions ---------------------------------------------------- */

static void
check_subscriptions(const char *content, const char *const *expected,
		    size_t nexpected)
{
	char *dir = tu_tempdir("subs"), *error = NULL, **names;
	size_t count;

	if (content != NULL)
		put_file(dir, "subscriptions", content);
	ck_assert_int_eq(md_read_subscriptions(dir, &names, &count, &error),
			 0);
	ck_assert_uint_eq(count, nexpected);
	for (size_t i = 0; i < count; i++)
		ck_assert_str_eq(names[i], expected[i]);
	md_strings_free(&names, count);
	tu_rmrf(dir);
	free(dir);
}

START_TEST(subscriptions_plain_format)
{
	static const char *const expected[] = {"INBOX", "A", "A.B",
					       "Entw&APw-rfe"};

	check_subscriptions("INBOX\nA\n\nA.B\nA\nEntw&APw-rfe", expected, 4);
}
END_TEST

/* The first four lines are what Dovecot 2.3.19.1 wrote after
 * SUBSCRIBE A, A.B and Entw&APw-rfe. */
START_TEST(subscriptions_version2_format)
{
	static const char *const expected[] = {"A", "A.B", "Entw&APw-rfe",
					       "INBOX", "X\tY"};

	check_subscriptions("V\t2\n\nA\nA\tB\nEntw&APw-rfe\nINBOX\n"
			    "X\001tY\n\nA\tB\n",
			    expected, 5);
}
END_TEST

START_TEST(subscriptions_missing_file)
{
	check_subscriptions(NULL, NULL, 0);
}
END_TEST

/* ---- Users ------------------------------------------------------------ */

static void
check_users(const char *root, const char *tpl, const char *const *names,
	    const char *const *rel_paths, size_t n)
{
	struct config *cfg = make_config(root, tpl);
	struct md_user *users;
	char *error = NULL;
	size_t count;

	ck_assert_msg(md_list_users(cfg, &users, &count, &error) == 0,
		      "%s: %s", tpl, error);
	ck_assert_uint_eq(count, n);
	for (size_t i = 0; i < count; i++) {
		char *path = make_path(root, rel_paths[i]);
		char *built = md_user_path(cfg, users[i].name);

		ck_assert_str_eq(users[i].name, names[i]);
		ck_assert_str_eq(users[i].path, path);
		ck_assert_str_eq(built, path);
		free(path);
		free(built);
	}
	md_users_free(&users, count);
	free_config(cfg);
}

START_TEST(users_by_login)
{
	static const char *const names[] = {"alice", "bob", "it's *[x]"};
	static const char *const paths[] = {
		"alice/Maildir", "bob/Maildir", "it's *[x]/Maildir"};
	char *root = tu_tempdir("users");

	make_maildir(root, "alice/Maildir");
	make_subdir(root, "bob/Maildir/cur");
	make_maildir(root, "it's *[x]/Maildir");
	make_subdir(root, "carol");
	make_subdir(root, "dave/Maildir/tmp");
	make_maildir(root, ".hidden/Maildir");
	put_file(root, "erin", "not a directory");
	check_users(root, "%u/Maildir", names, paths, 3);
	tu_rmrf(root);
	free(root);
}
END_TEST

START_TEST(users_by_domain_and_name)
{
	static const char *const names[] = {"alice@example.com",
					    "bob@example.org"};
	static const char *const paths[] = {"vmail/example.com/alice/Maildir",
					    "vmail/example.org/bob/Maildir"};
	char *root = tu_tempdir("users");

	make_maildir(root, "vmail/example.com/alice/Maildir");
	make_subdir(root, "vmail/example.org/bob/Maildir/new");
	make_subdir(root, "vmail/example.com/zed");
	check_users(root, "vmail/%d/%n/Maildir", names, paths, 2);
	tu_rmrf(root);
	free(root);
}
END_TEST

START_TEST(users_repeated_variable_must_agree)
{
	static const char *const names[] = {"alice@x"};
	static const char *const paths[] = {"alice@x/alice"};
	char *root = tu_tempdir("users");

	make_maildir(root, "alice@x/alice");
	make_maildir(root, "alice@x/bob");
	check_users(root, "%u/%n", names, paths, 1);
	tu_rmrf(root);
	free(root);
}
END_TEST

START_TEST(users_errors)
{
	char *root = tu_tempdir("users"), *error = NULL, *missing;
	struct config *cfg = make_config(root, "Maildir/%d");
	struct md_user *users;
	size_t count;

	ck_assert_int_eq(md_list_users(cfg, &users, &count, &error), -1);
	ck_assert_ptr_nonnull(strstr(error, "user_path"));
	xfree(&error);
	free_config(cfg);

	missing = make_path(root, "missing");
	cfg = make_config(missing, "%u/Maildir");
	ck_assert_int_eq(md_list_users(cfg, &users, &count, &error), -1);
	ck_assert_ptr_nonnull(strstr(error, missing));
	free(error);
	free(missing);
	free_config(cfg);
	tu_rmrf(root);
	free(root);
}
END_TEST

START_TEST(user_path_expands_template)
{
	struct config *cfg = make_config("/var/vmail/", "%d/%n/100%%/%u");
	char *path = md_user_path(cfg, "bob@example.org");

	ck_assert_str_eq(path,
			 "/var/vmail/example.org/bob/100%/bob@example.org");
	free(path);
	free_config(cfg);
}
END_TEST

/* ---- Scanning --------------------------------------------------------- */

#define BODY "From: a@example.org\nSubject: test\n\nbody\n"

/* A folder with good messages and every kind of entry the scan skips. */
static char *
make_scan_tree(void)
{
	char *dir = open_tempdir("scan"), *path;

	make_maildir(dir, "");
	put_file(dir, "cur/1700000001.M1P1.host,S=42:2,S", BODY);
	put_file(dir, "cur/1700000002.M2P1.host:2,Fa", BODY);
	put_file(dir, "cur/1700000003.M3P1.host", BODY);
	put_file(dir, "new/1700000004.M4P1.host", BODY);
	put_file(dir, "new/1700000005.M5P1.host:2,S", BODY);
	put_file(dir, "new/1700000006.M6P1.host", BODY "duplicate\n");
	put_file(dir, "cur/1700000006.M6P1.host:2,RS", BODY);
	put_file(dir, "cur/.hidden", BODY);
	put_file(dir, "tmp/1700000007.M7P1.host", BODY);
	put_file(dir, "cur/1700000008.M8P1.host:2,S", "");
	put_file(dir, "cur/1700000000.123_1.host,U=7:2:2,RS", BODY);
	put_file(dir, "cur/1700000009.M9P1.host:2,S", BODY);
	make_subdir(dir, "cur/1700000010.M10P1.host:2,S");

	path = make_path(dir, "cur/1700000011.M11P1.host:2,S");
	ck_assert_int_eq(symlink("/nonexistent/message", path), 0);
	free(path);
	path = make_path(dir, "cur/1700000012.M12P1.host:2,S");
	ck_assert_int_eq(mkfifo(path, 0644), 0);
	free(path);
	path = make_path(dir, "cur/1700000009.M9P1.host:2,S");
	ck_assert_int_eq(chmod(path, 0), 0);
	free(path);
	return dir;
}

static const struct {
	const char *uniq;
	bool in_new;
	const char *flags;
	off_t size;
} scan_expected[] = {
	{"1700000001.M1P1.host,S=42", false, "\\Seen", sizeof(BODY) - 1},
	{"1700000002.M2P1.host", false, "\\Flagged", sizeof(BODY) - 1},
	{"1700000003.M3P1.host", false, "", sizeof(BODY) - 1},
	{"1700000004.M4P1.host", true, "", sizeof(BODY) - 1},
	{"1700000005.M5P1.host", true, "", sizeof(BODY) - 1},
	{"1700000006.M6P1.host", false, "\\Seen \\Answered",
	 sizeof(BODY) - 1},
};
#define N_SCAN_EXPECTED (sizeof(scan_expected) / sizeof(*scan_expected))

static void
check_scanned(const struct md_message *msgs, size_t count)
{
	ck_assert_uint_eq(count, N_SCAN_EXPECTED);
	for (size_t i = 0; i < count; i++) {
		char *flags = flagset_format(&msgs[i].flags);

		ck_assert_str_eq(msgs[i].uniq, scan_expected[i].uniq);
		ck_assert_msg(msgs[i].in_new == scan_expected[i].in_new,
			      "%s: in_new", msgs[i].uniq);
		ck_assert_msg(strcmp(flags, scan_expected[i].flags) == 0,
			      "%s: flags \"%s\"", msgs[i].uniq, flags);
		ck_assert_int_eq(msgs[i].size, scan_expected[i].size);
		ck_assert_ptr_nonnull(strstr(msgs[i].path, msgs[i].filename));
		free(flags);
	}
}

static void
check_scan_stats(const struct md_stats *stats)
{
	ck_assert_uint_eq(stats->messages, N_SCAN_EXPECTED);
	ck_assert_uint_eq(stats->bytes, N_SCAN_EXPECTED * (sizeof(BODY) - 1));
	ck_assert_uint_eq(stats->skipped_malformed, 1);
	ck_assert_uint_eq(stats->skipped_empty, 1);
	ck_assert_uint_eq(stats->skipped_unreadable, 1);
	/* directory, dangling symlink and FIFO */
	ck_assert_uint_eq(stats->skipped_not_file, 3);
	ck_assert_uint_eq(stats->skipped_duplicate, 1);
	ck_assert_uint_eq(stats->skipped_vanished, 0);
	ck_assert_uint_eq(stats->unmapped_keywords, 1);
	ck_assert_uint_eq(stats->date_fallbacks, 0);
}

static void
check_scan_log(const char *log_path)
{
	static const char *const expected[] = {
		"reason=malformed_name", "reason=empty",
		"reason=unreadable",	 "reason=not_regular_file",
		"reason=duplicate_uniq", "event=keyword_unmapped",
		"user=alice",
	};
	char *text = tu_read_file(log_path, NULL);

	ck_assert_ptr_nonnull(text);
	for (size_t i = 0; i < sizeof(expected) / sizeof(*expected); i++)
		ck_assert_msg(strstr(text, expected[i]) != NULL,
			      "log lacks %s:\n%s", expected[i], text);
	ck_assert_ptr_null(strstr(text, "1700000007"));
	free(text);
}

START_TEST(scan_skips_and_counts)
{
	char *dir = make_scan_tree(), *error = NULL, *log_path, *blocked;
	struct md_folder folder = {.name = "INBOX", .path = dir};
	struct md_stats stats = {0};
	struct md_message *msgs;
	size_t count;
	int fd;

	log_path = make_path(dir, "test.log");
	ck_assert_int_eq(log_open(log_path, false, "check", &error), 0);
	blocked = make_path(dir, "cur/1700000009.M9P1.host:2,S");
	drop_fs_privileges();
	fd = open(blocked, O_RDONLY);
	ck_assert_msg(fd < 0, "mode 000 file is readable; the test cannot "
			      "check the unreadable-file path");
	ck_assert_int_eq(md_scan_folder(&folder, "alice", &msgs, &count,
					&stats, &error),
			 0);
	restore_fs_privileges();
	log_close();

	check_scanned(msgs, count);
	check_scan_stats(&stats);
	check_scan_log(log_path);
	md_messages_free(&msgs, count);
	ck_assert_ptr_null(msgs);
	free(blocked);
	free(log_path);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

START_TEST(scan_maps_keywords)
{
	char *dir = tu_tempdir("scan"), *error = NULL, *flags;
	struct md_folder folder = {.name = "Work", .path = dir};
	struct md_stats stats = {0};
	struct md_message *msgs;
	size_t count;

	make_maildir(dir, "");
	put_file(dir, "dovecot-keywords", "0 $Forwarded\n1 Work\n");
	put_file(dir, "cur/1700000001.M1P1.host,S=42:2,PSab", BODY);
	ck_assert_int_eq(md_scan_folder(&folder, "alice", &msgs, &count,
					&stats, &error),
			 0);
	ck_assert_uint_eq(count, 1);
	flags = flagset_format(&msgs[0].flags);
	ck_assert_str_eq(flags, "\\Seen $Forwarded Work");
	ck_assert_uint_eq(stats.unmapped_keywords, 0);
	free(flags);
	md_messages_free(&msgs, count);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

START_TEST(scan_unlistable_cur_fails)
{
	char *dir = open_tempdir("scan"), *error = NULL, *cur;
	struct md_folder folder = {.name = "INBOX", .path = dir};
	struct md_message *msgs;
	size_t count;
	int ret;

	make_maildir(dir, "");
	put_file(dir, "new/1700000001.M1P1.host", BODY);
	cur = make_path(dir, "cur");
	ck_assert_int_eq(chmod(cur, 0), 0);
	drop_fs_privileges();
	ret = md_scan_folder(&folder, "alice", &msgs, &count, NULL, &error);
	restore_fs_privileges();
	ck_assert_int_eq(ret, -1);
	ck_assert_ptr_null(msgs);
	ck_assert_ptr_nonnull(strstr(error, cur));
	free(error);
	free(cur);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

START_TEST(scan_without_cur_or_new_fails)
{
	char *dir = tu_tempdir("scan"), *error = NULL;
	struct md_folder folder = {.name = "INBOX", .path = dir};
	struct md_message *msgs;
	size_t count;

	ck_assert_int_eq(
		md_scan_folder(&folder, "alice", &msgs, &count, NULL, &error),
		-1);
	ck_assert_ptr_nonnull(strstr(error, "neither new/ nor cur/"));
	free(error);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

/* A name that readdir returned but that is gone by the time it is
 * examined takes the same path as a message moved away mid-scan. */
START_TEST(read_message_vanished)
{
	char *dir = tu_tempdir("scan");
	struct md_folder folder = {.name = "INBOX", .path = dir};
	struct md_stats stats = {0};
	struct md_message msg;

	make_maildir(dir, "");
	ck_assert_int_eq(md_read_message(&folder, "alice", false,
					 "1700000001.M1P1.host:2,S", NULL,
					 &msg, &stats),
			 0);
	ck_assert_uint_eq(stats.skipped_vanished, 1);
	ck_assert_uint_eq(stats.messages, 0);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

START_TEST(read_message_in_new_never_seen)
{
	char *dir = tu_tempdir("scan");
	struct md_folder folder = {.name = "INBOX", .path = dir};
	struct md_stats stats = {0};
	struct md_message msg;

	make_maildir(dir, "");
	put_file(dir, "new/1700000001.M1P1.host:2,SF", BODY);
	ck_assert_int_eq(md_read_message(&folder, "alice", true,
					 "1700000001.M1P1.host:2,SF", NULL,
					 &msg, &stats),
			 1);
	ck_assert_uint_eq(msg.flags.sys, FLAG_FLAGGED);
	ck_assert_str_eq(msg.uniq, "1700000001.M1P1.host");
	ck_assert(msg.in_new);
	ck_assert_uint_eq(stats.messages, 1);
	md_message_clear(&msg);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

/* ---- The scan leaves the tree alone ----------------------------------- */

/* Append one line per entry under dir (name, mode, size, mtime, ctime),
 * recursively and in sorted order. Access times are left out because
 * reading a file may update them. */
static void
list_tree(const char *dir, char **out, size_t *len, size_t *cap)
{
	struct dirent **entries;
	int n = scandir(dir, &entries, NULL, alphasort);

	ck_assert_msg(n >= 0, "scandir %s: %s", dir, strerror(errno));
	for (int i = 0; i < n; i++) {
		const char *name = entries[i]->d_name;
		char *path = make_path(dir, name), *line;
		struct stat st;

		if (strcmp(name, ".") != 0 && strcmp(name, "..") != 0) {
			ck_assert_int_eq(lstat(path, &st), 0);
			line = xasprintf("%s %o %lld %lld.%09ld %lld.%09ld\n",
					 path, st.st_mode,
					 (long long)st.st_size,
					 (long long)st.st_mtim.tv_sec,
					 st.st_mtim.tv_nsec,
					 (long long)st.st_ctim.tv_sec,
					 st.st_ctim.tv_nsec);
			*out = xgrow(*out, cap, *len + strlen(line) + 1, 1);
			strcpy(*out + *len, line);
			*len += strlen(line);
			free(line);
			if (S_ISDIR(st.st_mode))
				list_tree(path, out, len, cap);
		}
		free(path);
		free(entries[i]);
	}
	free(entries);
}

static char *
tree_listing(const char *dir)
{
	char *out = xstrdup("");
	size_t len = 0, cap = 1;

	list_tree(dir, &out, &len, &cap);
	return out;
}

static void
read_whole_user(const char *dir)
{
	struct md_folder *folders;
	struct md_message *msgs;
	size_t nfolders, count;
	char *error = NULL, **subs;
	unsigned char digest[32];
	uint64_t size;

	ck_assert_int_eq(
		md_list_folders(dir, &folders, &nfolders, NULL, &error), 0);
	for (size_t i = 0; i < nfolders; i++) {
		ck_assert_int_eq(md_scan_folder(&folders[i], "alice", &msgs,
						&count, NULL, &error),
				 0);
		for (size_t j = 0; j < count; j++)
			ck_assert_int_eq(
				md_hash_file(msgs[j].path, digest, &size), 0);
		md_messages_free(&msgs, count);
	}
	md_folders_free(&folders, nfolders);
	ck_assert_int_eq(md_read_subscriptions(dir, &subs, &count, &error),
			 0);
	md_strings_free(&subs, count);
}

START_TEST(scan_leaves_tree_unchanged)
{
	char *dir = make_scan_tree(), *before, *after, *path;

	make_maildir(dir, ".Work");
	put_file(dir, ".Work/dovecot-keywords", "0 Todo\n");
	put_file(dir, ".Work/cur/1600000000.M1P1.host:2,a", BODY);
	path = make_path(dir, ".Work/cur/1600000000.M1P1.host:2,a");
	set_mtime(path, 0);
	free(path);
	put_file(dir, "subscriptions", "Work\n");

	before = tree_listing(dir);
	read_whole_user(dir);
	after = tree_listing(dir);
	ck_assert_str_eq(before, after);
	free(before);
	free(after);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

/* ---- INTERNALDATE ----------------------------------------------------- */

#define NOW_SOURCE (-1) /* expected time is the time of the call */

static const struct {
	const char *uniq;
	time_t mtime;
	const char *content;
	const char *source;
	time_t expected;
} date_cases[] = {
	{"1600000000.M1P1.host", 1700000000, BODY, "mtime", 1700000000},
	{"1600000000.M1P1.host", 0, BODY, "name", 1600000000},
	{"1600000000.M1P1.host", 4102444800 /* 2100 */, BODY, "name",
	 1600000000},
	/* 2023-11-14T22:13:20+0200 is 20:13:20 UTC. */
	{"host.noepoch", 0, "Date: Tue, 14 Nov 2023 22:13:20 +0200\n\nx\n",
	 "header", 1699992800},
	{"host.noepoch", 0,
	 "Subject: s\r\nDate: Tue,\r\n 14 Nov 2023 (folded) 20:43:20\r\n"
	 " -0130\r\nFrom: a\r\n\r\nx\r\n",
	 "header", 1700000000},
	{"host.noepoch", 0, "date: 14 Nov 23 22:13 GMT\n\nx\n", "header",
	 1699999980},
	{"host.noepoch", 0, "Date: 14 Nov 2023 17:13:20 EST\n\nx\n", "header",
	 1700000000},
	{"12345.host", 0, "Date: not a date\n\nx\n", "now", NOW_SOURCE},
	{"host.noepoch", 0, "Subject: s\n\nDate: Tue, 14 Nov 2023 22:13:20 "
			    "+0000\n",
	 "now", NOW_SOURCE},
	{"host.noepoch", 0, "Date: Tue, 14 Nov 2099 22:13:20 +0000\n\nx\n",
	 "now", NOW_SOURCE},
};

START_TEST(internaldate_table)
{
	char *dir = tu_tempdir("date"), *path;
	const char *source = NULL;
	time_t t, before = time(NULL);

	path = make_path(dir, date_cases[_i].uniq);
	put_file(dir, date_cases[_i].uniq, date_cases[_i].content);
	t = md_internaldate(path, date_cases[_i].uniq, date_cases[_i].mtime,
			    &source);
	ck_assert_str_eq(source, date_cases[_i].source);
	if (date_cases[_i].expected == NOW_SOURCE) {
		ck_assert_int_ge(t, before);
		ck_assert_int_le(t, time(NULL));
	} else {
		ck_assert_int_eq(t, date_cases[_i].expected);
	}
	free(path);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

START_TEST(scan_counts_date_fallback)
{
	char *dir = tu_tempdir("date"), *error = NULL, *path;
	struct md_folder folder = {.name = "INBOX", .path = dir};
	struct md_stats stats = {0};
	struct md_message *msgs;
	size_t count;

	make_maildir(dir, "");
	put_file(dir, "cur/1600000000.M1P1.host:2,S", BODY);
	path = make_path(dir, "cur/1600000000.M1P1.host:2,S");
	set_mtime(path, 0);
	ck_assert_int_eq(md_scan_folder(&folder, NULL, &msgs, &count, &stats,
					&error),
			 0);
	ck_assert_uint_eq(count, 1);
	ck_assert_int_eq(msgs[0].internaldate, 1600000000);
	ck_assert_uint_eq(stats.date_fallbacks, 1);
	md_messages_free(&msgs, count);
	free(path);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

/* ---- CRLF hash -------------------------------------------------------- */

#define BYTES(s) s, sizeof(s) - 1

static const struct {
	const char *in;
	size_t inlen;
	const char *out; /* the CRLF form */
	size_t outlen;
} crlf_cases[] = {
	{BYTES(""), BYTES("")},
	{BYTES("a\nb\n"), BYTES("a\r\nb\r\n")},
	{BYTES("a\r\nb\r\n"), BYTES("a\r\nb\r\n")},
	{BYTES("a\rb"), BYTES("a\r\nb")},
	{BYTES("a\r"), BYTES("a\r\n")},
	{BYTES("\r\r\n"), BYTES("\r\n\r\n")},
	{BYTES("\n\r"), BYTES("\r\n\r\n")},
	{BYTES("\n\n"), BYTES("\r\n\r\n")},
	{BYTES("a\0b\r\0"), BYTES("a\x80" "b\r\n\x80")},
	{BYTES("x\r\n\r\ny"), BYTES("x\r\n\r\ny")},
};

static void
expected_digest(const char *data, size_t len, unsigned char digest[32])
{
	ck_assert_int_eq(
		gnutls_hash_fast(GNUTLS_DIG_SHA256, data, len, digest), 0);
}

/* Every case is fed whole, one byte at a time and split at every
 * position, so that a CR at a piece boundary is covered. */
START_TEST(crlf_hasher_table)
{
	const char *in = crlf_cases[_i].in;
	size_t inlen = crlf_cases[_i].inlen;
	unsigned char want[32], got[32];
	struct crlf_hasher *h;
	uint64_t size;

	expected_digest(crlf_cases[_i].out, crlf_cases[_i].outlen, want);
	for (size_t split = 0; split <= inlen; split++) {
		h = crlf_hasher_new();
		crlf_hasher_update(h, in, split);
		crlf_hasher_update(h, in + split, inlen - split);
		crlf_hasher_finish(&h, got, &size);
		ck_assert_ptr_null(h);
		ck_assert_msg(memcmp(got, want, 32) == 0, "case %d split %zu",
			      _i, split);
		ck_assert_uint_eq(size, crlf_cases[_i].outlen);
	}

	h = crlf_hasher_new();
	for (size_t i = 0; i < inlen; i++)
		crlf_hasher_update(h, in + i, 1);
	crlf_hasher_finish(&h, got, &size);
	ck_assert_mem_eq(got, want, 32);
	ck_assert_uint_eq(size, crlf_cases[_i].outlen);
}
END_TEST

/* A file larger than the 64 KiB read size with a CR as the last byte of
 * the first read and LF as the first byte of the second. */
START_TEST(hash_file_cr_at_read_boundary)
{
	const size_t len = 64 * 1024 + 100;
	char *dir = tu_tempdir("hash"), *path, *in, *out;
	unsigned char want[32], got[32];
	size_t outlen = 0;
	uint64_t size;

	in = xmalloc(len);
	out = xmalloc(2 * len);
	for (size_t i = 0; i < len; i++)
		in[i] = (i % 80 == 79) ? '\n' : 'a';
	in[64 * 1024 - 1] = '\r';
	in[64 * 1024] = '\n';
	for (size_t i = 0; i < len; i++) {
		if (in[i] == '\n' && (i == 0 || in[i - 1] != '\r'))
			out[outlen++] = '\r';
		out[outlen++] = in[i];
	}
	path = make_path(dir, "msg");
	tu_write_file(path, in, len, 0644);

	expected_digest(out, outlen, want);
	ck_assert_int_eq(md_hash_file(path, got, &size), 0);
	ck_assert_mem_eq(got, want, 32);
	ck_assert_uint_eq(size, outlen);
	free(in);
	free(out);
	free(path);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

START_TEST(hash_file_missing)
{
	unsigned char digest[32];
	uint64_t size;

	errno = 0;
	ck_assert_int_eq(md_hash_file("/nonexistent/msg", digest, &size), -1);
	ck_assert_int_eq(errno, ENOENT);
}
END_TEST

/* ---- Modified UTF-7 --------------------------------------------------- */

static const struct {
	const char *in;
	const char *out;
} mutf7_cases[] = {
	{"Entw&APw-rfe", "Entw\xc3\xbcrfe"},
	{"R&-D", "R&D"},
	{"INBOX", "INBOX"},
	{"&2D3cAA-", "\xf0\x9f\x90\x80"},
	{"A.&AOQ-.B", "A.\xc3\xa4.B"},
	/* Invalid names come back unchanged. */
	{"a&b", "a&b"},
	{"&Jjo", "&Jjo"},
	{"Gr\xfc", "Gr\xfc"},
};

START_TEST(mutf7_table)
{
	char *s = mutf7_to_utf8(mutf7_cases[_i].in);

	ck_assert_str_eq(s, mutf7_cases[_i].out);
	free(s);
}
END_TEST

#define N_CASES(table) ((int)(sizeof(table) / sizeof(*(table))))

static Suite *
maildir_suite(void)
{
	Suite *s = suite_create("maildir");
	TCase *names = tcase_create("names");
	TCase *tree = tcase_create("tree");
	TCase *content = tcase_create("content");

	tcase_add_loop_test(names, parse_filename_table, 0,
			    N_CASES(filename_cases));
	tcase_add_loop_test(names, letters_to_flags_table, 0,
			    N_CASES(letter_cases));
	tcase_add_test(names, letters_without_keyword_table);
	tcase_add_loop_test(names, mutf7_table, 0, N_CASES(mutf7_cases));
	tcase_add_test(names, user_path_expands_template);
	suite_add_tcase(s, names);

	tcase_add_test(tree, read_keywords_file);
	tcase_add_test(tree, read_keywords_missing_file);
	tcase_add_test(tree, folders_listed_in_order);
	tcase_add_test(tree, folders_missing_user_dir);
	tcase_add_test(tree, subscriptions_plain_format);
	tcase_add_test(tree, subscriptions_version2_format);
	tcase_add_test(tree, subscriptions_missing_file);
	tcase_add_test(tree, users_by_login);
	tcase_add_test(tree, users_by_domain_and_name);
	tcase_add_test(tree, users_repeated_variable_must_agree);
	tcase_add_test(tree, users_errors);
	tcase_add_test(tree, scan_skips_and_counts);
	tcase_add_test(tree, scan_maps_keywords);
	tcase_add_test(tree, scan_unlistable_cur_fails);
	tcase_add_test(tree, scan_without_cur_or_new_fails);
	tcase_add_test(tree, read_message_vanished);
	tcase_add_test(tree, read_message_in_new_never_seen);
	tcase_add_test(tree, scan_leaves_tree_unchanged);
	suite_add_tcase(s, tree);

	tcase_add_loop_test(content, internaldate_table, 0,
			    N_CASES(date_cases));
	tcase_add_test(content, scan_counts_date_fallback);
	tcase_add_loop_test(content, crlf_hasher_table, 0,
			    N_CASES(crlf_cases));
	tcase_add_test(content, hash_file_cr_at_read_boundary);
	tcase_add_test(content, hash_file_missing);
	suite_add_tcase(s, content);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(maildir_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
