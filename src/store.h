/* The state store: one SQLite database (WAL) in state_dir.
 *
 * It maps each master message (user, folder, unique name) to its replica
 * UID under the folder's UIDVALIDITY, with the flags last pushed; records
 * APPEND intents before they are sent; and keeps one record per run.
 * Each thread opens its own handle.
 *
 * Every int function returns 0 on success and -1 on failure, with the
 * text in store_error(). A write lock held by another connection is
 * waited for up to 10 s, then the call fails. */
#ifndef MAILREPL_STORE_H
#define MAILREPL_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

struct store;

/* Open or create <state_dir>/state.db (the directory is created with mode
 * 0700 if missing) and migrate the schema. Returns 0 and *store_r, or -1
 * with *error_r (caller frees). */
int store_open(const char *state_dir, struct store **store_r, char **error_r);
void store_close(struct store **store);
/* The last SQLite error text, valid until the next call on store. */
const char *store_error(struct store *store);

/* Whether a commit on this handle copies the WAL back into the database
 * once it has grown past 1,000 pages (the default), which costs that
 * commit an fsync. The agent turns it off on the handles of its
 * latency-critical threads and calls store_checkpoint() from another. */
int store_set_autocheckpoint(struct store *store, bool automatic);
/* Copy as much of the WAL into the database as the readers allow,
 * without waiting for them. */
int store_checkpoint(struct store *store);

/* Start a write transaction (BEGIN IMMEDIATE: the write lock is taken
 * at once). A failed store_commit() leaves the transaction open; call
 * store_rollback(), which also succeeds when SQLite has already rolled
 * back by itself after an error. */
int store_begin(struct store *store);
int store_commit(struct store *store);
int store_rollback(struct store *store);

/* Folders. uidvalidity 0 means "not known". A folder must be set before
 * its messages or intents are stored; otherwise those calls fail with a
 * FOREIGN KEY error. The calls that change several rows apply all or
 * nothing, inside the caller's transaction when one is open. */
int store_folder_get(struct store *store, const char *user,
		     const char *folder, uint32_t *uidvalidity_r);
/* Set the folder's UIDVALIDITY. A value different from the stored one
 * deletes the folder's message map and intents first, because the old
 * UIDs mean nothing under the new UIDVALIDITY. */
int store_folder_set(struct store *store, const char *user,
		     const char *folder, uint32_t uidvalidity);
/* Forget a folder with its map and intents. */
int store_folder_delete(struct store *store, const char *user,
			const char *folder);
/* Move the map and intents of folder from and its children ("from.X")
 * to the name to ("to.X"), as a RENAME on the replica does. */
int store_folder_rename(struct store *store, const char *user,
			const char *from, const char *to);
/* Whether any folder of user is known (we replicated to it before). */
int store_user_known(struct store *store, const char *user, bool *known_r);
/* Forget every folder, message and intent of user. */
int store_user_forget(struct store *store, const char *user);

/* Messages of one folder. */
struct store_msg {
	char *uniq;
	uint32_t uid;
	char *flags; /* canonical flag text as pushed */
	uint64_t size; /* CRLF size */
};
/* Load the folder's map sorted by uniq (byte order). Free with
 * store_msgs_free. */
int store_msgs_load(struct store *store, const char *user,
		    const char *folder, struct store_msg **msgs_r,
		    size_t *count_r);
void store_msgs_free(struct store_msg **msgs, size_t count);
/* Insert or replace the map entry of uniq. */
int store_msg_put(struct store *store, const char *user, const char *folder,
		  const char *uniq, uint32_t uid, const char *flags,
		  uint64_t size);
int store_msg_set_flags(struct store *store, const char *user,
			const char *folder, const char *uniq,
			const char *flags);
int store_msg_delete(struct store *store, const char *user,
		     const char *folder, const char *uniq);
/* Find the message mapped to a replica UID. Returns 0 with *uniq_r
 * (caller frees), or with NULL when no message has that UID. */
int store_msg_find_uid(struct store *store, const char *user,
		       const char *folder, uint32_t uid, char **uniq_r);
/* Whether uniq is mapped in a folder of user other than folder. */
int store_msg_elsewhere(struct store *store, const char *user,
			const char *folder, const char *uniq, bool *found_r);
/* Number of mapped messages, for all users when user is NULL. */
int store_msg_count(struct store *store, const char *user,
		    unsigned long long *count_r);

