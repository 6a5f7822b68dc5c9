/* The initial replication: the run, its lock and its worker threads. */
#include <config.h>
#include "sync_private.h"

#include "ctl_client.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* Seconds to give the replica to finish the commands of a client that
 * died: the server may still complete a command it has read in full (an
 * APPEND sent with LITERAL+, a DELETE) after the client is gone. Looking
 * at the replica before that would miss a landed copy and upload it
 * again, or see a folder that is about to vanish.
 * NOTE: a replica slower than this can still complete such a command
 * afterwards; the next run then repairs what it changed. */
#define SETTLE_SECONDS 5

/* Connection-class failures of one unit are retried this many times,
 * with a pause of SETTLE_SECONDS, then twice that, and so on. */
#define UNIT_ATTEMPTS 4

int
sync_lock(const char *state_dir, char **error_r)
{
	char *path = xasprintf("%s/lock", state_dir);
	int fd;

	if (mkdir(state_dir, 0700) < 0 && errno != EEXIST) {
		*error_r = xasprintf("cannot create state_dir %s: %s",
				     state_dir, strerror(errno));
		free(path);
		return -1;
	}
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		*error_r = xasprintf("cannot open lock file %s: %s", path,
				     strerror(errno));
		free(path);
		return -1;
	}
	free(path);
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int saved = errno;

		close(fd);
		if (saved == EWOULDBLOCK)
			return -2;
		*error_r = xasprintf("cannot lock %s/lock: %s", state_dir,
				     strerror(saved));
		return -1;
	}
	return fd;
}

int
sync_connect(struct sync_worker *w, size_t ui, struct mrerr *err)
{
	if (w->conn != NULL && w->conn_user == ui)
		return 0;
	imapc_free(&w->conn);
	w->conn = imapc_connect(&w->run->params, w->run->users[ui].name, err);
	if (w->conn == NULL) {
		w->conn_user = SIZE_MAX;
		return -1;
	}
	w->conn_user = ui;
	atomic_store(&w->run->connected_once, true);
	return 0;
}

void
sync_disconnect(struct sync_worker *w)
{
	imapc_free(&w->conn);
	w->conn_user = SIZE_MAX;
}

void
sync_note_error(struct sync_worker *w, const char *user, const char *folder,
		const struct mrerr *err)
{
	struct sync_run *run = w->run;
	struct logline *line = log_begin(LOG_LVL_ERROR, "error");

	log_str(line, "scope", mrerr_scope_name(err->scope));
	if (user != NULL)
		log_str(line, "user", user);
	if (folder != NULL)
		log_str(line, "folder", folder);
	log_str(line, "error", err->text);
	log_end(line);

	pthread_mutex_lock(&run->lock);
	if (run->first_error == NULL)
		run->first_error = xstrdup(err->text);
	if (err->scope == MRERR_CONFIG && run->fatal == NULL)
		run->fatal = xstrdup(err->text);
	pthread_mutex_unlock(&run->lock);
}

static bool
run_stopped(struct sync_run *run)
{
	bool stopped;

	pthread_mutex_lock(&run->lock);
	stopped = run->fatal != NULL;
	pthread_mutex_unlock(&run->lock);
	return stopped;
}

static void
log_retry(const char *user, const char *folder, int attempt_no,
	  const struct mrerr *err)
{
	struct logline *line = log_begin(LOG_LVL_WARN, "retry");

	log_str(line, "user", user);
	if (folder != NULL)
		log_str(line, "folder", folder);
	log_int(line, "attempt", attempt_no);
	log_str(line, "error", err->text);
	log_end(line);
}

/* Prepare user ui, or synchronise unit when it is not NULL, retrying
 * connection-class failures with a growing pause. */
