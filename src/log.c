/* The replication log: logfmt lines to a file, syslog and stderr. */
#include <config.h>
#include "log_private.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

/* The sink is process-wide, like syslog itself; the mutex guards reopen
 * against concurrent writers. */
static struct {
	pthread_mutex_t lock;
	int fd;
	char *path;
	bool syslog;
	bool stderr_on;
	enum log_level stderr_level;
} sink = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.fd = -1,
	.stderr_level = LOG_LVL_WARN,
};

static const char *const level_names[] = {
	[LOG_LVL_DEBUG] = "debug",
	[LOG_LVL_INFO] = "info",
	[LOG_LVL_WARN] = "warn",
	[LOG_LVL_ERROR] = "error",
};

const char *
log_level_name(enum log_level level)
{
	return level_names[level];
}

int
log_level_parse(const char *name, enum log_level *level_r)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(*level_names);
	     i++) {
		if (strcasecmp(name, level_names[i]) == 0) {
			*level_r = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

static int
open_file(const char *path, char **error_r)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);

	/* A fresh install has no /var/log/mailrepl yet: create that one
	 * directory level, as the state directory is created. */
	if (fd < 0 && errno == ENOENT) {
		char *dir = xstrdup(path), *slash = strrchr(dir, '/');

		if (slash != NULL && slash != dir) {
			*slash = '\0';
			if (mkdir(dir, 0750) == 0)
				fd = open(path, O_WRONLY | O_APPEND | O_CREAT |
						      O_CLOEXEC,
					  0640);
		}
		free(dir);
	}
	if (fd < 0)
		*error_r = xasprintf("cannot open log file %s: %s", path,
				     strerror(errno));
	return fd;
}

/* The socket to which glibc's syslog() sends its lines. */
#define SYSLOG_SOCKET "/dev/log"

int
log_open(const char *path, bool use_syslog, const char *ident,
	 char **error_r)
{
	int fd = -1;

	if (path != NULL && (fd = open_file(path, error_r)) < 0)
		return -1;

	/* Without a syslog daemon, syslog() tries to connect to /dev/log
	 * again for every line: a socket and a failed connect each. */
	if (use_syslog && access(SYSLOG_SOCKET, W_OK) < 0)
		use_syslog = false;
	pthread_mutex_lock(&sink.lock);
	if (sink.fd >= 0)
		close(sink.fd);
	free(sink.path);
	sink.fd = fd;
	sink.path = path != NULL ? xstrdup(path) : NULL;
	sink.syslog = use_syslog;
	pthread_mutex_unlock(&sink.lock);

	if (use_syslog)
		openlog(ident, LOG_PID, LOG_MAIL);
	return 0;
}

int
log_reopen(char **error_r)
{
	int fd, ret = 0;

	/* The counts so far belong in the file that logrotate moved. */
	log_repeat_flush(false);
	pthread_mutex_lock(&sink.lock);
	if (sink.path != NULL) {
		fd = open_file(sink.path, error_r);
		if (fd < 0) {
			ret = -1;
		} else {
			close(sink.fd);
			sink.fd = fd;
		}
	}
	pthread_mutex_unlock(&sink.lock);
	return ret;
}

void
log_close(void)
{
	log_repeat_flush(true);
	pthread_mutex_lock(&sink.lock);
	if (sink.fd >= 0)
		close(sink.fd);
	sink.fd = -1;
	xfree(&sink.path);
	if (sink.syslog)
		closelog();
	sink.syslog = false;
	pthread_mutex_unlock(&sink.lock);
}

void
log_set_stderr_level(enum log_level level)
{
	sink.stderr_level = level;
}

void
log_set_stderr(bool enabled)
{
	sink.stderr_on = enabled;
}

static void
append(struct logline *line, const char *s, size_t n)
{
	line->buf = xgrow(line->buf, &line->cap, line->len + n + 2, 1);
	memcpy(line->buf + line->len, s, n);
	line->len += n;
	line->buf[line->len] = '\0';
}

static bool
needs_quotes(const char *value)
{
	if (*value == '\0')
		return true;
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		if (*p <= ' ' || *p == '=' || *p == '"' || *p == 0x7f)
			return true;
	}
	return false;
}

static void
append_value(struct logline *line, const char *value)
{
	char esc[8];

	if (!needs_quotes(value)) {
		append(line, value, strlen(value));
		return;
	}
	append(line, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			append(line, esc, 2);
		} else if (*p == '\n') {
			append(line, "\\n", 2);
		} else if (*p < ' ' || *p == 0x7f) {
			snprintf(esc, sizeof(esc), "\\x%02x", *p);
			append(line, esc, 4);
		} else {
			append(line, (const char *)p, 1);
		}
	}
	append(line, "\"", 1);
}

