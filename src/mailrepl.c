/* mailrepl: the command-line tool.
 *
 *   mailrepl [-c FILE] COMMAND [OPTIONS]
 */
#include <config.h>

#include "cfg.h"
#include "ctl_client.h"
#include "cfg_edit.h"
#include "daemon.h"
#include "log.h"
#include "log_cmd.h"
#include "status_cmd.h"
#include "store.h"
#include "sync.h"
#include "util.h"
#include "verify.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE 64

struct cli {
	const char *config_path;
	struct config *cfg;
	char **users;
	size_t nusers;
};

static void
usage(FILE *out)
{
	fprintf(out,
		"Usage: mailrepl [-c FILE] COMMAND [OPTIONS]\n"
		"\n"
		"Commands:\n"
		"  init      copy every mailbox of every user to the replica\n"
		"  verify    compare the master's Maildir with the replica\n"
		"  status    show the sync state of this server and its peer\n"
		"  log       print the replication log (-f follows it)\n"
		"  mode      show or switch the mode of this server\n"
		"\n"
		"Options:\n"
		"  -c FILE        configuration file (default %s)\n"
		"  -h, --help     show this help\n"
		"  -V, --version  print the version\n"
		"\n"
		"init [--user U]... [--reset-replica] [--takeover] [--yes]\n"
		"     [--dry-run] [--request]\n"
		"  --user U         only user U (repeatable)\n"
		"  --reset-replica  first empty these users' mailboxes on the\n"
		"                   replica (asks for confirmation, or --yes)\n"
		"  --takeover       bind a replica that serves another master\n"
		"                   to this one (asks for confirmation, or\n"
		"                   --yes)\n"
		"  --dry-run        change nothing, report what would be done\n"
		"  --request        on a replica: ask its master for a new\n"
		"                   initial replication\n"
		"  exit codes: 0 replica equals master, 1 failed, 2 done but\n"
		"  some messages were not replicated, 75 locked by another run\n"
		"\n"
		"verify [--user U]...\n"
		"  exit codes: 0 identical, 1 differences found, 3 error\n"
		"\n"
		"status [--json] [--peer]\n"
		"  --json  print one JSON object (schema in doc/status.md)\n"
		"  --peer  add the other side's view: on a master, ask the\n"
		"          replica's agent over the control channel; on a\n"
		"          replica, show the master's last STATUS figures\n"
		"  the first line is a Nagios/Icinga plugin line\n"
		"  exit codes (monitoring-plugin style): 0 OK (in sync or\n"
		"  standalone), 1 WARNING (an initial replication runs, or\n"
		"  --peer cannot reach the replica), 2 CRITICAL (never\n"
		"  initialized, out of sync for longer than\n"
		"  out_of_sync_after, or the master's agent is down),\n"
		"  3 UNKNOWN (the configuration or state cannot be read,\n"
		"  or no figures yet)\n"
		"\n"
		"log [-f] [-n LINES] [--user USER] [--level LEVEL]\n"
		"  -f             keep printing new lines as they are written;\n"
		"                 checks the file every 250 ms and follows it\n"
		"                 when logrotate renames or truncates it\n"
		"  -n LINES       start with the last LINES matching lines\n"
		"                 (default 20; 0 prints none)\n"
		"  --user USER    only lines whose user field is USER\n"
		"  --level LEVEL  only lines at LEVEL or above: debug, info,\n"
		"                 warn or error (the file holds info and up)\n"
		"\n"
		"mode [standalone|master|replica] [--yes]\n"
		"  without a mode: print the mode and whether the agent runs\n"
		"  with a mode: set [general] mode in the configuration file\n"
		"  and tell a running agent to reload (asks for confirmation,\n"
		"  or --yes)\n",
		CONFIG_DEFAULT_PATH);
}

/* getopt has printed what is wrong; point to the list of options. */
static int
usage_error(const char *command)
{
	fprintf(stderr, "mailrepl %s: see mailrepl --help for the options\n",
		command);
	return EXIT_USAGE;
}

static int
load_config(struct cli *cli)
{
	char *error = NULL;

	if (config_load(cli->config_path, &cli->cfg, &error) < 0) {
		fprintf(stderr, "mailrepl: %s\n", error);
		free(error);
		return -1;
	}
	return 0;
}