static int
attempt(struct sync_worker *w, size_t ui, const struct sync_unit *unit)
{
	const char *user = w->run->users[ui].name;
	const char *folder = unit != NULL ? unit->folder.name : NULL;
	struct mrerr err;
	int r = -1;

	mrerr_clear(&err);
	for (int i = 0; i < UNIT_ATTEMPTS && !run_stopped(w->run); i++) {
		mrerr_clear(&err);
		if (i > 0)
			sleep(SETTLE_SECONDS << (i - 1));
		if (sync_connect(w, ui, &err) == 0) {
			r = unit != NULL ? sync_folder(w, unit, &err)
					 : sync_prepare_user(w, ui, &err);
			if (r == 0)
				return 0;
		} else if (err.scope == MRERR_CONNECTION &&
			   !atomic_load(&w->run->connected_once)) {
			/* No login has worked yet in this run: the replica is
			 * down or the port or TLS mode is wrong, and retrying
			 * user after user would only delay the error. */
			err.scope = MRERR_CONFIG;
			break;
		}
		if (err.scope != MRERR_CONNECTION)
			break;
		sync_disconnect(w);
		if (i + 1 < UNIT_ATTEMPTS)
			log_retry(user, folder, i + 1, &err);
	}
	if (err.scope == MRERR_NONE)
		return r;
	sync_note_error(w, user, folder, &err);
	if (err.scope == MRERR_CONNECTION)
		sync_disconnect(w);
	if (unit != NULL)
		w->counts.folder_errors++;
	return -1;
}

static void
mark_user_failed(struct sync_worker *w, size_t ui)
{
	pthread_mutex_lock(&w->run->lock);
	w->run->user_failed[ui] = true;
	pthread_mutex_unlock(&w->run->lock);
	w->counts.user_errors++;
}

static void
prepare_users(struct sync_worker *w)
{
	struct sync_run *run = w->run;
	size_t ui;

	for (;;) {
		pthread_mutex_lock(&run->lock);
		ui = run->next_user < run->nusers ? run->next_user++ : SIZE_MAX;
		pthread_mutex_unlock(&run->lock);
		if (ui == SIZE_MAX || run_stopped(run))
			return;
		if (attempt(w, ui, NULL) < 0)
			mark_user_failed(w, ui);
	}
}

static void
sync_units(struct sync_worker *w)
{
	struct sync_run *run = w->run;
	const struct sync_unit *unit;
	bool skip;

	for (;;) {
		pthread_mutex_lock(&run->lock);
		unit = run->next_unit < run->nunits
			       ? &run->units[run->next_unit++]
			       : NULL;
		skip = unit != NULL && run->user_failed[unit->user];
		pthread_mutex_unlock(&run->lock);
		if (unit == NULL || run_stopped(run))
			return;
		if (!skip)
			attempt(w, unit->user, unit);
		atomic_fetch_add(&run->progress.folders_done, 1);
	}
}

static void
add_counts(struct sync_counts *to, const struct sync_counts *from)
{
	const unsigned long long *src = (const unsigned long long *)from;
	unsigned long long *dst = (unsigned long long *)to;

	/* struct sync_counts holds only unsigned long long counters. */
	for (size_t i = 0; i < sizeof(*from) / sizeof(*src); i++)
		dst[i] += src[i];
}

/* One worker thread and the phase it runs: 1 users, 2 folders. */
struct worker_arg {
	struct sync_worker w;
	int phase;
	pthread_t thread;
};

static void *
worker_main(void *arg)
{
	struct worker_arg *a = arg;

	if (a->phase == 1)
		prepare_users(&a->w);
	else
		sync_units(&a->w);
	return NULL;
}

static int
run_phase(struct sync_run *run, struct worker_arg *workers, size_t n,
	  int phase)
{
	size_t started = 0;

	for (size_t i = 0; i < n; i++) {
		workers[i].phase = phase;
		if (pthread_create(&workers[i].thread, NULL, worker_main,
				   &workers[i]) != 0)
			break;
		started++;
	}
	/* With no thread at all, do the work here. */
	if (started == 0) {
		worker_main(&workers[0]);
		return 0;
	}
	for (size_t i = 0; i < started; i++)
		pthread_join(workers[i].thread, NULL);
	return 0;
}

