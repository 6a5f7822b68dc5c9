/* The state store on SQLite: schema, migrations and one prepared statement
 * per query, kept for the life of the handle. */
#include <config.h>
#include "store.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* How long a statement waits for another connection's write lock before it
 * fails with SQLITE_BUSY, in milliseconds. */
#define STORE_BUSY_TIMEOUT_MS 10000

/* Each migrations[i] moves the schema from version i to i + 1, and
 * PRAGMA user_version stores the version reached. Append new steps, and
 * never edit a released one.
 *
 * Messages and intents reference their folder, so a folder must be set
 * before its messages are mapped, and deleting the folder row deletes them
 * (ON DELETE CASCADE). */
static const char *const migrations[] = {
        "CREATE TABLE folders ("
        " user TEXT NOT NULL,"
        " folder TEXT NOT NULL,"
        " uidvalidity INTEGER NOT NULL,"
        " PRIMARY KEY (user, folder)"
        ") WITHOUT ROWID;"
        "CREATE TABLE messages ("
        " user TEXT NOT NULL,"
        " folder TEXT NOT NULL,"
        " uniq TEXT NOT NULL,"
        " uid INTEGER NOT NULL,"
        " flags TEXT NOT NULL,"
        " size INTEGER NOT NULL,"
        " PRIMARY KEY (user, folder, uniq),"
        " FOREIGN KEY (user, folder) REFERENCES folders (user, folder)"
        "  ON DELETE CASCADE"
        ") WITHOUT ROWID;"
        "CREATE INDEX messages_uid ON messages (user, folder, uid);"
        "CREATE TABLE intents ("
        " user TEXT NOT NULL,"
        " folder TEXT NOT NULL,"
        " uniq TEXT NOT NULL,"
        " uidvalidity INTEGER NOT NULL,"
        " uidnext INTEGER NOT NULL,"
        " size INTEGER NOT NULL,"
        " created INTEGER NOT NULL,"
        " PRIMARY KEY (user, folder, uniq),"
        " FOREIGN KEY (user, folder) REFERENCES folders (user, folder)"
        "  ON DELETE CASCADE"
        ") WITHOUT ROWID;"
        "CREATE TABLE runs ("
        " id INTEGER PRIMARY KEY,"
        " kind TEXT NOT NULL,"
        " pid INTEGER NOT NULL,"
        " started INTEGER NOT NULL,"
        " finished INTEGER NOT NULL DEFAULT 0,"
        " result TEXT NOT NULL CHECK (result IN"
        "  ('running', 'ok', 'failed', 'rejected', 'interrupted')),"
        " folders INTEGER NOT NULL DEFAULT 0,"
        " messages INTEGER NOT NULL DEFAULT 0,"
        " bytes INTEGER NOT NULL DEFAULT 0,"
        " uploaded INTEGER NOT NULL DEFAULT 0,"
        " adopted INTEGER NOT NULL DEFAULT 0,"
        " expunged INTEGER NOT NULL DEFAULT 0,"
        " flag_updates INTEGER NOT NULL DEFAULT 0,"
        " rejected INTEGER NOT NULL DEFAULT 0,"
        " skipped INTEGER NOT NULL DEFAULT 0,"
        " error TEXT"
        ");"
        "CREATE INDEX runs_kind ON runs (kind, id);"
        "CREATE TABLE rejected ("
        " run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
        " user TEXT NOT NULL,"
        " folder TEXT NOT NULL,"
        " uniq TEXT NOT NULL,"
        " reason TEXT"
        ");"
        "CREATE INDEX rejected_run ON rejected (run_id);",
        /* The change queue. AUTOINCREMENT keeps a deleted id from being
         * reused, because store_queue_done() must never delete a later
         * row under an id that a worker still holds. */
        "CREATE TABLE queue ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " user TEXT NOT NULL,"
        " folder TEXT NOT NULL,"
        " hint TEXT,"
        " queued INTEGER NOT NULL,"
        " UNIQUE (user, folder)"
        ");"
        "CREATE INDEX queue_order ON queue (queued, id);",
        /* Running replication looks up whether a new file of one folder is
         * mapped in another folder of the same user (a move). */
        "CREATE INDEX messages_user_uniq ON messages (user, uniq);",
};
#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(*migrations)))

enum stmt_id {
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST_SAVEPOINT,
	ST_RELEASE,
	ST_ROLLBACK_TO,
	ST_FOLDER_GET,
	ST_FOLDER_INSERT,
	ST_FOLDER_UPDATE,
	ST_FOLDER_DELETE,
	ST_FOLDER_MSGS_DELETE,
	ST_USER_KNOWN,
	ST_USER_FORGET,
	ST_MSGS_LOAD,
	ST_MSG_PUT,
	ST_MSG_SET_FLAGS,
	ST_MSG_DELETE,
	ST_MSG_FIND_UID,
	ST_MSG_COUNT_ALL,
	ST_MSG_COUNT_USER,
	ST_INTENT_ADD,
	ST_INTENT_DELETE,
	ST_INTENT_MIN_UIDNEXT,
	ST_INTENTS_CLEAR,
	ST_INTENT_NEWEST,
	ST_RUN_START,
	ST_RUN_FINISH,
	ST_RUN_LAST,
	ST_REJECTED_ADD,
	ST_QUEUE_ADD,
	ST_QUEUE_NEXT,
	ST_QUEUE_DONE,
	ST_QUEUE_STATS,
	ST_MSG_ELSEWHERE,
	ST_REJECTED_HAS,
	ST_QUEUE_SCAN,
	ST_RENAME_FOLDERS,
	ST_RENAME_MSGS,
	ST_RENAME_INTENTS,
	ST_RENAME_DROP,
	N_STMTS
};

/* One SQL text per statement, prepared once per handle. A UIDVALIDITY
 * change keeps the folder row, so it drops the map with
 * ST_FOLDER_MSGS_DELETE and ST_INTENTS_CLEAR, not with the cascade. */
