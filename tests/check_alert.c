/* Tests of the alerts: the decision table, and real deliveries to an
 * HTTP and an SMTP listener that each test starts on 127.0.0.1. */
#include <config.h>
#include "alert.h"
#include "log.h"
#include "testutil.h"
#include "util.h"

#include <arpa/inet.h>
#include <check.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PASSWORD "Pa55-w0rd-9f3c"

/* The decision table */

#define NONE (-1)

struct step {
	enum sync_state state;
	long long since;
	int init; /* enum store_run_result, or NONE */
	long long now;
	const char *expect; /* event names separated by spaces */
};

struct scenario {
	const char *name;
	unsigned after;
	struct step steps[8];
};

#define S_IN SYNC_STATE_IN_SYNC
#define S_OUT SYNC_STATE_OUT_OF_SYNC
#define S_NOINIT SYNC_STATE_NOT_INITIALIZED
#define S_INIT SYNC_STATE_INITIALIZING

static const struct scenario scenarios[] = {
	{"normal lag sends nothing",
	 300,
	 {{S_IN, 0, RUN_OK, 1000, ""},
	  {S_OUT, 1000, RUN_OK, 1100, ""},
	  {S_IN, 0, RUN_OK, 1200, ""}}},
	{"lasting out of sync, then recovery",
	 300,
	 {{S_OUT, 1000, RUN_OK, 1299, ""},
	  {S_OUT, 1000, RUN_OK, 1300, "out_of_sync"},
	  {S_OUT, 1000, RUN_OK, 1301, ""},
	  {S_OUT, 1000, RUN_OK, 5000, ""},
	  {S_IN, 0, RUN_OK, 5001, "in_sync"},
	  {S_IN, 0, RUN_OK, 5002, ""}}},
	{"one alert per episode",
	 300,
	 {{S_OUT, 1000, RUN_OK, 1400, "out_of_sync"},
	  {S_IN, 0, RUN_OK, 1401, "in_sync"},
	  {S_OUT, 1402, RUN_OK, 1500, ""},
	  {S_OUT, 1402, RUN_OK, 1702, "out_of_sync"}}},
	{"unknown since counts from first sight",
	 300,
	 {{S_OUT, 0, RUN_OK, 2000, ""},
	  {S_OUT, 0, RUN_OK, 2299, ""},
	  {S_OUT, 0, RUN_OK, 2300, "out_of_sync"}}},
	{"out of sync at start alerts at once",
	 60,
	 {{S_OUT, 100, RUN_OK, 9000, "out_of_sync"}}},
	{"recovery waits for in sync",
	 10,
	 {{S_OUT, 100, RUN_OK, 200, "out_of_sync"},
	  {S_INIT, 0, RUN_RUNNING, 210, ""},
	  {SYNC_STATE_UNKNOWN, 0, RUN_OK, 220, ""},
	  {S_IN, 0, RUN_OK, 230, "in_sync"}}},
	{"init failure and recovery",
	 300,
	 {{S_NOINIT, 0, RUN_FAILED, 10, "init_failed"},
	  {S_NOINIT, 0, RUN_FAILED, 11, ""},
	  {S_INIT, 0, RUN_RUNNING, 12, ""},
	  {S_NOINIT, 0, RUN_FAILED, 13, ""},
	  {S_INIT, 0, RUN_RUNNING, 14, ""},
	  {S_IN, 0, RUN_OK, 20, "init_ok"},
	  {S_IN, 0, RUN_OK, 21, ""}}},
	{"interrupted run counts as failed",
	 300,
	 {{S_NOINIT, 0, RUN_INTERRUPTED, 10, "init_failed"},
	  {S_IN, 0, RUN_REJECTED, 20, "init_ok"}}},
	{"successful first init sends nothing",
	 300,
	 {{S_NOINIT, 0, NONE, 10, ""},
	  {S_INIT, 0, RUN_RUNNING, 11, ""},
	  {S_IN, 0, RUN_OK, 12, ""},
	  {S_IN, 0, RUN_REJECTED, 13, ""}}},
	{"both conditions recover together",
	 300,
	 {{S_OUT, 100, RUN_OK, 1000, "out_of_sync"},
	  {S_INIT, 0, RUN_RUNNING, 1001, ""},
	  {S_NOINIT, 0, RUN_FAILED, 1002, "init_failed"},
	  {S_IN, 0, RUN_OK, 1003, "in_sync init_ok"}}},
};

