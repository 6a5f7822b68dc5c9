/* mailrepld: the agent.
 *
 *   mailrepld [-c FILE] [-f] [--version] [--help]
 *
 * The main thread starts the services of the configured mode, then blocks
 * in sigwait(): SIGHUP reloads the configuration, SIGTERM and SIGINT stop
 * the agent. Every other thread runs with these signals blocked. */
#include <config.h>

#include "cfg.h"
#include "ctl_server.h"
#include "daemon.h"
#include "log.h"
#include "maildir.h"
#include "master.h"
#include "util.h"

#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXIT_USAGE 64
#define EXIT_CONFIG 78 /* EX_CONFIG of sysexits.h */

struct agent {
	struct config *cfg; /* the configuration in effect */
	char *config_path;  /* its absolute path, for the HOLDS-MAIL check */
	struct ctl_server *ctl;
	struct master *master; /* master mode only */
	char *pidfile;
	int ready_fd; /* start-up pipe to the parent, or -1 */
	bool foreground;
};

static void
usage(FILE *out)
{
	fprintf(out,
		"Usage: mailrepld [-c FILE] [-f]\n"
		"\n"
		"The mailrepl agent. It serves the local control socket in\n"
		"every mode, and TCP 2005 in replica mode.\n"
		"\n"
		"Options:\n"
		"  -c FILE        configuration file (default %s)\n"
		"  -f             stay in the foreground, log to stderr too\n"
		"  -h, --help     show this help\n"
		"  -V, --version  print the version\n"
		"\n"
		"Signals: SIGHUP reloads the configuration and reopens the\n"
		"log file; SIGTERM and SIGINT stop the agent.\n"
		"Exit codes: 0 stopped by a signal, 1 start-up failed,\n"
		"64 usage error, 78 invalid configuration.\n",
		CONFIG_DEFAULT_PATH);
}

/* INIT BEGIN's HOLDS-MAIL check. IMAP offers no way to list a server's
 * users, so the replica looks at its own mail store instead: [maildir]
 * root and user_path, which on a replica name where its Dovecot keeps
 * mail. It reads the configuration file itself because it runs on a
 * connection thread while the main thread may be replacing the agent's
 * configuration. */
static int
replica_holds_mail(void *context)
{
	struct config *cfg = NULL;
	char *error = NULL;
	int holds;

	if (config_load(context, &cfg, &error) < 0) {
		free(error);
		return -1;
	}
	holds = md_tree_holds_mail(cfg);
	config_free(&cfg);
	return holds;
}

/* Start what cfg->mode needs. ctl_server_start() itself binds the TCP
 * listener when the mode is replica. */
static int
start_services(struct agent *a, const struct config *cfg, char **error_r)
{
	/* TODO: master mode does not watch the Maildir yet: it runs the
	 * initial replication and exchanges status with the replica. */
	if (ctl_server_start(cfg, &a->ctl, error_r) < 0)
		return -1;
	if (cfg->mode == CFG_MODE_REPLICA)
		ctl_server_set_holds_mail(a->ctl, replica_holds_mail,
					  a->config_path);
	if (cfg->mode == CFG_MODE_MASTER &&
	    master_start(cfg, &a->master, error_r) < 0) {
		ctl_server_stop(&a->ctl);
		return -1;
	}
	return 0;
}

static void
stop_services(struct agent *a)
{
	master_stop(&a->master);
	if (a->ctl != NULL)
		ctl_server_stop(&a->ctl);
}

/* Switch the agent from a->cfg->mode to next->mode, the only place where
 * the mode changes: stop the services of the old mode, start those of
 * the new one, and log "old -> new". Returns 0; -1 with *error_r when
 * the new mode's services failed and the old ones run again; -2 with
 * *error_r when neither could be started. */
static int
change_mode(struct agent *a, const struct config *next, char **error_r)
{
	const char *from = cfg_mode_name(a->cfg->mode);
	const char *to = cfg_mode_name(next->mode);
	struct logline *line;
	char *again = NULL, *text;

	stop_services(a);
	if (start_services(a, next, error_r) < 0) {
		if (start_services(a, a->cfg, &again) == 0)
			return -1;
		free(*error_r);
		*error_r = xasprintf("cannot start mode %s, and mode %s "
				     "again failed: %s",
				     to, from, again);
		free(again);
		return -2;
	}

	line = log_begin(LOG_LVL_INFO, "mode_change");
	log_str(line, "old", from);
	log_str(line, "new", to);
	text = xasprintf("%s -> %s", from, to);
	log_str(line, "msg", text);
	log_end(line);
	free(text);
	return 0;
}