static const char *const stmt_sql[N_STMTS] = {
        /* IMMEDIATE takes the write lock at once. A deferred transaction
         * that reads first and then writes can fail with SQLITE_BUSY at the
         * upgrade without waiting for the busy timeout. */
        [ST_BEGIN] = "BEGIN IMMEDIATE",
        [ST_COMMIT] = "COMMIT",
        [ST_ROLLBACK] = "ROLLBACK",
        [ST_SAVEPOINT] = "SAVEPOINT store_change",
        [ST_RELEASE] = "RELEASE store_change",
        [ST_ROLLBACK_TO] = "ROLLBACK TO store_change",
        [ST_FOLDER_GET] = "SELECT uidvalidity FROM folders"
                          " WHERE user = ?1 AND folder = ?2",
        [ST_FOLDER_INSERT] = "INSERT INTO folders (user, folder, uidvalidity)"
                             " VALUES (?1, ?2, ?3)",
        [ST_FOLDER_UPDATE] = "UPDATE folders SET uidvalidity = ?3"
                             " WHERE user = ?1 AND folder = ?2",
        [ST_FOLDER_DELETE] = "DELETE FROM folders"
                             " WHERE user = ?1 AND folder = ?2",
        [ST_FOLDER_MSGS_DELETE] = "DELETE FROM messages"
                                  " WHERE user = ?1 AND folder = ?2",
        [ST_USER_KNOWN] = "SELECT EXISTS (SELECT 1 FROM folders"
                          " WHERE user = ?1)",
        [ST_USER_FORGET] = "DELETE FROM folders WHERE user = ?1",
        /* The BINARY collation compares with memcmp(), and a shorter
         * string sorts before a longer one with the same prefix, which is
         * the order of strcmp() on strings without NUL bytes. The primary
         * key index already stores rows in this order, so SQLite does not
         * sort. */
        [ST_MSGS_LOAD] = "SELECT uniq, uid, flags, size FROM messages"
                         " WHERE user = ?1 AND folder = ?2"
                         " ORDER BY uniq COLLATE BINARY",
        /* No row references a message, so REPLACE (delete, then insert)
         * deletes nothing else. */
        [ST_MSG_PUT] = "INSERT OR REPLACE INTO messages"
                       " (user, folder, uniq, uid, flags, size)"
                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        [ST_MSG_SET_FLAGS] = "UPDATE messages SET flags = ?4"
                             " WHERE user = ?1 AND folder = ?2 AND uniq = ?3",
        [ST_MSG_DELETE] = "DELETE FROM messages"
                          " WHERE user = ?1 AND folder = ?2 AND uniq = ?3",
        [ST_MSG_FIND_UID] = "SELECT uniq FROM messages"
                            " WHERE user = ?1 AND folder = ?2 AND uid = ?3"
                            " ORDER BY uniq LIMIT 1",
        [ST_MSG_COUNT_ALL] = "SELECT count(*) FROM messages",
        [ST_MSG_COUNT_USER] = "SELECT count(*) FROM messages WHERE user = ?1",
        /* An intent already recorded for the message is kept. UIDNEXT only
         * grows under one UIDVALIDITY, so the older intent covers every UID
         * that the later attempt could have used too. */
        [ST_INTENT_ADD] = "INSERT OR IGNORE INTO intents"
                          " (user, folder, uniq, uidvalidity, uidnext, size,"
                          " created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        [ST_INTENT_DELETE] = "DELETE FROM intents"
                             " WHERE user = ?1 AND folder = ?2 AND uniq = ?3",
        [ST_INTENT_MIN_UIDNEXT] = "SELECT min(uidnext) FROM intents"
                                  " WHERE user = ?1 AND folder = ?2",
        [ST_INTENTS_CLEAR] = "DELETE FROM intents"
                             " WHERE user = ?1 AND folder = ?2",
        [ST_INTENT_NEWEST] = "SELECT max(created) FROM intents",
        [ST_RUN_START] = "INSERT INTO runs (kind, pid, started, result)"
                         " VALUES (?1, ?2, ?3, 'running')",
        /* The counters appear in the order of run_counters[]. */
        [ST_RUN_FINISH] = "UPDATE runs SET finished = ?2, result = ?3,"
                          " error = ?4, folders = ?5, messages = ?6,"
                          " bytes = ?7, uploaded = ?8, adopted = ?9,"
                          " expunged = ?10, flag_updates = ?11,"
                          " rejected = ?12, skipped = ?13 WHERE id = ?1",
        [ST_RUN_LAST] = "SELECT id, kind, pid, started, finished, result,"
                        " error, folders, messages, bytes, uploaded, adopted,"
                        " expunged, flag_updates, rejected, skipped"
                        " FROM runs WHERE kind = ?1 ORDER BY id DESC LIMIT 1",
        [ST_REJECTED_ADD] = "INSERT INTO rejected"
                            " (run_id, user, folder, uniq, reason)"
                            " VALUES (?1, ?2, ?3, ?4, ?5)",
        /* REPLACE deletes the folder's queued row and inserts a new one
         * with a new id but the old queued time. A worker that took the
         * old row then finds its id gone in store_queue_done(), so the
         * change that arrived meanwhile stays queued. */
        [ST_QUEUE_ADD] = "INSERT OR REPLACE INTO queue"
                         " (user, folder, hint, queued) VALUES (?1, ?2,"
                         " coalesce((SELECT hint FROM queue"
                         " WHERE user = ?1 AND folder = ?2"
                         " AND hint LIKE 'reconcile%'), ?3),"
                         " coalesce((SELECT queued FROM queue"
                         " WHERE user = ?1 AND folder = ?2), ?4))",
        [ST_QUEUE_NEXT] = "SELECT id, user, folder FROM queue"
                          " ORDER BY queued, id LIMIT 1",
        [ST_QUEUE_SCAN] = "SELECT id, user, folder, queued, hint FROM queue"
                          " ORDER BY queued, id",
        [ST_QUEUE_DONE] = "DELETE FROM queue WHERE id = ?1",
        [ST_QUEUE_STATS] = "SELECT count(*), min(queued) FROM queue",
        [ST_MSG_ELSEWHERE] = "SELECT EXISTS (SELECT 1 FROM messages"
                             " WHERE user = ?1 AND uniq = ?3"
                             " AND folder <> ?2)",
        [ST_REJECTED_HAS] = "SELECT EXISTS (SELECT 1 FROM rejected"
                            " WHERE run_id = ?1 AND user = ?2"
                            " AND folder = ?3 AND uniq = ?4)",
        /* A folder and its children: the name itself, or the name and
         * the Maildir++ separator as a prefix. ?3 replaces that prefix. */
        [ST_RENAME_FOLDERS] = "INSERT OR IGNORE INTO folders"
                              " (user, folder, uidvalidity)"
                              " SELECT user, ?3 || substr(folder,"
                              " length(?2) + 1), uidvalidity FROM folders"
                              " WHERE user = ?1 AND (folder = ?2 OR"
                              " substr(folder, 1, length(?2) + 1) ="
                              " ?2 || '.')",
        [ST_RENAME_MSGS] = "UPDATE OR REPLACE messages"
                           " SET folder = ?3 || substr(folder,"
                           " length(?2) + 1)"
                           " WHERE user = ?1 AND (folder = ?2 OR"
                           " substr(folder, 1, length(?2) + 1) = ?2 || '.')",
        [ST_RENAME_INTENTS] = "UPDATE OR REPLACE intents"
                              " SET folder = ?3 || substr(folder,"
                              " length(?2) + 1)"
                              " WHERE user = ?1 AND (folder = ?2 OR"
                              " substr(folder, 1, length(?2) + 1) ="
                              " ?2 || '.')",
        [ST_RENAME_DROP] = "DELETE FROM folders"
                           " WHERE user = ?1 AND (folder = ?2 OR"
                           " substr(folder, 1, length(?2) + 1) = ?2 || '.')",
};