static void
events_text(const enum alert_event *events, size_t n, char *buf, size_t size)
{
	size_t len = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n; i++)
		len += snprintf(buf + len, size - len, "%s%s", i > 0 ? " " : "",
				alert_event_name(events[i]));
}

START_TEST(decide_table)
{
	const struct scenario *sc = &scenarios[_i];
	struct alert_memory memory = {0};

	for (size_t i = 0; i < 8 && sc->steps[i].now != 0; i++) {
		const struct step *st = &sc->steps[i];
		struct alert_input in = {
			.state = st->state,
			.since = st->since,
			.init_found = st->init != NONE,
			.init_result = st->init != NONE
					       ? (enum store_run_result)st->init
					       : RUN_RUNNING,
			.after = sc->after,
		};
		enum alert_event events[ALERT_MAX_EVENTS];
		size_t n = alert_decide(&memory, &in, st->now, events);
		char got[64];

		ck_assert_uint_le(n, ALERT_MAX_EVENTS);
		events_text(events, n, got, sizeof(got));
		ck_assert_msg(strcmp(got, st->expect) == 0,
			      "%s, step %zu: got \"%s\", expected \"%s\"",
			      sc->name, i + 1, got, st->expect);
	}
}
END_TEST

START_TEST(event_names)
{
	ck_assert_str_eq(alert_event_name(ALERT_OUT_OF_SYNC), "out_of_sync");
	ck_assert_str_eq(alert_event_name(ALERT_IN_SYNC), "in_sync");
	ck_assert_str_eq(alert_event_name(ALERT_INIT_FAILED), "init_failed");
	ck_assert_str_eq(alert_event_name(ALERT_INIT_OK), "init_ok");
}
END_TEST

/* URLs */

START_TEST(url_redacted_drops_userinfo)
{
	static const struct {
		const char *url, *shown;
	} cases[] = {
		{"smtps://alerts:" PASSWORD "@mail.example.org:465",
		 "smtps://mail.example.org:465/"},
		{"https://hooks.example.org/a?b=1",
		 "https://hooks.example.org/a?b=1"},
		{"smtp://a%40b:p%3Aw@127.0.0.1:25", "smtp://127.0.0.1:25/"},
		{"not a url", "(invalid URL)"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		char *shown = alert_url_redacted(cases[i].url);

		ck_assert_str_eq(shown, cases[i].shown);
		free(shown);
	}
}
END_TEST

START_TEST(start_checks_url)
{
	static const struct {
		const char *url, *mail_to, *error;
	} cases[] = {
		{"https://hooks.example.org/x", NULL, NULL},
		{"http://127.0.0.1:9/x", NULL, NULL},
		{"http://127.45.6.7/x", NULL, NULL},
		{"http://[::1]:9/x", NULL, NULL},
		{"smtp://mail.example.org", "ops@example.org", NULL},
		{"smtps://u:" PASSWORD "@mail.example.org", "a@x.org, b@y.org",
		 NULL},
		{"http://192.0.2.1/x", NULL,
		 "[alert] url = \"http://192.0.2.1/x\": unsupported"},
		{"http://localhost/x", NULL, "loopback address"},
		{"http://[::2]/x", NULL, "unsupported"},
		{"ftp://u:" PASSWORD "@127.0.0.1/", NULL,
		 "[alert] url = \"ftp://127.0.0.1/\": unsupported"},
		{"smtp://mail.example.org", NULL, "mail_to must name"},
		{"smtp://mail.example.org", " , ", "mail_to must name"},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		struct alert_options opt = {.url = cases[i].url,
					    .mail_to = cases[i].mail_to};
		struct alert *alert = NULL;
		char *error = NULL;
		int r = alert_start(&opt, &alert, &error);

		if (cases[i].error == NULL) {
			ck_assert_msg(r == 0, "%s: %s", cases[i].url, error);
			ck_assert_ptr_nonnull(alert);
			alert_stop(&alert);
			ck_assert_ptr_null(alert);
			continue;
		}
		ck_assert_msg(r == -1, "%s accepted", cases[i].url);
		ck_assert_ptr_null(alert);
		ck_assert_msg(strstr(error, cases[i].error) != NULL, "%s: %s",
			      cases[i].url, error);
		ck_assert_ptr_null(strstr(error, PASSWORD));
		free(error);
	}
}
END_TEST

/* Listeners on 127.0.0.1 */

enum server_kind { SERVE_HTTP, SERVE_SMTP };

struct server {
	enum server_kind kind;
	int fd;
	unsigned port;
	pthread_t thread;
	int connections; /* to serve before the thread ends */
	int http_status; /* HTTP status the listener sends */
	bool hang;       /* accept and read, but never respond */
	pthread_mutex_t lock;
	char *requests[8]; /* what each connection sent */
	int accepted, served;
};

static unsigned
bound_port(int fd)
{
	struct sockaddr_in addr;
	socklen_t len = sizeof(addr);

	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
	return ntohs(addr.sin_port);
}

/* A socket bound to a free port on 127.0.0.1. */
static int
bind_loopback(void)
{
	struct sockaddr_in addr = {.sin_family = AF_INET};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	return fd;
}

/* Read until needle arrives or the peer closes; up to 10 s. */
static bool
read_until(int fd, char **buf, size_t *len, size_t *cap, const char *needle,
	   size_t from)
{
	while (strstr(*buf + from, needle) == NULL) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, 10000) <= 0)
			return false;
		*buf = xgrow(*buf, cap, *len + 4097, 1);
		n = read(fd, *buf + *len, 4096);
		if (n <= 0)
			return false;
		*len += (size_t)n;
		(*buf)[*len] = '\0';
	}
	return true;
}

