/* The master agent's replication thread. */
#include <config.h>
#include "master.h"

#include "alert.h"
#include "ctl_client.h"
#include "log.h"
#include "metrics.h"
#include "repl.h"
#include "status.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Seconds between two status exchanges with the replica's agent. */
#define STATUS_INTERVAL 10
/* Maximum pause in seconds between two attempts to reach the replica's
 * agent. */
#define BACKOFF_MAX 60

struct master {
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stopping;
	pid_t child; /* a running "mailrepl init", or 0 */
	char *config_path;
	struct config *cfg;
	struct repl *repl;
	char *last_error;
	long long last_error_at;

	/* The status record; guarded by lock too. */
	pthread_t status_thread;
	bool status_started;
	pthread_cond_t status_wake;
	bool status_dirty;
	long long started;
	char peer_state[16];
	long long peer_since;
};

static bool
stopping(struct master *m)
{
	bool stop;

	pthread_mutex_lock(&m->lock);
	stop = m->stopping;
	pthread_mutex_unlock(&m->lock);
	return stop;
}

/* Sleep for seconds, or until master_stop() wakes the thread. */
static void
pause_for(struct master *m, unsigned seconds)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += seconds;
	pthread_mutex_lock(&m->lock);
	while (!m->stopping &&
	       pthread_cond_timedwait(&m->wake, &m->lock, &until) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&m->lock);
}

/* Tell the status thread that a figure changed. */
static void
status_changed(void *ctx)
{
	struct master *m = ctx;

	pthread_mutex_lock(&m->lock);
	m->status_dirty = true;
	pthread_cond_signal(&m->status_wake);
	pthread_mutex_unlock(&m->lock);
}

static void
set_peer_state(struct master *m, const char *state)
{
	pthread_mutex_lock(&m->lock);
	if (strcmp(m->peer_state, state) != 0) {
		snprintf(m->peer_state, sizeof(m->peer_state), "%s", state);
		m->peer_since = time(NULL);
	}
	pthread_mutex_unlock(&m->lock);
	status_changed(m);
}

static void
set_last_error(struct master *m, const char *text)
{
	pthread_mutex_lock(&m->lock);
	free(m->last_error);
	m->last_error = text != NULL ? xstrdup(text) : NULL;
	m->last_error_at = time(NULL);
	pthread_mutex_unlock(&m->lock);
}

/* Whether no initial replication has succeeded for this state store. A
 * run that is still going belongs to someone else and is left alone. */
static bool
need_init(const struct config *cfg)
{
	struct store *store = NULL;
	struct store_run run;
	char *error = NULL;
	bool found = false, need = false;

	if (store_open(cfg->state_dir, &store, &error) < 0) {
		log_msg(LOG_LVL_ERROR, "error", "%s", error);
		free(error);
		return false;
	}
	if (store_run_last(store, "init", &run, &found) == 0) {
		need = !found || run.result == RUN_FAILED ||
		       run.result == RUN_INTERRUPTED;
		if (found)
			store_run_clear(&run);
	}
	store_close(&store);
	return need;
}

/* The mailrepl command beside this program (the build tree), or the
 * installed one. Caller frees. */
static char *
cli_path(void)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n > 0) {
		char *slash, *path;

		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash != NULL) {
			*slash = '\0';
			path = xasprintf("%s/mailrepl", self);
			if (access(path, X_OK) == 0)
				return path;
			free(path);
		}
	}
	return xstrdup(BINDIR "/mailrepl");
}

/* Run "mailrepl -c FILE init" as a child process, so that stopping the
 * agent can end it with SIGTERM; a run ended that way resumes later. */
static void
run_init(struct master *m, const char *reason)
{
	char *cli = cli_path();
	int status = 0;
	pid_t pid;

	log_msg(LOG_LVL_INFO, "init_start",
		"starting the initial "
		"replication (%s)",
		reason);
	/* The worker lets go of the lock that the run takes. */
	repl_hold(m->repl);
	pid = fork();
	if (pid == 0) {
		sigset_t none;

		sigemptyset(&none);
		pthread_sigmask(SIG_SETMASK, &none, NULL);
		execl(cli, "mailrepl", "-c", m->config_path, "init",
		      (char *)NULL);
		_exit(127);
	}
	if (pid < 0) {
		log_msg(LOG_LVL_ERROR, "error", "cannot start %s: %s", cli,
			strerror(errno));
		free(cli);
		repl_release(m->repl);
		return;
	}
	pthread_mutex_lock(&m->lock);
	m->child = pid;
	pthread_mutex_unlock(&m->lock);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	pthread_mutex_lock(&m->lock);
	m->child = 0;
	pthread_mutex_unlock(&m->lock);
	/* The run's result changes the sync state and may call for an
	 * alert. */
	status_changed(m);

	log_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0 ? LOG_LVL_INFO
							      : LOG_LVL_WARN,
		"init_end", "%s exited with %d", cli,
		WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	free(cli);
	repl_release(m->repl);
}

