/* Internals shared by sync.c (run, workers), sync_user.c (per-user
 * preparation) and sync_folder.c (per-folder diff and upload). */
#ifndef MAILREPL_SYNC_PRIVATE_H
#define MAILREPL_SYNC_PRIVATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "imapc.h"
#include "maildir.h"
#include "progress.h"
#include "store.h"
#include "sync.h"

/* One (user, folder) to synchronise in the second phase. */
struct sync_unit {
	size_t user;		  /* index into run->users */
	struct md_folder folder;  /* owned */
};

/* State shared by every worker of one run; fields after lock are guarded
 * by it. */
struct sync_run {
	const struct sync_options *opt;
	struct imapc_params params;
	long long run_id;
	struct md_user *users;
	size_t nusers;
	struct progress progress;
	atomic_bool connected_once; /* some login to the replica worked */

	pthread_mutex_t lock;
	struct sync_counts counts;
	bool *user_failed;
	bool *dry_reset; /* dry run: this user's replica counts as emptied */
	struct sync_unit *units;
	size_t nunits, next_unit, next_user;
	char *fatal;	   /* first error that stops the whole run */
	char *first_error; /* first error of any kind, for the run record */
};

/* One worker thread: its own connection and state-store handle. */
struct sync_worker {
	struct sync_run *run;
	struct store *store;
	struct imapc *conn;
	size_t conn_user; /* user index of conn, or SIZE_MAX */
	struct sync_counts counts;
	bool moves_checked; /* live: sync_user_moves() ran for this unit */
	/* live: take the replica's messages below the highest mapped UID
	 * from the map, and fetch only the ones above it, as long as the
	 * replica's message count agrees. A reconcile clears it. */
	bool trust_map;
};

/* Make w->conn a live connection acting for user index ui. */
int sync_connect(struct sync_worker *w, size_t ui, struct mrerr *err);
/* Drop the connection (after a connection-class failure). */
void sync_disconnect(struct sync_worker *w);
/* Record an error of the given class; a config-class error stops the
 * run. */
void sync_note_error(struct sync_worker *w, const char *user,
		     const char *folder, const struct mrerr *err);


int sync_prepare_user(struct sync_worker *w, size_t ui, struct mrerr *err);
/* Look for messages moved between user ui's folders and move them on the
 * replica with UID MOVE. */
int sync_user_moves(struct sync_worker *w, size_t ui, struct mrerr *err);

/* sync_folder() returned this in a live run: a file left the folder, or
 * a new one is mapped in another folder. Call sync_user_moves(), set
 * w->moves_checked and call sync_folder() again. */
#define SYNC_FOLDER_MOVES 1
/* Returns 0, SYNC_FOLDER_MOVES, or -1 with *err. */
int sync_folder(struct sync_worker *w, const struct sync_unit *unit,
		struct mrerr *err);

/* Pair Maildir messages that have no replica UID with replica messages
 * that no map entry claims, by CRLF size and content hash. wanted[] and
 * unknown[] are index lists into msgs[] and rmsgs[]; on return
 * match_r[k] is the rmsgs index paired with wanted[k], or SIZE_MAX.
 * Returns the number of pairs, or -1 with *err. */
long sync_rematch(struct sync_worker *w, const struct md_message *msgs,
		  const size_t *wanted, size_t nwanted,
		  const struct imapc_msg *rmsgs, const size_t *unknown,
		  size_t nunknown, size_t *match_r, struct mrerr *err);

#endif