static void
send_text(int fd, const char *text)
{
	ssize_t n = write(fd, text, strlen(text));

	(void)n;
}

/* Read until len bytes have arrived; up to 10 s. */
static bool
read_length(int fd, char **buf, size_t *len, size_t *cap, size_t want)
{
	while (*len < want) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&p, 1, 10000) <= 0)
			return false;
		*buf = xgrow(*buf, cap, *len + 4097, 1);
		n = read(fd, *buf + *len, 4096);
		if (n <= 0)
			return false;
		*len += (size_t)n;
		(*buf)[*len] = '\0';
	}
	return true;
}

static char *
serve_http(struct server *srv, int fd)
{
	size_t len = 0, cap = 1, want, head;
	char *buf = xcalloc(1, 1), *field, answer[128];

	if (!read_until(fd, &buf, &len, &cap, "\r\n\r\n", 0))
		return buf;
	head = strstr(buf, "\r\n\r\n") + 4 - buf;
	field = strcasestr(buf, "\r\nContent-Length:");
	want = field != NULL ? strtoul(field + 17, NULL, 10) : 0;
	if (strcasestr(buf, "\r\nExpect: 100-continue") != NULL)
		send_text(fd, "HTTP/1.1 100 Continue\r\n\r\n");
	if (!read_length(fd, &buf, &len, &cap, head + want))
		return buf;
	if (srv->hang) {
		/* Until the client gives up and closes. */
		read_until(fd, &buf, &len, &cap, "\x01", len);
		return buf;
	}
	snprintf(answer, sizeof(answer),
		 "HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close"
		 "\r\n\r\nok",
		 srv->http_status);
	send_text(fd, answer);
	return buf;
}

/* One SMTP conversation. The listener offers AUTH PLAIN but not
 * STARTTLS, and accepts every command. */
static char *
serve_smtp(struct server *srv, int fd)
{
	size_t len = 0, cap = 1, from = 0;
	char *buf = xcalloc(1, 1);
	bool want_credentials = false;

	send_text(fd, "220 test.invalid ESMTP\r\n");
	while (read_until(fd, &buf, &len, &cap, "\r\n", from)) {
		char *line = buf + from;

		from = len;
		if (want_credentials) {
			want_credentials = false;
			send_text(fd, "235 ok\r\n");
		} else if (strncasecmp(line, "EHLO", 4) == 0) {
			send_text(fd, "250-test.invalid\r\n250-AUTH PLAIN\r\n"
				      "250 8BITMIME\r\n");
		} else if (strncasecmp(line, "AUTH PLAIN\r\n", 12) == 0) {
			want_credentials = true;
			send_text(fd, "334 \r\n");
		} else if (strncasecmp(line, "AUTH", 4) == 0) {
			send_text(fd, "235 ok\r\n");
		} else if (strncasecmp(line, "DATA", 4) == 0) {
			send_text(fd, "354 go on\r\n");
			if (!read_until(fd, &buf, &len, &cap, "\r\n.\r\n",
					from))
				break;
			from = len;
			send_text(fd, "250 queued\r\n");
		} else if (strncasecmp(line, "QUIT", 4) == 0) {
			send_text(fd, "221 bye\r\n");
			break;
		} else {
			send_text(fd, "250 ok\r\n");
		}
	}
	return buf;
}