/* One connection's life: bind, then initial replication when needed and
 * status exchanges until the connection fails or the agent stops.
 * Returns false when the replica refused this master. */
static bool
serve_replica(struct master *m, const struct config *cfg,
	      struct ctl_client *ctl)
{
	char *id = ctl_client_master_id();
	bool requested = false;
	struct mrerr err;

	mrerr_clear(&err);
	if (ctl_client_bind(ctl, id, false, &err) < 0) {
		log_msg(LOG_LVL_ERROR, "error", "%s", err.text);
		set_last_error(m, err.text);
		free(id);
		/* Only a rejection stops the pushing, because a broken
		 * connection does not show that the binding changed. */
		if (err.scope != MRERR_CONNECTION) {
			repl_set_enabled(m->repl, false,
					 "the replica's agent rejected this "
					 "master");
			set_peer_state(m, "refused");
		}
		return false;
	}
	free(id);
	repl_set_enabled(m->repl, true, NULL);
	set_peer_state(m, "connected");
	while (!stopping(m)) {
		char *last;
		struct repl_stats st;
		unsigned long long age = 0;
		int r;

		if (requested || need_init(cfg))
			run_init(m, requested ? "requested by the replica"
					      : "none has succeeded yet");
		if (stopping(m))
			break;
		pthread_mutex_lock(&m->lock);
		last = m->last_error != NULL ? xstrdup(m->last_error) : NULL;
		pthread_mutex_unlock(&m->lock);
		repl_get_stats(m->repl, &st);
		if (st.oldest_ms > 0 && time(NULL) > st.oldest_ms / 1000)
			age = (unsigned long long)(time(NULL) -
						   st.oldest_ms / 1000);
		if (last == NULL && st.last_error[0] != '\0')
			last = xstrdup(st.last_error);
		r = ctl_client_status(ctl, st.pending, age, st.last_applied,
				      last, &requested, &err);
		free(last);
		if (r < 0) {
			log_msg(LOG_LVL_WARN, "peer_down", "%s", err.text);
			set_peer_state(m, "down");
			break;
		}
		if (!requested)
			pause_for(m, STATUS_INTERVAL);
	}
	return true;
}

static void *
master_main(void *arg)
{
	struct master *m = arg;
	const struct config *cfg = m->cfg;
	unsigned backoff = 1;

	/* Without a control channel there is no agent to ask: run the
	 * initial replication when it is needed, and look again later. */
	while (cfg->control_port == 0 && !stopping(m)) {
		if (need_init(cfg))
			run_init(m, "none has succeeded yet");
		pause_for(m, BACKOFF_MAX);
	}
	while (!stopping(m)) {
		struct mrerr err;
		struct ctl_client *ctl;

		mrerr_clear(&err);
		ctl = ctl_client_connect(cfg, cfg->admin_password, &err);
		if (ctl == NULL) {
			log_msg(LOG_LVL_WARN, "peer_down",
				"%s; retrying in "
				"%u s",
				err.text, backoff);
			set_last_error(m, err.text);
			set_peer_state(m, "down");
			pause_for(m, backoff);
			backoff = backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX
							    : backoff * 2;
			continue;
		}
		log_msg(LOG_LVL_INFO, "peer_up",
			"connected to the replica's "
			"agent on %s:%u",
			cfg->replica_host, cfg->control_port);
		backoff = 1;
		if (!serve_replica(m, cfg, ctl))
			pause_for(m, BACKOFF_MAX);
		ctl_client_free(&ctl);
	}
	return NULL;
}

/* Fill rec from the replication figures and the last initial
 * replication, and judge the sync state. */
