/* Tests of the state store against a real SQLite database in a temporary
 * directory. */
#include <config.h>
#include "store.h"
#include "testutil.h"
#include "util.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char *tmp;
static char *state_dir;

static void
setup(void)
{
	tmp = tu_tempdir("store");
	state_dir = xasprintf("%s/state", tmp);
}

static void
teardown(void)
{
	tu_rmrf(tmp);
	xfree(&tmp);
	xfree(&state_dir);
}

static struct store *
open_store(void)
{
	struct store *st = NULL;
	char *error = NULL;

	ck_assert_msg(store_open(state_dir, &st, &error) == 0,
	              "store_open %s: %s", state_dir, error);
	ck_assert_ptr_nonnull(st);
	return st;
}

/* A second connection that bypasses the store, to check what it wrote. */
static sqlite3 *
raw_open(void)
{
	char *path = xasprintf("%s/state.db", state_dir);
	sqlite3 *db = NULL;

	ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 10000);
	free(path);
	return db;
}

/* The first column of the first row of sql as text; caller frees. */
static char *
raw_query(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *stmt = NULL;
	char *value = NULL;

	ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) == SQLITE_OK,
	              "%s: %s", sql, sqlite3_errmsg(db));
	ck_assert_int_eq(sqlite3_step(stmt), SQLITE_ROW);
	value = xstrdup((const char *)sqlite3_column_text(stmt, 0));
	sqlite3_finalize(stmt);
	return value;
}

static void
raw_exec(const char *sql)
{
	sqlite3 *db = raw_open();

	ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK,
	              "%s: %s", sql, sqlite3_errmsg(db));
	sqlite3_close(db);
}

static unsigned long long
count_msgs(struct store *st, const char *user)
{
	unsigned long long count = 0;

	ck_assert_msg(store_msg_count(st, user, &count) == 0, "%s",
	              store_error(st));
	return count;
}

static uint32_t
min_uidnext(struct store *st, const char *user, const char *folder)
{
	uint32_t uidnext = 99;

	ck_assert_int_eq(store_intent_min_uidnext(st, user, folder, &uidnext),
	                 0);
	return uidnext;
}

static void
put_folder(struct store *st, const char *user, const char *folder,
           uint32_t uidvalidity)
{
	ck_assert_msg(store_folder_set(st, user, folder, uidvalidity) == 0,
	              "%s", store_error(st));
}

static void
put_msg(struct store *st, const char *user, const char *folder,
        const char *uniq, uint32_t uid)
{
	ck_assert_msg(store_msg_put(st, user, folder, uniq, uid, "\\Seen",
	                            100 + uid) == 0,
	              "%s", store_error(st));
}

/* Opening */

START_TEST(open_creates_private_files)
{
	struct store *st = open_store();
	char *db_path = xasprintf("%s/state.db", state_dir);
	char *wal_path = xasprintf("%s/state.db-wal", state_dir);
	struct stat sb;
	sqlite3 *db;
	char *mode;

	ck_assert_int_eq(stat(state_dir, &sb), 0);
	ck_assert(S_ISDIR(sb.st_mode));
	ck_assert_uint_eq(sb.st_mode & 07777, 0700);
	ck_assert_int_eq(stat(db_path, &sb), 0);
	ck_assert_uint_eq(sb.st_mode & 07777, 0600);

	put_folder(st, "alice", "INBOX", 1);
	ck_assert_int_eq(stat(wal_path, &sb), 0);
	ck_assert_uint_eq(sb.st_mode & 07777, 0600);

	db = raw_open();
	mode = raw_query(db, "PRAGMA journal_mode");
	ck_assert_str_eq(mode, "wal");
	free(mode);
	sqlite3_close(db);
	store_close(&st);
	ck_assert_ptr_null(st);
	free(db_path);
	free(wal_path);
}
END_TEST

START_TEST(open_missing_parent_fails)
{
	char *dir = xasprintf("%s/missing/state", tmp);
	struct store *st = NULL;
	char *error = NULL;

	ck_assert_int_eq(store_open(dir, &st, &error), -1);
	ck_assert_ptr_null(st);
	ck_assert_ptr_nonnull(error);
	ck_assert_msg(strstr(error, dir) != NULL, "error %s lacks %s", error,
	              dir);
	free(error);
	free(dir);
}
END_TEST

START_TEST(open_file_as_dir_fails)
{
	struct store *st = NULL;
	char *error = NULL;

	tu_write_file(state_dir, "x", 1, 0600);
	ck_assert_int_eq(store_open(state_dir, &st, &error), -1);
	ck_assert_ptr_nonnull(error);
	ck_assert_ptr_nonnull(strstr(error, "not a directory"));
	free(error);
}
END_TEST

START_TEST(open_corrupt_file_fails)
{
	const char *text = "plain text, longer than the 16-byte SQLite magic\n";
	char *path = xasprintf("%s/state.db", state_dir);
	struct store *st = NULL;
	char *error = NULL;

	tu_write_file(path, text, strlen(text), 0600);
	ck_assert_int_eq(store_open(state_dir, &st, &error), -1);
	ck_assert_ptr_null(st);
	ck_assert_ptr_nonnull(error);
	ck_assert_msg(strstr(error, path) != NULL, "error %s lacks %s", error,
	              path);
	ck_assert_msg(strstr(error, "not a database") != NULL, "%s", error);
	free(error);
	free(path);
}
END_TEST

START_TEST(open_newer_schema_fails)
{
	struct store *st = open_store();
	char *error = NULL;

	store_close(&st);
	raw_exec("PRAGMA user_version = 99");
	ck_assert_int_eq(store_open(state_dir, &st, &error), -1);
	ck_assert_ptr_nonnull(error);
	ck_assert_ptr_nonnull(strstr(error, "schema version 99"));
	free(error);
}
END_TEST

START_TEST(open_sets_schema_version)
{
	struct store *st = open_store();
	sqlite3 *db = raw_open();
	char *version = raw_query(db, "PRAGMA user_version");

	ck_assert_str_eq(version, "3");
	free(version);
	sqlite3_close(db);
	store_close(&st);
}
END_TEST

/* Opening a current database must not need the write lock, because
 * `mailrepl status` opens the store while a sync holds a long write
 * transaction. If it did, store_open() would fail with SQLITE_BUSY after
 * the busy timeout. */