static void *
server_main(void *arg)
{
	struct server *srv = arg;

	for (int i = 0; i < srv->connections; i++) {
		struct pollfd p = {.fd = srv->fd, .events = POLLIN};
		char *request;
		int fd;

		if (poll(&p, 1, 20000) <= 0)
			break;
		fd = accept(srv->fd, NULL, NULL);
		if (fd < 0)
			break;
		pthread_mutex_lock(&srv->lock);
		srv->accepted++;
		pthread_mutex_unlock(&srv->lock);
		request = srv->kind == SERVE_HTTP ? serve_http(srv, fd)
						  : serve_smtp(srv, fd);
		close(fd);
		pthread_mutex_lock(&srv->lock);
		srv->requests[srv->served++] = request;
		pthread_mutex_unlock(&srv->lock);
	}
	return NULL;
}

static struct server *
server_start(enum server_kind kind, int connections)
{
	struct server *srv = xcalloc(1, sizeof(*srv));

	srv->kind = kind;
	srv->connections = connections;
	srv->http_status = 200;
	srv->fd = bind_loopback();
	srv->port = bound_port(srv->fd);
	pthread_mutex_init(&srv->lock, NULL);
	ck_assert_int_eq(listen(srv->fd, 8), 0);
	return srv;
}

static void
server_run(struct server *srv)
{
	ck_assert_int_eq(pthread_create(&srv->thread, NULL, server_main, srv),
			 0);
}

static bool
wait_for_accept(struct server *srv, int ms)
{
	for (int waited = 0; waited <= ms; waited += 20) {
		int accepted;

		pthread_mutex_lock(&srv->lock);
		accepted = srv->accepted;
		pthread_mutex_unlock(&srv->lock);
		if (accepted > 0)
			return true;
		usleep(20000);
	}
	return false;
}

/* Wait for the thread to serve all its connections. */
static void
server_join(struct server *srv)
{
	pthread_join(srv->thread, NULL);
	ck_assert_int_eq(srv->served, srv->connections);
}

static void
server_free(struct server **srvp)
{
	struct server *srv = *srvp;

	close(srv->fd);
	for (int i = 0; i < srv->served; i++)
		free(srv->requests[i]);
	pthread_mutex_destroy(&srv->lock);
	xfree(srvp);
}

/* Logs */

struct logdir {
	char *dir;
	char *path;
};

static void
log_to_temp(struct logdir *ld)
{
	char *error = NULL;

	ld->dir = tu_tempdir("alert");
	ld->path = xasprintf("%s/agent.log", ld->dir);
	ck_assert_int_eq(log_open(ld->path, false, "test", &error), 0);
	/* The tests count identical failure lines, which the logger would
	 * otherwise fold into one line and a summary. */
	log_set_repeat_window(0);
}

static char *
log_text(const struct logdir *ld)
{
	char *text = tu_read_file(ld->path, NULL);

	return text != NULL ? text : xstrdup("");
}

static size_t
count_matches(const char *text, const char *needle)
{
	size_t n = 0;

	for (const char *p = text; (p = strstr(p, needle)) != NULL; p++)
		n++;
	return n;
}

/* Wait up to ms for the log to hold needle count times. */
static bool
wait_for_log(const struct logdir *ld, const char *needle, size_t count, int ms)
{
	for (int waited = 0; waited <= ms; waited += 20) {
		char *text = log_text(ld);
		bool found = count_matches(text, needle) >= count;

		free(text);
		if (found)
			return true;
		usleep(20000);
	}
	return false;
}

static void
log_done(struct logdir *ld)
{
	log_close();
	tu_rmrf(ld->dir);
	free(ld->dir);
	free(ld->path);
}

/* A record out of sync since 1700000540 with 42 changes pending. */
static void
sample_record(struct agent_record *rec)
{
	memset(rec, 0, sizeof(*rec));
	rec->started = 1700000000;
	rec->updated = 1700000600;
	rec->pending = 42;
	rec->oldest_queued = 1700000480;
	snprintf(rec->last_error, sizeof(rec->last_error),
		 "replica: connection refused");
	rec->judgement.state = SYNC_STATE_OUT_OF_SYNC;
	rec->judgement.level = STATUS_CRITICAL;
	rec->judgement.since = 1700000540;
	snprintf(rec->judgement.reason, sizeof(rec->judgement.reason),
		 "changes have been pending for longer than "
		 "out_of_sync_after");
}

