/* "mailrepl log": the last lines of the log file, then new lines as they
 * are written, filtered by user and level.
 *
 * The last lines are found by reading the file backwards in blocks, so
 * the time does not depend on the size of the file. Following polls the
 * file every 250 ms, like "tail -F": it reopens the path when another
 * file has taken its name (logrotate's create mode) and starts over from
 * the beginning when the file shrank (copytruncate). Polling needs no
 * inotify watch on the log directory and sees both cases the same way. */
#include <config.h>
#include "log_cmd.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TAIL_BLOCK 65536
#define FOLLOW_POLL_MS 250
/* Polls without new data in the old file before following a new file at
 * the path: the writer keeps appending to the old one until it reopens
 * (mailrepld on SIGHUP, after logrotate's rename). */
#define FOLLOW_SWITCH_QUIET 2

/* ---- logfmt fields ---- */

/* Decode a quoted value starting after its opening quote; *end_r is set
 * after the closing quote. Escapes are those log.c writes. */
static char *
decode_quoted(const char *p, const char *end, const char **end_r)
{
	char *value = xmalloc((size_t)(end - p) + 1);
	size_t n = 0;

	while (p < end && *p != '"') {
		if (*p == '\\' && p + 1 < end) {
			p++;
			if (*p == 'n') {
				value[n++] = '\n';
			} else if (*p == 'x' && p + 2 < end) {
				char hex[3] = {p[1], p[2], '\0'};

				value[n++] = (char)strtol(hex, NULL, 16);
				p += 2;
			} else {
				value[n++] = *p;
			}
		} else {
			value[n++] = *p;
		}
		p++;
	}
	value[n] = '\0';
	*end_r = p < end ? p + 1 : p;
	return value;
}

/* The decoded value of the first field key in the line [p, end), or NULL
 * when the line has none. Caller frees. */
static char *
field_value(const char *p, const char *end, const char *key)
{
	size_t key_len = strlen(key);

	while (p < end) {
		const char *name = p, *value;
		bool match;

		while (p < end && *p != '=' && *p != ' ' && *p != '\n')
			p++;
		match = (size_t)(p - name) == key_len &&
			memcmp(name, key, key_len) == 0;
		if (p >= end || *p != '=') {
			p++;
			continue;
		}
		p++;
		if (p < end && *p == '"') {
			char *decoded = decode_quoted(p + 1, end, &p);

			if (match)
				return decoded;
			free(decoded);
		} else {
			value = p;
			while (p < end && *p != ' ' && *p != '\n')
				p++;
			if (match)
				return xstrndup(value, (size_t)(p - value));
		}
		while (p < end && *p == ' ')
			p++;
	}
	return NULL;
}

static bool
line_matches(const struct log_cmd_options *opt, const char *line, size_t len)
{
	const char *end = line + len;
	bool ok = true;

	if (opt->user != NULL) {
		char *user = field_value(line, end, "user");

		ok = user != NULL && strcmp(user, opt->user) == 0;
		free(user);
	}
	if (ok && opt->level_set) {
		char *name = field_value(line, end, "level");
		enum log_level level;

		ok = name != NULL && log_level_parse(name, &level) == 0 &&
		     level >= opt->level;
		free(name);
	}
	return ok;
}

/* ---- options ---- */