/* The counters of struct store_run, in the column order of ST_RUN_FINISH
 * and ST_RUN_LAST. */
static const size_t run_counters[] = {
        offsetof(struct store_run, folders),
        offsetof(struct store_run, messages),
        offsetof(struct store_run, bytes),
        offsetof(struct store_run, uploaded),
        offsetof(struct store_run, adopted),
        offsetof(struct store_run, expunged),
        offsetof(struct store_run, flag_updates),
        offsetof(struct store_run, rejected),
        offsetof(struct store_run, skipped),
};
#define N_RUN_COUNTERS (sizeof(run_counters) / sizeof(*run_counters))

static const char *const run_result_names[] = {
        [RUN_RUNNING] = "running",         [RUN_OK] = "ok",
        [RUN_FAILED] = "failed",           [RUN_REJECTED] = "rejected",
        [RUN_INTERRUPTED] = "interrupted",
};
#define N_RUN_RESULTS (sizeof(run_result_names) / sizeof(*run_result_names))

struct store {
	sqlite3 *db;
	sqlite3_stmt *stmts[N_STMTS];
	char *error;
};

/* Errors */

static void
store_set_error(struct store *st, char *error)
{
	free(st->error);
	st->error = error;
}

/* Record the connection's last SQLite error for store_error() and return
 * -1. Call it before sqlite3_reset(), which may replace the message. */
static int
store_fail(struct store *st, const char *op)
{
	int code = sqlite3_extended_errcode(st->db);
	char *hint = NULL;

	if ((code & 0xff) == SQLITE_BUSY)
		hint = xasprintf(" (another connection held the write lock "
		                 "of the state database for the whole busy "
		                 "timeout of %d s)",
		                 STORE_BUSY_TIMEOUT_MS / 1000);
	else if (code == SQLITE_CONSTRAINT_FOREIGNKEY)
		hint = xstrdup(" (the folder or run it refers to is not in "
		               "the store)");
	store_set_error(st,
	                xasprintf("%s failed: %s%s", op, sqlite3_errmsg(st->db),
	                          hint != NULL ? hint : ""));
	free(hint);
	return -1;
}

/* Statements */

/* Bind the arguments after types to stmt by position. Each character of
 * types gives the C type of the next argument: 't' const char * (NULL
 * binds SQL NULL), 'u' uint32_t, 'U' uint64_t, 'L' long long. Text is bound
 * without a copy, so it must live until the statement is reset. */
static int
stmt_bindv(struct store *st, sqlite3_stmt *stmt, const char *op,
           const char *types, va_list ap)
{
	int rc = SQLITE_OK;

	for (int i = 1; types[i - 1] != '\0' && rc == SQLITE_OK; i++) {
		switch (types[i - 1]) {
		case 't':
			rc = sqlite3_bind_text(stmt, i,
			                       va_arg(ap, const char *), -1,
			                       SQLITE_STATIC);
			break;
		case 'u':
			rc = sqlite3_bind_int64(stmt, i, va_arg(ap, uint32_t));
			break;
		case 'U':
			rc = sqlite3_bind_int64(
			        stmt, i, (sqlite3_int64)va_arg(ap, uint64_t));
			break;
		case 'L':
			rc = sqlite3_bind_int64(stmt, i, va_arg(ap, long long));
			break;
		default:
			abort();
		}
	}
	return rc == SQLITE_OK ? 0 : store_fail(st, op);
}

static int
stmt_bind(struct store *st, sqlite3_stmt *stmt, const char *op,
          const char *types, ...)
{
	va_list ap;
	int ret;

	va_start(ap, types);
	ret = stmt_bindv(st, stmt, op, types, ap);
	va_end(ap);
	return ret;
}

/* Step stmt once. Returns 1 with a row, 0 when done, -1 on error. */
static int
stmt_row(struct store *st, sqlite3_stmt *stmt, const char *op)
{
	int rc = sqlite3_step(stmt);

	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return store_fail(st, op);
}

/* Bind, run and reset a statement that returns no rows. */
static int
stmt_exec(struct store *st, enum stmt_id id, const char *op, const char *types,
          ...)
{
	sqlite3_stmt *stmt = st->stmts[id];
	va_list ap;
	int ret;

	va_start(ap, types);
	ret = stmt_bindv(st, stmt, op, types, ap);
	va_end(ap);
	if (ret == 0 && stmt_row(st, stmt, op) != 0)
		ret = -1;
	sqlite3_reset(stmt);
	return ret;
}

/* Bind and run a query of one integer column. Returns 1 with a row, 0
 * without one, -1 on error. A missing row or a NULL value gives 0. */