static char *
host_name(void)
{
	char name[256] = "";

	ck_assert_int_eq(gethostname(name, sizeof(name) - 1), 0);
	return xstrdup(name);
}

/* HTTP */

static void
assert_json_str(struct json_object *obj, const char *key, const char *value)
{
	struct json_object *member = NULL;

	ck_assert_msg(json_object_object_get_ex(obj, key, &member),
		      "no \"%s\" in the body", key);
	ck_assert_str_eq(json_object_get_string(member), value);
}

static void
assert_json_int(struct json_object *obj, const char *key, long long value)
{
	struct json_object *member = NULL;

	ck_assert_msg(json_object_object_get_ex(obj, key, &member),
		      "no \"%s\" in the body", key);
	ck_assert(json_object_is_type(member, json_type_int));
	ck_assert_int_eq(json_object_get_int64(member), value);
}

START_TEST(http_post_json_body)
{
	struct server *srv = server_start(SERVE_HTTP, 1);
	struct logdir ld;
	struct agent_record rec;
	struct alert *alert = NULL;
	struct json_object *body;
	char *url = xasprintf("http://127.0.0.1:%u/hooks/mailrepl", srv->port);
	struct alert_options opt = {.url = url, .mode = "master"};
	char *error = NULL, *host = host_name(), *summary, *log;
	const char *request;

	log_to_temp(&ld);
	server_run(srv);
	sample_record(&rec);
	ck_assert_int_eq(alert_start(&opt, &alert, &error), 0);
	alert_send(alert, ALERT_OUT_OF_SYNC, &rec, NULL);
	server_join(srv);
	ck_assert(wait_for_log(&ld, "event=alert_sent", 1, 5000));
	alert_stop(&alert);

	request = srv->requests[0];
	ck_assert_msg(
		strncmp(request, "POST /hooks/mailrepl HTTP/1.1\r\n", 31) == 0,
		"request: %s", request);
	ck_assert_ptr_nonnull(
		strcasestr(request, "\r\nContent-Type: application/json\r\n"));
	ck_assert_ptr_nonnull(strcasestr(request, "\r\nUser-Agent: mailrepl/"));
	body = json_tokener_parse(strstr(request, "\r\n\r\n") + 4);
	ck_assert_ptr_nonnull(body);
	assert_json_str(body, "event", "out_of_sync");
	assert_json_str(body, "state", "out_of_sync");
	assert_json_str(body, "level", "CRITICAL");
	assert_json_str(body, "reason", rec.judgement.reason);
	assert_json_int(body, "since", 1700000540);
	assert_json_int(body, "time", 1700000600);
	assert_json_str(body, "host", host);
	assert_json_str(body, "mode", "master");
	assert_json_int(body, "pending", 42);
	assert_json_int(body, "oldest_age_s", 120);
	assert_json_str(body, "last_error", "replica: connection refused");
	summary = xasprintf("mailrepl on %s: the replica is out of sync since "
			    "2023-11-14 22:22:20 UTC; 42 changes pending, the "
			    "oldest for 120 s",
			    host);
	assert_json_str(body, "summary", summary);

	log = log_text(&ld);
	ck_assert_ptr_nonnull(strstr(log, "event=alert_sent alert=out_of_sync "
					  "url=http://127.0.0.1:"));
	free(log);
	json_object_put(body);
	free(summary);
	free(host);
	free(url);
	server_free(&srv);
	log_done(&ld);
}
END_TEST

