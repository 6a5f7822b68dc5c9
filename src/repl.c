/* Running replication on the master: the watcher thread, the worker
 * threads and how one queued change is applied. */
#include <config.h>
#include "repl.h"

#include "log.h"
#include "sync_private.h"
#include "util.h"
#include "watch.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* Maximum pause in seconds between two attempts after the replica
 * failed or rejected the change. */
#define BACKOFF_MAX 60
/* Seconds between two attempts to take the lock that "mailrepl init"
 * holds. */
#define LOCK_RETRY 2
/* Milliseconds to let a change of a user's folder list settle before it
 * is applied. Renaming a folder with children renames one directory
 * after the other. The list seen halfway would delete the children that
 * the replica's RENAME carried along, so they would be uploaded again. */
#define TREE_SETTLE_MS 500
/* Seconds that the replica may take to finish the commands of a client
 * that died, as in "mailrepl init". */
#define SETTLE_SECONDS 5
/* Attempts at a change whose folder or user failed with an error the
 * replica calls temporary (NO [UNAVAILABLE], [INUSE], [SERVERBUG] ...),
 * before the change is dropped until the next change or reconcile. */
#define TRANSIENT_ATTEMPTS 5
/* IMAP connections kept open, one per recently active user. */
#define CONN_CACHE 16

struct conn_slot {
	char *user;
	struct imapc *conn;
	long long used_ms;
};

struct worker_ctx;

struct repl {
	const struct config *cfg;
	struct watch *watch;
	int wake_fd; /* eventfd: wakes the watcher */
	pthread_t watcher;
	bool watcher_started;
	struct worker_ctx **workers; /* [master] workers of them */
	size_t nworkers, nstarted;
	long long run_id; /* the "live" run, for rejected messages */

	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stopping;
	bool held;                   /* repl_hold() requests the lock back */
	bool enabled;                /* the replica accepts this master */
	bool reconcile;              /* the watcher should queue everything */
	unsigned long long kick_gen; /* grows when the queue may hold more */
	unsigned draining;           /* workers that use the lock */
	int lock_fd;                 /* state_dir's lock while draining > 0 */
	char **busy;                 /* busy[i]: the user worker i applies */
	long long retry_ms; /* monotonic time of the next attempt, or 0 */
	unsigned backoff;   /* seconds before the attempt after that */
	bool outage;        /* the replica failed since the last success */
	char *failing;      /* "user/folder" of the change that failed last */
	unsigned failures;  /* its temporary failures in a row */
	struct repl_stats stats;
	/* Changes applied per second over the last minute, for the rate:
	 * applied_in[t % 60] counts second t when second_of[t % 60] == t. */
	unsigned applied_in[60];
	long long second_of[60];
	repl_notify_fn *notify;
	void *notify_ctx;
};

/* Shared state */

/* Wake every waiting worker to look at the queue. */
static void
kick_locked(struct repl *r)
{
	r->kick_gen++;
	pthread_cond_broadcast(&r->cond);
}

static void
kick(struct repl *r)
{
	pthread_mutex_lock(&r->lock);
	kick_locked(r);
	pthread_mutex_unlock(&r->lock);
}

/* Return the realtime clock ms milliseconds from now, for
 * pthread_cond_timedwait(). */
static struct timespec
deadline_in(long long ms)
{
	struct timespec at;

	clock_gettime(CLOCK_REALTIME, &at);
	at.tv_sec += (time_t)(ms / 1000);
	at.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (at.tv_nsec >= 1000000000L) {
		at.tv_sec++;
		at.tv_nsec -= 1000000000L;
	}
	return at;
}

/* Sleep until deadline (realtime clock) or until the replication stops. */
static void
sleep_until(struct repl *r, const struct timespec *deadline)
{
	pthread_mutex_lock(&r->lock);
	while (!r->stopping &&
	       pthread_cond_timedwait(&r->cond, &r->lock, deadline) == 0)
		;
	pthread_mutex_unlock(&r->lock);
}

static void
notify(struct repl *r)
{
	if (r->notify != NULL)
		r->notify(r->notify_ctx);
}

static void
update_queue_stats(struct repl *r, struct store *store)
{
	unsigned long long count;
	long long oldest;

	if (store_queue_stats(store, &count, &oldest) < 0)
		return;
	pthread_mutex_lock(&r->lock);
	r->stats.pending = count;
	r->stats.oldest_ms = oldest;
	pthread_mutex_unlock(&r->lock);
	notify(r);
}

static void
set_waiting(struct repl *r, const char *why)
{
	bool changed;

	pthread_mutex_lock(&r->lock);
	changed = !r->stats.waiting || strcmp(r->stats.waiting_for, why) != 0;
	r->stats.waiting = true;
	snprintf(r->stats.waiting_for, sizeof(r->stats.waiting_for), "%s", why);
	pthread_mutex_unlock(&r->lock);
	if (changed) {
		log_msg(LOG_LVL_INFO, "repl_wait", "changes stay queued: %s",
			why);
		notify(r);
	}
}