START_TEST(open_while_other_writes)
{
	struct store *st = open_store();
	unsigned long long count = 99;
	sqlite3 *db;

	put_folder(st, "alice", "INBOX", 1);
	store_close(&st);

	db = raw_open();
	ck_assert_int_eq(sqlite3_exec(db,
	                              "BEGIN IMMEDIATE; INSERT INTO messages"
	                              " VALUES ('alice', 'INBOX', 'm1', 1,"
	                              " '', 1)",
	                              NULL, NULL, NULL),
	                 SQLITE_OK);
	st = open_store();
	ck_assert_int_eq(store_msg_count(st, NULL, &count), 0);
	ck_assert_uint_eq(count, 0);
	store_close(&st);
	ck_assert_int_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL),
	                 SQLITE_OK);
	sqlite3_close(db);
}
END_TEST

START_TEST(reopen_keeps_data)
{
	struct store *st = open_store();
	uint32_t uidvalidity = 0;
	struct store_msg *msgs = NULL;
	size_t count = 0;

	put_folder(st, "alice", "INBOX", 77);
	put_msg(st, "alice", "INBOX", "1700000000.M1P1.host", 5);
	store_close(&st);

	st = open_store();
	ck_assert_int_eq(store_folder_get(st, "alice", "INBOX", &uidvalidity),
	                 0);
	ck_assert_uint_eq(uidvalidity, 77);
	ck_assert_int_eq(store_msgs_load(st, "alice", "INBOX", &msgs, &count),
	                 0);
	ck_assert_uint_eq(count, 1);
	ck_assert_str_eq(msgs[0].uniq, "1700000000.M1P1.host");
	ck_assert_uint_eq(msgs[0].uid, 5);
	ck_assert_str_eq(msgs[0].flags, "\\Seen");
	ck_assert_uint_eq(msgs[0].size, 105);
	store_msgs_free(&msgs, count);
	ck_assert_ptr_null(msgs);
	store_close(&st);
}
END_TEST

/* Folders */

START_TEST(folder_get_unknown_is_zero)
{
	struct store *st = open_store();
	uint32_t uidvalidity = 42;

	ck_assert_int_eq(store_folder_get(st, "alice", "INBOX", &uidvalidity),
	                 0);
	ck_assert_uint_eq(uidvalidity, 0);
	store_close(&st);
}
END_TEST

START_TEST(folder_set_then_get)
{
	struct store *st = open_store();
	uint32_t uidvalidity = 0;

	put_folder(st, "alice", "INBOX", 1700000001);
	put_folder(st, "alice", ".Sent", 3);
	put_folder(st, "bob", "INBOX", 4);
	ck_assert_int_eq(store_folder_get(st, "alice", "INBOX", &uidvalidity),
	                 0);
	ck_assert_uint_eq(uidvalidity, 1700000001);
	ck_assert_int_eq(store_folder_get(st, "alice", ".Sent", &uidvalidity),
	                 0);
	ck_assert_uint_eq(uidvalidity, 3);
	ck_assert_int_eq(store_folder_get(st, "bob", "INBOX", &uidvalidity), 0);
	ck_assert_uint_eq(uidvalidity, 4);
	/* UIDVALIDITY is a 32-bit unsigned value. */
	put_folder(st, "bob", "INBOX", 4294967295u);
	ck_assert_int_eq(store_folder_get(st, "bob", "INBOX", &uidvalidity), 0);
	ck_assert_uint_eq(uidvalidity, 4294967295u);
	store_close(&st);
}
END_TEST

START_TEST(folder_set_same_keeps_map)
{
	struct store *st = open_store();

	put_folder(st, "alice", "INBOX", 9);
	put_msg(st, "alice", "INBOX", "m1", 1);
	ck_assert_int_eq(store_intent_add(st, "alice", "INBOX", "m2", 9, 2, 10),
	                 0);
	put_folder(st, "alice", "INBOX", 9);
	ck_assert_uint_eq(count_msgs(st, "alice"), 1);
	ck_assert_uint_eq(min_uidnext(st, "alice", "INBOX"), 2);
	store_close(&st);
}
END_TEST

/* Loop index 0: no transaction open. 1: inside the caller's transaction,
 * which takes the SAVEPOINT path. */
START_TEST(folder_uidvalidity_change_drops_map)
{
	struct store *st = open_store();
	uint32_t uidvalidity = 0;

	put_folder(st, "alice", "INBOX", 9);
	put_folder(st, "alice", ".Work", 9);
	put_msg(st, "alice", "INBOX", "m1", 1);
	put_msg(st, "alice", "INBOX", "m2", 2);
	put_msg(st, "alice", ".Work", "w1", 1);
	ck_assert_int_eq(store_intent_add(st, "alice", "INBOX", "m3", 9, 3, 10),
	                 0);
	ck_assert_int_eq(store_intent_add(st, "alice", ".Work", "w2", 9, 2, 10),
	                 0);

	if (_i == 1)
		ck_assert_int_eq(store_begin(st), 0);
	put_folder(st, "alice", "INBOX", 10);
	if (_i == 1)
		ck_assert_int_eq(store_commit(st), 0);

	ck_assert_int_eq(store_folder_get(st, "alice", "INBOX", &uidvalidity),
	                 0);
	ck_assert_uint_eq(uidvalidity, 10);
	ck_assert_uint_eq(count_msgs(st, "alice"), 1);
	ck_assert_uint_eq(min_uidnext(st, "alice", "INBOX"), 0);
	ck_assert_uint_eq(min_uidnext(st, "alice", ".Work"), 2);
	store_close(&st);
}
END_TEST

START_TEST(folder_set_rolled_back_with_outer)
{
	struct store *st = open_store();
	uint32_t uidvalidity = 0;

	put_folder(st, "alice", "INBOX", 9);
	put_msg(st, "alice", "INBOX", "m1", 1);
	ck_assert_int_eq(store_begin(st), 0);
	put_folder(st, "alice", "INBOX", 10);
	ck_assert_uint_eq(count_msgs(st, "alice"), 0);
	ck_assert_int_eq(store_rollback(st), 0);

	ck_assert_int_eq(store_folder_get(st, "alice", "INBOX", &uidvalidity),
	                 0);
	ck_assert_uint_eq(uidvalidity, 9);
	ck_assert_uint_eq(count_msgs(st, "alice"), 1);
	store_close(&st);
}
END_TEST

START_TEST(folder_delete_drops_map)
{
	struct store *st = open_store();
	uint32_t uidvalidity = 0;

	put_folder(st, "alice", "INBOX", 9);
	put_folder(st, "alice", ".Old", 9);
	put_msg(st, "alice", "INBOX", "m1", 1);
	put_msg(st, "alice", ".Old", "o1", 1);
	ck_assert_int_eq(store_intent_add(st, "alice", ".Old", "o2", 9, 2, 10),
	                 0);

	ck_assert_int_eq(store_folder_delete(st, "alice", ".Old"), 0);
	ck_assert_int_eq(store_folder_get(st, "alice", ".Old", &uidvalidity),
	                 0);
	ck_assert_uint_eq(uidvalidity, 0);
	ck_assert_uint_eq(count_msgs(st, "alice"), 1);
	ck_assert_uint_eq(min_uidnext(st, "alice", ".Old"), 0);
	store_close(&st);
}
END_TEST