/* Load the users to replicate; every --user must exist on the master. */
static int
load_users(struct sync_run *run, char **error_r)
{
	const struct sync_options *opt = run->opt;

	if (md_select_users(opt->cfg, opt->users, opt->nusers, &run->users,
			    &run->nusers, error_r) < 0)
		return -1;
	run->user_failed = xcalloc(run->nusers ? run->nusers : 1,
				   sizeof(bool));
	run->dry_reset = xcalloc(run->nusers ? run->nusers : 1, sizeof(bool));
	return 0;
}

/* List every folder of every user as a unit, and count messages and
 * bytes for the progress line. */
static void
build_units(struct sync_run *run)
{
	size_t cap = 0;

	for (size_t ui = 0; ui < run->nusers; ui++) {
		struct md_folder *folders;
		size_t nfolders;
		struct md_stats stats = {0};
		char *error = NULL;

		if (md_list_folders(run->users[ui].path, &folders, &nfolders,
				    &stats, &error) < 0) {
			log_msg(LOG_LVL_ERROR, "error", "user %s: %s",
				run->users[ui].name, error);
			free(error);
			run->user_failed[ui] = true;
			run->counts.user_errors++;
			continue;
		}
		run->counts.folders += nfolders;
		for (size_t f = 0; f < nfolders; f++) {
			run->units = xgrow(run->units, &cap, run->nunits + 1,
					   sizeof(*run->units));
			run->units[run->nunits].user = ui;
			run->units[run->nunits].folder = folders[f];
			run->nunits++;
		}
		free(folders); /* the names and paths moved to the units */
	}
	atomic_store(&run->progress.folders_total, run->nunits);
}

/* Count messages and bytes up front so the progress line has an ETA. */
static void
count_totals(struct sync_run *run)
{
	for (size_t i = 0; i < run->nunits; i++) {
		struct md_message *msgs;
		size_t n;
		struct md_stats stats = {0};
		char *error = NULL;

		if (md_scan_folder(&run->units[i].folder,
				   run->users[run->units[i].user].name, &msgs,
				   &n, &stats, &error) < 0) {
			free(error);
			continue;
		}
		atomic_fetch_add(&run->progress.messages_total, n);
		atomic_fetch_add(&run->progress.bytes_total, stats.bytes);
		md_messages_free(&msgs, n);
	}
}

static int
result_code(const struct sync_run *run, enum store_run_result *result_r)
{
	const struct sync_counts *c = &run->counts;

	if (run->fatal != NULL || c->user_errors > 0 || c->folder_errors > 0) {
		*result_r = RUN_FAILED;
		return SYNC_EXIT_FAILED;
	}
	if (c->rejected > 0 || c->skipped > 0) {
		*result_r = RUN_REJECTED;
		return SYNC_EXIT_PARTIAL;
	}
	*result_r = RUN_OK;
	return SYNC_EXIT_OK;
}

static void
log_run_end(const struct sync_run *run, enum store_run_result result,
	    long long ms)
{
	const struct sync_counts *c = &run->counts;
	struct logline *line = log_begin(
		result == RUN_OK ? LOG_LVL_INFO : LOG_LVL_WARN, "run_end");

	log_str(line, "result", store_run_result_name(result));
	log_int(line, "users", (long long)c->users);
	log_int(line, "folders", (long long)c->folders);
	log_int(line, "messages", (long long)c->messages);
	log_int(line, "uploaded", (long long)c->uploaded);
	log_int(line, "adopted", (long long)c->adopted);
	log_int(line, "expunged", (long long)c->expunged);
	log_int(line, "flag_updates", (long long)c->flag_updates);
	log_int(line, "rejected", (long long)c->rejected);
	log_int(line, "skipped", (long long)c->skipped);
	log_int(line, "ms", ms);
	if (run->opt->dry_run)
		log_str(line, "dry_run", "yes");
	log_end(line);
}