static void
clear_waiting(struct repl *r)
{
	bool was;

	pthread_mutex_lock(&r->lock);
	was = r->stats.waiting;
	r->stats.waiting = false;
	r->stats.waiting_for[0] = '\0';
	pthread_mutex_unlock(&r->lock);
	if (was) {
		log_msg(LOG_LVL_INFO, "repl_resume", "applying queued changes");
		notify(r);
	}
}

static void
note_error(struct repl *r, const char *user, const char *folder,
	   const struct mrerr *err, bool dropped)
{
	struct logline *line = log_begin(LOG_LVL_ERROR, "error");

	log_str(line, "scope", mrerr_scope_name(err->scope));
	if (user != NULL)
		log_str(line, "user", user);
	if (folder != NULL && folder[0] != '\0')
		log_str(line, "folder", folder);
	log_str(line, "error", err->text);
	if (dropped)
		log_str(line, "msg",
			"change dropped; the next change or "
			"reconcile of this folder retries it");
	log_end(line);
	pthread_mutex_lock(&r->lock);
	r->stats.last_error_at = time(NULL);
	snprintf(r->stats.last_error, sizeof(r->stats.last_error), "%s",
		 err->text);
	if (dropped)
		r->stats.errors++;
	pthread_mutex_unlock(&r->lock);
	notify(r);
}

/* The watcher */

struct watcher_ctx {
	struct repl *r;
	struct store *store;
	unsigned long long failed;
};

static void
on_change(const char *user, const char *folder, const char *hint, void *ctx)
{
	struct watcher_ctx *wc = ctx;

	if (store_queue_add(wc->store, user, folder, hint) < 0)
		wc->failed++;
}

/* Queue every user ("") and every folder. Folders that cannot be listed
 * now are left to their own events. */
static void
queue_all(struct watcher_ctx *wc, const char *why)
{
	struct md_user *users = NULL;
	size_t nusers = 0, nqueued = 0;
	char *error = NULL, *hint;

	if (md_select_users(wc->r->cfg, NULL, 0, &users, &nusers, &error) < 0) {
		log_msg(LOG_LVL_ERROR, "error", "reconcile: %s", error);
		free(error);
		return;
	}
	if (store_begin(wc->store) < 0) {
		log_msg(LOG_LVL_ERROR, "error", "reconcile: state store: %s",
			store_error(wc->store));
		md_users_free(&users, nusers);
		return;
	}
	/* The "reconcile" hint requests a full comparison from the worker. */
	hint = xasprintf("reconcile: %s", why);
	for (size_t u = 0; u < nusers; u++) {
		struct md_folder *folders = NULL;
		size_t nfolders = 0;
		struct md_stats stats = {0};

		on_change(users[u].name, "", hint, wc);
		nqueued++;
		if (md_list_folders(users[u].path, &folders, &nfolders, &stats,
				    &error) < 0) {
			xfree(&error);
			continue;
		}
		for (size_t f = 0; f < nfolders; f++)
			on_change(users[u].name, folders[f].name, hint, wc);
		nqueued += nfolders;
		md_folders_free(&folders, nfolders);
	}
	free(hint);
	if (store_commit(wc->store) < 0) {
		log_msg(LOG_LVL_ERROR, "error", "reconcile: state store: %s",
			store_error(wc->store));
		store_rollback(wc->store);
	} else {
		log_msg(LOG_LVL_INFO, "reconcile",
			"queued %zu users and folders (%s)", nqueued, why);
	}
	md_users_free(&users, nusers);
}

/* Read the pending events into the queue, in one transaction. Returns
 * the result of watch_process(). */
static int
take_events(struct watcher_ctx *wc)
{
	int ret;

	if (store_begin(wc->store) < 0) {
		log_msg(LOG_LVL_ERROR, "error", "state store: %s",
			store_error(wc->store));
		return -1;
	}
	wc->failed = 0;
	ret = watch_process(wc->r->watch, on_change, wc);
	if (store_commit(wc->store) < 0) {
		log_msg(LOG_LVL_ERROR, "error",
			"cannot queue changes: %s; "
			"running a full reconcile",
			store_error(wc->store));
		store_rollback(wc->store);
		return 1;
	}
	if (wc->failed > 0) {
		log_msg(LOG_LVL_ERROR, "error",
			"cannot queue %llu changes: "
			"%s; running a full reconcile",
			wc->failed, store_error(wc->store));
		return 1;
	}
	return ret;
}