START_TEST(user_known_and_forget)
{
	struct store *st = open_store();
	bool known = true;

	ck_assert_int_eq(store_user_known(st, "alice", &known), 0);
	ck_assert(!known);

	put_folder(st, "alice", "INBOX", 1);
	put_folder(st, "alice", ".Sent", 1);
	put_folder(st, "bob", "INBOX", 1);
	put_msg(st, "alice", "INBOX", "a1", 1);
	put_msg(st, "alice", ".Sent", "a2", 1);
	put_msg(st, "bob", "INBOX", "b1", 1);
	ck_assert_int_eq(store_intent_add(st, "alice", "INBOX", "a3", 1, 2, 10),
	                 0);
	ck_assert_int_eq(store_user_known(st, "alice", &known), 0);
	ck_assert(known);

	ck_assert_int_eq(store_user_forget(st, "alice"), 0);
	ck_assert_int_eq(store_user_known(st, "alice", &known), 0);
	ck_assert(!known);
	ck_assert_uint_eq(count_msgs(st, "alice"), 0);
	ck_assert_uint_eq(min_uidnext(st, "alice", "INBOX"), 0);
	ck_assert_int_eq(store_user_known(st, "bob", &known), 0);
	ck_assert(known);
	ck_assert_uint_eq(count_msgs(st, "bob"), 1);
	store_close(&st);
}
END_TEST

/* Messages */

/* Unique names in insertion order. Byte order puts digits before
 * uppercase, uppercase before '_', and '_' before lowercase. SQLite's
 * NOCASE collation and case-insensitive locales order them differently. */
static const char *const order_input[] = {
        "a",
        "_",
        "Z",
        "A",
        "ab",
        "aB",
        "b",
        "1700000000.M2",
        "1700000000.M10",
        "a.b",
        "\xc3\xa9",
        "aa",
        "Ab",
};
static const char *const order_expected[] = {
        "1700000000.M10",
        "1700000000.M2",
        "A",
        "Ab",
        "Z",
        "_",
        "a",
        "a.b",
        "aB",
        "aa",
        "ab",
        "b",
        "\xc3\xa9",
};
#define N_ORDER (sizeof(order_input) / sizeof(*order_input))

START_TEST(msgs_load_byte_order)
{
	struct store *st = open_store();
	struct store_msg *msgs = NULL;
	size_t count = 0;

	ck_assert_uint_eq(N_ORDER,
	                  sizeof(order_expected) / sizeof(*order_expected));
	put_folder(st, "alice", "INBOX", 1);
	put_folder(st, "alice", ".Other", 1);
	for (size_t i = 0; i < N_ORDER; i++)
		put_msg(st, "alice", "INBOX", order_input[i], (uint32_t)i + 1);
	put_msg(st, "alice", ".Other", "0", 1);

	ck_assert_int_eq(store_msgs_load(st, "alice", "INBOX", &msgs, &count),
	                 0);
	ck_assert_uint_eq(count, N_ORDER);
	for (size_t i = 0; i < count; i++) {
		ck_assert_msg(strcmp(msgs[i].uniq, order_expected[i]) == 0,
		              "position %zu: got %s, expected %s", i,
		              msgs[i].uniq, order_expected[i]);
		if (i > 0)
			ck_assert_int_lt(strcmp(msgs[i - 1].uniq, msgs[i].uniq),
			                 0);
	}
	store_msgs_free(&msgs, count);
	store_close(&st);
}
END_TEST

START_TEST(msgs_load_empty_folder)
{
	struct store *st = open_store();
	struct store_msg *msgs = (struct store_msg *)&msgs;
	size_t count = 7;

	ck_assert_int_eq(store_msgs_load(st, "alice", "INBOX", &msgs, &count),
	                 0);
	ck_assert_uint_eq(count, 0);
	ck_assert_ptr_null(msgs);
	store_msgs_free(&msgs, count);
	store_close(&st);
}
END_TEST

START_TEST(msg_put_replaces_entry)
{
	struct store *st = open_store();
	struct store_msg *msgs = NULL;
	size_t count = 0;

	put_folder(st, "alice", "INBOX", 1);
	put_msg(st, "alice", "INBOX", "m1", 1);
	ck_assert_int_eq(store_msg_put(st, "alice", "INBOX", "m1", 8,
	                               "\\Answered $Forwarded", 5000000000ull),
	                 0);
	ck_assert_int_eq(store_msgs_load(st, "alice", "INBOX", &msgs, &count),
	                 0);
	ck_assert_uint_eq(count, 1);
	ck_assert_uint_eq(msgs[0].uid, 8);
	ck_assert_str_eq(msgs[0].flags, "\\Answered $Forwarded");
	ck_assert_uint_eq(msgs[0].size, 5000000000ull);
	store_msgs_free(&msgs, count);
	store_close(&st);
}
END_TEST

START_TEST(msg_set_flags_updates_one)
{
	struct store *st = open_store();
	struct store_msg *msgs = NULL;
	size_t count = 0;

	put_folder(st, "alice", "INBOX", 1);
	put_msg(st, "alice", "INBOX", "m1", 1);
	put_msg(st, "alice", "INBOX", "m2", 2);
	ck_assert_int_eq(store_msg_set_flags(st, "alice", "INBOX", "m2",
	                                     "\\Flagged \\Seen"),
	                 0);
	ck_assert_int_eq(store_msg_set_flags(st, "alice", "INBOX", "m1", ""),
	                 0);
	ck_assert_int_eq(store_msgs_load(st, "alice", "INBOX", &msgs, &count),
	                 0);
	ck_assert_uint_eq(count, 2);
	ck_assert_str_eq(msgs[0].flags, "");
	ck_assert_uint_eq(msgs[0].uid, 1);
	ck_assert_str_eq(msgs[1].flags, "\\Flagged \\Seen");
	ck_assert_uint_eq(msgs[1].uid, 2);
	store_msgs_free(&msgs, count);
	store_close(&st);
}
END_TEST

