/* Running replication on the master. A watcher thread turns inotify
 * events into rows of the change queue in the state store. Worker
 * threads take the oldest rows and apply each as a diff of that folder
 * (or of the user's folder list and subscriptions) against the map and
 * the replica, with the code of the initial replication.
 *
 * The queue records what changed, never what to do, so a row applied twice
 * or after a crash does no harm. A full reconcile (every user and folder
 * queued) runs at start, after an inotify overflow and every
 * [master] reconcile_interval seconds.
 *
 * The workers take the lock of state_dir only while they drain the
 * queue, so "mailrepl init" can run whenever the queue is empty, and the
 * workers wait while it runs. They apply nothing before an initial
 * replication has succeeded. */
#ifndef MAILREPL_REPL_H
#define MAILREPL_REPL_H

#include <stdbool.h>

#include "cfg.h"

struct repl;

struct repl_stats {
	unsigned long long pending; /* queued changes */
	long long oldest_ms;        /* Unix ms of the oldest, 0 when none */
	unsigned long long applied; /* changes applied since the start */
	long long last_applied;     /* Unix seconds, 0 when none yet */
	unsigned long long errors;  /* changes dropped after an error */
	unsigned applied_last_min;  /* changes applied in the last 60 s */
	char last_user[128];        /* of the last change applied */
	char last_folder[256];      /* "" for the user's folder list */
	long long last_error_at;    /* Unix seconds */
	bool waiting;               /* not applying: see waiting_for */
	char waiting_for[96];       /* why, for status */
	char last_error[512];       /* "" when none */
};

/* Called from a replication thread whenever the figures change. */
typedef void repl_notify_fn(void *ctx);

/* Watch cfg's Maildir tree and start the threads. cfg must outlive the
 * replication. notify (may be NULL) learns of every change of the
 * figures. Fails when fs.inotify.max_user_watches is too low or the
 * state store cannot be opened. Returns 0, or -1 with *error_r. */
int repl_start(const struct config *cfg, repl_notify_fn *notify,
	       void *notify_ctx, struct repl **repl_r, char **error_r);
/* As repl_start(), but with changes held (repl_set_enabled(false, why))
 * until the caller enables them. */
int repl_start_held(const struct config *cfg, const char *why,
		    repl_notify_fn *notify, void *notify_ctx,
		    struct repl **repl_r, char **error_r);
/* Stop the threads and free; sets *repl to NULL. */
void repl_stop(struct repl **repl);
/* Make the workers finish the changes in hand and release the lock, and
 * return once it has; it then waits until repl_release(). */
void repl_hold(struct repl *repl);
void repl_release(struct repl *repl);
/* Whether the replica accepts this master. While false, changes stay
 * queued, and why (required then) is shown as the reason. */
void repl_set_enabled(struct repl *repl, bool enabled, const char *why);
/* Queue every user and folder for a full reconcile. */
void repl_reconcile(struct repl *repl);
/* A copy of the current figures. */
void repl_get_stats(struct repl *repl, struct repl_stats *stats_r);

#endif
