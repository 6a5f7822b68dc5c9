/* Alerts: the decision, the messages and the delivery thread. */
#include <config.h>
#include "alert.h"

#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_S 30
#define DEFAULT_ATTEMPTS 4
#define DEFAULT_RETRY_PAUSE_MS 30000
#define PASSWORD_SHOWN "(password not shown)"

struct queued {
	enum alert_event event;
	char *payload; /* the JSON body or the whole mail */
};

struct alert {
	char *url;
	char *url_shown;      /* without user and password */
	char *secrets[2];     /* the URL's password as written and decoded */
	const char *protocol; /* for CURLOPT_PROTOCOLS_STR */
	bool mail;
	long use_ssl; /* CURLOPT_USE_SSL for smtp:// */
	char *mail_from;
	char *mail_to; /* the To: header */
	struct curl_slist *rcpt;
	char *host;
	char *mode;
	unsigned timeout_s, attempts, retry_pause_ms, after;

	/* Only the thread that calls alert_update() touches these. */
	struct alert_memory memory;
	unsigned long long sent_count; /* for unique Message-IDs */

	pthread_t thread;
	bool thread_started;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	atomic_bool stopping; /* read without the lock by libcurl callbacks */
	struct queued queue[ALERT_QUEUE_MAX]; /* a ring; guarded by lock */
	size_t head, count;
};

/* The decision */

const char *
alert_event_name(enum alert_event event)
{
	static const char *const names[] = {
		[ALERT_OUT_OF_SYNC] = "out_of_sync",
		[ALERT_IN_SYNC] = "in_sync",
		[ALERT_INIT_FAILED] = "init_failed",
		[ALERT_INIT_OK] = "init_ok",
	};

	return names[event];
}

static bool
out_of_sync_long_enough(struct alert_memory *memory,
			const struct alert_input *in, long long now)
{
	long long since;

	if (in->state != memory->seen_state || memory->seen_since == 0) {
		memory->seen_state = in->state;
		memory->seen_since = now;
	}
	since = in->since != 0 ? in->since : memory->seen_since;
	return in->state == SYNC_STATE_OUT_OF_SYNC &&
	       now - since >= (long long)in->after;
}

size_t
alert_decide(struct alert_memory *memory, const struct alert_input *in,
	     long long now, enum alert_event events_r[ALERT_MAX_EVENTS])
{
	size_t n = 0;
	bool init_failed =
		in->init_found && (in->init_result == RUN_FAILED ||
				   in->init_result == RUN_INTERRUPTED);
	bool init_ok = in->init_found && (in->init_result == RUN_OK ||
					  in->init_result == RUN_REJECTED);

	if (out_of_sync_long_enough(memory, in, now) &&
	    !memory->out_of_sync_sent) {
		events_r[n++] = ALERT_OUT_OF_SYNC;
		memory->out_of_sync_sent = true;
	} else if (in->state == SYNC_STATE_IN_SYNC &&
		   memory->out_of_sync_sent) {
		events_r[n++] = ALERT_IN_SYNC;
		memory->out_of_sync_sent = false;
	}

	if (init_failed && !memory->init_failed_sent) {
		events_r[n++] = ALERT_INIT_FAILED;
		memory->init_failed_sent = true;
	} else if (init_ok && memory->init_failed_sent) {
		events_r[n++] = ALERT_INIT_OK;
		memory->init_failed_sent = false;
	}
	return n;
}

/* URLs */