START_TEST(msg_delete_removes_one)
{
	struct store *st = open_store();
	struct store_msg *msgs = NULL;
	size_t count = 0;

	put_folder(st, "alice", "INBOX", 1);
	put_folder(st, "alice", ".Work", 1);
	put_msg(st, "alice", "INBOX", "m1", 1);
	put_msg(st, "alice", "INBOX", "m2", 2);
	put_msg(st, "alice", ".Work", "m1", 1);
	ck_assert_int_eq(store_msg_delete(st, "alice", "INBOX", "m1"), 0);
	/* Deleting what is not there is not an error. */
	ck_assert_int_eq(store_msg_delete(st, "alice", "INBOX", "m9"), 0);

	ck_assert_int_eq(store_msgs_load(st, "alice", "INBOX", &msgs, &count),
	                 0);
	ck_assert_uint_eq(count, 1);
	ck_assert_str_eq(msgs[0].uniq, "m2");
	store_msgs_free(&msgs, count);
	ck_assert_uint_eq(count_msgs(st, "alice"), 2);
	store_close(&st);
}
END_TEST

START_TEST(msg_find_uid)
{
	struct store *st = open_store();
	char *uniq = (char *)"unset";

	put_folder(st, "alice", "INBOX", 1);
	put_folder(st, "alice", ".Work", 1);
	put_msg(st, "alice", "INBOX", "m1", 11);
	put_msg(st, "alice", ".Work", "w1", 12);
	ck_assert_int_eq(store_msg_find_uid(st, "alice", "INBOX", 11, &uniq),
	                 0);
	ck_assert_str_eq(uniq, "m1");
	free(uniq);
	ck_assert_int_eq(store_msg_find_uid(st, "alice", "INBOX", 12, &uniq),
	                 0);
	ck_assert_ptr_null(uniq);
	store_close(&st);
}
END_TEST

START_TEST(msg_elsewhere_ignores_own_folder)
{
	struct store *st = open_store();
	bool found = true;

	put_folder(st, "alice", "INBOX", 1);
	put_folder(st, "alice", "Work", 1);
	put_folder(st, "bob", "INBOX", 1);
	put_msg(st, "alice", "Work", "m1", 11);
	put_msg(st, "bob", "INBOX", "m2", 12);
	ck_assert_int_eq(store_msg_elsewhere(st, "alice", "INBOX", "m1",
	                                     &found), 0);
	ck_assert(found);
	ck_assert_int_eq(store_msg_elsewhere(st, "alice", "Work", "m1",
	                                     &found), 0);
	ck_assert(!found);
	/* Another user's message is not a move. */
	ck_assert_int_eq(store_msg_elsewhere(st, "alice", "INBOX", "m2",
	                                     &found), 0);
	ck_assert(!found);
	store_close(&st);
}
END_TEST

START_TEST(folder_rename_takes_children)
{
	struct store *st = open_store();
	struct store_msg *msgs;
	size_t n;
	uint32_t uidvalidity = 0;

	put_folder(st, "alice", "A", 5);
	put_folder(st, "alice", "A.Sub", 6);
	put_folder(st, "alice", "AB", 7);
	put_msg(st, "alice", "A", "m1", 1);
	put_msg(st, "alice", "A.Sub", "m2", 2);
	put_msg(st, "alice", "AB", "m3", 3);
	ck_assert_int_eq(store_folder_rename(st, "alice", "A", "New"), 0);

	ck_assert_int_eq(store_folder_get(st, "alice", "New.Sub",
	                                  &uidvalidity), 0);
	ck_assert_uint_eq(uidvalidity, 6);
	ck_assert_int_eq(store_folder_get(st, "alice", "A", &uidvalidity), 0);
	ck_assert_uint_eq(uidvalidity, 0);
	ck_assert_int_eq(store_msgs_load(st, "alice", "New", &msgs, &n), 0);
	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(msgs[0].uniq, "m1");
	store_msgs_free(&msgs, n);
	/* "AB" only shares a prefix with "A" and stays. */
	ck_assert_int_eq(store_msgs_load(st, "alice", "AB", &msgs, &n), 0);
	ck_assert_uint_eq(n, 1);
	store_msgs_free(&msgs, n);
	store_close(&st);
}
END_TEST

START_TEST(msg_count_per_user_and_all)
{
	struct store *st = open_store();

	ck_assert_uint_eq(count_msgs(st, NULL), 0);
	put_folder(st, "alice", "INBOX", 1);
	put_folder(st, "alice", ".Sent", 1);
	put_folder(st, "bob", "INBOX", 1);
	put_msg(st, "alice", "INBOX", "m1", 1);
	put_msg(st, "alice", "INBOX", "m2", 2);
	put_msg(st, "alice", ".Sent", "m3", 1);
	put_msg(st, "bob", "INBOX", "m1", 1);
	ck_assert_uint_eq(count_msgs(st, "alice"), 3);
	ck_assert_uint_eq(count_msgs(st, "bob"), 1);
	ck_assert_uint_eq(count_msgs(st, "carol"), 0);
	ck_assert_uint_eq(count_msgs(st, NULL), 4);
	store_close(&st);
}
END_TEST

START_TEST(msg_put_unknown_folder_fails)
{
	struct store *st = open_store();

	ck_assert_int_eq(store_msg_put(st, "alice", "INBOX", "m1", 1, "", 1),
	                 -1);
	ck_assert_msg(strstr(store_error(st), "FOREIGN KEY") != NULL, "%s",
	              store_error(st));
	ck_assert_int_eq(store_intent_add(st, "alice", "INBOX", "m1", 1, 1, 1),
	                 -1);
	ck_assert_uint_eq(count_msgs(st, NULL), 0);
	store_close(&st);
}
END_TEST

/* Intents */

START_TEST(intents_add_min_delete_clear)
{
	struct store *st = open_store();

	put_folder(st, "alice", "INBOX", 5);
	put_folder(st, "alice", ".Work", 5);
	ck_assert_uint_eq(min_uidnext(st, "alice", "INBOX"), 0);
	ck_assert_int_eq(
	        store_intent_add(st, "alice", "INBOX", "m1", 5, 30, 100), 0);
	ck_assert_int_eq(
	        store_intent_add(st, "alice", "INBOX", "m2", 5, 20, 100), 0);
	ck_assert_int_eq(
	        store_intent_add(st, "alice", ".Work", "w1", 5, 7, 100), 0);
	ck_assert_uint_eq(min_uidnext(st, "alice", "INBOX"), 20);

	ck_assert_int_eq(store_intent_delete(st, "alice", "INBOX", "m2"), 0);
	ck_assert_uint_eq(min_uidnext(st, "alice", "INBOX"), 30);

	ck_assert_int_eq(store_intents_clear(st, "alice", "INBOX"), 0);
	ck_assert_uint_eq(min_uidnext(st, "alice", "INBOX"), 0);
	ck_assert_uint_eq(min_uidnext(st, "alice", ".Work"), 7);
	store_close(&st);
}
END_TEST