static void *
watcher_main(void *arg)
{
	struct repl *r = arg;
	struct watcher_ctx wc = {.r = r};
	long long interval = (long long)r->cfg->reconcile_interval * 1000;
	long long next = monotonic_ms() + interval;
	char *error = NULL;

	if (store_open(r->cfg->state_dir, &wc.store, &error) < 0) {
		log_msg(LOG_LVL_ERROR, "error", "%s", error);
		free(error);
		return NULL;
	}
	/* The status thread checkpoints; a commit here must not wait for
	 * an fsync. */
	store_set_autocheckpoint(wc.store, false);
	queue_all(&wc, "startup");
	update_queue_stats(r, wc.store);
	kick(r);
	for (;;) {
		struct pollfd fds[2] = {
			{.fd = watch_fd(r->watch), .events = POLLIN},
			{.fd = r->wake_fd, .events = POLLIN},
		};
		long long wait = next - monotonic_ms();
		bool stop, reconcile;
		int n;

		/* No timer but the reconcile's: an idle agent sleeps here.
		 * reconcile_interval is at most a week, well within int. */
		n = poll(fds, 2, wait < 0 ? 0 : (int)wait);
		if (n < 0 && errno != EINTR) {
			log_msg(LOG_LVL_ERROR, "error", "poll: %s",
				strerror(errno));
			break;
		}
		if (n > 0 && (fds[1].revents & POLLIN) != 0) {
			uint64_t v;

			if (read(r->wake_fd, &v, sizeof(v)) < 0)
				v = 0;
		}
		pthread_mutex_lock(&r->lock);
		stop = r->stopping;
		reconcile = r->reconcile;
		r->reconcile = false;
		pthread_mutex_unlock(&r->lock);
		if (stop)
			break;
		if (n > 0 && (fds[0].revents & POLLIN) != 0 &&
		    take_events(&wc) == 1) {
			log_msg(LOG_LVL_WARN, "overflow",
				"inotify lost events; "
				"running a full reconcile");
			reconcile = true;
		}
		if (monotonic_ms() >= next) {
			queue_all(&wc, "timer");
			next = monotonic_ms() + interval;
		} else if (reconcile) {
			queue_all(&wc, "reconcile");
		}
		update_queue_stats(r, wc.store);
		kick(r);
	}
	store_close(&wc.store);
	return NULL;
}

/* The worker */

struct worker_ctx {
	struct repl *r;
	size_t index; /* into r->workers and r->busy */
	pthread_t thread;
	unsigned long long seen_gen; /* the last kick looked at */
	long long queued_ms; /* when the change in hand was first queued */
	struct sync_options opt;
	struct sync_run run;
	struct sync_worker w;
	struct conn_slot conns[CONN_CACHE];
};

static int
load_run_users(struct worker_ctx *wc, char **error_r)
{
	struct md_user *users = NULL;
	size_t n = 0;

	if (md_select_users(wc->opt.cfg, NULL, 0, &users, &n, error_r) < 0)
		return -1;
	md_users_free(&wc->run.users, wc->run.nusers);
	free(wc->run.user_failed);
	free(wc->run.dry_reset);
	wc->run.users = users;
	wc->run.nusers = n;
	wc->run.user_failed = xcalloc(n + 1, sizeof(bool));
	wc->run.dry_reset = xcalloc(n + 1, sizeof(bool));
	wc->w.conn_user = SIZE_MAX;
	return 0;
}

/* The index of user in the run, listing the users again for one that
 * appeared since; SIZE_MAX when it is not a user on the master. */
static size_t
user_index(struct worker_ctx *wc, const char *user)
{
	char *error = NULL;

	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < wc->run.nusers; i++) {
			if (strcmp(wc->run.users[i].name, user) == 0)
				return i;
		}
		if (pass == 0 && load_run_users(wc, &error) < 0) {
			log_msg(LOG_LVL_ERROR, "error", "%s", error);
			free(error);
			break;
		}
	}
	return SIZE_MAX;
}

/* Put the cached connection of user ui into w->conn. */
static void
take_conn(struct worker_ctx *wc, size_t ui)
{
	const char *user = wc->run.users[ui].name;

	wc->w.conn = NULL;
	wc->w.conn_user = SIZE_MAX;
	for (size_t i = 0; i < CONN_CACHE; i++) {
		struct conn_slot *s = &wc->conns[i];

		if (s->user != NULL && strcmp(s->user, user) == 0) {
			wc->w.conn = s->conn;
			wc->w.conn_user = s->conn != NULL ? ui : SIZE_MAX;
			s->conn = NULL;
			return;
		}
	}
}

/* Keep w->conn for the next change of the same user, closing the least
 * recently used connection when the cache is full. */
static void
give_back_conn(struct worker_ctx *wc, const char *user)
{
	struct conn_slot *slot = NULL;

	for (size_t i = 0; i < CONN_CACHE && slot == NULL; i++) {
		if (wc->conns[i].user != NULL &&
		    strcmp(wc->conns[i].user, user) == 0)
			slot = &wc->conns[i];
	}
	for (size_t i = 0; i < CONN_CACHE && slot == NULL; i++) {
		if (wc->conns[i].user == NULL)
			slot = &wc->conns[i];
	}
	if (slot == NULL) {
		slot = &wc->conns[0];
		for (size_t i = 1; i < CONN_CACHE; i++) {
			if (wc->conns[i].used_ms < slot->used_ms)
				slot = &wc->conns[i];
		}
	}
	if (slot->user == NULL || strcmp(slot->user, user) != 0) {
		imapc_free(&slot->conn);
		free(slot->user);
		slot->user = xstrdup(user);
	}
	imapc_free(&slot->conn);
	slot->conn = wc->w.conn;
	slot->used_ms = monotonic_ms();
	wc->w.conn = NULL;
	wc->w.conn_user = SIZE_MAX;
}