static void
record_run(struct store *store, const struct sync_run *run,
	   enum store_run_result result)
{
	const struct sync_counts *c = &run->counts;
	struct store_run rec = {
		.id = run->run_id,
		.finished = time(NULL),
		.result = result,
		.folders = c->folders,
		.messages = c->messages,
		.bytes = c->bytes,
		.uploaded = c->uploaded,
		.adopted = c->adopted,
		.expunged = c->expunged,
		.flag_updates = c->flag_updates,
		.rejected = c->rejected,
		.skipped = c->skipped,
		.error = run->fatal != NULL ? run->fatal : run->first_error,
	};

	if (store_run_finish(store, &rec) < 0)
		log_msg(LOG_LVL_ERROR, "error", "cannot record the run: %s",
			store_error(store));
}

/* After a crash, wait until the commands the dead process sent have had
 * time to complete on the replica. A run killed while resetting or
 * uploading leaves an interrupted run record; an APPEND that failed in a
 * live run leaves a recent intent. */
static void
settle_interrupted_run(struct store *store)
{
	struct store_run last;
	bool found = false, interrupted;
	time_t newest = 0;
	long long wait = 0;

	interrupted = store_run_last(store, "init", &last, &found) == 0 &&
		      found && last.result == RUN_INTERRUPTED;
	if (found)
		store_run_clear(&last);
	if (interrupted)
		wait = SETTLE_SECONDS;
	else if (store_intent_newest(store, &newest) == 0 && newest != 0)
		wait = SETTLE_SECONDS - (time(NULL) - newest);
	if (wait > SETTLE_SECONDS) /* the clock went back */
		wait = SETTLE_SECONDS;
	if (wait <= 0)
		return;
	log_msg(LOG_LVL_INFO, "settle_wait",
		"the previous run was interrupted; waiting %lld s for the "
		"replica to finish its last commands", wait);
	sleep((unsigned)wait);
}

/* Before anything is pushed, the replica's agent must confirm over the
 * control channel that it is a replica bound to this master. With
 * [master] control_port = 0 there is no agent to ask. */
static int
negotiate(const struct sync_options *opt, struct ctl_client **ctl_r,
	  char **error_r)
{
	struct mrerr err;
	char *id;
	int ret = -1;

	*ctl_r = NULL;
	if (opt->cfg->control_port == 0 || opt->dry_run)
		return 0;
	mrerr_clear(&err);
	*ctl_r = ctl_client_connect(opt->cfg, opt->password, &err);
	if (*ctl_r == NULL) {
		*error_r = xstrdup(err.text);
		return -1;
	}
	id = ctl_client_master_id();
	if (ctl_client_bind(*ctl_r, id, opt->takeover, &err) == 0 &&
	    ctl_client_init_begin(*ctl_r, id, &err) == 0)
		ret = 0;
	else
		*error_r = xstrdup(err.text);
	free(id);
	if (ret < 0)
		ctl_client_free(ctl_r);
	return ret;
}

/* Tell the replica's agent how the run ended; it records it too. */
static void
report_end(struct ctl_client *ctl, const struct sync_counts *c,
	   enum store_run_result result)
{
	const char *name = result == RUN_OK	    ? "ok"
			   : result == RUN_REJECTED ? "rejected"
						    : "failed";
	struct mrerr err;

	if (ctl == NULL)
		return;
	mrerr_clear(&err);
	if (ctl_client_init_end(ctl, name, c->uploaded + c->adopted,
				c->uploaded_bytes, c->rejected, time(NULL),
				&err) < 0)
		log_msg(LOG_LVL_WARN, "error", "%s", err.text);
}