static const struct option long_options[] = {
	{"user", required_argument, NULL, 'u'},
	{"level", required_argument, NULL, 'l'},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

enum log_cmd_parse_result
log_cmd_parse(int argc, char **argv, struct log_cmd_options *opt_r)
{
	char *end;
	int c;

	*opt_r = (struct log_cmd_options){.lines = 20};
	while ((c = getopt_long(argc, argv, "fn:h", long_options, NULL)) !=
	       -1) {
		switch (c) {
		case 'f':
			opt_r->follow = true;
			break;
		case 'n':
			errno = 0;
			opt_r->lines = strtol(optarg, &end, 10);
			if (opt_r->lines < 0 || end == optarg || *end != '\0' ||
			    errno != 0) {
				fprintf(stderr,
					"mailrepl log: invalid -n %s; "
					"give a number of lines, 0 or more\n",
					optarg);
				return LOG_CMD_USAGE;
			}
			break;
		case 'u':
			opt_r->user = optarg;
			break;
		case 'l':
			if (log_level_parse(optarg, &opt_r->level) < 0) {
				fprintf(stderr,
					"mailrepl log: invalid --level "
					"%s; use debug, info, warn or error\n",
					optarg);
				return LOG_CMD_USAGE;
			}
			opt_r->level_set = true;
			break;
		case 'h':
			return LOG_CMD_HELP;
		default:
			return LOG_CMD_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "mailrepl log: unexpected argument %s\n",
			argv[optind]);
		return LOG_CMD_USAGE;
	}
	return LOG_CMD_RUN;
}

/* ---- the last lines ---- */

/* Matching lines found so far, newest first, each with its '\n'. */
struct tail {
	char **lines;
	size_t n, cap;
	long want;
	/* With -f, an unfinished last line (no '\n' yet), which following
	 * completes; without -f it counts as a line. */
	char *unfinished;
};

static int
read_at(int fd, char *buf, size_t len, off_t offset)
{
	while (len > 0) {
		ssize_t n = pread(fd, buf, len, offset);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
		offset += n;
	}
	return 0;
}

static void
tail_add(struct tail *t, const struct log_cmd_options *opt, const char *line,
	 size_t len, bool last_in_file)
{
	bool finished = line[len - 1] == '\n';

	if (!finished && last_in_file && opt->follow) {
		t->unfinished = xstrndup(line, len);
		return;
	}
	if (!line_matches(opt, line, len))
		return;
	t->lines = xgrow(t->lines, &t->cap, t->n + 1, sizeof(*t->lines));
	t->lines[t->n] = finished ? xstrndup(line, len)
				  : xasprintf("%.*s\n", (int)len, line);
	t->n++;
}

/* Take the complete lines off the end of data[0, *len), newest first,
 * until enough match. What is left is the start of a line whose
 * beginning lies before data, unless at_start. */
static void
take_lines(struct tail *t, const struct log_cmd_options *opt, char *data,
	   size_t *len, bool at_start, bool *last_r)
{
	while (*len > 0 && (long)t->n < t->want) {
		size_t e = *len, k = e - 1;

		while (k > 0 && data[k - 1] != '\n')
			k--;
		if (k == 0 && !at_start)
			return;
		tail_add(t, opt, data + k, e - k, *last_r);
		*last_r = false;
		*len = k;
	}
}

/* Collect the last t->want matching lines of [0, end). */
static int
collect_tail(int fd, off_t end, const struct log_cmd_options *opt,
	     struct tail *t)
{
	char *data = NULL;
	size_t len = 0;
	off_t pos = end;
	bool last = true;
	int ret = 0;

	while (pos > 0 && (long)t->n < t->want) {
		size_t chunk = pos > TAIL_BLOCK ? TAIL_BLOCK : (size_t)pos;
		char *next = xmalloc(chunk + len + 1);

		pos -= (off_t)chunk;
		if (read_at(fd, next, chunk, pos) < 0) {
			free(next);
			ret = -1;
			break;
		}
		/* The carried start of a line follows the block read. */
		if (len > 0)
			memcpy(next + chunk, data, len);
		free(data);
		data = next;
		len += chunk;
		take_lines(t, opt, data, &len, pos == 0, &last);
	}
	free(data);
	return ret;
}

static void
tail_free(struct tail *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->lines[i]);
	free(t->lines);
	free(t->unfinished);
}

/* ---- following ---- */

struct follower {
	const struct log_cmd_options *opt;
	const char *path;
	int fd;
	off_t offset;  /* bytes of fd read so far */
	char *partial; /* a line without its '\n' yet */
	size_t partial_len, partial_cap;
	int quiet; /* polls with no new data */
};

static void
feed(struct follower *fw, const char *buf, size_t len)
{
	const char *p = buf, *end = buf + len;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t n =
			nl != NULL ? (size_t)(nl + 1 - p) : (size_t)(end - p);

		fw->partial = xgrow(fw->partial, &fw->partial_cap,
				    fw->partial_len + n + 1, 1);
		memcpy(fw->partial + fw->partial_len, p, n);
		fw->partial_len += n;
		p += n;
		if (nl == NULL)
			break;
		if (line_matches(fw->opt, fw->partial, fw->partial_len))
			fwrite(fw->partial, 1, fw->partial_len, stdout);
		fw->partial_len = 0;
	}
}