struct logline *
log_begin(enum log_level level, const char *event)
{
	struct logline *line = xcalloc(1, sizeof(*line));
	char ts[64], frac[16];
	struct timeval tv;
	struct tm tm;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(ts, sizeof(ts), "ts=%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(frac, sizeof(frac), ".%03dZ", (int)(tv.tv_usec / 1000));

	line->level = level;
	append(line, ts, strlen(ts));
	append(line, frac, strlen(frac));
	append(line, " level=", 7);
	append(line, level_names[level], strlen(level_names[level]));
	append(line, " ", 1);
	line->body = line->len;
	append(line, "event=", 6);
	append_value(line, event);
	return line;
}

static void
text_add(char **text, size_t *len, size_t *cap, const char *s, size_t n)
{
	*text = xgrow(*text, cap, *len + n + 1, 1);
	memcpy(*text + *len, s, n);
	*len += n;
	(*text)[*len] = '\0';
}

/* Copy value with the password in each "scheme://user:password@host"
 * replaced by "***". Returns NULL when value contains no such password.
 * This guards against a caller that logs a URL or a library error that
 * quotes one. */
static char *
hide_url_passwords(const char *value)
{
	const char *scan = value, *copied = value, *scheme;
	char *text = NULL;
	size_t len = 0, cap = 0;

	while ((scheme = strstr(scan, "://")) != NULL) {
		const char *auth = scheme + 3;
		size_t n = strcspn(auth, "/?# \t\"");
		const char *at = NULL, *colon = NULL;

		for (size_t i = 0; i < n; i++) {
			if (auth[i] == '@')
				at = auth + i;
		}
		for (const char *c = auth; at != NULL && c < at; c++) {
			if (*c == ':') {
				colon = c;
				break;
			}
		}
		scan = auth;
		if (colon == NULL)
			continue;
		text_add(&text, &len, &cap, copied, (size_t)(colon + 1 - copied));
		text_add(&text, &len, &cap, "***", 3);
		copied = scan = at;
	}
	if (text != NULL)
		text_add(&text, &len, &cap, copied, strlen(copied));
	return text;
}

void
log_str(struct logline *line, const char *key, const char *value)
{
	char *hidden;

	if (value == NULL)
		value = "";
	hidden = hide_url_passwords(value);
	if (hidden != NULL)
		value = hidden;

	if (strcmp(key, "ms") == 0)
		line->ms_begin = line->len;
	append(line, " ", 1);
	append(line, key, strlen(key));
	append(line, "=", 1);
	append_value(line, value);
	if (strcmp(key, "ms") == 0)
		line->ms_end = line->len;
	if (strcmp(key, "user") == 0 && line->user == NULL)
		line->user = xstrdup(value);
	free(hidden);
}

void
log_int(struct logline *line, const char *key, long long value)
{
	char num[32];

	snprintf(num, sizeof(num), "%lld", value);
	log_str(line, key, num);
}

static void
write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		buf += n;
		len -= (size_t)n;
	}
}

static void
write_sinks(struct logline *line)
{
	static const int prio[] = {
		[LOG_LVL_DEBUG] = LOG_DEBUG,
		[LOG_LVL_INFO] = LOG_INFO,
		[LOG_LVL_WARN] = LOG_WARNING,
		[LOG_LVL_ERROR] = LOG_ERR,
	};

	pthread_mutex_lock(&sink.lock);
	if (sink.fd >= 0 && line->level >= LOG_LVL_INFO)
		write_all(sink.fd, line->buf, line->len);
	if (sink.stderr_on && line->level >= sink.stderr_level)
		write_all(STDERR_FILENO, line->buf, line->len);
	/* Under the lock, so that log_close() cannot closelog() meanwhile. */
	if (sink.syslog && line->level >= LOG_LVL_INFO) {
		line->buf[line->len - 1] = '\0';
		syslog(prio[line->level], "%s", line->buf + line->body);
		line->buf[line->len - 1] = '\n';
	}
	pthread_mutex_unlock(&sink.lock);
}

static void
logline_free(struct logline *line)
{
	free(line->buf);
	free(line->user);
	free(line);
}

void
log_end(struct logline *line)
{
	append(line, "\n", 1);
	if (!log_repeat_hold(line))
		write_sinks(line);
	logline_free(line);
}

void
log_end_unlimited(struct logline *line)
{
	append(line, "\n", 1);
	write_sinks(line);
	logline_free(line);
}

void
log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
	struct logline *line = log_begin(level, event);
	va_list ap;
	char *text;

	va_start(ap, fmt);
	text = xvasprintf(fmt, ap);
	va_end(ap);
	log_str(line, "msg", text);
	free(text);
	log_end(line);
}