START_TEST(intent_add_keeps_older)
{
	struct store *st = open_store();

	put_folder(st, "alice", "INBOX", 5);
	ck_assert_int_eq(
	        store_intent_add(st, "alice", "INBOX", "m1", 5, 30, 100), 0);
	ck_assert_int_eq(
	        store_intent_add(st, "alice", "INBOX", "m1", 5, 31, 100), 0);
	ck_assert_uint_eq(min_uidnext(st, "alice", "INBOX"), 30);
	store_close(&st);
}
END_TEST

/* Transactions */

START_TEST(transaction_commit_and_rollback)
{
	struct store *st = open_store();

	put_folder(st, "alice", "INBOX", 1);
	ck_assert_int_eq(store_begin(st), 0);
	put_msg(st, "alice", "INBOX", "m1", 1);
	ck_assert_int_eq(store_commit(st), 0);

	ck_assert_int_eq(store_begin(st), 0);
	put_msg(st, "alice", "INBOX", "m2", 2);
	ck_assert_uint_eq(count_msgs(st, "alice"), 2);
	ck_assert_int_eq(store_rollback(st), 0);
	ck_assert_uint_eq(count_msgs(st, "alice"), 1);

	/* Nothing to roll back: not an error. */
	ck_assert_int_eq(store_rollback(st), 0);
	/* COMMIT without BEGIN is. */
	ck_assert_int_eq(store_commit(st), -1);
	ck_assert_msg(strstr(store_error(st), "no transaction") != NULL, "%s",
	              store_error(st));
	store_close(&st);
}
END_TEST

/* Runs */

START_TEST(run_last_none)
{
	struct store *st = open_store();
	struct store_run run;
	bool found = true;

	ck_assert_int_eq(store_run_last(st, "init", &run, &found), 0);
	ck_assert(!found);
	ck_assert_ptr_null(run.kind);
	store_run_clear(&run);
	store_close(&st);
}
END_TEST

START_TEST(run_start_finish_last)
{
	struct store *st = open_store();
	struct store_run run = {0}, last;
	long long id = 0, other = 0;
	time_t before = time(NULL);
	bool found = false;

	ck_assert_int_eq(store_run_start(st, "init", &id), 0);
	ck_assert_int_gt(id, 0);
	ck_assert_int_eq(store_run_last(st, "init", &last, &found), 0);
	ck_assert(found);
	ck_assert_int_eq(last.id, id);
	ck_assert_int_eq(last.result, RUN_RUNNING);
	ck_assert_int_ge(last.started, before);
	ck_assert_int_eq(last.finished, 0);
	store_run_clear(&last);

	run.id = id;
	run.result = RUN_REJECTED;
	run.finished = 1700000123;
	run.folders = 1;
	run.messages = 2;
	run.bytes = 5000000000ull;
	run.uploaded = 4;
	run.adopted = 5;
	run.expunged = 6;
	run.flag_updates = 7;
	run.rejected = 8;
	run.skipped = 9;
	run.error = (char *)"2 messages rejected";
	ck_assert_int_eq(store_run_finish(st, &run), 0);
	ck_assert_int_eq(store_run_start(st, "other", &other), 0);

	ck_assert_int_eq(store_run_last(st, "init", &last, &found), 0);
	ck_assert(found);
	ck_assert_int_eq(last.id, id);
	ck_assert_str_eq(last.kind, "init");
	ck_assert_int_eq(last.result, RUN_REJECTED);
	ck_assert_int_ge(last.started, before);
	ck_assert_int_eq(last.finished, 1700000123);
	ck_assert_uint_eq(last.folders, 1);
	ck_assert_uint_eq(last.messages, 2);
	ck_assert_uint_eq(last.bytes, 5000000000ull);
	ck_assert_uint_eq(last.uploaded, 4);
	ck_assert_uint_eq(last.adopted, 5);
	ck_assert_uint_eq(last.expunged, 6);
	ck_assert_uint_eq(last.flag_updates, 7);
	ck_assert_uint_eq(last.rejected, 8);
	ck_assert_uint_eq(last.skipped, 9);
	ck_assert_str_eq(last.error, "2 messages rejected");
	store_run_clear(&last);
	ck_assert_ptr_null(last.kind);
	store_close(&st);
}
END_TEST

START_TEST(run_last_takes_latest)
{
	struct store *st = open_store();
	struct store_run run = {0}, last;
	long long first = 0, second = 0;
	bool found = false;

	ck_assert_int_eq(store_run_start(st, "init", &first), 0);
	run.id = first;
	run.result = RUN_FAILED;
	run.error = (char *)"connection refused";
	ck_assert_int_eq(store_run_finish(st, &run), 0);
	ck_assert_int_eq(store_run_start(st, "init", &second), 0);
	run.id = second;
	run.result = RUN_OK;
	run.error = NULL;
	ck_assert_int_eq(store_run_finish(st, &run), 0);

	ck_assert_int_eq(store_run_last(st, "init", &last, &found), 0);
	ck_assert(found);
	ck_assert_int_eq(last.id, second);
	ck_assert_int_eq(last.result, RUN_OK);
	ck_assert_ptr_null(last.error);
	/* A finish time of 0 means "now". */
	ck_assert_int_gt(last.finished, 0);
	store_run_clear(&last);
	store_close(&st);
}
END_TEST

START_TEST(run_finish_unknown_id_fails)
{
	struct store *st = open_store();
	struct store_run run = {0};

	run.id = 12345;
	run.result = RUN_OK;
	ck_assert_int_eq(store_run_finish(st, &run), -1);
	ck_assert_ptr_nonnull(strstr(store_error(st), "run 12345 not found"));
	store_close(&st);
}
END_TEST

/* A child records a run and is killed with SIGKILL before it finishes,
 * the way an operator's kill -9 would end it. */
START_TEST(run_killed_is_interrupted)
{
	struct store *st;
	struct store_run last;
	bool found = false;
	pid_t pid;
	int status;

	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct store *child = NULL;
		char *error = NULL;
		long long id;

		if (store_open(state_dir, &child, &error) < 0 ||
		    store_run_start(child, "init", &id) < 0)
			_exit(1);
		kill(getpid(), SIGKILL);
		_exit(2);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFSIGNALED(status));
	ck_assert_int_eq(WTERMSIG(status), SIGKILL);

	st = open_store();
	ck_assert_int_eq(store_run_last(st, "init", &last, &found), 0);
	ck_assert(found);
	ck_assert_int_eq(last.result, RUN_INTERRUPTED);
	store_run_clear(&last);
	store_close(&st);
}
END_TEST