static void
collect(struct master *m, struct store *store, struct agent_record *rec)
{
	struct repl_stats st;
	struct status_input in = {.master = true, .agent_running = true};
	struct store_run run;
	bool found = false;
	long long now = time(NULL);

	repl_get_stats(m->repl, &st);
	if (store_run_last(store, "init", &run, &found) == 0 && found) {
		in.init_found = true;
		in.init_running = run.result == RUN_RUNNING;
		in.init_ok = run.result == RUN_OK || run.result == RUN_REJECTED;
		in.init_partial = run.result == RUN_REJECTED;
		store_run_clear(&run);
	}
	in.pending = st.pending;
	in.oldest_queued = st.oldest_ms / 1000;
	in.figures_at = now;
	in.out_of_sync_after = m->cfg->out_of_sync_after;

	memset(rec, 0, sizeof(*rec));
	rec->pid = getpid();
	rec->started = m->started;
	rec->updated = now;
	pthread_mutex_lock(&m->lock);
	snprintf(rec->peer_state, sizeof(rec->peer_state), "%s", m->peer_state);
	rec->peer_since = m->peer_since;
	pthread_mutex_unlock(&m->lock);
	rec->pending = st.pending;
	rec->oldest_queued = in.oldest_queued;
	rec->applied = st.applied;
	rec->last_applied = st.last_applied;
	snprintf(rec->last_user, sizeof(rec->last_user), "%s", st.last_user);
	snprintf(rec->last_folder, sizeof(rec->last_folder), "%s",
		 st.last_folder);
	rec->rate_per_min = st.applied_last_min;
	snprintf(rec->waiting_for, sizeof(rec->waiting_for), "%s",
		 st.waiting ? st.waiting_for : "");
	snprintf(rec->last_error, sizeof(rec->last_error), "%s", st.last_error);
	rec->last_error_at = st.last_error_at;
	/* A control-channel error (the replica's agent down or refusing)
	 * counts too, whichever came last. */
	pthread_mutex_lock(&m->lock);
	if (m->last_error != NULL && m->last_error_at >= rec->last_error_at) {
		snprintf(rec->last_error, sizeof(rec->last_error), "%s",
			 m->last_error);
		rec->last_error_at = m->last_error_at;
	}
	pthread_mutex_unlock(&m->lock);
	status_judge(&in, now, &rec->judgement);
}

static void
log_state_change(const struct status_judgement *was,
		 const struct status_judgement *now)
{
	struct logline *line;

	if (was->state == now->state)
		return;
	line = log_begin(now->level == STATUS_OK ? LOG_LVL_INFO : LOG_LVL_WARN,
			 "sync_state");
	log_str(line, "state", status_state_name(now->state));
	log_str(line, "was", status_state_name(was->state));
	if (now->reason[0] != '\0')
		log_str(line, "reason", now->reason);
	log_end(line);
}

/* Seconds between two looks at the state store when nothing changes:
 * an initial replication run by hand or from cron changes the state
 * without telling the agent, and its failure must still be alerted. */
#define STATUS_IDLE_CHECK 60

/* Wait for a change of the figures. While changes are pending, also wake
 * once a second, because time alone can make the state change; else once
 * every STATUS_IDLE_CHECK seconds. */
static bool
wait_status_change(struct master *m, bool pending)
{
	struct timespec until;
	bool stop;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += pending ? 1 : STATUS_IDLE_CHECK;
	pthread_mutex_lock(&m->lock);
	while (!m->stopping && !m->status_dirty &&
	       pthread_cond_timedwait(&m->status_wake, &m->lock, &until) !=
		       ETIMEDOUT)
		;
	m->status_dirty = false;
	stop = m->stopping;
	pthread_mutex_unlock(&m->lock);
	return !stop;
}

/* Create the metrics writer and the alerter that cfg configures. When the
 * alerter cannot start, the error is logged and replication goes on
 * without alerts. */
static void
start_reporting(const struct config *cfg, struct metrics **metrics_r,
		struct alert **alert_r)
{
	struct alert_options opt = {
		.url = cfg->alert_url,
		.mail_to = cfg->alert_mail_to,
		.mode = cfg_mode_name(cfg->mode),
		.after = cfg->alert_after,
	};
	char *error = NULL;

	*metrics_r = NULL;
	*alert_r = NULL;
	if (cfg->metrics_file != NULL)
		*metrics_r = metrics_new(cfg->metrics_file);
	if (cfg->alert_url != NULL && alert_start(&opt, alert_r, &error) < 0) {
		log_msg(LOG_LVL_ERROR, "error", "%s; no alerts are sent",
			error);
		free(error);
	}
}

/* Hand the judged record to the metrics file and the alerter. */
static void
report(struct master *m, struct store *store, const struct agent_record *rec,
       struct metrics *metrics, struct alert *alert)
{
	struct metrics_input in = {.rec = rec};
	struct repl_stats st;
	struct store_run run;
	bool found = false;

