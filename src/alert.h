/* Alerts: a webhook (an HTTPS POST of a JSON object) or a mail over
 * SMTP, sent through libcurl when the replica stays out of sync, when an
 * initial replication fails, and when either recovers.
 *
 * The decision (alert_decide) is pure and separate from the delivery.
 * Deliveries run in a thread of their own with a bounded queue, so a
 * slow or unreachable alert server never delays replication. */
#ifndef MAILREPL_ALERT_H
#define MAILREPL_ALERT_H

#include "status.h"
#include "store.h"

#include <stdbool.h>
#include <stddef.h>

enum alert_event {
	ALERT_OUT_OF_SYNC = 0, /* out of sync for [alert] after seconds */
	ALERT_IN_SYNC,         /* back in sync after ALERT_OUT_OF_SYNC */
	ALERT_INIT_FAILED,     /* the last initial replication failed */
	ALERT_INIT_OK,         /* one succeeded after ALERT_INIT_FAILED */
};

/* "out_of_sync", "in_sync", "init_failed" or "init_ok": the "event"
 * member of the webhook's JSON. */
const char *alert_event_name(enum alert_event event);

/* Input of alert_decide(). Times are Unix seconds. */
struct alert_input {
	enum sync_state state; /* the judged sync state */
	long long since;       /* when state began, 0 when not known */
	bool init_found;       /* an initial replication was recorded */
	enum store_run_result init_result; /* of the last one */
	unsigned after;                    /* [alert] after */
};

/* State that alert_decide() keeps from one call to the next. Start from
 * all zero; the agent keeps one for its lifetime, so a restarted agent
 * alerts again about a condition that still holds. */
struct alert_memory {
	bool out_of_sync_sent;
	bool init_failed_sent;
	enum sync_state seen_state; /* state at the last call */
	long long seen_since;       /* when a call first saw seen_state */
};

#define ALERT_MAX_EVENTS 2

/* Decide which alerts in at time now calls for, write them to events_r
 * and return their number (0 to ALERT_MAX_EVENTS). Each condition is
 * alerted once when it begins and once when it ends, and an end only
 * after its beginning was alerted:
 * - ALERT_OUT_OF_SYNC when state has been SYNC_STATE_OUT_OF_SYNC for at
 *   least after seconds (from since, or from the first call that saw
 *   the state when since is 0); ALERT_IN_SYNC when state is
 *   SYNC_STATE_IN_SYNC again;
 * - ALERT_INIT_FAILED when the last initial replication ended failed or
 *   interrupted; ALERT_INIT_OK when a later one ended ok or rejected.
 *   A run that is still going changes nothing.
 * Pure: reads and updates only *memory. */
size_t alert_decide(struct alert_memory *memory, const struct alert_input *in,
		    long long now, enum alert_event events_r[ALERT_MAX_EVENTS]);

/* How to deliver. The strings are copied by alert_start(). */
struct alert_options {
	/* https://, smtp:// or smtps://, or http:// to a literal loopback
	 * address (127.0.0.0/8 or [::1]); may carry user:password. */
	const char *url;
	const char *mail_to;     /* comma-separated; required for mail */
	const char *mode;        /* the server mode, for the message */
	unsigned after;          /* [alert] after, in seconds */
	unsigned timeout_s;      /* per attempt; 0 for the default 30 */
	unsigned attempts;       /* per alert; 0 for the default 4 */
	unsigned retry_pause_ms; /* between attempts; 0 for 30,000 */
};

struct alert;

/* Check opt->url and start the delivery thread. Returns 0 and *alert_r
 * (free with alert_stop), or -1 with *error_r (caller frees) naming the
 * URL, with its password replaced. */
int alert_start(const struct alert_options *opt, struct alert **alert_r,
		char **error_r);

/* Stop the thread and free *alert, setting it to NULL. A delivery in
 * progress is cancelled, and alerts still queued are dropped and
 * logged. NULL is allowed. */
void alert_stop(struct alert **alert);

/* Queue event with the figures of rec, and init_error (the error text of
 * the last initial replication, may be NULL), for delivery. Returns at
 * once. When ALERT_QUEUE_MAX alerts are already queued, the oldest is
 * dropped and logged. */
#define ALERT_QUEUE_MAX 16
void alert_send(struct alert *alert, enum alert_event event,
		const struct agent_record *rec, const char *init_error);

/* Run alert_decide() with the memory kept in alert, on the judgement of
 * rec and on init (the last initial replication, NULL when none), at
 * rec->updated, and alert_send() what it decides. The status thread
 * calls this after each judgement; only one thread may call it. alert
 * may be NULL ([alert] url is not set): then nothing happens. */
void alert_update(struct alert *alert, const struct agent_record *rec,
		  const struct store_run *init);

/* The URL without its user and password, for logs and messages.
 * Caller frees. A URL that cannot be parsed gives "(invalid URL)". */
char *alert_url_redacted(const char *url);

#endif