static void
close_conns(struct worker_ctx *wc)
{
	for (size_t i = 0; i < CONN_CACHE; i++) {
		imapc_free(&wc->conns[i].conn);
		free(wc->conns[i].user);
		wc->conns[i].user = NULL;
	}
	imapc_free(&wc->w.conn);
}

/* Queue every folder of user ui, after its first preparation. */
static void
queue_user_folders(struct worker_ctx *wc, size_t ui)
{
	struct md_folder *folders = NULL;
	size_t n = 0;
	struct md_stats stats = {0};
	char *error = NULL;

	if (md_list_folders(wc->run.users[ui].path, &folders, &n, &stats,
			    &error) < 0) {
		free(error);
		return;
	}
	for (size_t f = 0; f < n; f++)
		store_queue_add(wc->w.store, wc->run.users[ui].name,
				folders[f].name, "reconcile: new user");
	md_folders_free(&folders, n);
}

/* Wait until the change is TREE_SETTLE_MS old (less when the agent
 * stops), then prepare user ui: folders, renames, moves, deletions and
 * subscriptions. */
static int
prepare_user(struct worker_ctx *wc, size_t ui, struct mrerr *err)
{
	long long settled_ms = wc->queued_ms + TREE_SETTLE_MS;
	struct timespec until = {
		.tv_sec = (time_t)(settled_ms / 1000),
		.tv_nsec = (long)(settled_ms % 1000) * 1000000L,
	};

	sleep_until(wc->r, &until);
	return sync_prepare_user(&wc->w, ui, err);
}

static int
apply_user(struct worker_ctx *wc, size_t ui, struct mrerr *err)
{
	bool known = true;

	if (store_user_known(wc->w.store, wc->run.users[ui].name, &known) < 0)
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_LATER,
				 "state store: %s", store_error(wc->w.store));
	if (prepare_user(wc, ui, err) < 0)
		return -1;
	if (!known)
		queue_user_folders(wc, ui);
	return 0;
}

/* Fill mdf with the folder of user ui named name (as the watcher and
 * md_list_folders() name it). Returns false when it is gone. */
static bool
find_folder(struct worker_ctx *wc, size_t ui, const char *name,
	    struct md_folder *mdf)
{
	const char *user_path = wc->run.users[ui].path;
	int err;

	mdf->name = xstrdup(name);
	mdf->path = strcmp(name, "INBOX") == 0
			    ? xstrdup(user_path)
			    : xasprintf("%s/.%s", user_path, name);
	return md_has_maildir_subdirs(mdf->path, &err) == 1;
}

static int
apply_folder(struct worker_ctx *wc, size_t ui, const char *folder,
	     struct mrerr *err)
{
	struct sync_unit unit = {.user = ui};
	int r;

	if (!find_folder(wc, ui, folder, &unit.folder)) {
		/* Deleted or renamed: preparing the user's folder list tells
		 * which. */
		r = prepare_user(wc, ui, err);
		goto out;
	}
	wc->w.moves_checked = false;
	r = sync_folder(&wc->w, &unit, err);
	if (r < 0 && err->scope == MRERR_FOLDER) {
		/* Most often a folder the replica does not have yet. */
		mrerr_clear(err);
		r = prepare_user(wc, ui, err);
		if (r == 0)
			r = sync_folder(&wc->w, &unit, err);
	}
	if (r == SYNC_FOLDER_MOVES) {
		r = sync_user_moves(&wc->w, ui, err);
		wc->w.moves_checked = true;
		if (r == 0)
			r = sync_folder(&wc->w, &unit, err);
	}
out:
	free(unit.folder.name);
	free(unit.folder.path);
	return r;
}

/* Apply one queued change. Returns 0 when it is done (applied, or
 * nothing to do), -1 with *err otherwise. */
static int
apply(struct worker_ctx *wc, const char *user, const char *folder,
      struct mrerr *err)
{
	size_t ui = user_index(wc, user);
	bool cached;
	int r = -1;

	if (ui == SIZE_MAX) {
		log_msg(LOG_LVL_INFO, "user_gone",
			"user %s is no longer on "
			"the master; its replica mailboxes are left alone",
			user);
		return 0;
	}
	take_conn(wc, ui);
	/* A cached connection may have been closed by the server while it
	 * was idle: one failure on it is retried on a new one. */
	cached = wc->w.conn != NULL;
	for (int attempt = 0; attempt < (cached ? 2 : 1); attempt++) {
		mrerr_clear(err);
		if (sync_connect(&wc->w, ui, err) == 0)
			r = folder[0] == '\0'
				    ? apply_user(wc, ui, err)
				    : apply_folder(wc, ui, folder, err);
		if (r == 0 || err->scope != MRERR_CONNECTION)
			break;
		sync_disconnect(&wc->w);
	}
	if (r < 0 && err->scope == MRERR_CONNECTION)
		sync_disconnect(&wc->w);
	give_back_conn(wc, user);
	return r < 0 ? -1 : 0;
}

