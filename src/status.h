/* The sync state: how the agent and "mailrepl status" judge whether the
 * replica contains everything, and the record the master agent keeps of it.
 *
 * The master agent judges its state at every change, once a second while
 * changes are pending, and once a minute otherwise. It writes the result to
 * <state_dir>/agent-status.json (STATUS_FILE), so that "mailrepl status"
 * works when the agent is down too, and to the metrics file. The alerter
 * gets every change of state. */
#ifndef MAILREPL_STATUS_H
#define MAILREPL_STATUS_H

#include <stdbool.h>
#include <sys/types.h>

#include <json-c/json.h>

#define STATUS_FILE "agent-status.json"

/* Monitoring-plugin levels, which are also the exit codes of
 * "mailrepl status". */
enum status_level {
	STATUS_OK = 0,
	STATUS_WARNING = 1,
	STATUS_CRITICAL = 2,
	STATUS_UNKNOWN = 3,
};

enum sync_state {
	SYNC_STATE_UNKNOWN = 0,     /* no figures to judge by */
	SYNC_STATE_STANDALONE,      /* nothing to replicate */
	SYNC_STATE_NOT_INITIALIZED, /* no initial replication succeeded */
	SYNC_STATE_INITIALIZING,    /* an initial replication runs */
	SYNC_STATE_IN_SYNC,         /* nothing pending, or only for less than
				     * out_of_sync_after (the normal lag) */
	SYNC_STATE_OUT_OF_SYNC,     /* changes pending for longer */
};

/* Inputs of the judgement. Times are Unix seconds, 0 for "never". */
struct status_input {
	bool master;        /* else the replica's view of its master */
	bool agent_running; /* the agent that replicates is alive */
	bool init_found;    /* some initial replication was recorded */
	bool init_running;
	bool init_ok;      /* the last one ended ok or rejected */
	bool init_partial; /* ... but the replica rejected messages */
	unsigned long long pending;
	long long oldest_queued;    /* of the pending changes */
	long long figures_at;       /* when pending was measured */
	unsigned out_of_sync_after; /* [general] out_of_sync_after */
};

struct status_judgement {
	enum sync_state state;
	enum status_level level;
	long long since;  /* when state began, as far as known; 0 unknown */
	char reason[256]; /* one sentence for the admin, "" when in sync */
};

/* Seconds after which a replica takes its master's figures for stale
 * when out_of_sync_after is shorter: three of the master's 10 s status
 * intervals, so that one late report does not flip the state. */
#define STATUS_STALE_MIN 30

/* Judge in at time now. Pure: no I/O, so that the agent, the command
 * and the tests agree. */
void status_judge(const struct status_input *in, long long now,
		  struct status_judgement *out);

/* "in_sync", "out_of_sync", "initializing", "not_initialized",
 * "standalone" or "unknown". */
const char *status_state_name(enum sync_state state);
/* "OK", "WARNING", "CRITICAL" or "UNKNOWN". */
const char *status_level_name(enum status_level level);

/* The master agent's record, kept in memory and written as JSON. */
struct agent_record {
	pid_t pid;
	long long started;   /* agent start */
	long long updated;   /* when this record was written */
	char peer_state[16]; /* "connected", "down", "refused", "none" */
	long long peer_since;
	unsigned long long pending;
	long long oldest_queued;
	unsigned long long applied; /* changes applied since start */
	long long last_applied;
	char last_user[128];
	char last_folder[256];
	double rate_per_min;  /* changes applied in the last 60 s */
	char waiting_for[96]; /* why changes stay queued, or "" */
	char last_error[512];
	long long last_error_at;
	struct status_judgement judgement;
};

/* The record as a JSON object (the "agent" member of status --json).
 * Free with json_object_put. */
struct json_object *status_record_to_json(const struct agent_record *rec);
/* Write rec to <state_dir>/STATUS_FILE atomically (mode 0600). Returns 0,
 * or -1 with *error_r (caller frees). */
int status_record_save(const char *state_dir, const struct agent_record *rec,
		       char **error_r);
/* Read <state_dir>/STATUS_FILE. Returns 1 with *rec_r, 0 when there is
 * none, or -1 with *error_r naming the file and what is wrong. */
int status_record_load(const char *state_dir, struct agent_record *rec_r,
		       char **error_r);

#endif