static void
sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* After EOF: start over when the file shrank, or move to the file that
 * now has the path once the old one has stopped growing. */
static void
check_rotation(struct follower *fw)
{
	struct stat st_fd, st_path;
	int fd;

	if (fstat(fw->fd, &st_fd) == 0 && st_fd.st_size < fw->offset) {
		lseek(fw->fd, 0, SEEK_SET);
		fw->offset = 0;
		fw->partial_len = 0;
		return;
	}
	if (stat(fw->path, &st_path) != 0 ||
	    (st_path.st_ino == st_fd.st_ino && st_path.st_dev == st_fd.st_dev))
		return;
	if (fw->quiet < FOLLOW_SWITCH_QUIET)
		return;
	fd = open(fw->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return; /* not readable yet: keep the old file */
	close(fw->fd);
	fw->fd = fd;
	fw->offset = 0;
	fw->partial_len = 0;
	fw->quiet = 0;
}

/* Returns when stdout is closed (0) or the file cannot be read (1). */
static int
follow(struct follower *fw)
{
	char buf[TAIL_BLOCK];

	for (;;) {
		ssize_t n = read(fw->fd, buf, sizeof(buf));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "mailrepl log: cannot read %s: %s\n",
				fw->path, strerror(errno));
			return 1;
		}
		if (n > 0) {
			fw->offset += n;
			fw->quiet = 0;
			feed(fw, buf, (size_t)n);
			if (fflush(stdout) != 0 || ferror(stdout))
				return 0;
			continue;
		}
		fw->quiet++;
		check_rotation(fw);
		sleep_ms(FOLLOW_POLL_MS);
	}
}

/* ---- the command ---- */

static int
open_log(const char *path, const char *config_path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;

	if (fd < 0 && errno == ENOENT) {
		fprintf(stderr,
			"mailrepl log: log file %s does not exist; "
			"mailrepld and mailrepl init create it when they "
			"start, or [general] log_file in %s names another "
			"file\n",
			path, config_path);
	} else if (fd < 0 && errno == EACCES) {
		fprintf(stderr,
			"mailrepl log: cannot read log file %s: "
			"permission denied; run mailrepl log as root or as "
			"a member of the file's group\n",
			path);
	} else if (fd < 0) {
		fprintf(stderr, "mailrepl log: cannot open log file %s: %s\n",
			path, strerror(errno));
	} else if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		fprintf(stderr,
			"mailrepl log: %s is not a regular file; set "
			"[general] log_file in %s to the log file\n",
			path, config_path);
		close(fd);
		fd = -1;
	}
	return fd;
}

static int
print_tail(int fd, const char *path, const struct log_cmd_options *opt,
	   struct follower *fw)
{
	struct tail t = {.want = opt->lines};
	struct stat st;
	int ret = -1;

	if (fstat(fd, &st) != 0 || collect_tail(fd, st.st_size, opt, &t) < 0) {
		fprintf(stderr, "mailrepl log: cannot read %s: %s\n", path,
			strerror(errno));
		goto out;
	}
	for (size_t i = t.n; i > 0; i--)
		fputs(t.lines[i - 1], stdout);
	fflush(stdout);
	fw->offset = st.st_size;
	if (t.unfinished != NULL)
		feed(fw, t.unfinished, strlen(t.unfinished));
	ret = 0;
out:
	tail_free(&t);
	return ret;
}

int
log_cmd_run(const struct log_cmd_options *opt, const char *path,
	    const char *config_path)
{
	struct follower fw = {.opt = opt, .path = path};
	int ret = 1;

	fw.fd = open_log(path, config_path);
	if (fw.fd < 0)
		return 1;
	if (print_tail(fw.fd, path, opt, &fw) < 0)
		goto out;
	ret = 0;
	if (opt->follow) {
		lseek(fw.fd, fw.offset, SEEK_SET);
		ret = follow(&fw);
	}
out:
	close(fw.fd);
	free(fw.partial);
	return ret;
}