static void
log_applied(const char *user, const char *folder, long long ms)
{
	struct logline *line = log_begin(LOG_LVL_INFO, "apply");
	char *display = mutf7_to_utf8(folder);

	log_str(line, "user", user);
	log_str(line, "folder", folder[0] != '\0' ? display : "-");
	log_int(line, "ms", ms);
	log_end(line);
	free(display);
}

/* Whether an initial replication has completed for this state store. */
static bool
init_done(struct store *store)
{
	struct store_run run;
	bool found = false, done;

	if (store_run_last(store, "init", &run, &found) < 0 || !found)
		return false;
	done = run.result == RUN_OK || run.result == RUN_REJECTED;
	store_run_clear(&run);
	return done;
}

/* Whether the workers should stop taking changes. Call with r->lock. */
static bool
paused_locked(const struct repl *r)
{
	return r->stopping || r->held || !r->enabled || r->retry_ms != 0;
}

/* Pause every worker for seconds after the replica failed; the pause
 * doubles up to BACKOFF_MAX until a change is applied again. */
static void
back_off(struct repl *r)
{
	pthread_mutex_lock(&r->lock);
	r->retry_ms = monotonic_ms() + (long long)r->backoff * 1000;
	r->backoff =
		r->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : r->backoff * 2;
	pthread_mutex_unlock(&r->lock);
}

static void
retry_in(struct repl *r, unsigned seconds)
{
	pthread_mutex_lock(&r->lock);
	r->retry_ms = monotonic_ms() + (long long)seconds * 1000;
	pthread_mutex_unlock(&r->lock);
}

/* Join the workers that use the state_dir lock, taking it for the first
 * one. Returns false when "mailrepl init" has it or taking it failed. */
static bool
lock_join(struct repl *r)
{
	char *error = NULL;
	int fd = -1;
	bool ok;

	pthread_mutex_lock(&r->lock);
	if (r->lock_fd < 0) {
		fd = sync_lock(r->cfg->state_dir, &error);
		if (fd >= 0)
			r->lock_fd = fd;
	}
	ok = r->lock_fd >= 0;
	if (ok)
		r->draining++;
	pthread_mutex_unlock(&r->lock);
	if (fd == -2) {
		set_waiting(r, "an initial replication is running");
		retry_in(r, LOCK_RETRY);
	} else if (!ok) {
		log_msg(LOG_LVL_ERROR, "error", "%s", error);
		free(error);
		retry_in(r, BACKOFF_MAX);
	}
	return ok;
}

/* Leave the workers that use the lock; the last one releases it. */
static void
lock_leave(struct repl *r)
{
	pthread_mutex_lock(&r->lock);
	if (--r->draining == 0) {
		close(r->lock_fd);
		r->lock_fd = -1;
		pthread_cond_broadcast(&r->cond);
	}
	pthread_mutex_unlock(&r->lock);
}

/* Another worker applies a change of this user: pass it over, so that
 * one user's changes stay in order. Called with r->lock held. */
static bool
user_busy(const char *user, void *ctx)
{
	const struct repl *r = ctx;

	for (size_t i = 0; i < r->nworkers; i++) {
		if (r->busy[i] != NULL && strcmp(r->busy[i], user) == 0)
			return true;
	}
	return false;
}

/* Take the oldest change of a user no other worker is busy with, and
 * mark the user busy. Returns 1 with a change, 0 with none, -1 when the
 * queue cannot be read. */
static int
take_change(struct worker_ctx *wc, char **user_r, char **folder_r,
	    long long *id_r)
{
	struct repl *r = wc->r;
	char *hint = NULL;
	bool found = false;
	int ret;

	pthread_mutex_lock(&r->lock);
	if (paused_locked(r)) {
		pthread_mutex_unlock(&r->lock);
		return 0;
	}
	ret = store_queue_next_except(wc->w.store, user_busy, r, user_r,
				      folder_r, &hint, id_r, &wc->queued_ms,
				      &found);
	if (ret == 0 && found)
		r->busy[wc->index] = xstrdup(*user_r);
	pthread_mutex_unlock(&r->lock);
	/* A watched change trusts the map for what the replica holds; a
	 * reconcile, or a directory that appeared, compares in full. */
	wc->w.trust_map = hint != NULL && strncmp(hint, "reconcile", 9) != 0 &&
			  strcmp(hint, "rescan") != 0;
	free(hint);
	if (ret < 0) {
		log_msg(LOG_LVL_ERROR, "error", "change queue: %s",
			store_error(wc->w.store));
		retry_in(r, BACKOFF_MAX);
		return -1;
	}
	return found ? 1 : 0;
}