static int
stmt_query_int(struct store *st, enum stmt_id id, const char *op,
               long long *value_r, const char *types, ...)
{
	sqlite3_stmt *stmt = st->stmts[id];
	va_list ap;
	int ret, row = -1;

	*value_r = 0;
	va_start(ap, types);
	ret = stmt_bindv(st, stmt, op, types, ap);
	va_end(ap);
	if (ret == 0)
		row = stmt_row(st, stmt, op);
	if (row > 0)
		*value_r = sqlite3_column_int64(stmt, 0);
	sqlite3_reset(stmt);
	return row;
}

/* A copy of a text column, or NULL for SQL NULL. */
static char *
column_strdup(sqlite3_stmt *stmt, int col)
{
	const unsigned char *text;

	if (sqlite3_column_type(stmt, col) == SQLITE_NULL)
		return NULL;
	text = sqlite3_column_text(stmt, col);
	if (text == NULL) {
		/* Only an allocation failure inside SQLite gets here. */
		fprintf(stderr, "mailrepl: out of memory reading the state "
		                "database\n");
		abort();
	}
	return xstrdup((const char *)text);
}

/* Opening */

static int
store_make_dir(const char *dir, char **error_r)
{
	struct stat sb;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		*error_r = xasprintf("cannot create state directory %s: %s; "
		                     "create its parent directory or set "
		                     "[general] state_dir",
		                     dir, strerror(errno));
		return -1;
	}
	if (stat(dir, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
		*error_r = xasprintf("state directory %s is not a directory; "
		                     "set [general] state_dir",
		                     dir);
		return -1;
	}
	return 0;
}

/* Create an empty database file with mode 0600 if there is none, because
 * SQLite would create it with 0644 minus the umask. SQLite gives the -wal
 * and -shm files the mode of the database file. An existing file is not
 * opened: its close() would drop the POSIX locks that this process's
 * other connections hold on it, and another process closing its last
 * connection would then checkpoint and delete the WAL under them. */
static int
store_make_file(const char *path, char **error_r)
{
	struct stat st;
	int fd;

	if (stat(path, &st) == 0)
		return 0;
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 && errno == EEXIST)
		return 0;
	if (fd < 0) {
		*error_r = xasprintf("cannot create state database %s: %s",
		                     path, strerror(errno));
		return -1;
	}
	close(fd);
	return 0;
}

/* Run a statement of one row and one column, such as a PRAGMA, and copy the
 * value as text into *value_r (caller frees; NULL without a row). */
static int
db_query_text(sqlite3 *db, const char *sql, char **value_r)
{
	sqlite3_stmt *stmt = NULL;
	int rc;

	*value_r = NULL;
	rc = sqlite3_prepare_v2(db, sql, -1, &stmt, NULL);
	if (rc == SQLITE_OK) {
		rc = sqlite3_step(stmt);
		if (rc == SQLITE_ROW)
			*value_r = column_strdup(stmt, 0);
		if (rc == SQLITE_ROW || rc == SQLITE_DONE)
			rc = SQLITE_OK;
	}
	/* finalize() would replace the error message with its own. */
	if (rc != SQLITE_OK)
		sqlite3_reset(stmt);
	sqlite3_finalize(stmt);
	return rc == SQLITE_OK ? 0 : -1;
}

