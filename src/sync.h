/* The initial replication: bring the replica to the master's state.
 *
 * [master] workers threads do the work, each with its own IMAP connection
 * and state-store handle. The first phase prepares every user: folders
 * (parents first), subscriptions and the foreign-mail check. The second
 * synchronises every (user, folder) as a diff of the Maildir against the
 * message map and the replica. */
#ifndef MAILREPL_SYNC_H
#define MAILREPL_SYNC_H

#include <stdbool.h>
#include <stddef.h>

#include "cfg.h"
#include "store.h"

/* Exit codes of "mailrepl init". */
enum {
	SYNC_EXIT_OK = 0,	/* the replica equals the master */
	SYNC_EXIT_FAILED = 1,	/* nothing or only part was done */
	SYNC_EXIT_PARTIAL = 2,	/* done, but some messages were skipped */
	SYNC_EXIT_LOCKED = 75,	/* another run or the agent holds the lock */
};

struct sync_options {
	const struct config *cfg;
	const char *password;	/* the administrator's; borrowed */
	char *const *users;	/* only these users, or NULL for all */
	size_t nusers;
	bool reset_replica;	/* empty these users' replica mailboxes */
	bool dry_run;		/* change nothing, report what would be done */
	bool takeover;		/* rebind a replica bound to another master */
	bool progress;		/* draw a progress line on stderr */
	/* Running replication (the agent) rather than "mailrepl init": a
	 * folder whose files left or arrived is first checked for moves
	 * across the user's folders, and a message the replica rejected in
	 * this run is not sent again. */
	bool live;
};

/* Counters of one run, as stored in the run record. */
struct sync_counts {
	unsigned long long users, folders, messages, bytes;
	unsigned long long uploaded, uploaded_bytes, adopted, expunged;
	unsigned long long flag_updates, folders_created, folders_deleted;
	unsigned long long moved;
	unsigned long long rejected, skipped, folder_errors, user_errors;
};

/* Run the initial replication. Takes the lock in state_dir, records the
 * run in the state store, and returns one of the SYNC_EXIT_* codes. On
 * failure *error_r (caller frees) is the first fatal error. */
int sync_init(const struct sync_options *options, struct sync_counts *counts_r,
	      char **error_r);

/* Take the exclusive lock of state_dir (state_dir/lock). Returns the
 * lock's file descriptor, -2 when another process holds it, or -1 with
 * *error_r. Closing the descriptor releases the lock. */
int sync_lock(const char *state_dir, char **error_r);

#endif
