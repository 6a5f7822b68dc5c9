/* Shared by status_cmd.c, which gathers and judges the figures, and
 * status_cmd_print.c, which prints them as text or JSON. */
#ifndef MAILREPL_STATUS_CMD_PRIVATE_H
#define MAILREPL_STATUS_CMD_PRIVATE_H

#include <stdbool.h>
#include <stdio.h>
#include <sys/types.h>

#include "cfg.h"
#include "ctl_proto.h"
#include "status.h"
#include "status_cmd.h"

/* An initial replication as this side recorded it. Times are Unix
 * seconds, 0 for "not known". */
struct status_init {
	bool found;
	char result[16]; /* store_run_result_name(), or INIT END's result */
	long long started, finished;
	unsigned long long messages, bytes, rejected;
	/* Only the master counts these (local is true there). */
	bool local;
	unsigned long long uploaded, adopted, skipped;
	char error[512];
};

/* The master's STATUS figures as a replica stored them. */
struct status_figures {
	bool found;
	unsigned long long pending, oldest_age_s;
	long long last_applied, received;
	char last_error[CTL_TEXT_MAX + 1];
};

/* The response of the replica's agent to STATUS, requested by --peer
 * on a master. */
struct status_peer_view {
	bool queried;
	char error[512]; /* "" when the query succeeded */
	char mode[16];
	char bound[CTL_MASTER_ID_MAX + 1]; /* "" when not bound */
	char init_result[16];              /* "" when no INIT END yet */
	long long init_finished;
	bool init_requested;
	struct status_figures figures;
};

struct status_view {
	const struct config *cfg;
	const struct status_options *opts;
	long long now;

	/* The local agent: alive by its pid file, or by its socket. */
	bool agent_running;
	pid_t pid;
	bool have_record; /* agent-status.json (master) */
	struct agent_record rec;
	char record_error[512];

	struct status_init init;
	/* Master: the change queue, live from the state store. */
	unsigned long long pending;
	long long oldest_queued; /* Unix seconds, 0 when none */

	/* Replica: its record of the bound master (peer.json). */
	char bound[CTL_MASTER_ID_MAX + 1];
	long long bound_at;
	long long init_requested_at; /* 0 when not requested */
	struct status_figures figures;

	struct status_peer_view peer; /* master with --peer */

	struct status_judgement judgement;
	char last_error[CTL_TEXT_MAX + 1];
	long long last_error_at;
	/* Why the state could not be read; makes the answer UNKNOWN. */
	char fatal[512];
	int exit_code;
};

void status_print_text(const struct status_view *v, FILE *out);
void status_print_json(const struct status_view *v, FILE *out);
/* The first line, for Nagios and Icinga: "MAILREPL LEVEL - summary". */
void status_print_summary(const struct status_view *v, FILE *out);

#endif