START_TEST(run_of_live_process_is_running)
{
	struct store *st = open_store();
	struct store_run last;
	long long id = 0;
	bool found = false;

	ck_assert_int_eq(store_run_start(st, "init", &id), 0);
	ck_assert_int_eq(store_run_last(st, "init", &last, &found), 0);
	ck_assert(found);
	ck_assert_int_eq(last.result, RUN_RUNNING);
	store_run_clear(&last);
	store_close(&st);
}
END_TEST

static const struct {
	enum store_run_result result;
	const char *name;
} result_names[] = {
        {RUN_RUNNING, "running"},
        {RUN_OK, "ok"},
        {RUN_FAILED, "failed"},
        {RUN_REJECTED, "rejected"},
        {RUN_INTERRUPTED, "interrupted"},
        {(enum store_run_result)99, "unknown"},
};

START_TEST(run_result_names)
{
	ck_assert_str_eq(store_run_result_name(result_names[_i].result),
	                 result_names[_i].name);
}
END_TEST

START_TEST(rejected_add_records_reason)
{
	struct store *st = open_store();
	long long id = 0;
	sqlite3 *db;
	char *text;

	ck_assert_int_eq(store_run_start(st, "init", &id), 0);
	ck_assert_int_eq(store_rejected_add(st, id, "alice", "INBOX", "m1",
	                                    "NO [LIMIT] Message too large"),
	                 0);
	ck_assert_int_eq(
	        store_rejected_add(st, id, "alice", ".Sent", "m2", NULL), 0);
	ck_assert_int_eq(store_rejected_add(st, id + 1, "alice", "INBOX", "m3",
	                                    "no run"),
	                 -1);

	db = raw_open();
	text = raw_query(db, "SELECT count(*) FROM rejected");
	ck_assert_str_eq(text, "2");
	free(text);
	text = raw_query(db, "SELECT run_id || ' ' || user || ' ' || folder"
	                     " || ' ' || uniq || ' ' || reason FROM rejected"
	                     " WHERE uniq = 'm1'");
	ck_assert_str_eq(text, "1 alice INBOX m1 NO [LIMIT] Message too large");
	free(text);
	{
		bool found = false;

		ck_assert_int_eq(store_rejected_has(st, id, "alice", "INBOX",
		                                    "m1", &found), 0);
		ck_assert(found);
		ck_assert_int_eq(store_rejected_has(st, id, "alice", ".Sent",
		                                    "m1", &found), 0);
		ck_assert(!found);
	}
	sqlite3_close(db);
	store_close(&st);
}
END_TEST

/* Concurrency */

#define THREAD_TXNS 20
#define THREAD_ROWS 300

struct writer {
	const char *folder;
	int failures;
	char error[256];
};

/* Insert THREAD_TXNS transactions of THREAD_ROWS messages through its own
 * handle, as each sync worker does. */
static void *
writer_run(void *arg)
{
	struct writer *w = arg;
	struct store *st = NULL;
	char *error = NULL;
	char uniq[64];

	if (store_open(state_dir, &st, &error) < 0) {
		snprintf(w->error, sizeof(w->error), "%s", error);
		free(error);
		w->failures++;
		return NULL;
	}
	for (int t = 0; t < THREAD_TXNS; t++) {
		if (store_begin(st) < 0) {
			snprintf(w->error, sizeof(w->error), "%s",
			         store_error(st));
			w->failures++;
			continue;
		}
		for (int r = 0; r < THREAD_ROWS; r++) {
			snprintf(uniq, sizeof(uniq), "%d.%d", t, r);
			if (store_msg_put(st, "alice", w->folder, uniq,
			                  (uint32_t)(t * THREAD_ROWS + r + 1),
			                  "", 1) < 0)
				w->failures++;
		}
		if (store_commit(st) < 0) {
			snprintf(w->error, sizeof(w->error), "%s",
			         store_error(st));
			w->failures++;
			store_rollback(st);
		}
	}
	store_close(&st);
	return NULL;
}

START_TEST(two_threads_write_concurrently)
{
	struct store *st = open_store();
	struct writer writers[2] = {{.folder = "INBOX"}, {.folder = ".Work"}};
	pthread_t threads[2];

	put_folder(st, "alice", "INBOX", 1);
	put_folder(st, "alice", ".Work", 1);
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_create(&threads[i], NULL, writer_run,
		                                &writers[i]),
		                 0);
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_join(threads[i], NULL), 0);

	for (int i = 0; i < 2; i++)
		ck_assert_msg(writers[i].failures == 0,
		              "writer %s: %d failures, last: %s",
		              writers[i].folder, writers[i].failures,
		              writers[i].error);
	ck_assert_uint_eq(count_msgs(st, "alice"),
	                  2 * THREAD_TXNS * THREAD_ROWS);
	store_close(&st);
}
END_TEST

/* Prints the rate of store_msg_put inside one transaction to the test log.
 * The rate depends on the machine, so it is reported, not asserted. */
START_TEST(msg_put_rate_in_one_transaction)
{
	const unsigned n = 100000;
	struct store *st = open_store();
	long long start, elapsed;
	char uniq[64];

	put_folder(st, "alice", "INBOX", 1);
	start = monotonic_ms();
	ck_assert_int_eq(store_begin(st), 0);
	for (unsigned i = 0; i < n; i++) {
		snprintf(uniq, sizeof(uniq), "1700000000.M%uP1.host,S=%u", i,
		         i);
		ck_assert_int_eq(store_msg_put(st, "alice", "INBOX", uniq,
		                               i + 1, "\\Seen", 4000),
		                 0);
	}
	ck_assert_int_eq(store_commit(st), 0);
	elapsed = monotonic_ms() - start;

	ck_assert_uint_eq(count_msgs(st, "alice"), n);
	printf("store_msg_put: %u rows in one transaction in %lld ms, "
	       "%.0f rows/s\n",
	       n, elapsed, elapsed > 0 ? n * 1000.0 / (double)elapsed : 0.0);
	store_close(&st);
}
END_TEST

/* Change queue */

static void
queue_add(struct store *st, const char *user, const char *folder,
          const char *hint)
{
	ck_assert_msg(store_queue_add(st, user, folder, hint) == 0,
	              "store_queue_add %s/%s: %s", user, folder,
	              store_error(st));
}

/* Take the next change and check its user and folder; returns its id. */
static long long
queue_expect(struct store *st, const char *user, const char *folder)
{
	char *got_user = NULL, *got_folder = NULL;
	long long id = 0;
	bool found = false;

	ck_assert_int_eq(store_queue_next(st, &got_user, &got_folder, &id,
	                                  &found),
	                 0);
	ck_assert_msg(found, "queue empty, expected %s/%s", user, folder);
	ck_assert_str_eq(got_user, user);
	ck_assert_str_eq(got_folder, folder);
	ck_assert_int_gt(id, 0);
	free(got_user);
	free(got_folder);
	return id;
}