static void
log_reload_failed(const char *error)
{
	log_msg(LOG_LVL_ERROR, "reload_failed",
		"%s (the agent keeps the previous configuration)", error);
}

/* Reopen the log file, or open the one that next names when the path
 * changed. A failure keeps the current file and is logged. */
/* Whether to log to syslog too; set at start. Under systemd with -f,
 * stderr already goes to the journal (systemd sets JOURNAL_STREAM then),
 * and syslog would put every line there a second time. */
static bool log_to_syslog = true;

static void
reopen_log(const struct config *cur, const struct config *next)
{
	char *error = NULL;
	int r;

	if (next != NULL && strcmp(next->log_file, cur->log_file) != 0)
		r = log_open(next->log_file, log_to_syslog, "mailrepld",
			     &error);
	else
		r = log_reopen(&error);
	if (r < 0) {
		log_reload_failed(error);
		free(error);
	}
}

/* Apply next to the running services; see change_mode() for the
 * return values. */
static int
apply_config(struct agent *a, const struct config *next, char **error_r)
{
	if (next->mode != a->cfg->mode)
		return change_mode(a, next, error_r);
	/* The replication thread reads the new file when it starts. */
	if (a->master != NULL) {
		master_stop(&a->master);
		if (master_start(next, &a->master, error_r) < 0)
			return -1;
	}
	return ctl_server_reload(a->ctl, next, error_r);
}

/* Handle SIGHUP: load the configuration again and apply it, or keep the
 * old one when the file is invalid. Returns -1 only when the agent
 * cannot go on because no control server runs. */
static int
reload(struct agent *a)
{
	struct config *next = NULL;
	struct logline *line;
	char *error = NULL;
	int r;

	if (config_load(a->cfg->path, &next, &error) < 0) {
		reopen_log(a->cfg, NULL);
		log_reload_failed(error);
		free(error);
		return 0;
	}
	reopen_log(a->cfg, next);

	r = apply_config(a, next, &error);
	if (r < 0) {
		if (r == -1)
			log_reload_failed(error);
		else
			log_msg(LOG_LVL_ERROR, "reload_failed", "%s", error);
		free(error);
		config_free(&next);
		return r == -1 ? 0 : -1;
	}

	config_free(&a->cfg);
	a->cfg = next;
	line = log_begin(LOG_LVL_INFO, "reload");
	log_str(line, "config", a->cfg->path);
	log_str(line, "mode", cfg_mode_name(a->cfg->mode));
	log_end(line);
	return 0;
}

/* Report a start-up failure to the process that started the agent: the
 * waiting parent, or stderr in the foreground. The log also gets it when
 * it is open already. */
static void
fail_start(struct agent *a, const char *error, bool log_open)
{
	if (log_open)
		log_msg(LOG_LVL_ERROR, "agent_start_failed", "%s", error);
	if (a->ready_fd >= 0) {
		daemon_ready(a->ready_fd, error);
		a->ready_fd = -1;
	} else if (!log_open || !a->foreground)
		fprintf(stderr, "mailrepld: %s\n", error);
}

static int
open_agent_log(struct agent *a)
{
	char *error = NULL, *msg;

	log_to_syslog = !a->foreground || getenv("JOURNAL_STREAM") == NULL;
	if (log_open(a->cfg->log_file, log_to_syslog, "mailrepld", &error) <
	    0) {
		msg = xasprintf("%s; set [general] log_file in %s to a "
				"writable path",
				error, a->cfg->path);
		fail_start(a, msg, false);
		free(msg);
		free(error);
		return -1;
	}
	if (a->foreground) {
		log_set_stderr(true);
		log_set_stderr_level(LOG_LVL_INFO);
	}
	return 0;
}