static void
note_applied(struct repl *r, const char *user, const char *folder, bool ok)
{
	long long now = time(NULL);
	size_t slot = (size_t)(now % 60);

	pthread_mutex_lock(&r->lock);
	r->backoff = 1;
	if (ok) {
		r->stats.applied++;
		r->stats.last_applied = now;
		snprintf(r->stats.last_user, sizeof(r->stats.last_user), "%s",
			 user);
		snprintf(r->stats.last_folder, sizeof(r->stats.last_folder),
			 "%s", folder);
		if (r->second_of[slot] != now) {
			r->second_of[slot] = now;
			r->applied_in[slot] = 0;
		}
		r->applied_in[slot]++;
	}
	pthread_mutex_unlock(&r->lock);
}

/* Decide whether a failed change stays queued for another attempt:
 * always when the replica is down or rejects every login, and up to
 * TRANSIENT_ATTEMPTS times when it called the failure temporary. A
 * Dovecot that is stopping or starting replies to some commands with
 * such a NO. */
static bool
keep_after(struct repl *r, const char *user, const char *folder,
	   const struct mrerr *err)
{
	char *key = xasprintf("%s/%s", user, folder);
	bool keep;

	if (err->scope == MRERR_CONNECTION || err->scope == MRERR_CONFIG) {
		free(key);
		return true;
	}
	pthread_mutex_lock(&r->lock);
	if (r->failing == NULL || strcmp(r->failing, key) != 0) {
		free(r->failing);
		r->failing = key;
		r->failures = 0;
	} else {
		free(key);
	}
	keep = err->retry != MRERR_RETRY_NEVER &&
	       ++r->failures < TRANSIENT_ATTEMPTS;
	pthread_mutex_unlock(&r->lock);
	return keep;
}

/* After the replica failed, the first change that works queues a full
 * reconcile: a change dropped while the replica was failing, for good or
 * only for a while, must not wait for reconcile_interval. */
static void
note_recovery(struct repl *r)
{
	bool was;

	pthread_mutex_lock(&r->lock);
	was = r->outage;
	r->outage = false;
	pthread_mutex_unlock(&r->lock);
	if (was)
		repl_reconcile(r);
}

/* Apply one taken change. Returns false when the replica failed and the
 * change stays queued. */
static bool
apply_change(struct worker_ctx *wc, const char *user, const char *folder,
	     long long id)
{
	struct repl *r = wc->r;
	long long started = monotonic_ms();
	struct mrerr err;

	mrerr_clear(&err);
	if (apply(wc, user, folder, &err) < 0 &&
	    keep_after(r, user, folder, &err)) {
		/* The replica is down, refuses, or failed for a while: keep
		 * the change. */
		note_error(r, user, folder, &err, false);
		set_waiting(r, "the replica failed; retrying");
		pthread_mutex_lock(&r->lock);
		r->outage = true;
		pthread_mutex_unlock(&r->lock);
		back_off(r);
		return false;
	}
	if (err.scope == MRERR_NONE)
		note_recovery(r);
	if (err.scope != MRERR_NONE)
		note_error(r, user, folder, &err, true);
	store_queue_done(wc->w.store, id);
	note_applied(r, user, folder, err.scope == MRERR_NONE);
	/* A dropped change has its event=error line instead. */
	if (err.scope == MRERR_NONE)
		log_applied(user, folder, monotonic_ms() - started);
	return true;
}

/* Apply queued changes until none is left for this worker, the replica
 * fails, or the workers are asked to pause. */
static void
drain(struct worker_ctx *wc)
{
	struct repl *r = wc->r;

	if (!lock_join(r))
		return;
	if (!init_done(wc->w.store)) {
		set_waiting(r, "no initial replication has succeeded yet");
		lock_leave(r);
		return;
	}
	for (;;) {
		char *user = NULL, *folder = NULL;
		long long id;
		bool ok;

		if (take_change(wc, &user, &folder, &id) <= 0)
			break;
		clear_waiting(r);
		ok = apply_change(wc, user, folder, id);
		pthread_mutex_lock(&r->lock);
		xfree(&r->busy[wc->index]);
		/* Another worker may have passed over this user's changes. */
		kick_locked(r);
		wc->seen_gen = r->kick_gen;
		pthread_mutex_unlock(&r->lock);
		free(user);
		free(folder);
		update_queue_stats(r, wc->w.store);
		if (!ok)
			break;
	}
	lock_leave(r);
}

/* Wait for a kick or the end of a pause; returns false when stopping. */
static bool
wait_for_work(struct worker_ctx *wc)
{
	struct repl *r = wc->r;
	bool go;

	pthread_mutex_lock(&r->lock);
	for (;;) {
		long long now = monotonic_ms();

		if (r->stopping)
			break;
		if (r->retry_ms != 0 && now >= r->retry_ms) {
			r->retry_ms = 0;
			kick_locked(r);
		}
		if (!paused_locked(r) && wc->seen_gen != r->kick_gen)
			break;
		if (r->retry_ms != 0) {
			struct timespec until = deadline_in(r->retry_ms - now);

			pthread_cond_timedwait(&r->cond, &r->lock, &until);
		} else {
			pthread_cond_wait(&r->cond, &r->lock);
		}
	}
	wc->seen_gen = r->kick_gen;
	go = !r->stopping;
	pthread_mutex_unlock(&r->lock);
	return go;
}

