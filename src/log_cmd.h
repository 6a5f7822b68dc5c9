/* "mailrepl log": print the last lines of the replication log and follow
 * it, optionally only the lines of one user or from one level up. */
#ifndef MAILREPL_LOG_CMD_H
#define MAILREPL_LOG_CMD_H

#include "log.h"

#include <stdbool.h>

struct log_cmd_options {
	long lines;       /* -n: matching lines to print first (default 20) */
	bool follow;      /* -f */
	const char *user; /* --user, or NULL; points into argv */
	bool level_set;
	enum log_level level; /* --level: the lowest level printed */
};

enum log_cmd_parse_result {
	LOG_CMD_RUN,
	LOG_CMD_HELP,  /* -h or --help: the caller prints the usage */
	LOG_CMD_USAGE, /* invalid arguments, already reported on stderr */
};

/* Parse the arguments of "mailrepl log" (argv[0] is "log") into *opt_r
 * with getopt_long; optind must be 1. */
enum log_cmd_parse_result log_cmd_parse(int argc, char **argv,
					struct log_cmd_options *opt_r);

/* Print the last opt->lines matching lines of the log file path, then,
 * with opt->follow, every new matching line until the process is killed
 * or stdout is closed. config_path is named in error messages. Returns
 * the exit code: 0, or 1 when the file cannot be read (the error names
 * the file and what to do). */
int log_cmd_run(const struct log_cmd_options *opt, const char *path,
		const char *config_path);

#endif