static int
open_log(struct cli *cli, bool tty)
{
	char *error = NULL;

	if (log_open(cli->cfg->log_file, false, "mailrepl", &error) < 0) {
		fprintf(stderr, "mailrepl: %s; set [general] log_file in %s "
			"to a writable path\n", error, cli->cfg->path);
		free(error);
		return -1;
	}
	/* On a terminal, warnings and errors show as they happen. Without
	 * one (cron), the command prints only its final error and summary,
	 * and nothing on success; every event is in the log file. */
	log_set_stderr(tty);
	log_set_stderr_level(LOG_LVL_WARN);
	return 0;
}

static bool
master_ready(const struct cli *cli)
{
	if (cli->cfg->replica_host == NULL || cli->cfg->admin_user == NULL ||
	    cli->cfg->admin_password == NULL) {
		fprintf(stderr, "mailrepl: %s does not name the replica: set "
			"[master] replica_host, admin_user and "
			"admin_password_file\n", cli->cfg->path);
		return false;
	}
	return true;
}

static bool
confirm(const char *question)
{
	char answer[16];

	fprintf(stderr, "%s [y/N] ", question);
	if (fgets(answer, sizeof(answer), stdin) == NULL)
		return false;
	return answer[0] == 'y' || answer[0] == 'Y';
}

static bool
confirm_reset(const struct cli *cli)
{
	char *question, *users = NULL;
	bool yes;

	for (size_t i = 0; i < cli->nusers; i++) {
		char *more = xasprintf("%s%s%s", users ? users : "",
				       users ? ", " : "", cli->users[i]);

		free(users);
		users = more;
	}
	question = xasprintf("Delete every message and folder of %s on the "
			     "replica %s before copying them again?",
			     users ? users : "ALL users",
			     cli->cfg->replica_host);
	yes = confirm(question);
	free(question);
	free(users);
	return yes;
}

/* A takeover makes the replica drop its bond to another master, which
 * then can no longer push to it. */
static bool
confirm_takeover(const struct cli *cli)
{
	char *question;
	bool yes;

	if (!isatty(STDIN_FILENO)) {
		fprintf(stderr, "mailrepl init: --takeover binds the replica "
			"%s to this master in place of its current one and "
			"needs confirmation; add --yes to run it without a "
			"terminal\n", cli->cfg->replica_host);
		return false;
	}
	question = xasprintf("Bind the replica %s to this master, in place "
			     "of the master it serves now?",
			     cli->cfg->replica_host);
	yes = confirm(question);
	free(question);
	if (!yes)
		fprintf(stderr, "mailrepl init: nothing was changed\n");
	return yes;
}

/* init --request on a replica: ask the master, through the local agent,
 * for a new initial replication. */
static int
request_init(struct cli *cli)
{
	struct ctl_client *c;
	struct mrerr err;
	int r;

	if (load_config(cli) < 0)
		return SYNC_EXIT_FAILED;
	if (cli->cfg->mode != CFG_MODE_REPLICA) {
		fprintf(stderr, "mailrepl init: --request is for a replica; "
			"%s is in %s mode\n", cli->cfg->path,
			cfg_mode_name(cli->cfg->mode));
		return SYNC_EXIT_FAILED;
	}
	mrerr_clear(&err);
	c = ctl_client_local(cli->cfg, &err);
	r = c != NULL ? ctl_client_command(c, "INIT REQUEST", &err) : -1;
	ctl_client_free(&c);
	if (r < 0) {
		fprintf(stderr, "mailrepl init: %s\n", err.text);
		return SYNC_EXIT_FAILED;
	}
	printf("asked the master for a new initial replication; it sees the "
	       "request at its next status exchange\n");
	return SYNC_EXIT_OK;
}

static void
print_counts(FILE *out, const struct sync_counts *c, const char *label)
{
	char messages[32], uploaded[32], adopted[32], expunged[32];

	util_format_count(c->messages, messages, sizeof(messages));
	util_format_count(c->uploaded, uploaded, sizeof(uploaded));
	util_format_count(c->adopted, adopted, sizeof(adopted));
	util_format_count(c->expunged, expunged, sizeof(expunged));
	fprintf(out,
		"%s: %llu users, %llu folders, %s messages (%.1f MB); "
		"uploaded %s, adopted %s, moved %llu, expunged %s, "
		"flag updates %llu, rejected %llu, skipped %llu\n",
		label, c->users, c->folders, messages, c->bytes / 1e6,
		uploaded, adopted, c->moved, expunged, c->flag_updates,
		c->rejected, c->skipped);
}