/* An APPEND sent with LITERAL+ by an agent that was killed may still be
 * committed by the replica after the kill. Looking at the folder before
 * that would miss the copy and upload it again, so the first drain waits
 * until the newest intent is SETTLE_SECONDS old. */
static void
settle_after_crash(struct worker_ctx *wc)
{
	struct timespec until;
	time_t newest = 0;

	if (store_intent_newest(wc->w.store, &newest) < 0 || newest == 0 ||
	    time(NULL) - newest >= SETTLE_SECONDS || time(NULL) < newest)
		return;
	log_msg(LOG_LVL_INFO, "settle_wait",
		"the agent stopped during an "
		"upload; waiting %lld s for the replica to finish it",
		(long long)(newest + SETTLE_SECONDS - time(NULL)));
	until = deadline_in((newest + SETTLE_SECONDS - time(NULL)) * 1000LL);
	sleep_until(wc->r, &until);
}

static void *
worker_main(void *arg)
{
	struct worker_ctx *wc = arg;

	if (wc->index == 0)
		settle_after_crash(wc);
	while (wait_for_work(wc))
		drain(wc);
	return NULL;
}

static struct worker_ctx *
worker_ctx_new(struct repl *r, size_t index, char **error_r)
{
	struct worker_ctx *wc = xcalloc(1, sizeof(*wc));

	wc->r = r;
	wc->index = index;
	wc->opt.cfg = r->cfg;
	wc->opt.password = r->cfg->admin_password;
	wc->opt.live = true;
	wc->run.opt = &wc->opt;
	wc->run.run_id = r->run_id;
	pthread_mutex_init(&wc->run.lock, NULL);
	imapc_params_from_config(&wc->run.params, r->cfg,
				 r->cfg->admin_password);
	wc->w.run = &wc->run;
	wc->w.conn_user = SIZE_MAX;
	if (store_open(r->cfg->state_dir, &wc->w.store, error_r) < 0 ||
	    load_run_users(wc, error_r) < 0)
		return wc; /* *error_r is set; worker_ctx_free() frees */
	store_set_autocheckpoint(wc->w.store, false);
	return wc;
}

static void
worker_ctx_free(struct worker_ctx *wc)
{
	if (wc == NULL)
		return;
	close_conns(wc);
	if (wc->w.store != NULL)
		store_close(&wc->w.store);
	md_users_free(&wc->run.users, wc->run.nusers);
	free(wc->run.user_failed);
	free(wc->run.dry_reset);
	free(wc->run.fatal);
	free(wc->run.first_error);
	pthread_mutex_destroy(&wc->run.lock);
	free(wc);
}

/* Record the "live" run that rejected messages are filed under. */
static int
start_run(struct repl *r, char **error_r)
{
	struct store *store = NULL;
	int ret = -1;

	if (store_open(r->cfg->state_dir, &store, error_r) < 0)
		return -1;
	if (store_run_start(store, "live", &r->run_id) < 0)
		*error_r = xasprintf("cannot record the run in %s: %s",
				     r->cfg->state_dir, store_error(store));
	else
		ret = 0;
	store_close(&store);
	return ret;
}

static void
finish_run(struct repl *r, unsigned long long rejected)
{
	struct store *store = NULL;
	char *error = NULL;
	struct store_run rec = {.id = r->run_id, .result = RUN_OK};

	if (r->run_id == 0)
		return;
	if (store_open(r->cfg->state_dir, &store, &error) < 0) {
		log_msg(LOG_LVL_WARN, "error", "%s", error);
		free(error);
		return;
	}
	rec.rejected = rejected;
	store_run_finish(store, &rec);
	store_close(&store);
}

static int
start_workers(struct repl *r, char **error_r)
{
	r->nworkers = r->cfg->workers > 0 ? r->cfg->workers : 1;
	r->workers = xcalloc(r->nworkers, sizeof(*r->workers));
	r->busy = xcalloc(r->nworkers, sizeof(*r->busy));
	for (size_t i = 0; i < r->nworkers; i++) {
		r->workers[i] = worker_ctx_new(r, i, error_r);
		if (*error_r != NULL)
			return -1;
	}
	for (size_t i = 0; i < r->nworkers; i++) {
		if (pthread_create(&r->workers[i]->thread, NULL, worker_main,
				   r->workers[i]) != 0) {
			*error_r = xstrdup("cannot start a replication worker");
			return -1;
		}
		r->nstarted++;
	}
	return 0;
}

/* Public interface */