static int
db_exec(sqlite3 *db, const char *sql)
{
	return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

/* Wait for another connection's write lock in steps of 0.2 ms. SQLite's
 * own busy timeout sleeps 1, 2, 5, 10 ... up to 100 ms between attempts,
 * and the agent's threads, which take turns at the write lock many times
 * a second, lost tens of milliseconds per change to those sleeps. */
static int
busy_wait(void *ctx, int attempts)
{
	const struct timespec pause = {.tv_sec = 0, .tv_nsec = 200000};

	(void)ctx;
	if ((long long)attempts * 200 >= STORE_BUSY_TIMEOUT_MS * 1000LL)
		return 0;
	nanosleep(&pause, NULL);
	return 1;
}

/* Set the connection's PRAGMAs and check the ones SQLite may ignore. */
static int
store_configure(struct store *st, const char *path, char **error_r)
{
	char *mode = NULL, *fk = NULL;
	int ret = -1;

	sqlite3_busy_handler(st->db, busy_wait, NULL);

	/* WAL with synchronous=NORMAL does not fsync at each commit, only
	 * at checkpoints (SQLite documentation of PRAGMA synchronous). A
	 * committed transaction survives the process
	 * being killed (kill -9), which is what the intent log needs. An
	 * operating system crash or power loss can lose the last
	 * transactions, and the re-match against the replica on the next
	 * run repairs that. */
	if (db_query_text(st->db, "PRAGMA journal_mode = WAL", &mode) < 0 ||
	    db_exec(st->db, "PRAGMA synchronous = NORMAL") < 0 ||
	    db_exec(st->db, "PRAGMA foreign_keys = ON") < 0 ||
	    db_query_text(st->db, "PRAGMA foreign_keys", &fk) < 0) {
		*error_r = xasprintf("cannot open state database %s: %s", path,
		                     sqlite3_errmsg(st->db));
		goto out;
	}

	if (mode == NULL || strcmp(mode, "wal") != 0) {
		*error_r = xasprintf("cannot switch state database %s to WAL "
		                     "mode (journal mode is %s); put state_dir "
		                     "on a local file system",
		                     path, mode != NULL ? mode : "unknown");
		goto out;
	}
	/* The map is dropped with its folder by ON DELETE CASCADE. */
	if (fk == NULL || strcmp(fk, "1") != 0) {
		*error_r = xasprintf("SQLite %s was built without foreign key "
		                     "support, which the state store needs",
		                     sqlite3_libversion());
		goto out;
	}
	ret = 0;
out:
	free(mode);
	free(fk);
	return ret;
}

static int
store_user_version(struct store *st, int *version_r)
{
	char *text = NULL;
	int ret = db_query_text(st->db, "PRAGMA user_version", &text);

	*version_r = text != NULL ? atoi(text) : 0;
	free(text);
	return ret;
}

static int
store_check_version(const char *path, int version, char **error_r)
{
	if (version <= SCHEMA_VERSION)
		return 0;
	*error_r = xasprintf("state database %s has schema version %d, newer "
	                     "than the %d this mailrepl supports; upgrade "
	                     "mailrepl",
	                     path, version, SCHEMA_VERSION);
	return -1;
}

/* Apply the missing migrations and set the version in one write
 * transaction. The version is read again under the write lock because
 * another process may have migrated in the meantime. */
static int
store_migrate_locked(struct store *st, const char *path, char **error_r)
{
	char *set_version =
	        xasprintf("PRAGMA user_version = %d", SCHEMA_VERSION);
	int version = 0, ret = -1;

	if (db_exec(st->db, "BEGIN IMMEDIATE") < 0 ||
	    store_user_version(st, &version) < 0 ||
	    store_check_version(path, version, error_r) < 0)
		goto out;
	for (int v = version; v < SCHEMA_VERSION; v++) {
		if (db_exec(st->db, migrations[v]) < 0)
			goto out;
	}
	if (db_exec(st->db, set_version) < 0 || db_exec(st->db, "COMMIT") < 0)
		goto out;
	ret = 0;
out:
	if (ret < 0 && *error_r == NULL)
		*error_r = xasprintf("cannot migrate state database %s from "
		                     "schema version %d to %d: %s",
		                     path, version, SCHEMA_VERSION,
		                     sqlite3_errmsg(st->db));
	if (ret < 0)
		db_exec(st->db, "ROLLBACK");
	free(set_version);
	return ret;
}

static int
store_migrate(struct store *st, const char *path, char **error_r)
{
	int version;

	if (store_user_version(st, &version) < 0) {
		*error_r = xasprintf("cannot read state database %s: %s", path,
		                     sqlite3_errmsg(st->db));
		return -1;
	}
	if (store_check_version(path, version, error_r) < 0)
		return -1;
	/* Checked first without the write lock, because WAL readers do not
	 * wait for a writer: opening a current database must not wait for
	 * another process's write transaction. */
	if (version == SCHEMA_VERSION)
		return 0;
	return store_migrate_locked(st, path, error_r);
}

static int
store_prepare(struct store *st, const char *path, char **error_r)
{
	for (int i = 0; i < N_STMTS; i++) {
		if (sqlite3_prepare_v3(st->db, stmt_sql[i], -1,
		                       SQLITE_PREPARE_PERSISTENT, &st->stmts[i],
		                       NULL) != SQLITE_OK) {
			*error_r = xasprintf("cannot prepare a query on state "
			                     "database %s: %s (%s)",
			                     path, sqlite3_errmsg(st->db),
			                     stmt_sql[i]);
			return -1;
		}
	}
	return 0;
}

int
store_open(const char *state_dir, struct store **store_r, char **error_r)
{
	struct store *st = xcalloc(1, sizeof(*st));
	char *path = xasprintf("%s/state.db", state_dir);
	int ret = -1;

	*store_r = NULL;
	*error_r = NULL;
	if (store_make_dir(state_dir, error_r) < 0 ||
	    store_make_file(path, error_r) < 0)
		goto out;

	/* NOMUTEX: each thread opens its own handle, so SQLite's per-
	 * connection mutex would only cost time. */
	if (sqlite3_open_v2(path, &st->db,
	                    SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
	                    NULL) != SQLITE_OK) {
		*error_r = xasprintf("cannot open state database %s: %s", path,
		                     st->db != NULL ? sqlite3_errmsg(st->db)
		                                    : "out of memory");
		goto out;
	}
	if (store_configure(st, path, error_r) < 0 ||
	    store_migrate(st, path, error_r) < 0 ||
	    store_prepare(st, path, error_r) < 0)
		goto out;

	*store_r = st;
	st = NULL;
	ret = 0;
out:
	store_close(&st);
	free(path);
	return ret;
}

void
store_close(struct store **store)
{
	struct store *st = *store;

	if (st == NULL)
		return;
	for (int i = 0; i < N_STMTS; i++)
		sqlite3_finalize(st->stmts[i]);
	/* With every statement finalized, close cannot fail with
	 * SQLITE_BUSY, and it rolls back an open transaction (C API
	 * reference of sqlite3_close()). */
	sqlite3_close(st->db);
	free(st->error);
	free(st);
	*store = NULL;
}

const char *
store_error(struct store *store)
{
	return store->error != NULL ? store->error : "no error";
}

/* Transactions */

int
store_set_autocheckpoint(struct store *store, bool automatic)
{
	/* 1000 pages is SQLite's default. */
	if (db_exec(store->db, automatic ? "PRAGMA wal_autocheckpoint = 1000"
	                                 : "PRAGMA wal_autocheckpoint = 0") <
	    0)
		return store_fail(store, "setting wal_autocheckpoint");
	return 0;
}

int
store_checkpoint(struct store *store)
{
	int rc = sqlite3_wal_checkpoint_v2(store->db, NULL,
	                                   SQLITE_CHECKPOINT_PASSIVE, NULL,
	                                   NULL);

	if (rc != SQLITE_OK && rc != SQLITE_BUSY)
		return store_fail(store, "checkpointing the WAL");
	return 0;
}

int
store_begin(struct store *store)
{
	return stmt_exec(store, ST_BEGIN, "BEGIN IMMEDIATE", "");
}

int
store_commit(struct store *store)
{
	return stmt_exec(store, ST_COMMIT, "COMMIT", "");
}

int
store_rollback(struct store *store)
{
	/* SQLite may roll back by itself after SQLITE_FULL, SQLITE_IOERR,
	 * SQLITE_NOMEM, SQLITE_BUSY or SQLITE_INTERRUPT (C API reference of
	 * sqlite3_get_autocommit()), and a second ROLLBACK would fail. */
	if (sqlite3_get_autocommit(store->db))
		return 0;
	return stmt_exec(store, ST_ROLLBACK, "ROLLBACK", "");
}

/* Start a change of several statements that must apply together: its own
 * write transaction when the caller has none open, else a savepoint inside
 * the caller's transaction. Sets *own_r to tell change_end() which. */
static int
change_begin(struct store *st, bool *own_r)
{
	*own_r = sqlite3_get_autocommit(st->db) != 0;
	if (*own_r)
		return store_begin(st);
	return stmt_exec(st, ST_SAVEPOINT, "SAVEPOINT", "");
}

/* Finish a change started by change_begin(): keep it when ok, else undo it
 * and keep the error of the failed step for store_error(). Returns 0 only
 * when the change was kept. */
static int
change_end(struct store *st, bool own, bool ok)
{
	char *error;

	if (ok && own && store_commit(st) == 0)
		return 0;
	if (ok && !own && stmt_exec(st, ST_RELEASE, "RELEASE", "") == 0)
		return 0;

	/* A failed COMMIT or RELEASE leaves the change open: undo it too. */
	error = st->error;
	st->error = NULL;
	if (own) {
		store_rollback(st);
	} else if (!sqlite3_get_autocommit(st->db)) {
		/* ROLLBACK TO keeps the savepoint open; RELEASE closes it. */
		stmt_exec(st, ST_ROLLBACK_TO, "ROLLBACK TO", "");
		stmt_exec(st, ST_RELEASE, "RELEASE", "");
	}
	store_set_error(st, error);
	return -1;
}

/* Folders */

int
store_folder_get(struct store *store, const char *user, const char *folder,
                 uint32_t *uidvalidity_r)
{
	long long value;
	int ret;

	ret = stmt_query_int(store, ST_FOLDER_GET, "reading the UIDVALIDITY",
	                     &value, "tt", user, folder);
	*uidvalidity_r = (uint32_t)value;
	return ret < 0 ? -1 : 0;
}

/* The body of store_folder_set(), inside its transaction. */
static int
folder_set_locked(struct store *st, const char *user, const char *folder,
                  uint32_t uidvalidity)
{
	const char *op = "setting the UIDVALIDITY";
	long long stored;
	int found;

	found = stmt_query_int(st, ST_FOLDER_GET, op, &stored, "tt", user,
	                       folder);
	if (found < 0)
		return -1;
	if (found == 0)
		return stmt_exec(st, ST_FOLDER_INSERT, op, "ttu", user, folder,
		                 uidvalidity);
	if (stored == (long long)uidvalidity)
		return 0;

	/* UIDs mean nothing under another UIDVALIDITY, and neither do the
	 * UIDNEXT values of the intents. */
	if (stmt_exec(st, ST_FOLDER_MSGS_DELETE, op, "tt", user, folder) < 0 ||
	    stmt_exec(st, ST_INTENTS_CLEAR, op, "tt", user, folder) < 0)
		return -1;
	return stmt_exec(st, ST_FOLDER_UPDATE, op, "ttu", user, folder,
	                 uidvalidity);
}

int
store_folder_set(struct store *store, const char *user, const char *folder,
                 uint32_t uidvalidity)
{
	bool own;
	int ret;

	if (change_begin(store, &own) < 0)
		return -1;
	ret = folder_set_locked(store, user, folder, uidvalidity);
	return change_end(store, own, ret == 0);
}

int
store_folder_delete(struct store *store, const char *user, const char *folder)
{
	/* ON DELETE CASCADE deletes the folder's messages and intents in the
	 * same statement. */
	return stmt_exec(store, ST_FOLDER_DELETE, "deleting the folder", "tt",
	                 user, folder);
}

int
store_folder_rename(struct store *store, const char *user, const char *from,
                    const char *to)
{
	static const enum stmt_id steps[] = {
		ST_RENAME_FOLDERS, ST_RENAME_MSGS, ST_RENAME_INTENTS,
	};
	const char *op = "renaming the folder";
	bool own;
	int ret = 0;

	if (change_begin(store, &own) < 0)
		return -1;
	for (size_t i = 0; i < sizeof(steps) / sizeof(*steps) && ret == 0;
	     i++)
		ret = stmt_exec(store, steps[i], op, "ttt", user, from, to);
	if (ret == 0)
		ret = stmt_exec(store, ST_RENAME_DROP, op, "tt", user, from);
	return change_end(store, own, ret == 0);
}

int
store_user_known(struct store *store, const char *user, bool *known_r)
{
	long long known;
	int ret;

	ret = stmt_query_int(store, ST_USER_KNOWN, "looking up the user",
	                     &known, "t", user);
	*known_r = known != 0;
	return ret < 0 ? -1 : 0;
}

int
store_user_forget(struct store *store, const char *user)
{
	return stmt_exec(store, ST_USER_FORGET, "forgetting the user", "t",
	                 user);
}

/* Messages */

static void
msg_from_row(sqlite3_stmt *stmt, struct store_msg *msg)
{
	msg->uniq = column_strdup(stmt, 0);
	msg->uid = (uint32_t)sqlite3_column_int64(stmt, 1);
	msg->flags = column_strdup(stmt, 2);
	msg->size = (uint64_t)sqlite3_column_int64(stmt, 3);
}

int
store_msgs_load(struct store *store, const char *user, const char *folder,
                struct store_msg **msgs_r, size_t *count_r)
{
	const char *op = "loading the message map";
	sqlite3_stmt *stmt = store->stmts[ST_MSGS_LOAD];
	struct store_msg *msgs = NULL;
	size_t count = 0, capacity = 0;
	int ret = -1, row;

	*msgs_r = NULL;
	*count_r = 0;
	if (stmt_bind(store, stmt, op, "tt", user, folder) < 0)
		goto out;
	while ((row = stmt_row(store, stmt, op)) > 0) {
		msgs = xgrow(msgs, &capacity, count + 1, sizeof(*msgs));
		msg_from_row(stmt, &msgs[count++]);
	}
	if (row < 0)
		goto out;

	*msgs_r = msgs;
	*count_r = count;
	msgs = NULL;
	ret = 0;
out:
	sqlite3_reset(stmt);
	store_msgs_free(&msgs, count);
	return ret;
}

void
store_msgs_free(struct store_msg **msgs, size_t count)
{
	if (*msgs == NULL)
		return;
	for (size_t i = 0; i < count; i++) {
		free((*msgs)[i].uniq);
		free((*msgs)[i].flags);
	}
	xfree(msgs);
}

int
store_msg_put(struct store *store, const char *user, const char *folder,
              const char *uniq, uint32_t uid, const char *flags, uint64_t size)
{
	return stmt_exec(store, ST_MSG_PUT, "storing the message's UID",
	                 "tttutU", user, folder, uniq, uid, flags, size);
}

int
store_msg_set_flags(struct store *store, const char *user, const char *folder,
                    const char *uniq, const char *flags)
{
	return stmt_exec(store, ST_MSG_SET_FLAGS, "storing the message's flags",
	                 "tttt", user, folder, uniq, flags);
}

int
store_msg_delete(struct store *store, const char *user, const char *folder,
                 const char *uniq)
{
	return stmt_exec(store, ST_MSG_DELETE, "deleting the message", "ttt",
	                 user, folder, uniq);
}

int
store_msg_find_uid(struct store *store, const char *user, const char *folder,
                   uint32_t uid, char **uniq_r)
{
	const char *op = "looking up the UID";
	sqlite3_stmt *stmt = store->stmts[ST_MSG_FIND_UID];
	int row = -1;

	*uniq_r = NULL;
	if (stmt_bind(store, stmt, op, "ttu", user, folder, uid) == 0)
		row = stmt_row(store, stmt, op);
	if (row > 0)
		*uniq_r = column_strdup(stmt, 0);
	sqlite3_reset(stmt);
	return row < 0 ? -1 : 0;
}

int
store_msg_count(struct store *store, const char *user,
                unsigned long long *count_r)
{
	const char *op = "counting the messages";
	long long count;
	int ret;

	if (user == NULL)
		ret = stmt_query_int(store, ST_MSG_COUNT_ALL, op, &count, "");
	else
		ret = stmt_query_int(store, ST_MSG_COUNT_USER, op, &count, "t",
		                     user);
	*count_r = (unsigned long long)count;
	return ret < 0 ? -1 : 0;
}

/* Intents */

int
store_intent_add(struct store *store, const char *user, const char *folder,
                 const char *uniq, uint32_t uidvalidity, uint32_t uidnext,
                 uint64_t size)
{
	return stmt_exec(store, ST_INTENT_ADD, "recording the APPEND intent",
	                 "tttuuUL", user, folder, uniq, uidvalidity, uidnext,
	                 size, (long long)time(NULL));
}

int
store_intent_delete(struct store *store, const char *user, const char *folder,
                    const char *uniq)
{
	return stmt_exec(store, ST_INTENT_DELETE, "deleting the APPEND intent",
	                 "ttt", user, folder, uniq);
}

int
store_intent_min_uidnext(struct store *store, const char *user,
                         const char *folder, uint32_t *uidnext_r)
{
	long long uidnext;
	int ret;

	ret = stmt_query_int(store, ST_INTENT_MIN_UIDNEXT,
	                     "reading the APPEND intents", &uidnext, "tt", user,
	                     folder);
	*uidnext_r = (uint32_t)uidnext;
	return ret < 0 ? -1 : 0;
}

int
store_intents_clear(struct store *store, const char *user, const char *folder)
{
	return stmt_exec(store, ST_INTENTS_CLEAR, "clearing the APPEND intents",
	                 "tt", user, folder);
}

int
store_intent_newest(struct store *store, time_t *created_r)
{
	long long created;
	int ret;

	ret = stmt_query_int(store, ST_INTENT_NEWEST,
	                     "reading the APPEND intents", &created, "");
	*created_r = (time_t)created;
	return ret < 0 ? -1 : 0;
}

/* Runs */

const char *
store_run_result_name(enum store_run_result result)
{
	if ((unsigned)result >= N_RUN_RESULTS)
		return "unknown";
	return run_result_names[result];
}

static int
run_result_parse(const char *name, enum store_run_result *result_r)
{
	for (size_t i = 0; i < N_RUN_RESULTS; i++) {
		if (name != NULL && strcmp(name, run_result_names[i]) == 0) {
			*result_r = (enum store_run_result)i;
			return 0;
		}
	}
	return -1;
}

static unsigned long long *
run_counter(struct store_run *run, size_t i)
{
	return (unsigned long long *)((char *)run + run_counters[i]);
}

static unsigned long long
run_counter_value(const struct store_run *run, size_t i)
{
	return *(const unsigned long long *)((const char *)run +
	                                     run_counters[i]);
}

int
store_run_start(struct store *store, const char *kind, long long *id_r)
{
	int ret;

	*id_r = 0;
	ret = stmt_exec(store, ST_RUN_START, "recording the start of the run",
	                "tLL", kind, (long long)getpid(),
	                (long long)time(NULL));
	if (ret == 0)
		*id_r = sqlite3_last_insert_rowid(store->db);
	return ret;
}

/* Bind the counters of run to ST_RUN_FINISH from parameter ?5 on. */
static int
run_bind_counters(struct store *st, const struct store_run *run)
{
	sqlite3_stmt *stmt = st->stmts[ST_RUN_FINISH];
	unsigned long long value;

	for (size_t i = 0; i < N_RUN_COUNTERS; i++) {
		value = run_counter_value(run, i);
		if (sqlite3_bind_int64(stmt, (int)i + 5,
		                       (sqlite3_int64)value) != SQLITE_OK)
			return store_fail(st, "recording the end of the run");
	}
	return 0;
}

int
store_run_finish(struct store *store, const struct store_run *run)
{
	const char *op = "recording the end of the run";
	sqlite3_stmt *stmt = store->stmts[ST_RUN_FINISH];
	time_t finished = run->finished != 0 ? run->finished : time(NULL);
	int ret = -1;

	if (stmt_bind(store, stmt, op, "LLtt", run->id, (long long)finished,
	              store_run_result_name(run->result), run->error) < 0 ||
	    run_bind_counters(store, run) < 0 || stmt_row(store, stmt, op) < 0)
		goto out;
	if (sqlite3_changes(store->db) != 1) {
		store_set_error(store, xasprintf("%s failed: run %lld not "
		                                 "found",
		                                 op, run->id));
		goto out;
	}
	ret = 0;
out:
	sqlite3_reset(stmt);
	return ret;
}

/* A run still marked running whose process is gone was killed. */
static bool
run_pid_gone(long long pid)
{
	/* NOTE: a reused pid makes a killed run look alive until that
	 * process exits too. */
	return pid > 0 && kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

/* Fill run from a row of ST_RUN_LAST. */
static int
run_from_row(struct store *st, sqlite3_stmt *stmt, struct store_run *run)
{
	const char *result = (const char *)sqlite3_column_text(stmt, 5);

	run->id = sqlite3_column_int64(stmt, 0);
	run->kind = column_strdup(stmt, 1);
	run->started = (time_t)sqlite3_column_int64(stmt, 3);
	run->finished = (time_t)sqlite3_column_int64(stmt, 4);
	run->error = column_strdup(stmt, 6);
	for (size_t i = 0; i < N_RUN_COUNTERS; i++)
		*run_counter(run, i) = (unsigned long long)sqlite3_column_int64(
		        stmt, (int)i + 7);

	if (run_result_parse(result, &run->result) < 0) {
		store_set_error(st, xasprintf("run %lld has the unknown result "
		                              "\"%s\" in the state database",
		                              run->id,
		                              result != NULL ? result : ""));
		return -1;
	}
	if (run->result == RUN_RUNNING &&
	    run_pid_gone(sqlite3_column_int64(stmt, 2)))
		run->result = RUN_INTERRUPTED;
	return 0;
}

int
store_run_last(struct store *store, const char *kind, struct store_run *run_r,
               bool *found_r)
{
	const char *op = "reading the last run";
	sqlite3_stmt *stmt = store->stmts[ST_RUN_LAST];
	int ret = -1, row = -1;

	memset(run_r, 0, sizeof(*run_r));
	*found_r = false;
	if (stmt_bind(store, stmt, op, "t", kind) == 0)
		row = stmt_row(store, stmt, op);
	if (row < 0)
		goto out;
	if (row > 0 && run_from_row(store, stmt, run_r) < 0) {
		store_run_clear(run_r);
		goto out;
	}
	*found_r = row > 0;
	ret = 0;
out:
	sqlite3_reset(stmt);
	return ret;
}

void
store_run_clear(struct store_run *run)
{
	free(run->kind);
	free(run->error);
	memset(run, 0, sizeof(*run));
}

int
store_rejected_add(struct store *store, long long run_id, const char *user,
                   const char *folder, const char *uniq, const char *reason)
{
	return stmt_exec(store, ST_REJECTED_ADD,
	                 "recording the rejected message", "Ltttt", run_id,
	                 user, folder, uniq, reason);
}

int
store_rejected_has(struct store *store, long long run_id, const char *user,
                   const char *folder, const char *uniq, bool *found_r)
{
	long long found;
	int row = stmt_query_int(store, ST_REJECTED_HAS,
	                         "looking up a rejected message", &found,
	                         "Lttt", run_id, user, folder, uniq);

	*found_r = row > 0 && found != 0;
	return row < 0 ? -1 : 0;
}

int
store_msg_elsewhere(struct store *store, const char *user, const char *folder,
                    const char *uniq, bool *found_r)
{
	long long found;
	int row = stmt_query_int(store, ST_MSG_ELSEWHERE,
	                         "looking up the message in other folders",
	                         &found, "ttt", user, folder, uniq);

	*found_r = row > 0 && found != 0;
	return row < 0 ? -1 : 0;
}

/* Change queue */

static long long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
store_queue_add(struct store *store, const char *user, const char *folder,
                const char *hint)
{
	return stmt_exec(store, ST_QUEUE_ADD, "queueing the change", "tttL",
	                 user, folder, hint, now_ms());
}

int
store_queue_next(struct store *store, char **user_r, char **folder_r,
                 long long *id_r, bool *found_r)
{
	sqlite3_stmt *stmt = store->stmts[ST_QUEUE_NEXT];
	int row;

	*user_r = NULL;
	*folder_r = NULL;
	*id_r = 0;
	row = stmt_row(store, stmt, "reading the change queue");
	*found_r = row > 0;
	if (row > 0) {
		*id_r = sqlite3_column_int64(stmt, 0);
		*user_r = column_strdup(stmt, 1);
		*folder_r = column_strdup(stmt, 2);
	}
	sqlite3_reset(stmt);
	return row < 0 ? -1 : 0;
}

int
store_queue_next_except(struct store *store, store_queue_skip_fn *skip,
                        void *ctx, char **user_r, char **folder_r,
                        char **hint_r, long long *id_r,
                        long long *queued_ms_r, bool *found_r)
{
	sqlite3_stmt *stmt = store->stmts[ST_QUEUE_SCAN];
	int row;

	*user_r = NULL;
	*folder_r = NULL;
	*hint_r = NULL;
	*id_r = 0;
	*queued_ms_r = 0;
	*found_r = false;
	while ((row = stmt_row(store, stmt, "reading the change queue")) > 0) {
		const char *user = (const char *)sqlite3_column_text(stmt, 1);

		if (user == NULL || skip(user, ctx))
			continue;
		*found_r = true;
		*id_r = sqlite3_column_int64(stmt, 0);
		*user_r = column_strdup(stmt, 1);
		*folder_r = column_strdup(stmt, 2);
		*queued_ms_r = sqlite3_column_int64(stmt, 3);
		*hint_r = column_strdup(stmt, 4);
		break;
	}
	sqlite3_reset(stmt);
	return row < 0 ? -1 : 0;
}

int
store_queue_done(struct store *store, long long id)
{
	return stmt_exec(store, ST_QUEUE_DONE, "removing the queued change",
	                 "L", id);
}

int
store_queue_stats(struct store *store, unsigned long long *count_r,
                  long long *oldest_queued_ms_r)
{
	sqlite3_stmt *stmt = store->stmts[ST_QUEUE_STATS];
	int row;

	*count_r = 0;
	*oldest_queued_ms_r = 0;
	row = stmt_row(store, stmt, "counting the change queue");
	if (row > 0) {
		*count_r = (unsigned long long)sqlite3_column_int64(stmt, 0);
		*oldest_queued_ms_r = sqlite3_column_int64(stmt, 1);
	}
	sqlite3_reset(stmt);
	return row < 0 ? -1 : 0;
}