/* Add one --user value of init or verify. */
static void
add_user(struct cli *cli, const char *user)
{
	cli->users = xrealloc(cli->users, (cli->nusers + 1) * sizeof(char *));
	cli->users[cli->nusers++] = xstrdup(user);
}

static int
cmd_init(struct cli *cli, int argc, char **argv)
{
	static const struct option options[] = {
		{"user", required_argument, NULL, 'u'},
		{"reset-replica", no_argument, NULL, 'R'},
		{"takeover", no_argument, NULL, 'T'},
		{"request", no_argument, NULL, 'Q'},
		{"dry-run", no_argument, NULL, 'n'},
		{"yes", no_argument, NULL, 'y'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct sync_options opt = {0};
	struct sync_counts counts;
	bool tty = isatty(STDERR_FILENO), yes = false, request = false;
	char *error = NULL;
	int c, code;

	while ((c = getopt_long(argc, argv, "u:h", options, NULL)) != -1) {
		switch (c) {
		case 'u':
			add_user(cli, optarg);
			break;
		case 'R':
			opt.reset_replica = true;
			break;
		case 'T':
			opt.takeover = true;
			break;
		case 'Q':
			request = true;
			break;
		case 'n':
			opt.dry_run = true;
			break;
		case 'y':
			yes = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			return usage_error("init");
		}
	}
	if (optind < argc) {
		fprintf(stderr, "mailrepl init: unexpected argument %s\n",
			argv[optind]);
		return EXIT_USAGE;
	}
	if (request)
		return request_init(cli);
	if (load_config(cli) < 0 || !master_ready(cli))
		return SYNC_EXIT_FAILED;
	if (opt.dry_run) {
		/* A dry run changes nothing, its log included: the events it
		 * would write go to the terminal instead. */
		log_set_stderr(true);
		log_set_stderr_level(LOG_LVL_INFO);
	} else if (open_log(cli, tty) < 0) {
		return SYNC_EXIT_FAILED;
	}

	if (opt.reset_replica && !yes && !opt.dry_run) {
		if (!isatty(STDIN_FILENO)) {
			fprintf(stderr, "mailrepl init: --reset-replica "
				"deletes mail on the replica %s and needs "
				"confirmation; add --yes to run it without a "
				"terminal\n", cli->cfg->replica_host);
			return SYNC_EXIT_FAILED;
		}
		if (!confirm_reset(cli)) {
			fprintf(stderr, "mailrepl init: nothing was changed\n");
			return SYNC_EXIT_FAILED;
		}
	}

	if (opt.takeover && !yes && !opt.dry_run && !confirm_takeover(cli))
		return SYNC_EXIT_FAILED;

	opt.cfg = cli->cfg;
	opt.password = cli->cfg->admin_password;
	opt.users = cli->users;
	opt.nusers = cli->nusers;
	opt.progress = tty;
	code = sync_init(&opt, &counts, &error);
	if (code == SYNC_EXIT_LOCKED || (code == SYNC_EXIT_FAILED &&
					 counts.users == 0)) {
		fprintf(stderr, "mailrepl init: %s\n", error);
	} else if (code != SYNC_EXIT_OK || tty || opt.dry_run) {
		if (error != NULL)
			fprintf(stderr, "mailrepl init: %s\n", error);
		print_counts(code == SYNC_EXIT_OK ? stdout : stderr, &counts,
			     opt.dry_run		      ? "dry run"
			     : code == SYNC_EXIT_FAILED ? "init FAILED"
							: "init");
		if (code == SYNC_EXIT_PARTIAL)
			fprintf(stderr, "mailrepl init: some messages were "
				"not replicated; each is listed in %s "
				"(event=reject or event=skip)\n",
				cli->cfg->log_file);
	}
	free(error);
	return code;
}

static int
cmd_verify(struct cli *cli, int argc, char **argv)
{
	static const struct option options[] = {
		{"user", required_argument, NULL, 'u'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct verify_options opt = {0};
	struct verify_counts counts;
	char *error = NULL;
	int c, r;

	while ((c = getopt_long(argc, argv, "u:h", options, NULL)) != -1) {
		if (c == 'u') {
			add_user(cli, optarg);
		} else if (c == 'h') {
			usage(stdout);
			return 0;
		} else {
			return usage_error("verify");
		}
	}
	if (load_config(cli) < 0 || !master_ready(cli) ||
	    open_log(cli, isatty(STDERR_FILENO)) < 0)
		return 3;
	opt.cfg = cli->cfg;
	opt.password = cli->cfg->admin_password;
	opt.users = cli->users;
	opt.nusers = cli->nusers;
	r = verify_run(&opt, stdout, &counts, &error);
	if (r < 0) {
		fprintf(stderr, "mailrepl verify: %s\n", error);
		free(error);
		return 3;
	}
	printf("verify: %llu users, %llu folders, %llu messages compared, "
	       "%llu differences%s\n",
	       counts.users, counts.folders, counts.messages,
	       counts.differences, r == 0 ? " (replica equals master)" : "");
	if (counts.skipped > 0)
		printf("verify: %llu master files were unreadable or invalid "
		       "and not compared (see the log, event=skip)\n",
		       counts.skipped);
	return r;
}

/* The status command is in status_cmd.c. The configuration is loaded
 * here so that a file that cannot be read still gives an UNKNOWN result
 * in the format the monitoring system requested. */
static int
cmd_status(struct cli *cli, int argc, char **argv)
{
	struct status_options opts;
	char *error = NULL;
	int code;

	if (status_cmd_parse(argc, argv, &opts) < 0)
		return usage_error("status");
	if (opts.help) {
		usage(stdout);
		return 0;
	}
	if (config_load(cli->config_path, &cli->cfg, &error) < 0) {
		code = status_cmd_fail(&opts, error, stdout);
		free(error);
		return code;
	}
	return status_cmd_run(cli->cfg, &opts, stdout);
}

static int
cmd_log(struct cli *cli, int argc, char **argv)
{
	struct log_cmd_options opt;

	switch (log_cmd_parse(argc, argv, &opt)) {
	case LOG_CMD_HELP:
		usage(stdout);
		return 0;
	case LOG_CMD_USAGE:
		return usage_error("log");
	case LOG_CMD_RUN:
		break;
	}
	if (load_config(cli) < 0)
		return 1;
	return log_cmd_run(&opt, cli->cfg->log_file, cli->cfg->path);
}

/* Print the mode in the configuration and whether an agent runs. */
static int
show_mode(const struct cli *cli)
{
	char *pidfile = daemon_pidfile_path(cli->cfg);
	pid_t pid = daemon_pidfile_running(pidfile);

	printf("mode:  %s\n", cfg_mode_name(cli->cfg->mode));
	if (pid > 0)
		printf("agent: running (pid %ld)\n", (long)pid);
	else
		printf("agent: not running\n");
	free(pidfile);
	return 0;
}

/* Tell the running agent, if any, to load the new mode, and say what
 * happens next. */
static void
signal_agent(const struct cli *cli, enum cfg_mode mode)
{
	char *pidfile = daemon_pidfile_path(cli->cfg);
	pid_t pid = daemon_pidfile_running(pidfile);

	if (pid > 0 && kill(pid, SIGHUP) == 0) {
		printf("told the running agent (pid %ld) to reload\n",
		       (long)pid);
		if (mode == CFG_MODE_MASTER)
			printf("the agent will start the initial "
			       "replication\n");
	} else if (pid > 0) {
		fprintf(stderr, "mailrepl mode: cannot signal the agent (pid "
			"%ld): %s; restart it to apply the mode\n", (long)pid,
			strerror(errno));
	} else {
		printf("no agent runs; start mailrepld to apply the mode\n");
		if (mode == CFG_MODE_MASTER)
			printf("run mailrepl init to start the initial "
			       "replication\n");
	}
	free(pidfile);
}

/* Returns the mode that name stands for, or -1. */
static int
parse_mode(const char *name)
{
	static const enum cfg_mode modes[] = {
		CFG_MODE_STANDALONE, CFG_MODE_MASTER, CFG_MODE_REPLICA,
	};

	for (size_t i = 0; i < sizeof(modes) / sizeof(*modes); i++) {
		if (strcmp(name, cfg_mode_name(modes[i])) == 0)
			return (int)modes[i];
	}
	return -1;
}

/* Ask before a change unless --yes; without a terminal, fail and name
 * --yes. */
static bool
confirm_switch(const struct cli *cli, const char *to, bool yes)
{
	char *question;
	bool ok;

	if (yes)
		return true;
	if (!isatty(STDIN_FILENO)) {
		fprintf(stderr, "mailrepl mode: switching %s from %s to %s "
			"needs confirmation; add --yes to run it without a "
			"terminal\n", cli->cfg->path,
			cfg_mode_name(cli->cfg->mode), to);
		return false;
	}
	question = xasprintf("Switch %s from %s to %s?", cli->cfg->path,
			     cfg_mode_name(cli->cfg->mode), to);
	ok = confirm(question);
	free(question);
	return ok;
}

static int
switch_mode(struct cli *cli, const char *name, bool yes)
{
	int mode = parse_mode(name);
	char *error = NULL;

	if (mode < 0) {
		fprintf(stderr, "mailrepl mode: invalid mode %s; use "
			"standalone, master or replica\n", name);
		return EXIT_USAGE;
	}
	if (load_config(cli) < 0)
		return 1;
	if ((int)cli->cfg->mode == mode) {
		printf("mode is already %s in %s\n", name, cli->cfg->path);
		return 0;
	}
	if (!confirm_switch(cli, name, yes))
		return 1;
	if (cfg_edit_write_mode(cli->cfg->path, name, NULL, &error) < 0) {
		fprintf(stderr, "mailrepl mode: %s\n", error);
		free(error);
		return 1;
	}
	printf("mode: %s -> %s in %s\n", cfg_mode_name(cli->cfg->mode), name,
	       cli->cfg->path);
	signal_agent(cli, (enum cfg_mode)mode);
	return 0;
}

static int
cmd_mode(struct cli *cli, int argc, char **argv)
{
	static const struct option options[] = {
		{"yes", no_argument, NULL, 'y'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	bool yes = false;
	int c;

	while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
		if (c == 'y') {
			yes = true;
		} else if (c == 'h') {
			usage(stdout);
			return 0;
		} else {
			return EXIT_USAGE;
		}
	}
	if (argc - optind > 1) {
		fprintf(stderr, "mailrepl mode: unexpected argument %s\n",
			argv[optind + 1]);
		return EXIT_USAGE;
	}
	if (optind < argc)
		return switch_mode(cli, argv[optind], yes);
	if (load_config(cli) < 0)
		return 1;
	return show_mode(cli);
}

static const struct {
	const char *name;
	int (*run)(struct cli *cli, int argc, char **argv);
} commands[] = {
	{"init", cmd_init},
	{"verify", cmd_verify},
	{"status", cmd_status},
	{"log", cmd_log},
	{"mode", cmd_mode},
};

int
main(int argc, char **argv)
{
	struct cli cli = {.config_path = CONFIG_DEFAULT_PATH};
	int code = EXIT_USAGE, i = 1;

	signal(SIGPIPE, SIG_IGN);
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			cli.config_path = argv[++i];
		} else if (strcmp(argv[i], "-h") == 0 ||
			   strcmp(argv[i], "--help") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "-V") == 0 ||
			   strcmp(argv[i], "--version") == 0) {
			printf("mailrepl %s\n", PACKAGE_VERSION);
			return 0;
		} else {
			fprintf(stderr, "mailrepl: unknown option %s; see "
				"mailrepl --help\n", argv[i]);
			return EXIT_USAGE;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	for (size_t k = 0; k < sizeof(commands) / sizeof(*commands); k++) {
		if (strcmp(argv[i], commands[k].name) == 0) {
			optind = 1;
			code = commands[k].run(&cli, argc - i, argv + i);
			goto out;
		}
	}
	fprintf(stderr, "mailrepl: unknown command %s; see mailrepl --help\n",
		argv[i]);
out:
	for (size_t k = 0; k < cli.nusers; k++)
		free(cli.users[k]);
	free(cli.users);
	config_free(&cli.cfg);
	log_close();
	return code;
}