static void
run_workers(struct sync_run *run)
{
	size_t n = run->opt->cfg->workers;
	struct worker_arg *workers = xcalloc(n, sizeof(*workers));
	char *error = NULL;

	for (size_t i = 0; i < n; i++) {
		workers[i].w.run = run;
		workers[i].w.conn_user = SIZE_MAX;
		if (store_open(run->opt->cfg->state_dir, &workers[i].w.store,
			       &error) < 0) {
			run->fatal = error;
			goto out;
		}
	}
	run_phase(run, workers, n, 1);
	run_phase(run, workers, n, 2);

out:
	for (size_t i = 0; i < n; i++) {
		imapc_free(&workers[i].w.conn);
		if (workers[i].w.store != NULL)
			store_close(&workers[i].w.store);
		add_counts(&run->counts, &workers[i].w.counts);
	}
	free(workers);
}

static void
run_free(struct sync_run *run)
{
	for (size_t i = 0; i < run->nunits; i++) {
		free(run->units[i].folder.name);
		free(run->units[i].folder.path);
	}
	free(run->units);
	md_users_free(&run->users, run->nusers);
	free(run->user_failed);
	free(run->dry_reset);
	free(run->fatal);
	free(run->first_error);
	pthread_mutex_destroy(&run->lock);
}

int
sync_init(const struct sync_options *opt, struct sync_counts *counts_r,
	  char **error_r)
{
	struct sync_run run = {.opt = opt};
	struct store *store = NULL;
	struct ctl_client *ctl = NULL;
	struct progress_display *display = NULL;
	enum store_run_result result = RUN_FAILED;
	long long started = monotonic_ms();
	int lock_fd, code = SYNC_EXIT_FAILED;

	*error_r = NULL;
	pthread_mutex_init(&run.lock, NULL);
	imapc_params_from_config(&run.params, opt->cfg, opt->password);
	lock_fd = sync_lock(opt->cfg->state_dir, error_r);
	if (lock_fd == -2) {
		*error_r = xasprintf("another initial replication or the "
				     "agent holds the lock in %s; try again "
				     "when it has finished",
				     opt->cfg->state_dir);
		code = SYNC_EXIT_LOCKED;
		goto out;
	}
	if (lock_fd < 0 || store_open(opt->cfg->state_dir, &store, error_r) < 0)
		goto out;
	if (load_users(&run, error_r) < 0 || negotiate(opt, &ctl, error_r) < 0)
		goto out;
	settle_interrupted_run(store);
	if (!opt->dry_run && store_run_start(store, "init", &run.run_id) < 0) {
		*error_r = xasprintf("cannot record the run in %s: %s",
				     opt->cfg->state_dir, store_error(store));
		goto out;
	}
	log_msg(LOG_LVL_INFO, "run_start", "initial replication of %zu users "
		"to %s%s", run.nusers, opt->cfg->replica_host,
		opt->dry_run ? " (dry run)" : "");

	run.counts.users = run.nusers;
	build_units(&run);
	if (opt->progress)
		count_totals(&run);
	display = progress_start(&run.progress, STDERR_FILENO, opt->progress);
	run_workers(&run);
	progress_stop(&display);

	/* A dry run leaves the map as it is, so the second phase sees each
	 * move it reported as an expunge plus an upload. */
	if (opt->dry_run) {
		run.counts.uploaded -= run.counts.moved;
		run.counts.expunged -= run.counts.moved;
	}
	code = result_code(&run, &result);
	log_run_end(&run, result, monotonic_ms() - started);
	if (!opt->dry_run)
		record_run(store, &run, result);
	report_end(ctl, &run.counts, result);
	if (code == SYNC_EXIT_FAILED)
		*error_r = xstrdup(run.fatal != NULL ? run.fatal
				   : run.first_error != NULL
					   ? run.first_error
					   : "some users or folders failed");
out:
	if (counts_r != NULL)
		*counts_r = run.counts;
	ctl_client_free(&ctl);
	if (store != NULL)
		store_close(&store);
	if (lock_fd >= 0)
		close(lock_fd);
	run_free(&run);
	return code;
}