START_TEST(http_error_retried_then_dropped)
{
	struct server *srv = server_start(SERVE_HTTP, 3);
	struct logdir ld;
	struct agent_record rec;
	struct alert *alert = NULL;
	char *url =
		xasprintf("http://hook:" PASSWORD "@127.0.0.1:%u/", srv->port);
	struct alert_options opt = {
		.url = url, .attempts = 3, .retry_pause_ms = 50};
	char *error = NULL, *log;

	log_to_temp(&ld);
	srv->http_status = 500;
	server_run(srv);
	sample_record(&rec);
	ck_assert_int_eq(alert_start(&opt, &alert, &error), 0);
	alert_send(alert, ALERT_INIT_FAILED, &rec, "replica refused LOGIN");
	server_join(srv);
	ck_assert(wait_for_log(&ld, "event=alert_dropped", 1, 5000));
	alert_stop(&alert);

	/* curl sent the URL's user and password as Basic auth. */
	ck_assert_ptr_nonnull(
		strcasestr(srv->requests[0], "\r\nAuthorization: Basic "));
	ck_assert_ptr_nonnull(
		strstr(srv->requests[0], "replica refused LOGIN"));
	log = log_text(&ld);
	ck_assert_uint_eq(count_matches(log, "event=alert_failed "
					     "alert=init_failed"),
			  3);
	ck_assert_ptr_nonnull(strstr(log, "attempt=3 attempts=3 "
					  "reason=\"the server answered HTTP "
					  "500\""));
	ck_assert_ptr_nonnull(strstr(log, "event=alert_dropped "
					  "alert=init_failed"));
	ck_assert_ptr_null(strstr(log, "event=alert_sent"));
	ck_assert_ptr_null(strstr(log, PASSWORD));
	ck_assert_ptr_null(strstr(log, "hook:"));
	free(log);
	free(url);
	server_free(&srv);
	log_done(&ld);
}
END_TEST

/* Nothing listens on the port: the call returns at once, and the
 * delivery thread logs each failed attempt and gives up. */
START_TEST(unreachable_port_does_not_block)
{
	int fd = bind_loopback();
	unsigned port = bound_port(fd);
	struct logdir ld;
	struct agent_record rec;
	struct alert *alert = NULL;
	char *url = xasprintf("smtp://alerts:" PASSWORD "@127.0.0.1:%u", port);
	struct alert_options opt = {.url = url,
				    .mail_to = "ops@example.org",
				    .attempts = 2,
				    .retry_pause_ms = 100};
	char *error = NULL, *log;
	long long start;

	log_to_temp(&ld);
	sample_record(&rec);
	ck_assert_int_eq(alert_start(&opt, &alert, &error), 0);
	start = monotonic_ms();
	for (int i = 0; i < 3; i++)
		alert_send(alert, ALERT_OUT_OF_SYNC, &rec, NULL);
	ck_assert_int_lt(monotonic_ms() - start, 100);
	ck_assert(wait_for_log(&ld, "event=alert_dropped", 3, 10000));
	start = monotonic_ms();
	alert_stop(&alert);
	ck_assert_int_lt(monotonic_ms() - start, 1000);

	log = log_text(&ld);
	ck_assert_uint_eq(count_matches(log, "event=alert_failed"), 6);
	ck_assert_ptr_nonnull(
		strstr(log, "reason=\"Failed to connect to 127.0.0.1"));
	ck_assert_ptr_nonnull(strstr(log, "url=smtp://127.0.0.1:"));
	ck_assert_ptr_null(strstr(log, PASSWORD));
	ck_assert_ptr_null(strstr(log, "alerts:"));
	free(log);
	free(url);
	close(fd);
	log_done(&ld);
}
END_TEST

/* A server that accepts and never responds: alert_stop() cancels the
 * transfer instead of waiting for its 30 s timeout, and drops what is
 * still queued. */
START_TEST(stop_cancels_hanging_delivery)
{
	struct server *srv = server_start(SERVE_HTTP, 1);
	struct logdir ld;
	struct agent_record rec;
	struct alert *alert = NULL;
	char *url = xasprintf("http://127.0.0.1:%u/", srv->port);
	struct alert_options opt = {.url = url, .timeout_s = 30};
	char *error = NULL, *log;
	long long start;

	log_to_temp(&ld);
	srv->hang = true;
	server_run(srv);
	sample_record(&rec);
	ck_assert_int_eq(alert_start(&opt, &alert, &error), 0);
	alert_send(alert, ALERT_OUT_OF_SYNC, &rec, NULL);
	ck_assert(wait_for_accept(srv, 5000));
	/* The thread has taken the first alert, so two more than the
	 * queue's capacity push out the two oldest. */
	for (int i = 0; i < ALERT_QUEUE_MAX + 2; i++)
		alert_send(alert, ALERT_OUT_OF_SYNC, &rec, NULL);
	ck_assert(wait_for_log(&ld, "event=alert_dropped", 2, 5000));
	start = monotonic_ms();
	alert_stop(&alert);
	ck_assert_int_lt(monotonic_ms() - start, 3000);
	server_join(srv);

	log = log_text(&ld);
	ck_assert_uint_eq(count_matches(log, "event=alert_dropped"),
			  ALERT_QUEUE_MAX + 3);
	ck_assert_uint_eq(count_matches(log, "event=alert_failed"), 1);
	ck_assert_ptr_nonnull(strstr(log, "reason=\"cancelled because the "
					  "agent is stopping\""));
	ck_assert_ptr_null(strstr(log, "event=alert_sent"));
	free(log);
	free(url);
	server_free(&srv);
	log_done(&ld);
}
END_TEST