static int
take_pidfile(struct agent *a)
{
	char *error = NULL;
	pid_t other = 0;
	int r;

	a->pidfile = daemon_pidfile_path(a->cfg);
	r = daemon_pidfile_write(a->pidfile, &other, &error);
	if (r == -2)
		error = xasprintf("mailrepld already runs as pid %ld (pid "
				  "file %s); stop it first",
				  (long)other, a->pidfile);
	if (r < 0) {
		fail_start(a, error, true);
		free(error);
		xfree(&a->pidfile);
	}
	return r < 0 ? -1 : 0;
}

static void
log_start(const struct agent *a)
{
	struct logline *line = log_begin(LOG_LVL_INFO, "agent_start");

	log_str(line, "mode", cfg_mode_name(a->cfg->mode));
	log_int(line, "pid", (long long)getpid());
	log_str(line, "version", PACKAGE_VERSION);
	log_str(line, "config", a->cfg->path);
	log_end(line);
}

/* Start the agent, serve until SIGTERM or SIGINT, and stop it. Returns
 * the exit code. */
static int
run(struct agent *a, const sigset_t *signals)
{
	char *error = NULL;
	bool started = false;
	int code = 1, sig;

	if (open_agent_log(a) < 0)
		return 1;
	if (take_pidfile(a) < 0)
		goto out;
	if (start_services(a, a->cfg, &error) < 0) {
		fail_start(a, error, true);
		free(error);
		goto out;
	}
	log_start(a);
	started = true;
	daemon_ready(a->ready_fd, NULL);
	a->ready_fd = -1;

	for (;;) {
		sig = daemon_wait_signal(signals);
		if (sig != SIGHUP)
			break;
		if (reload(a) < 0)
			goto out;
	}
	log_msg(LOG_LVL_INFO, "agent_stop", "stopped by %s",
		sig == SIGTERM ? "SIGTERM" : "SIGINT");
	code = 0;
out:
	/* A start that failed before the services ran logged
	 * agent_start_failed, and agent_stop would suggest that a running
	 * agent stopped. */
	if (code != 0 && started)
		log_msg(LOG_LVL_ERROR, "agent_stop", "stopped after an error");
	stop_services(a);
	if (a->pidfile != NULL)
		daemon_pidfile_remove(a->pidfile);
	return code;
}

/* Parse the command line into a; returns -1 to exit with *code_r. */
static int
parse_args(int argc, char **argv, const char **config_r, bool *fg_r,
	   int *code_r)
{
	static const struct option options[] = {
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	int c;

	while ((c = getopt_long(argc, argv, "c:fhV", options, NULL)) != -1) {
		switch (c) {
		case 'c':
			*config_r = optarg;
			break;
		case 'f':
			*fg_r = true;
			break;
		case 'h':
			usage(stdout);
			*code_r = 0;
			return -1;
		case 'V':
			printf("mailrepld %s\n", PACKAGE_VERSION);
			*code_r = 0;
			return -1;
		default:
			*code_r = EXIT_USAGE;
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr,
			"mailrepld: unexpected argument %s; see "
			"mailrepld --help\n",
			argv[optind]);
		*code_r = EXIT_USAGE;
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	struct agent a = {.ready_fd = -1};
	const char *path = CONFIG_DEFAULT_PATH;
	char *error = NULL, *abs_path;
	sigset_t signals;
	int code;

	if (parse_args(argc, argv, &path, &a.foreground, &code) < 0)
		return code;

	/* The daemon runs in /, so SIGHUP must find the file by an
	 * absolute name. */
	abs_path = realpath(path, NULL);
	if (config_load(abs_path != NULL ? abs_path : path, &a.cfg, &error) <
	    0) {
		fprintf(stderr, "mailrepld: %s\n", error);
		free(error);
		free(abs_path);
		return EXIT_CONFIG;
	}
	a.config_path = xstrdup(a.cfg->path);
	free(abs_path);

	daemon_block_signals(&signals);
	if (!a.foreground && daemon_detach(&a.ready_fd, &error) < 0) {
		fprintf(stderr, "mailrepld: %s\n", error);
		free(error);
		config_free(&a.cfg);
		free(a.config_path);
		return 1;
	}
	code = run(&a, &signals);
	free(a.pidfile);
	free(a.config_path);
	config_free(&a.cfg);
	log_close();
	return code;
}