	if (metrics == NULL && alert == NULL)
		return;
	if (store_run_last(store, "init", &run, &found) == 0 && found)
		in.init = &run;
	repl_get_stats(m->repl, &st);
	in.errors = st.errors;
	metrics_write(metrics, &in);
	alert_update(alert, rec, in.init);
	if (found)
		store_run_clear(&run);
}

/* Keep <state_dir>/agent-status.json and the metrics file current,
 * writing at most four times a second during a burst, and send the
 * alerts that the state calls for. */
static void *
status_main(void *arg)
{
	struct master *m = arg;
	struct agent_record rec, last = {0};
	struct store *store = NULL;
	struct metrics *metrics = NULL;
	struct alert *alert = NULL;
	char *error = NULL;

	if (store_open(m->cfg->state_dir, &store, &error) < 0) {
		log_msg(LOG_LVL_ERROR, "error", "status: %s", error);
		free(error);
		return NULL;
	}
	start_reporting(m->cfg, &metrics, &alert);
	last.judgement.state = SYNC_STATE_UNKNOWN;
	do {
		collect(m, store, &rec);
		log_state_change(&last.judgement, &rec.judgement);
		if (rec.judgement.state != last.judgement.state)
			rec.judgement.since = rec.judgement.since != 0
						      ? rec.judgement.since
						      : rec.updated;
		else if (last.judgement.since != 0)
			rec.judgement.since = last.judgement.since;
		if (status_record_save(m->cfg->state_dir, &rec, &error) < 0) {
			log_msg(LOG_LVL_WARN, "error", "%s", error);
			xfree(&error);
		}
		report(m, store, &rec, metrics, alert);
		/* The replication threads leave the WAL to this one, so that
		 * none of their commits waits for a checkpoint's fsync. */
		if (store_checkpoint(store) < 0)
			log_msg(LOG_LVL_WARN, "error", "state store: %s",
				store_error(store));
		last = rec;
		usleep(250000);
	} while (wait_status_change(m, rec.pending > 0));
	alert_stop(&alert);
	metrics_free(&metrics);
	store_close(&store);
	return NULL;
}

int
master_start(const struct config *cfg, struct master **master_r, char **error_r)
{
	struct master *m = xcalloc(1, sizeof(*m));

	m->config_path = xstrdup(cfg->path);
	m->started = time(NULL);
	pthread_mutex_init(&m->lock, NULL);
	pthread_cond_init(&m->wake, NULL);
	pthread_cond_init(&m->status_wake, NULL);
	if (config_load(m->config_path, &m->cfg, error_r) < 0) {
		master_stop(&m);
		return -1;
	}
	snprintf(m->peer_state, sizeof(m->peer_state), "%s",
		 m->cfg->control_port == 0 ? "none" : "down");
	m->peer_since = m->started;
	/* With a control channel, nothing is pushed before the replica's
	 * agent confirms that it serves this master: a master that comes
	 * back after a failover must not write into its successor. */
	if (repl_start_held(m->cfg,
			    m->cfg->control_port != 0
				    ? "the replica's agent has not confirmed "
				      "this master yet"
				    : NULL,
			    status_changed, m, &m->repl, error_r) < 0) {
		master_stop(&m);
		return -1;
	}
	if (pthread_create(&m->status_thread, NULL, status_main, m) == 0)
		m->status_started = true;
	if (!m->status_started ||
	    pthread_create(&m->thread, NULL, master_main, m) != 0) {
		*error_r = xstrdup("cannot start the replication thread");
		master_stop(&m);
		return -1;
	}
	m->thread_started = true;
	*master_r = m;
	return 0;
}

void
master_stop(struct master **mp)
{
	struct master *m = *mp;

	if (m == NULL)
		return;
	pthread_mutex_lock(&m->lock);
	m->stopping = true;
	if (m->child > 0)
		kill(m->child, SIGTERM);
	pthread_cond_broadcast(&m->wake);
	pthread_cond_broadcast(&m->status_wake);
	pthread_mutex_unlock(&m->lock);
	if (m->thread_started)
		pthread_join(m->thread, NULL);
	if (m->status_started)
		pthread_join(m->status_thread, NULL);
	repl_stop(&m->repl);
	config_free(&m->cfg);
	pthread_mutex_destroy(&m->lock);
	pthread_cond_destroy(&m->wake);
	pthread_cond_destroy(&m->status_wake);
	free(m->config_path);
	free(m->last_error);
	free(m);
	*mp = NULL;
}