char *
alert_url_redacted(const char *url)
{
	CURLU *parsed = curl_url();
	char *shown = NULL, *copy;

	if (curl_url_set(parsed, CURLUPART_URL, url,
			 CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
	    curl_url_set(parsed, CURLUPART_USER, NULL, 0) != CURLUE_OK ||
	    curl_url_set(parsed, CURLUPART_PASSWORD, NULL, 0) != CURLUE_OK ||
	    curl_url_set(parsed, CURLUPART_OPTIONS, NULL, 0) != CURLUE_OK ||
	    curl_url_get(parsed, CURLUPART_URL, &shown, 0) != CURLUE_OK) {
		curl_url_cleanup(parsed);
		return xstrdup("(invalid URL)");
	}
	copy = xstrdup(shown);
	curl_free(shown);
	curl_url_cleanup(parsed);
	return copy;
}

/* Whether host, as libcurl returns it (IPv6 in brackets), is a literal
 * loopback address. Names such as "localhost" are not accepted, so that
 * no resolver decides where a clear-text request goes. */
static bool
host_is_loopback(const char *host)
{
	struct in_addr v4;
	struct in6_addr v6;
	size_t len = strlen(host);
	char *bare;
	bool loopback = false;

	if (inet_pton(AF_INET, host, &v4) == 1)
		return (ntohl(v4.s_addr) >> 24) == 127;
	if (len < 2 || host[0] != '[' || host[len - 1] != ']')
		return false;
	bare = xstrndup(host + 1, len - 2);
	if (inet_pton(AF_INET6, bare, &v6) == 1)
		loopback = IN6_IS_ADDR_LOOPBACK(&v6);
	free(bare);
	return loopback;
}

/* Set alert's transport from the URL's scheme and host. */
static int
choose_transport(struct alert *alert, const char *scheme, const char *host,
		 char **error_r)
{
	bool loopback = host_is_loopback(host);

	if (strcasecmp(scheme, "https") == 0) {
		alert->protocol = "https";
	} else if (strcasecmp(scheme, "http") == 0 && loopback) {
		alert->protocol = "http";
	} else if (strcasecmp(scheme, "smtps") == 0) {
		alert->protocol = "smtps";
		alert->mail = true;
	} else if (strcasecmp(scheme, "smtp") == 0) {
		/* A local mail server often offers no STARTTLS; elsewhere a
		 * missing STARTTLS could be an attacker's downgrade. */
		alert->protocol = "smtp";
		alert->mail = true;
		alert->use_ssl = loopback ? CURLUSESSL_TRY : CURLUSESSL_ALL;
	} else {
		*error_r = xasprintf(
			"[alert] url = \"%s\": unsupported; expected https://, "
			"smtp:// or smtps://, or http:// to a loopback address "
			"(127.0.0.0/8 or [::1])",
			alert->url_shown);
		return -1;
	}
	return 0;
}

static void
keep_password(struct alert *alert, CURLU *parsed)
{
	char *raw = NULL, *decoded = NULL;

	if (curl_url_get(parsed, CURLUPART_PASSWORD, &raw, 0) == CURLUE_OK &&
	    raw[0] != '\0')
		alert->secrets[0] = xstrdup(raw);
	if (curl_url_get(parsed, CURLUPART_PASSWORD, &decoded,
			 CURLU_URLDECODE) == CURLUE_OK &&
	    decoded[0] != '\0')
		alert->secrets[1] = xstrdup(decoded);
	curl_free(raw);
	curl_free(decoded);
}

static int
parse_url(struct alert *alert, char **error_r)
{
	CURLU *parsed = curl_url();
	char *scheme = NULL, *host = NULL;
	int ret = -1;

	alert->url_shown = alert_url_redacted(alert->url);
	if (curl_url_set(parsed, CURLUPART_URL, alert->url,
			 CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
	    curl_url_get(parsed, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(parsed, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		*error_r = xasprintf("[alert] url = \"%s\": invalid; expected "
				     "a URL such as https://host/path",
				     alert->url_shown);
		goto out;
	}
	if (choose_transport(alert, scheme, host, error_r) < 0)
		goto out;
	keep_password(alert, parsed);
	ret = 0;
out:
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(parsed);
	return ret;
}

/* Replace every copy of the URL's password in text, which came from
 * libcurl and might quote the URL. */
static char *
scrub(const struct alert *alert, const char *text)
{
	char *out = xstrdup(text), *hit, *next;

	for (size_t i = 0; i < 2; i++) {
		const char *secret = alert->secrets[i];

		while (secret != NULL && (hit = strstr(out, secret)) != NULL) {
			*hit = '\0';
			next = xasprintf("%s%s%s", out, PASSWORD_SHOWN,
					 hit + strlen(secret));
			free(out);
			out = next;
		}
	}
	return out;
}

/* Recipients */

static int
set_recipients(struct alert *alert, const char *mail_to, char **error_r)
{
	char *list = xstrdup(mail_to != NULL ? mail_to : ""), *save = NULL;
	size_t len = 0, cap = 0;
	char *header = NULL;

	for (char *item = strtok_r(list, ",", &save); item != NULL;
	     item = strtok_r(NULL, ",", &save)) {
		size_t n;

		item += strspn(item, " \t");
		n = strcspn(item, " \t");
		if (n == 0)
			continue;
		item[n] = '\0';
		alert->rcpt = curl_slist_append(alert->rcpt, item);
		header = xgrow(header, &cap, len + n + 3, 1);
		len += sprintf(header + len, "%s%s", len > 0 ? ", " : "", item);
	}
	free(list);
	if (alert->rcpt == NULL) {
		*error_r = xasprintf("[alert] url = \"%s\" sends mail, so "
				     "[alert] mail_to must name the recipients",
				     alert->url_shown);
		free(header);
		return -1;
	}
	alert->mail_to = header;
	return 0;
}

/* Messages */

/* The facts one alert reports, taken when it is queued. */
struct facts {
	enum alert_event event;
	const struct agent_record *rec;
	const char *last_error;
	long long now;
};

static void
format_utc(long long when, char *buf, size_t size)
{
	time_t t = (time_t)when;
	struct tm tm;

	if (when == 0 || gmtime_r(&t, &tm) == NULL)
		snprintf(buf, size, "unknown");
	else
		strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static long long
oldest_age(const struct agent_record *rec, long long now)
{
	if (rec->pending == 0 || rec->oldest_queued == 0 ||
	    now < rec->oldest_queued)
		return 0;
	return now - rec->oldest_queued;
}

static char *
summary(const struct alert *alert, const struct facts *f)
{
	char since[32];

	format_utc(f->rec->judgement.since, since, sizeof(since));
	switch (f->event) {
	case ALERT_OUT_OF_SYNC:
		return xasprintf("mailrepl on %s: the replica is out of sync "
				 "since %s; %llu changes pending, the oldest "
				 "for %lld s",
				 alert->host, since, f->rec->pending,
				 oldest_age(f->rec, f->now));
	case ALERT_IN_SYNC:
		return xasprintf("mailrepl on %s: the replica is back in sync",
				 alert->host);
	case ALERT_INIT_FAILED:
		return xasprintf("mailrepl on %s: the initial replication "
				 "failed%s%s; run mailrepl init",
				 alert->host,
				 f->last_error[0] != '\0' ? ": " : "",
				 f->last_error);
	case ALERT_INIT_OK:
		break;
	}
	return xasprintf("mailrepl on %s: an initial replication succeeded",
			 alert->host);
}

static void
json_add_str(struct json_object *obj, const char *key, const char *value)
{
	json_object_object_add(obj, key, json_object_new_string(value));
}

static void
json_add_int(struct json_object *obj, const char *key, long long value)
{
	json_object_object_add(obj, key, json_object_new_int64(value));
}

static char *
json_body(const struct alert *alert, const struct facts *f)
{
	const struct status_judgement *judged = &f->rec->judgement;
	struct json_object *obj = json_object_new_object();
	char *text = summary(alert, f), *body;

	json_add_str(obj, "event", alert_event_name(f->event));
	json_add_str(obj, "state", status_state_name(judged->state));
	json_add_str(obj, "level", status_level_name(judged->level));
	json_add_str(obj, "reason", judged->reason);
	json_add_int(obj, "since", judged->since);
	json_add_int(obj, "time", f->now);
	json_add_str(obj, "host", alert->host);
	json_add_str(obj, "mode", alert->mode);
	json_add_int(obj, "pending", (long long)f->rec->pending);
	json_add_int(obj, "oldest_age_s", oldest_age(f->rec, f->now));
	json_add_str(obj, "last_error", f->last_error);
	json_add_str(obj, "summary", text);
	body = xstrdup(json_object_to_json_string_ext(
		obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(obj);
	free(text);
	return body;
}

/* An RFC 5322 date, in English whatever the locale. */
static void
format_mail_date(long long when, char *buf, size_t size)
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed",
					   "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr",
					     "May", "Jun", "Jul", "Aug",
					     "Sep", "Oct", "Nov", "Dec"};
	time_t t = (time_t)when;
	struct tm tm;

	gmtime_r(&t, &tm);
	snprintf(buf, size, "%s, %02d %s %04d %02d:%02d:%02d +0000",
		 days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
		 tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static const char *
mail_subject(enum alert_event event)
{
	switch (event) {
	case ALERT_OUT_OF_SYNC:
		return "replica out of sync";
	case ALERT_IN_SYNC:
		return "replica back in sync";
	case ALERT_INIT_FAILED:
		return "initial replication failed";
	case ALERT_INIT_OK:
		break;
	}
	return "initial replication succeeded";
}

static char *
mail_body(const struct alert *alert, const struct facts *f)
{
	const struct status_judgement *judged = &f->rec->judgement;
	char since[32];
	char *text = summary(alert, f), *body;

	format_utc(judged->since, since, sizeof(since));
	body = xasprintf("%s\r\n\r\n"
			 "event: %s\r\nstate: %s\r\nlevel: %s\r\n"
			 "reason: %s\r\nsince: %s\r\nhost: %s\r\n"
			 "mode: %s\r\npending: %llu\r\n"
			 "oldest_age_s: %lld\r\nlast_error: %s\r\n",
			 text, alert_event_name(f->event),
			 status_state_name(judged->state),
			 status_level_name(judged->level), judged->reason,
			 since, alert->host, alert->mode, f->rec->pending,
			 oldest_age(f->rec, f->now), f->last_error);
	free(text);
	return body;
}

/* The whole message, headers and body, with CRLF line ends. The
 * Message-ID is unique per process by the counter and across processes
 * by the pid and time. */
static char *
mail_message(struct alert *alert, const struct facts *f)
{
	char date[40];
	char *body = mail_body(alert, f), *message;

	format_mail_date(f->now, date, sizeof(date));
	message = xasprintf(
		"Date: %s\r\nFrom: mailrepl <%s>\r\nTo: %s\r\n"
		"Subject: [mailrepl] %s: %s\r\n"
		"Message-ID: <%lld.%ld.%llu.mailrepl@%s>\r\n"
		"Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n"
		"Content-Type: text/plain; charset=utf-8\r\n"
		"Content-Transfer-Encoding: 8bit\r\n\r\n%s",
		date, alert->mail_from, alert->mail_to, alert->host,
		mail_subject(f->event), f->now, (long)getpid(),
		++alert->sent_count, alert->host, body);
	free(body);
	return message;
}

/* Delivery with libcurl */

struct upload {
	const char *data;
	size_t left;
};

static size_t
read_upload(char *buf, size_t size, size_t count, void *arg)
{
	struct upload *up = arg;
	size_t n = size * count < up->left ? size * count : up->left;

	memcpy(buf, up->data, n);
	up->data += n;
	up->left -= n;
	return n;
}

/* Abort a transfer when alert_stop() is waiting for the thread. */
static int
check_stop(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
	   curl_off_t ulnow)
{
	struct alert *alert = arg;

	return atomic_load(&alert->stopping) ? 1 : 0;
}

static size_t
discard_response(char *data, size_t size, size_t count, void *arg)
{
	return size * count;
}

static void
set_common_options(struct alert *alert, CURL *curl, char *errbuf)
{
	curl_easy_setopt(curl, CURLOPT_URL, alert->url);
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, alert->protocol);
	/* Threads and signals do not mix: without this, a name lookup
	 * timeout uses SIGALRM. */
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT, (long)alert->timeout_s);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, check_stop);
	curl_easy_setopt(curl, CURLOPT_XFERINFODATA, alert);
}

/* One attempt. Returns 0, or -1 with *error_r (caller frees). */
static int
deliver_once(struct alert *alert, const char *payload, char **error_r)
{
	CURL *curl = curl_easy_init();
	struct curl_slist *headers = NULL;
	struct upload up = {payload, strlen(payload)};
	char errbuf[CURL_ERROR_SIZE] = "";
	long status = 0;
	CURLcode rc;

	if (curl == NULL) {
		*error_r = xstrdup("cannot create a libcurl handle");
		return -1;
	}
	set_common_options(alert, curl, errbuf);
	if (alert->mail) {
		curl_easy_setopt(curl, CURLOPT_USE_SSL, alert->use_ssl);
		curl_easy_setopt(curl, CURLOPT_MAIL_FROM, alert->mail_from);
		curl_easy_setopt(curl, CURLOPT_MAIL_RCPT, alert->rcpt);
		curl_easy_setopt(curl, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(curl, CURLOPT_READFUNCTION, read_upload);
		curl_easy_setopt(curl, CURLOPT_READDATA, &up);
	} else {
		headers = curl_slist_append(headers,
					    "Content-Type: application/json");
		curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(curl, CURLOPT_USERAGENT,
				 PACKAGE_NAME "/" PACKAGE_VERSION);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload);
		curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, discard_response);
	}

	rc = curl_easy_perform(curl);
	if (rc == CURLE_OK && !alert->mail)
		curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(curl);
	curl_slist_free_all(headers);
	if (rc == CURLE_ABORTED_BY_CALLBACK) {
		*error_r = xstrdup("cancelled because the agent is stopping");
		return -1;
	}
	if (rc != CURLE_OK) {
		/* The error buffer has the details when libcurl filled it. */
		*error_r = scrub(alert, errbuf[0] != '\0'
						? errbuf
						: curl_easy_strerror(rc));
		return -1;
	}
	if (!alert->mail && (status < 200 || status > 299)) {
		*error_r = xasprintf("the server answered HTTP %ld", status);
		return -1;
	}
	return 0;
}

/* The delivery thread */

static void
log_delivery(enum log_level level, const char *event, const struct alert *alert,
	     const struct queued *item)
{
	struct logline *line = log_begin(level, event);

	log_str(line, "alert", alert_event_name(item->event));
	log_str(line, "url", alert->url_shown);
	log_end(line);
}

/* Wait up to ms, or until alert_stop(). Returns false when stopping. */
static bool
pause_ms(struct alert *alert, unsigned ms)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += ms / 1000;
	until.tv_nsec += (long)(ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&alert->lock);
	while (!atomic_load(&alert->stopping) &&
	       pthread_cond_timedwait(&alert->wake, &alert->lock, &until) == 0)
		;
	pthread_mutex_unlock(&alert->lock);
	return !atomic_load(&alert->stopping);
}

static void
deliver(struct alert *alert, const struct queued *item)
{
	char *error = NULL;
	struct logline *line;

	for (unsigned attempt = 1; attempt <= alert->attempts; attempt++) {
		long long start = monotonic_ms();

		if (deliver_once(alert, item->payload, &error) == 0) {
			line = log_begin(LOG_LVL_INFO, "alert_sent");
			log_str(line, "alert", alert_event_name(item->event));
			log_str(line, "url", alert->url_shown);
			log_int(line, "attempt", attempt);
			log_int(line, "ms", monotonic_ms() - start);
			log_end(line);
			return;
		}
		line = log_begin(LOG_LVL_WARN, "alert_failed");
		log_str(line, "alert", alert_event_name(item->event));
		log_str(line, "url", alert->url_shown);
		log_int(line, "attempt", attempt);
		log_int(line, "attempts", alert->attempts);
		log_str(line, "reason", error);
		log_end(line);
		xfree(&error);
		if (attempt < alert->attempts &&
		    !pause_ms(alert, alert->retry_pause_ms))
			break;
	}
	log_delivery(LOG_LVL_ERROR, "alert_dropped", alert, item);
}

/* Take the oldest queued alert; false when stopping. */
static bool
next_queued(struct alert *alert, struct queued *item_r)
{
	bool found = false;

	pthread_mutex_lock(&alert->lock);
	while (!atomic_load(&alert->stopping) && alert->count == 0)
		pthread_cond_wait(&alert->wake, &alert->lock);
	if (!atomic_load(&alert->stopping)) {
		*item_r = alert->queue[alert->head];
		alert->head = (alert->head + 1) % ALERT_QUEUE_MAX;
		alert->count--;
		found = true;
	}
	pthread_mutex_unlock(&alert->lock);
	return found;
}

static void *
alert_main(void *arg)
{
	struct alert *alert = arg;
	struct queued item;

	while (next_queued(alert, &item)) {
		deliver(alert, &item);
		free(item.payload);
	}
	return NULL;
}

/* Starting and stopping */

static void
init_curl(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* The host name for messages, reduced to the characters a host name may
 * have, so that it is safe in a mail header. */
static char *
local_host_name(void)
{
	char name[256] = "";

	if (gethostname(name, sizeof(name) - 1) < 0 || name[0] == '\0')
		return xstrdup("unknown");
	for (char *p = name; *p != '\0'; p++)
		if (strchr("abcdefghijklmnopqrstuvwxyz"
			   "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_",
			   *p) == NULL)
			*p = '-';
	return xstrdup(name);
}

static void
set_options(struct alert *alert, const struct alert_options *opt)
{
	alert->url = xstrdup(opt->url);
	alert->mode = xstrdup(opt->mode != NULL ? opt->mode : "master");
	alert->after = opt->after;
	alert->timeout_s =
		opt->timeout_s != 0 ? opt->timeout_s : DEFAULT_TIMEOUT_S;
	alert->attempts = opt->attempts != 0 ? opt->attempts : DEFAULT_ATTEMPTS;
	alert->retry_pause_ms = opt->retry_pause_ms != 0
					? opt->retry_pause_ms
					: DEFAULT_RETRY_PAUSE_MS;
	alert->host = local_host_name();
	alert->mail_from = xasprintf("mailrepl@%s", alert->host);
}

int
alert_start(const struct alert_options *opt, struct alert **alert_r,
	    char **error_r)
{
	static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
	struct alert *alert = xcalloc(1, sizeof(*alert));

	pthread_once(&curl_once, init_curl);
	pthread_mutex_init(&alert->lock, NULL);
	pthread_cond_init(&alert->wake, NULL);
	atomic_init(&alert->stopping, false);
	set_options(alert, opt);
	if (parse_url(alert, error_r) < 0 ||
	    (alert->mail && set_recipients(alert, opt->mail_to, error_r) < 0))
		goto fail;
	if (pthread_create(&alert->thread, NULL, alert_main, alert) != 0) {
		*error_r = xstrdup("cannot start the alert thread");
		goto fail;
	}
	alert->thread_started = true;
	*alert_r = alert;
	return 0;
fail:
	alert_stop(&alert);
	return -1;
}

void
alert_stop(struct alert **alertp)
{
	struct alert *alert = *alertp;

	if (alert == NULL)
		return;
	pthread_mutex_lock(&alert->lock);
	atomic_store(&alert->stopping, true);
	pthread_cond_broadcast(&alert->wake);
	pthread_mutex_unlock(&alert->lock);
	if (alert->thread_started)
		pthread_join(alert->thread, NULL);

	for (; alert->count > 0; alert->count--) {
		struct queued *item = &alert->queue[alert->head];

		log_delivery(LOG_LVL_WARN, "alert_dropped", alert, item);
		free(item->payload);
		alert->head = (alert->head + 1) % ALERT_QUEUE_MAX;
	}
	pthread_mutex_destroy(&alert->lock);
	pthread_cond_destroy(&alert->wake);
	curl_slist_free_all(alert->rcpt);
	for (size_t i = 0; i < 2; i++)
		secret_free(&alert->secrets[i]);
	secret_free(&alert->url);
	free(alert->url_shown);
	free(alert->mail_from);
	free(alert->mail_to);
	free(alert->host);
	free(alert->mode);
	xfree(alertp);
}

/* Queueing */

void
alert_send(struct alert *alert, enum alert_event event,
	   const struct agent_record *rec, const char *init_error)
{
	struct facts f = {event, rec, rec->last_error,
			  rec->updated != 0 ? rec->updated : time(NULL)};
	struct queued item = {event, NULL};

	if ((event == ALERT_INIT_FAILED || event == ALERT_INIT_OK) &&
	    init_error != NULL && init_error[0] != '\0')
		f.last_error = init_error;
	item.payload =
		alert->mail ? mail_message(alert, &f) : json_body(alert, &f);

	pthread_mutex_lock(&alert->lock);
	if (alert->count == ALERT_QUEUE_MAX) {
		struct queued *oldest = &alert->queue[alert->head];

		log_delivery(LOG_LVL_WARN, "alert_dropped", alert, oldest);
		free(oldest->payload);
		alert->head = (alert->head + 1) % ALERT_QUEUE_MAX;
		alert->count--;
	}
	alert->queue[(alert->head + alert->count) % ALERT_QUEUE_MAX] = item;
	alert->count++;
	pthread_cond_signal(&alert->wake);
	pthread_mutex_unlock(&alert->lock);
}

void
alert_update(struct alert *alert, const struct agent_record *rec,
	     const struct store_run *init)
{
	struct alert_input in = {
		.state = rec->judgement.state,
		.since = rec->judgement.since,
		.init_found = init != NULL,
		.init_result = init != NULL ? init->result : RUN_RUNNING,
		.after = alert != NULL ? alert->after : 0,
	};
	enum alert_event events[ALERT_MAX_EVENTS];
	size_t n;

	if (alert == NULL)
		return;
	n = alert_decide(&alert->memory, &in, rec->updated, events);
	for (size_t i = 0; i < n; i++)
		alert_send(alert, events[i], rec,
			   init != NULL ? init->error : NULL);
}