/* alert_update() sends one alert per change of state, in order. */
START_TEST(update_sends_state_changes)
{
	struct server *srv = server_start(SERVE_HTTP, 2);
	struct logdir ld;
	struct agent_record rec;
	struct alert *alert = NULL;
	char *url = xasprintf("http://127.0.0.1:%u/", srv->port);
	struct alert_options opt = {.url = url, .after = 60};
	struct store_run run = {.result = RUN_OK};
	char *error = NULL;

	log_to_temp(&ld);
	server_run(srv);
	sample_record(&rec);
	ck_assert_int_eq(alert_start(&opt, &alert, &error), 0);
	for (int i = 0; i < 5; i++) {
		rec.updated = 1700000600 + i;
		alert_update(alert, &rec, &run);
	}
	rec.judgement.state = SYNC_STATE_IN_SYNC;
	rec.pending = 0;
	for (int i = 0; i < 5; i++) {
		rec.updated = 1700000700 + i;
		alert_update(alert, &rec, &run);
	}
	alert_update(NULL, &rec, &run);
	server_join(srv);
	ck_assert(wait_for_log(&ld, "event=alert_sent", 2, 5000));
	alert_stop(&alert);

	ck_assert_ptr_nonnull(
		strstr(srv->requests[0], "\"event\":\"out_of_sync\""));
	ck_assert_ptr_nonnull(
		strstr(srv->requests[1], "\"event\":\"in_sync\""));
	ck_assert_ptr_nonnull(strstr(srv->requests[1], "\"pending\":0"));
	free(url);
	server_free(&srv);
	log_done(&ld);
}
END_TEST

/* SMTP */