/* APPEND intents: recorded before an APPEND is sent, removed when its
 * APPENDUID is stored. An intent left after a crash tells which replica
 * UIDs (>= uidnext) may hold a copy that landed. An intent already
 * recorded for uniq is kept, with its lower uidnext. */
int store_intent_add(struct store *store, const char *user,
		     const char *folder, const char *uniq,
		     uint32_t uidvalidity, uint32_t uidnext, uint64_t size);
int store_intent_delete(struct store *store, const char *user,
			const char *folder, const char *uniq);
/* Lowest uidnext among the folder's intents, 0 when there is none. */
int store_intent_min_uidnext(struct store *store, const char *user,
			     const char *folder, uint32_t *uidnext_r);
/* Creation time of the newest intent of any folder, 0 when there is
 * none. */
int store_intent_newest(struct store *store, time_t *created_r);
int store_intents_clear(struct store *store, const char *user,
			const char *folder);

/* Runs of the initial replication. */
enum store_run_result {
	RUN_RUNNING = 0,
	RUN_OK,
	RUN_FAILED,
	RUN_REJECTED, /* done, but the replica rejected some messages */
	RUN_INTERRUPTED,
};
struct store_run {
	long long id;
	char *kind; /* "init" */
	time_t started, finished;
	enum store_run_result result;
	unsigned long long folders, messages, bytes, uploaded, adopted,
		expunged, flag_updates, rejected, skipped;
	char *error;
};
/* Record a RUNNING run of kind by this process (its pid). */
int store_run_start(struct store *store, const char *kind, long long *id_r);
/* Write the counters, result, finish time (now when run->finished is 0)
 * and error of run->id. */
int store_run_finish(struct store *store, const struct store_run *run);
/* The latest run of kind; *found_r false when there is none. A run left
 * RUNNING by a process that no longer exists is returned as
 * RUN_INTERRUPTED. Free with store_run_clear(). */
int store_run_last(struct store *store, const char *kind,
		   struct store_run *run_r, bool *found_r);
void store_run_clear(struct store_run *run);
/* "running", "ok", "failed", "rejected" or "interrupted". */
const char *store_run_result_name(enum store_run_result result);

/* Messages the replica rejected in a run, with the server's text. */
int store_rejected_add(struct store *store, long long run_id,
		       const char *user, const char *folder,
		       const char *uniq, const char *reason);

/* Whether run_id recorded uniq of (user, folder) as rejected. */
int store_rejected_has(struct store *store, long long run_id,
		       const char *user, const char *folder, const char *uniq,
		       bool *found_r);

/* The change queue: what the watcher saw change, by (user, folder), for a
 * worker to apply by diffing that folder. folder "" stands for the user
 * itself (its folder list or subscriptions). hint is free text for logs
 * (a file name, "keywords", "folders", "subscriptions") and may be NULL;
 * a hint that starts with "reconcile" requests a full comparison with
 * the replica and is kept when the row is queued again.
 *
 * A (user, folder) is queued at most once, so changes of one folder keep
 * their order. Adding it again keeps the oldest queued time, replaces the
 * hint (but not a "reconcile" one) and gives the row a new id: a worker that took the old id with
 * store_queue_next() then leaves the newer change queued when it calls
 * store_queue_done(). */
int store_queue_add(struct store *store, const char *user, const char *folder,
		    const char *hint);
/* The oldest queued change; *found_r false when the queue is empty. The
 * row stays queued until store_queue_done(). *user_r and *folder_r are
 * the caller's to free (NULL when nothing was found). */
int store_queue_next(struct store *store, char **user_r, char **folder_r,
		     long long *id_r, bool *found_r);
/* Whether store_queue_next_except() passes over the changes of user. */
typedef bool store_queue_skip_fn(const char *user, void *ctx);
/* The oldest queued change of a user that skip() does not pass over, as
 * store_queue_next() returns it, with its hint (caller frees; may be
 * NULL) and the time it was first queued in Unix milliseconds. Lets
 * several workers take the changes of different users at once. */
int store_queue_next_except(struct store *store, store_queue_skip_fn *skip,
			    void *ctx, char **user_r, char **folder_r,
			    char **hint_r, long long *id_r,
			    long long *queued_ms_r, bool *found_r);
/* Remove the change with id; an id no longer queued is not an error. */
int store_queue_done(struct store *store, long long id);
/* Number of queued changes and the queued time of the oldest, in Unix
 * milliseconds (0 when the queue is empty). */
int store_queue_stats(struct store *store, unsigned long long *count_r,
		      long long *oldest_queued_ms_r);

#endif