static void
queue_expect_empty(struct store *st)
{
	char *user = NULL, *folder = NULL;
	long long id = 99;
	bool found = true;

	ck_assert_int_eq(store_queue_next(st, &user, &folder, &id, &found), 0);
	ck_assert(!found);
	ck_assert_ptr_null(user);
	ck_assert_ptr_null(folder);
	ck_assert_int_eq(id, 0);
}

START_TEST(queue_empty_next_and_stats)
{
	struct store *st = open_store();
	unsigned long long count = 99;
	long long oldest = 99;

	queue_expect_empty(st);
	ck_assert_int_eq(store_queue_stats(st, &count, &oldest), 0);
	ck_assert_uint_eq(count, 0);
	ck_assert_int_eq(oldest, 0);
	store_close(&st);
}
END_TEST

START_TEST(queue_oldest_first)
{
	struct store *st = open_store();
	long long id;

	queue_add(st, "alice", "INBOX", "1.a");
	usleep(5000);
	queue_add(st, "bob", "INBOX", "2.b");
	usleep(5000);
	queue_add(st, "alice", ".Sent", NULL);

	id = queue_expect(st, "alice", "INBOX");
	ck_assert_int_eq(store_queue_done(st, id), 0);
	id = queue_expect(st, "bob", "INBOX");
	ck_assert_int_eq(store_queue_done(st, id), 0);
	id = queue_expect(st, "alice", ".Sent");
	ck_assert_int_eq(store_queue_done(st, id), 0);
	queue_expect_empty(st);
	store_close(&st);
}
END_TEST

static bool
skip_nobody(const char *user, void *ctx)
{
	(void)user;
	(void)ctx;
	return false;
}

static bool
skip_alice(const char *user, void *ctx)
{
	(void)ctx;
	return strcmp(user, "alice") == 0;
}

/* A worker passes over the changes of a user another worker applies. */
START_TEST(queue_next_except_skips_user)
{
	struct store *st = open_store();
	char *user, *folder, *hint;
	long long id, queued;
	bool found;

	queue_add(st, "alice", "INBOX", NULL);
	usleep(5000);
	queue_add(st, "bob", ".Sent", "1.M1P1.x");
	ck_assert_int_eq(store_queue_next_except(st, skip_alice, NULL, &user,
	                                         &folder, &hint, &id,
	                                         &queued, &found),
	                 0);
	ck_assert(found);
	ck_assert_str_eq(user, "bob");
	ck_assert_str_eq(folder, ".Sent");
	ck_assert_int_gt(queued, 0);
	ck_assert_str_eq(hint, "1.M1P1.x");
	free(hint);
	free(user);
	free(folder);
	ck_assert_int_eq(store_queue_done(st, id), 0);

	ck_assert_int_eq(store_queue_next_except(st, skip_alice, NULL, &user,
	                                         &folder, &hint, &id,
	                                         &queued, &found),
	                 0);
	ck_assert(!found);
	ck_assert_ptr_null(user);
	store_close(&st);
}
END_TEST

/* A change queued after a reconcile keeps the reconcile's hint, so the
 * folder still gets the full comparison. */
START_TEST(queue_keeps_reconcile_hint)
{
	struct store *st = open_store();
	char *user, *folder, *hint;
	long long id, queued;
	bool found;

	queue_add(st, "alice", "INBOX", "reconcile: timer");
	queue_add(st, "alice", "INBOX", "1.M2P2.y");
	ck_assert_int_eq(store_queue_next_except(st, skip_nobody, NULL,
	                                         &user, &folder, &hint, &id,
	                                         &queued, &found),
	                 0);
	ck_assert(found);
	ck_assert_str_eq(hint, "reconcile: timer");
	free(user);
	free(folder);
	free(hint);
	store_close(&st);
}
END_TEST

/* Queueing a folder again keeps one row at its first position. */
START_TEST(queue_add_coalesces_folder)
{
	struct store *st = open_store();
	sqlite3 *db;
	unsigned long long count = 0;
	long long oldest = 0, first_queued;
	char *rows;

	queue_add(st, "alice", "INBOX", "1.a");
	ck_assert_int_eq(store_queue_stats(st, &count, &first_queued), 0);
	usleep(5000);
	queue_add(st, "bob", "INBOX", NULL);
	usleep(5000);
	queue_add(st, "alice", "INBOX", "2.b");

	ck_assert_int_eq(store_queue_stats(st, &count, &oldest), 0);
	ck_assert_uint_eq(count, 2);
	ck_assert_int_eq(oldest, first_queued);
	db = raw_open();
	rows = raw_query(db, "SELECT count(*) FROM queue WHERE user = 'alice'");
	ck_assert_str_eq(rows, "1");
	free(rows);
	sqlite3_close(db);

	ck_assert_int_eq(store_queue_done(st, queue_expect(st, "alice", "INBOX")),
	                 0);
	queue_expect(st, "bob", "INBOX");
	store_close(&st);
}
END_TEST

/* A change queued while a worker applies the folder must survive the
 * worker's store_queue_done() of the row it took before. */
START_TEST(queue_done_keeps_later_change)
{
	struct store *st = open_store();
	long long taken, again;

	queue_add(st, "alice", "INBOX", "1.a");
	taken = queue_expect(st, "alice", "INBOX");
	queue_add(st, "alice", "INBOX", "2.b");
	ck_assert_int_eq(store_queue_done(st, taken), 0);

	again = queue_expect(st, "alice", "INBOX");
	ck_assert_int_ne(again, taken);
	ck_assert_int_eq(store_queue_done(st, again), 0);
	queue_expect_empty(st);
	store_close(&st);
}
END_TEST

START_TEST(queue_done_unknown_id_is_noop)
{
	struct store *st = open_store();
	unsigned long long count = 0;
	long long oldest;

	queue_add(st, "alice", "INBOX", NULL);
	ck_assert_int_eq(store_queue_done(st, 12345), 0);
	ck_assert_int_eq(store_queue_stats(st, &count, &oldest), 0);
	ck_assert_uint_eq(count, 1);
	store_close(&st);
}
END_TEST

/* Queued time is wall-clock milliseconds, so status can show its age. */
START_TEST(queue_stats_oldest_is_unix_ms)
{
	struct store *st = open_store();
	unsigned long long count = 0;
	long long oldest = 0, before = (long long)time(NULL) * 1000;

	queue_add(st, "alice", "", "subscriptions");
	ck_assert_int_eq(store_queue_stats(st, &count, &oldest), 0);
	ck_assert_uint_eq(count, 1);
	ck_assert_int_ge(oldest, before);
	ck_assert_int_le(oldest, before + 2000);
	store_close(&st);
}
END_TEST