START_TEST(smtp_mail_envelope_and_headers)
{
	struct server *srv = server_start(SERVE_SMTP, 1);
	struct logdir ld;
	struct agent_record rec;
	struct alert *alert = NULL;
	char *url =
		xasprintf("smtp://alerts:" PASSWORD "@127.0.0.1:%u", srv->port);
	struct alert_options opt = {.url = url,
				    .mail_to = "ops@example.org, "
					       "oncall@example.net",
				    .mode = "master"};
	char *error = NULL, *host = host_name(), *expect, *log;
	const char *conv, *data;

	log_to_temp(&ld);
	server_run(srv);
	sample_record(&rec);
	rec.judgement.state = SYNC_STATE_NOT_INITIALIZED;
	snprintf(rec.judgement.reason, sizeof(rec.judgement.reason),
		 "the last initial replication failed; run mailrepl init");
	ck_assert_int_eq(alert_start(&opt, &alert, &error), 0);
	alert_send(alert, ALERT_INIT_FAILED, &rec, "replica refused LOGIN");
	server_join(srv);
	ck_assert(wait_for_log(&ld, "event=alert_sent", 1, 5000));
	alert_stop(&alert);
	conv = srv->requests[0];

	expect = xasprintf("\r\nMAIL FROM:<mailrepl@%s>", host);
	ck_assert_msg(strstr(conv, expect) != NULL, "conversation: %s", conv);
	free(expect);
	ck_assert_ptr_nonnull(
		strstr(conv, "\r\nRCPT TO:<ops@example.org>\r\n"));
	ck_assert_ptr_nonnull(
		strstr(conv, "\r\nRCPT TO:<oncall@example.net>\r\n"));
	ck_assert_ptr_nonnull(strstr(conv, "\r\nAUTH PLAIN"));
	data = strstr(conv, "\r\nDATA\r\n");
	ck_assert_ptr_nonnull(data);
	ck_assert_ptr_nonnull(strstr(data, "\r\nDate: "));
	ck_assert_ptr_nonnull(strstr(data, " +0000\r\n"));
	expect = xasprintf("\r\nFrom: mailrepl <mailrepl@%s>\r\n", host);
	ck_assert_ptr_nonnull(strstr(data, expect));
	free(expect);
	ck_assert_ptr_nonnull(strstr(
		data, "\r\nTo: ops@example.org, oncall@example.net\r\n"));
	expect = xasprintf("\r\nSubject: [mailrepl] %s: initial replication "
			   "failed\r\n",
			   host);
	ck_assert_ptr_nonnull(strstr(data, expect));
	free(expect);
	expect = xasprintf(".mailrepl@%s>\r\n", host);
	ck_assert_ptr_nonnull(strstr(data, "\r\nMessage-ID: <1700000600."));
	ck_assert_ptr_nonnull(strstr(data, expect));
	free(expect);
	ck_assert_ptr_nonnull(strstr(
		data, "\r\nContent-Type: text/plain; charset=utf-8\r\n"));
	expect = xasprintf(
		"\r\n\r\nmailrepl on %s: the initial replication "
		"failed: replica refused LOGIN; run mailrepl init\r\n",
		host);
	ck_assert_ptr_nonnull(strstr(data, expect));
	free(expect);
	ck_assert_ptr_nonnull(strstr(data, "\r\nevent: init_failed\r\n"));
	ck_assert_ptr_nonnull(strstr(data, "\r\nstate: not_initialized\r\n"));
	ck_assert_ptr_nonnull(strstr(data, "\r\nlast_error: replica refused "
					   "LOGIN\r\n"));
	ck_assert_ptr_nonnull(strstr(data, "\r\n.\r\n"));

	log = log_text(&ld);
	ck_assert_ptr_nonnull(strstr(log, "event=alert_sent alert=init_failed "
					  "url=smtp://127.0.0.1:"));
	ck_assert_ptr_null(strstr(log, PASSWORD));
	free(log);
	free(host);
	free(url);
	server_free(&srv);
	log_done(&ld);
}
END_TEST

/* A loopback smtp:// URL uses STARTTLS only when the server offers it.
 * This listener does not, so the mail goes out in clear text. */
START_TEST(smtp_loopback_without_starttls)
{
	struct server *srv = server_start(SERVE_SMTP, 1);
	struct logdir ld;
	struct agent_record rec;
	struct alert *alert = NULL;
	char *url = xasprintf("smtp://127.0.0.1:%u", srv->port);
	struct alert_options opt = {.url = url, .mail_to = "ops@example.org"};
	char *error = NULL;

	log_to_temp(&ld);
	server_run(srv);
	sample_record(&rec);
	rec.judgement.state = SYNC_STATE_IN_SYNC;
	ck_assert_int_eq(alert_start(&opt, &alert, &error), 0);
	alert_send(alert, ALERT_IN_SYNC, &rec, NULL);
	server_join(srv);
	ck_assert(wait_for_log(&ld, "event=alert_sent", 1, 5000));
	alert_stop(&alert);
	ck_assert_ptr_null(strstr(srv->requests[0], "STARTTLS"));
	ck_assert_ptr_null(strstr(srv->requests[0], "AUTH"));
	ck_assert_ptr_nonnull(strstr(srv->requests[0], "replica back in sync"));
	free(url);
	server_free(&srv);
	log_done(&ld);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("alert");
	TCase *decide = tcase_create("decide");
	TCase *deliver = tcase_create("deliver");
	SRunner *sr;
	int failed;

	tcase_add_loop_test(decide, decide_table, 0,
			    sizeof(scenarios) / sizeof(*scenarios));
	tcase_add_test(decide, event_names);
	tcase_add_test(decide, url_redacted_drops_userinfo);
	tcase_add_test(decide, start_checks_url);
	suite_add_tcase(s, decide);

	tcase_set_timeout(deliver, 30);
	tcase_add_test(deliver, http_post_json_body);
	tcase_add_test(deliver, http_error_retried_then_dropped);
	tcase_add_test(deliver, unreachable_port_does_not_block);
	tcase_add_test(deliver, stop_cancels_hanging_delivery);
	tcase_add_test(deliver, update_sends_state_changes);
	tcase_add_test(deliver, smtp_mail_envelope_and_headers);
	tcase_add_test(deliver, smtp_loopback_without_starttls);
	suite_add_tcase(s, deliver);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
