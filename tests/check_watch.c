/* Tests of the Maildir watcher against real inotify on fixture trees in a
 * temporary directory. The changes are made the way a delivery agent and
 * Dovecot make them (write in tmp/, rename into new/, and so on). */
#include <config.h>
#include "cfg.h"
#include "testutil.h"
#include "util.h"
#include "watch.h"

#include <check.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_QUEUED_EVENTS_PATH "/proc/sys/fs/inotify/max_queued_events"

struct change {
	char *user, *folder, *hint;
};

struct recorder {
	struct change *changes;
	size_t count, cap;
};

static char *tmp;
static char *root;  /* the mail root */
static char *alice; /* alice's Maildir */
static struct config *cfg;
static struct watch *w;
static struct recorder rec;

static void make_dir(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static void
make_dir(const char *fmt, ...)
{
	va_list ap;
	char *path;

	va_start(ap, fmt);
	path = xvasprintf(fmt, ap);
	va_end(ap);
	ck_assert_msg(mkdir(path, 0700) == 0, "mkdir %s: %s", path,
		      strerror(errno));
	free(path);
}

static void
make_file(const char *dir, const char *name, const char *data)
{
	char *path = xasprintf("%s/%s", dir, name);

	tu_write_file(path, data, strlen(data), 0600);
	free(path);
}

static void
move_file(const char *from, const char *to)
{
	ck_assert_msg(rename(from, to) == 0, "rename %s -> %s: %s", from, to,
		      strerror(errno));
}

static void
make_folder(const char *user_path, const char *dirname)
{
	static const char *const subdirs[] = {"cur", "new", "tmp"};

	if (dirname != NULL)
		make_dir("%s/%s", user_path, dirname);
	for (size_t i = 0; i < 3; i++) {
		if (dirname != NULL)
			make_dir("%s/%s/%s", user_path, dirname, subdirs[i]);
		else
			make_dir("%s/%s", user_path, subdirs[i]);
	}
}

static void
load_config(void)
{
	char *conf = xasprintf("%s/mailrepl.conf", tmp);
	char *text = xasprintf("[general]\nmode = master\n"
			       "state_dir = %s/state\n"
			       "log_file = %s/mailrepl.log\n"
			       "[maildir]\nroot = %s\n"
			       "[master]\nreplica_host = 127.0.0.1\n"
			       "admin_user = x\nadmin_password = secret\n",
			       tmp, tmp, root);
	char *error = NULL;

	tu_write_file(conf, text, strlen(text), 0600);
	ck_assert_msg(config_load(conf, &cfg, &error) == 0, "config: %s",
		      error);
	free(text);
	free(conf);
}

/* alice has INBOX, Sent and A; one message waits in new/ and two in cur/
 * for the rename tests. */
static void
setup(void)
{
	tmp = tu_tempdir("watch");
	root = xasprintf("%s/mail", tmp);
	alice = xasprintf("%s/alice/Maildir", root);
	make_dir("%s", root);
	make_dir("%s/alice", root);
	make_dir("%s", alice);
	make_folder(alice, NULL);
	make_folder(alice, ".Sent");
	make_folder(alice, ".A");
	make_file(alice, "new/2.y", "Subject: 2\n\nbody\n");
	make_file(alice, "cur/3.z:2,S", "Subject: 3\n\nbody\n");
	make_file(alice, "cur/4.w:2,S", "Subject: 4\n\nbody\n");
	make_file(alice, "cur/5.m:2,S", "Subject: 5\n\nbody\n");
	load_config();
	memset(&rec, 0, sizeof(rec));
}

static void
recorder_clear(struct recorder *r)
{
	for (size_t i = 0; i < r->count; i++) {
		free(r->changes[i].user);
		free(r->changes[i].folder);
		free(r->changes[i].hint);
	}
	free(r->changes);
	memset(r, 0, sizeof(*r));
}

static void
teardown(void)
{
	watch_free(&w);
	config_free(&cfg);
	recorder_clear(&rec);
	tu_rmrf(tmp);
	xfree(&tmp);
	xfree(&root);
	xfree(&alice);
}

static void
record(const char *user, const char *folder, const char *hint, void *ctx)
{
	struct recorder *r = ctx;

	ck_assert_ptr_nonnull(user);
	ck_assert_ptr_nonnull(folder);
	ck_assert_ptr_nonnull(hint);
	r->changes =
		xgrow(r->changes, &r->cap, r->count + 1, sizeof(*r->changes));
	r->changes[r->count].user = xstrdup(user);
	r->changes[r->count].folder = xstrdup(folder);
	r->changes[r->count++].hint = xstrdup(hint);
}

static void
start_watch(void)
{
	char *error = NULL;

	w = watch_new(cfg, &error);
	ck_assert_msg(w != NULL, "watch_new: %s", error);
	ck_assert_int_ge(watch_fd(w), 0);
}

/* Process events until none arrives for 100 ms, waiting up to 2 s for
 * the first. Returns the highest watch_process() result. */
static int
drain(void)
{
	struct pollfd pfd = {.fd = watch_fd(w), .events = POLLIN};
	int timeout = 2000, result = 0;

	while (poll(&pfd, 1, timeout) > 0) {
		int ret = watch_process(w, record, &rec);

		ck_assert_int_ge(ret, 0);
		if (ret > result)
			result = ret;
		timeout = 100;
	}
	return result;
}

static void
dump_changes(void)
{
	for (size_t i = 0; i < rec.count; i++)
		fprintf(stderr, "  change %s / %s / %s\n", rec.changes[i].user,
			rec.changes[i].folder, rec.changes[i].hint);
}

/* Number of recorded changes that match; NULL matches anything. */
static size_t
count_changes(const char *user, const char *folder, const char *hint)
{
	size_t n = 0;

	for (size_t i = 0; i < rec.count; i++) {
		const struct change *c = &rec.changes[i];

		if ((user == NULL || strcmp(c->user, user) == 0) &&
		    (folder == NULL || strcmp(c->folder, folder) == 0) &&
		    (hint == NULL || strcmp(c->hint, hint) == 0))
			n++;
	}
	return n;
}

static void
assert_change(const char *user, const char *folder, const char *hint)
{
	if (count_changes(user, folder, hint) == 0)
		dump_changes();
	ck_assert_msg(count_changes(user, folder, hint) > 0,
		      "no change %s / %s / %s among %zu", user, folder,
		      hint != NULL ? hint : "*", rec.count);
}

static void
assert_no_folder(const char *user, const char *folder)
{
	if (count_changes(user, folder, NULL) != 0)
		dump_changes();
	ck_assert_msg(count_changes(user, folder, NULL) == 0,
		      "unexpected change of %s / %s", user, folder);
}

/* Deliver a message the Maildir way: write in tmp/, rename into new/. */
static void
deliver(const char *folder_dir, const char *name)
{
	char *from = xasprintf("%s/tmp/%s", folder_dir, name);
	char *to = xasprintf("%s/new/%s", folder_dir, name);

	tu_write_file(from, "Subject: x\n\nbody\n", 17, 0600);
	move_file(from, to);
	free(from);
	free(to);
}

START_TEST(delivery_into_new)
{
	start_watch();
	deliver(alice, "1.x");
	ck_assert_int_eq(drain(), 0);

	if (rec.count != 1)
		dump_changes();
	ck_assert_uint_eq(rec.count, 1);
	assert_change("alice", "INBOX", "1.x");
}
END_TEST

START_TEST(new_to_cur_rename)
{
	char *from = xasprintf("%s/new/2.y", alice);
	char *to = xasprintf("%s/cur/2.y:2,S", alice);

	start_watch();
	move_file(from, to);
	ck_assert_int_eq(drain(), 0);

	assert_change("alice", "INBOX", "2.y");
	assert_change("alice", "INBOX", "2.y:2,S");
	ck_assert_uint_eq(count_changes(NULL, NULL, NULL),
			  count_changes("alice", "INBOX", NULL));
	free(from);
	free(to);
}
END_TEST

START_TEST(flag_rename_within_cur)
{
	char *from = xasprintf("%s/cur/3.z:2,S", alice);
	char *to = xasprintf("%s/cur/3.z:2,RS", alice);

	start_watch();
	move_file(from, to);
	ck_assert_int_eq(drain(), 0);

	assert_change("alice", "INBOX", "3.z:2,S");
	assert_change("alice", "INBOX", "3.z:2,RS");
	free(from);
	free(to);
}
END_TEST

START_TEST(delete_in_cur)
{
	char *path = xasprintf("%s/cur/4.w:2,S", alice);

	start_watch();
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(drain(), 0);

	ck_assert_uint_eq(rec.count, 1);
	assert_change("alice", "INBOX", "4.w:2,S");
	free(path);
}
END_TEST

START_TEST(move_between_folders)
{
	char *from = xasprintf("%s/cur/5.m:2,S", alice);
	char *to = xasprintf("%s/.Sent/cur/5.m:2,S", alice);

	start_watch();
	move_file(from, to);
	ck_assert_int_eq(drain(), 0);

	assert_change("alice", "INBOX", "5.m:2,S");
	assert_change("alice", "Sent", "5.m:2,S");
	ck_assert_uint_eq(rec.count, 2);
	free(from);
	free(to);
}
END_TEST

/* The file lands in .X/cur before the watcher has seen .X at all, so
 * only the rescan after adding the watches can report it. */
START_TEST(new_folder_rescanned)
{
	start_watch();
	make_dir("%s/.X", alice);
	make_dir("%s/.X/cur", alice);
	make_file(alice, ".X/cur/6.n:2,", "Subject: 6\n\nbody\n");
	ck_assert_int_eq(drain(), 0);

	assert_change("alice", "", "folders");
	assert_change("alice", "X", "rescan");

	/* The new folder's cur/ is watched from now on. */
	recorder_clear(&rec);
	make_file(alice, ".X/cur/7.o:2,", "Subject: 7\n\nbody\n");
	ck_assert_int_eq(drain(), 0);
	assert_change("alice", "X", "7.o:2,");
}
END_TEST

/* new/ created after the folder's watch exists is watched too. */
START_TEST(new_folder_subdir_later)
{
	char *y = xasprintf("%s/.Y", alice);

	start_watch();
	make_dir("%s/.Y", alice);
	ck_assert_int_eq(drain(), 0);
	assert_change("alice", "", "folders");

	make_dir("%s/.Y/new", alice);
	make_dir("%s/.Y/tmp", alice);
	ck_assert_int_eq(drain(), 0);
	assert_change("alice", "Y", "rescan");

	recorder_clear(&rec);
	deliver(y, "8.p");
	ck_assert_int_eq(drain(), 0);
	assert_change("alice", "Y", "8.p");
	free(y);
}
END_TEST

START_TEST(folder_rename_keeps_watches)
{
	char *from = xasprintf("%s/.A", alice);
	char *to = xasprintf("%s/.B", alice);
	char *b = xasprintf("%s/.B", alice);

	start_watch();
	move_file(from, to);
	ck_assert_int_eq(drain(), 0);
	assert_change("alice", "", "folders");
	assert_change("alice", "B", "rescan");

	recorder_clear(&rec);
	deliver(b, "9.q");
	ck_assert_int_eq(drain(), 0);
	assert_change("alice", "B", "9.q");
	assert_no_folder("alice", "A");
	free(from);
	free(to);
	free(b);
}
END_TEST

/* Dovecot deletes a folder by renaming it to "..DOVECOT-TRASHED" first;
 * what happens in there afterwards is no folder's change. */
START_TEST(folder_trashed_forgotten)
{
	char *from = xasprintf("%s/.A", alice);
	char *to = xasprintf("%s/..DOVECOT-TRASHED", alice);

	start_watch();
	move_file(from, to);
	ck_assert_int_eq(drain(), 0);
	assert_change("alice", "", "folders");

	recorder_clear(&rec);
	make_file(to, "cur/10.r:2,", "Subject: 10\n\nbody\n");
	make_file(alice, "new/11.s", "Subject: 11\n\nbody\n");
	ck_assert_int_eq(drain(), 0);
	assert_change("alice", "INBOX", "11.s");
	assert_no_folder("alice", "A");
	assert_no_folder("alice", "DOVECOT-TRASHED");
	ck_assert_uint_eq(rec.count, count_changes("alice", "INBOX", NULL));
	free(from);
	free(to);
}
END_TEST

START_TEST(subscriptions_edit)
{
	char *lock = xasprintf("%s/subscriptions.lock", alice);
	char *file = xasprintf("%s/subscriptions", alice);

	start_watch();
	make_file(alice, "subscriptions", "Sent\n");
	ck_assert_int_eq(drain(), 0);
	assert_change("alice", "", "subscriptions");

	/* Dovecot's way: write the lock file, rename it over the file. */
	recorder_clear(&rec);
	tu_write_file(lock, "Sent\nA\n", 7, 0600);
	move_file(lock, file);
	ck_assert_int_eq(drain(), 0);
	ck_assert_uint_eq(rec.count, 1);
	assert_change("alice", "", "subscriptions");
	free(lock);
	free(file);
}
END_TEST

START_TEST(keywords_edit)
{
	start_watch();
	make_file(alice, ".Sent/dovecot-keywords", "0 $Label1\n");
	make_file(alice, "dovecot-keywords", "0 Work\n");
	ck_assert_int_eq(drain(), 0);

	assert_change("alice", "Sent", "keywords");
	assert_change("alice", "INBOX", "keywords");
}
END_TEST

START_TEST(new_user_appears)
{
	char *bob = xasprintf("%s/bob/Maildir", root);

	start_watch();
	make_dir("%s/bob", root);
	make_dir("%s", bob);
	make_folder(bob, NULL);
	make_file(bob, "cur/12.t:2,S", "Subject: 12\n\nbody\n");
	ck_assert_int_eq(drain(), 0);
	assert_change("bob", "INBOX", "rescan");

	/* bob's new/ is watched from now on. */
	recorder_clear(&rec);
	deliver(bob, "13.u");
	ck_assert_int_eq(drain(), 0);
	assert_change("bob", "INBOX", "13.u");
	free(bob);
}
END_TEST

static const char *const dovecot_files[] = {
	"dovecot-uidlist",       "dovecot-uidlist.lock",
	"dovecot.index",         "dovecot.index.log",
	"dovecot.index.cache",   "dovecot.list.index.log",
	"dovecot-keywords.lock", ".hidden",
};

START_TEST(dovecot_files_ignored)
{
	const char *name = dovecot_files[_i];
	char *sent = xasprintf("%s/.Sent", alice);
	char *cur = xasprintf("%s/cur", alice);

	start_watch();
	make_file(alice, name, "x\n");
	make_file(sent, name, "x\n");
	make_file(cur, name, "x\n");
	ck_assert_int_eq(drain(), 0);

	if (rec.count != 0)
		dump_changes();
	ck_assert_msg(rec.count == 0, "%s reported %zu changes", name,
		      rec.count);
	free(sent);
	free(cur);
}
END_TEST

/* Write value into a sysctl file; the test fails when it cannot. */
static void
write_sysctl(const char *path, const char *value)
{
	FILE *f = fopen(path, "w");

	ck_assert_msg(f != NULL,
		      "cannot open %s for writing: %s (this test "
		      "needs root)",
		      path, strerror(errno));
	ck_assert_msg(fputs(value, f) >= 0 && fclose(f) == 0,
		      "cannot write %s to %s: %s", value, path,
		      strerror(errno));
}

/* The kernel sizes an inotify queue when the descriptor is created, so
 * the small limit only has to hold during watch_new(). */
START_TEST(overflow_returns_one)
{
	char *old = tu_read_file(MAX_QUEUED_EVENTS_PATH, NULL);
	char *error = NULL;

	ck_assert_msg(old != NULL, "cannot read %s", MAX_QUEUED_EVENTS_PATH);
	write_sysctl(MAX_QUEUED_EVENTS_PATH, "16\n");
	w = watch_new(cfg, &error);
	write_sysctl(MAX_QUEUED_EVENTS_PATH, old);
	ck_assert_msg(w != NULL, "watch_new: %s", error);

	for (int i = 0; i < 64; i++) {
		char name[32];

		snprintf(name, sizeof(name), "new/%d.of", 100 + i);
		make_file(alice, name, "x\n");
	}
	ck_assert_int_eq(drain(), 1);
	free(old);
}
END_TEST

START_TEST(missing_root_fails)
{
	char *error = NULL;

	tu_rmrf(root);
	w = watch_new(cfg, &error);
	ck_assert_ptr_null(w);
	ck_assert_ptr_nonnull(error);
	ck_assert_msg(strstr(error, root) != NULL, "%s", error);
	free(error);
}
END_TEST

struct limit_case {
	unsigned long long limit, needed;
	int ret;
};

static const struct limit_case limit_cases[] = {
	{8192, 12000, -1}, {8192, 8193, -1}, {8192, 8192, 0},
	{8192, 10, 0},     {0, 0, 0},
};

START_TEST(limit_comparison)
{
	const struct limit_case *c = &limit_cases[_i];
	char *error = NULL;

	ck_assert_int_eq(watch_check_limit(c->limit, c->needed, &error),
			 c->ret);
	if (c->ret == 0)
		ck_assert_ptr_null(error);
	else
		ck_assert_ptr_nonnull(error);
	free(error);
}
END_TEST

START_TEST(limit_message_names_fix)
{
	char *error = NULL;

	ck_assert_int_eq(watch_check_limit(8192, 12000, &error), -1);
	ck_assert_str_eq(error, "fs.inotify.max_user_watches is 8192 but "
				"12000 directories need a watch; raise it "
				"with sysctl -w "
				"fs.inotify.max_user_watches=24000 and in "
				"/etc/sysctl.d/");
	free(error);
}
END_TEST

static Suite *
watch_suite(void)
{
	Suite *s = suite_create("watch");
	TCase *tc = tcase_create("core");
	TCase *limit = tcase_create("limit");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, delivery_into_new);
	tcase_add_test(tc, new_to_cur_rename);
	tcase_add_test(tc, flag_rename_within_cur);
	tcase_add_test(tc, delete_in_cur);
	tcase_add_test(tc, move_between_folders);
	tcase_add_test(tc, new_folder_rescanned);
	tcase_add_test(tc, new_folder_subdir_later);
	tcase_add_test(tc, folder_rename_keeps_watches);
	tcase_add_test(tc, folder_trashed_forgotten);
	tcase_add_test(tc, subscriptions_edit);
	tcase_add_test(tc, keywords_edit);
	tcase_add_test(tc, new_user_appears);
	tcase_add_loop_test(tc, dovecot_files_ignored, 0,
			    sizeof(dovecot_files) / sizeof(*dovecot_files));
	tcase_add_test(tc, overflow_returns_one);
	tcase_add_test(tc, missing_root_fails);
	suite_add_tcase(s, tc);

	tcase_add_loop_test(limit, limit_comparison, 0,
			    sizeof(limit_cases) / sizeof(*limit_cases));
	tcase_add_test(limit, limit_message_names_fix);
	suite_add_tcase(s, limit);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(watch_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
