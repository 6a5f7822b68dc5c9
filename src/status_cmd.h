/* "mailrepl status": gathers the sync state of this server from the
 * state store, the agent's record (agent-status.json), the replica's
 * peer.json and, with --peer, the replica's agent, judges it with
 * status_judge() and prints it as text or as one JSON object
 * (doc/status.md). */
#ifndef MAILREPL_STATUS_CMD_H
#define MAILREPL_STATUS_CMD_H

#include <stdbool.h>
#include <stdio.h>

#include "cfg.h"

/* Version of the JSON output's schema (its "schema" member). Fields are
 * only ever added, so it changes only if one has to be removed. */
#define STATUS_SCHEMA_VERSION 1

struct status_options {
	bool json; /* --json: one JSON object instead of text */
	bool peer; /* --peer: add the other side's view */
	bool help; /* -h, --help */
};

/* Parse the options after "status" (argv[0] is "status") with getopt.
 * Returns 0 with *opts_r, or -1 after getopt printed what is wrong. */
int status_cmd_parse(int argc, char **argv, struct status_options *opts_r);

/* Gather the status for cfg, print it to out, and return the exit code:
 * the monitoring level (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN), 3 also
 * when the state store cannot be read. Never prints a password. */
int status_cmd_run(const struct config *cfg, const struct status_options *opts,
		   FILE *out);

/* Print the output for a configuration that could not be loaded (error
 * names the file and the cause) in the format opts requests, and return
 * 3 (UNKNOWN). */
int status_cmd_fail(const struct status_options *opts, const char *error,
		    FILE *out);

#endif