int
repl_start(const struct config *cfg, repl_notify_fn *notify_fn,
	   void *notify_ctx, struct repl **repl_r, char **error_r)
{
	return repl_start_held(cfg, NULL, notify_fn, notify_ctx, repl_r,
			       error_r);
}

int
repl_start_held(const struct config *cfg, const char *why,
		repl_notify_fn *notify_fn, void *notify_ctx,
		struct repl **repl_r, char **error_r)
{
	struct repl *r = xcalloc(1, sizeof(*r));

	*error_r = NULL;
	r->cfg = cfg;
	r->notify = notify_fn;
	r->notify_ctx = notify_ctx;
	r->enabled = why == NULL;
	if (why != NULL)
		snprintf(r->stats.waiting_for, sizeof(r->stats.waiting_for),
			 "%s", why);
	r->stats.waiting = why != NULL;
	r->lock_fd = -1;
	r->backoff = 1;
	r->kick_gen = 1;
	pthread_mutex_init(&r->lock, NULL);
	pthread_cond_init(&r->cond, NULL);
	r->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (r->wake_fd < 0) {
		*error_r = xasprintf("eventfd: %s", strerror(errno));
		goto fail;
	}
	r->watch = watch_new(cfg, error_r);
	if (r->watch == NULL || start_run(r, error_r) < 0 ||
	    start_workers(r, error_r) < 0)
		goto fail;
	if (pthread_create(&r->watcher, NULL, watcher_main, r) != 0) {
		*error_r = xstrdup("cannot start the Maildir watcher");
		goto fail;
	}
	r->watcher_started = true;
	log_msg(LOG_LVL_INFO, "repl_start",
		"watching %s for changes with "
		"%zu workers",
		cfg->maildir_root, r->nworkers);
	*repl_r = r;
	return 0;
fail:
	repl_stop(&r);
	return -1;
}

void
repl_stop(struct repl **rp)
{
	struct repl *r = *rp;
	unsigned long long rejected = 0;
	uint64_t one = 1;

	if (r == NULL)
		return;
	pthread_mutex_lock(&r->lock);
	r->stopping = true;
	pthread_cond_broadcast(&r->cond);
	pthread_mutex_unlock(&r->lock);
	if (r->wake_fd >= 0 && write(r->wake_fd, &one, sizeof(one)) < 0)
		log_msg(LOG_LVL_WARN, "error", "cannot wake the watcher: %s",
			strerror(errno));
	if (r->watcher_started)
		pthread_join(r->watcher, NULL);
	for (size_t i = 0; i < r->nstarted; i++)
		pthread_join(r->workers[i]->thread, NULL);
	for (size_t i = 0; i < r->nworkers; i++) {
		if (r->workers[i] != NULL)
			rejected += r->workers[i]->w.counts.rejected;
		worker_ctx_free(r->workers[i]);
		free(r->busy[i]);
	}
	free(r->workers);
	free(r->busy);
	free(r->failing);
	finish_run(r, rejected);
	watch_free(&r->watch);
	if (r->wake_fd >= 0)
		close(r->wake_fd);
	if (r->lock_fd >= 0)
		close(r->lock_fd);
	pthread_mutex_destroy(&r->lock);
	pthread_cond_destroy(&r->cond);
	free(r);
	*rp = NULL;
}

void
repl_hold(struct repl *r)
{
	pthread_mutex_lock(&r->lock);
	r->held = true;
	pthread_cond_broadcast(&r->cond);
	while (r->draining > 0 && !r->stopping)
		pthread_cond_wait(&r->cond, &r->lock);
	pthread_mutex_unlock(&r->lock);
}

void
repl_release(struct repl *r)
{
	pthread_mutex_lock(&r->lock);
	r->held = false;
	kick_locked(r);
	pthread_mutex_unlock(&r->lock);
}

void
repl_set_enabled(struct repl *r, bool enabled, const char *why)
{
	bool was;

	pthread_mutex_lock(&r->lock);
	was = r->enabled;
	r->enabled = enabled;
	kick_locked(r);
	pthread_mutex_unlock(&r->lock);
	if (!enabled)
		set_waiting(r, why);
	else if (!was)
		clear_waiting(r);
}

void
repl_reconcile(struct repl *r)
{
	uint64_t one = 1;

	pthread_mutex_lock(&r->lock);
	r->reconcile = true;
	pthread_mutex_unlock(&r->lock);
	if (write(r->wake_fd, &one, sizeof(one)) < 0)
		log_msg(LOG_LVL_WARN, "error", "cannot wake the watcher: %s",
			strerror(errno));
}

void
repl_get_stats(struct repl *r, struct repl_stats *stats_r)
{
	long long now = time(NULL);

	pthread_mutex_lock(&r->lock);
	*stats_r = r->stats;
	stats_r->applied_last_min = 0;
	for (size_t i = 0; i < 60; i++) {
		if (now - r->second_of[i] < 60)
			stats_r->applied_last_min += r->applied_in[i];
	}
	pthread_mutex_unlock(&r->lock);
}
