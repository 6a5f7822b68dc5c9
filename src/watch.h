/* The Maildir watcher: inotify on the mail root, every user's Maildir,
 * every folder and its new/ and cur/ directories. Each event becomes a
 * report of what changed (user, folder, hint), never an operation to
 * replay: the receiver queues the folder and a worker diffs it later.
 *
 * inotify misses changes (queue overflow, a directory created before its
 * watch existed, changes made before watch_new), so callers also run a
 * full reconcile at startup, after an overflow and on a timer. The
 * watcher only lists directories and never writes to the Maildir. */
#ifndef MAILREPL_WATCH_H
#define MAILREPL_WATCH_H

#include <stdbool.h>
#include <stddef.h>

struct config;
struct watch;

/* Called once per change. user is the login name; folder is the folder
 * name as on disk without the leading dot ("INBOX", "Sent", "A.B"), or ""
 * for the user itself. hint says what changed: a message file name of
 * new/ or cur/, "keywords" (dovecot-keywords), "subscriptions", "folders"
 * (a folder was created, deleted or renamed) or "rescan" (a directory
 * appeared, so the whole folder must be diffed). The strings are valid
 * only during the call. */
typedef void watch_change_fn(const char *user, const char *folder,
			     const char *hint, void *ctx);

/* Watch every user under cfg->maildir_root that matches cfg->user_path.
 * cfg must outlive the watch. Fails when fs.inotify.max_user_watches is
 * lower than the number of directories to watch. Returns the watch, or
 * NULL with *error_r (caller frees). */
struct watch *watch_new(const struct config *cfg, char **error_r);
/* The inotify descriptor, for poll(2) with POLLIN. Owned by the watch. */
int watch_fd(struct watch *watch);
/* Read the pending events without blocking and call on_change for each
 * change. New directories are watched before they are listed, and their
 * folder is then reported with the hint "rescan". Returns 0, 1 when the
 * kernel's event queue overflowed (events were lost: run a full
 * reconcile), or -1 when reading the descriptor failed (logged). */
int watch_process(struct watch *watch, watch_change_fn *on_change, void *ctx);
/* Close the descriptor, free *watch and set it to NULL. */
void watch_free(struct watch **watch);

/* Check that max_user_watches (fs.inotify.max_user_watches) covers
 * needed directories. Returns 0, or -1 with *error_r (caller frees) that
 * names the sysctl, both numbers and a value to set. */
int watch_check_limit(unsigned long long max_user_watches,
		      unsigned long long needed, char **error_r);

#endif