/* SQLite's unix VFS takes a SHARED lock as a read lock on these bytes of
 * the database file, and an open connection in WAL mode keeps it. */
#define SQLITE_SHARED_FIRST (0x40000000 + 2)
#define SQLITE_SHARED_SIZE 510

/* Exit status 0 when another process holds a lock on the shared range
 * of the database file. It asks fcntl() and not SQLite, because a forked
 * child inherits SQLite's in-memory table of the parent's locks. */
static int
child_sees_shared_lock(void)
{
	char *path = xasprintf("%s/state.db", state_dir);
	struct flock lk = {.l_type = F_WRLCK,
	                   .l_whence = SEEK_SET,
	                   .l_start = SQLITE_SHARED_FIRST,
	                   .l_len = SQLITE_SHARED_SIZE};
	int fd = open(path, O_RDWR);

	free(path);
	if (fd < 0 || fcntl(fd, F_GETLK, &lk) < 0)
		return 2;
	return lk.l_type == F_UNLCK ? 1 : 0;
}

static int
in_child(int (*fn)(void))
{
	pid_t pid = fork();
	int status;

	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(fn());
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	return WEXITSTATUS(status);
}

/* The agent opens the store once per thread. Without its lock, another
 * process that closes the database takes itself for the last user and
 * deletes the WAL that the agent's connections still write to. */
START_TEST(second_open_keeps_first_lock)
{
	struct store *first = open_store();
	struct store *second;

	ck_assert_int_eq(store_queue_add(first, "alice", "INBOX", "new"), 0);
	ck_assert_int_eq(in_child(child_sees_shared_lock), 0);
	second = open_store();
	ck_assert_int_eq(in_child(child_sees_shared_lock), 0);
	store_close(&second);
	store_close(&first);
}
END_TEST

START_TEST(queue_survives_reopen)
{
	struct store *st = open_store();

	queue_add(st, "alice", ".Work", "folders");
	store_close(&st);
	st = open_store();
	queue_expect(st, "alice", ".Work");
	store_close(&st);
}
END_TEST

/* A database of schema version 1 gains the queue and keeps its map. */
START_TEST(migrate_v1_adds_queue)
{
	struct store *st = open_store();
	uint32_t uidvalidity = 0;
	char *version;
	sqlite3 *db;

	ck_assert_int_eq(store_folder_set(st, "alice", "INBOX", 7), 0);
	store_close(&st);
	raw_exec("DROP TABLE queue; DROP INDEX messages_user_uniq;"
	         " PRAGMA user_version = 1");

	st = open_store();
	db = raw_open();
	version = raw_query(db, "PRAGMA user_version");
	ck_assert_str_eq(version, "3");
	free(version);
	sqlite3_close(db);
	ck_assert_int_eq(store_folder_get(st, "alice", "INBOX", &uidvalidity),
	                 0);
	ck_assert_uint_eq(uidvalidity, 7);
	queue_add(st, "alice", "INBOX", NULL);
	queue_expect(st, "alice", "INBOX");
	store_close(&st);
}
END_TEST

static Suite *
store_suite(void)
{
	Suite *s = suite_create("store");
	TCase *tc = tcase_create("core");
	TCase *slow = tcase_create("slow");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, open_creates_private_files);
	tcase_add_test(tc, open_missing_parent_fails);
	tcase_add_test(tc, open_file_as_dir_fails);
	tcase_add_test(tc, open_corrupt_file_fails);
	tcase_add_test(tc, open_newer_schema_fails);
	tcase_add_test(tc, open_sets_schema_version);
	tcase_add_test(tc, open_while_other_writes);
	tcase_add_test(tc, reopen_keeps_data);
	tcase_add_test(tc, folder_get_unknown_is_zero);
	tcase_add_test(tc, folder_set_then_get);
	tcase_add_test(tc, folder_set_same_keeps_map);
	tcase_add_loop_test(tc, folder_uidvalidity_change_drops_map, 0, 2);
	tcase_add_test(tc, folder_set_rolled_back_with_outer);
	tcase_add_test(tc, folder_delete_drops_map);
	tcase_add_test(tc, user_known_and_forget);
	tcase_add_test(tc, msgs_load_byte_order);
	tcase_add_test(tc, msgs_load_empty_folder);
	tcase_add_test(tc, msg_put_replaces_entry);
	tcase_add_test(tc, msg_set_flags_updates_one);
	tcase_add_test(tc, msg_delete_removes_one);
	tcase_add_test(tc, msg_find_uid);
	tcase_add_test(tc, msg_elsewhere_ignores_own_folder);
	tcase_add_test(tc, folder_rename_takes_children);
	tcase_add_test(tc, msg_count_per_user_and_all);
	tcase_add_test(tc, msg_put_unknown_folder_fails);
	tcase_add_test(tc, intents_add_min_delete_clear);
	tcase_add_test(tc, intent_add_keeps_older);
	tcase_add_test(tc, transaction_commit_and_rollback);
	tcase_add_test(tc, run_last_none);
	tcase_add_test(tc, run_start_finish_last);
	tcase_add_test(tc, run_last_takes_latest);
	tcase_add_test(tc, run_finish_unknown_id_fails);
	tcase_add_test(tc, run_killed_is_interrupted);
	tcase_add_test(tc, run_of_live_process_is_running);
	tcase_add_loop_test(tc, run_result_names, 0,
	                    sizeof(result_names) / sizeof(*result_names));
	tcase_add_test(tc, rejected_add_records_reason);
	tcase_add_test(tc, queue_empty_next_and_stats);
	tcase_add_test(tc, queue_oldest_first);
	tcase_add_test(tc, queue_add_coalesces_folder);
	tcase_add_test(tc, queue_next_except_skips_user);
	tcase_add_test(tc, queue_keeps_reconcile_hint);
	tcase_add_test(tc, queue_done_keeps_later_change);
	tcase_add_test(tc, queue_done_unknown_id_is_noop);
	tcase_add_test(tc, queue_stats_oldest_is_unix_ms);
	tcase_add_test(tc, queue_survives_reopen);
	tcase_add_test(tc, second_open_keeps_first_lock);
	tcase_add_test(tc, migrate_v1_adds_queue);
	suite_add_tcase(s, tc);

	tcase_add_checked_fixture(slow, setup, teardown);
	tcase_set_timeout(slow, 60);
	tcase_add_test(slow, two_threads_write_concurrently);
	tcase_add_test(slow, msg_put_rate_in_one_transaction);
	suite_add_tcase(s, slow);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(store_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
