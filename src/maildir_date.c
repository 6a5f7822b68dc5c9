/* INTERNALDATE of a Maildir message: its mtime, or the epoch in its
 * name, or its Date header. */
#include <config.h>
#include "maildir_private.h"
#include "cfg.h"
#include "log.h"
#include "util.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <iconv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- Dates ------------------------------------------------------------ */

static bool
time_plausible(time_t t, time_t now)
{
	return t >= PLAUSIBLE_MIN && t <= now + PLAUSIBLE_FUTURE;
}

/* The epoch that Maildir writers put at the start of a unique name. */
static bool
name_epoch(const char *uniq, time_t now, time_t *t_r)
{
	long long t = 0;
	size_t i;

	for (i = 0; i < 12 && isdigit((unsigned char)uniq[i]); i++)
		t = t * 10 + (uniq[i] - '0');
	if (i == 0 || isdigit((unsigned char)uniq[i]))
		return false;
	*t_r = (time_t)t;
	return time_plausible(*t_r, now);
}

/* Skip white space and RFC 5322 comments, which may nest. */
static void
skip_cfws(const char **p)
{
	int depth = 0;

	for (;; (*p)++) {
		if (**p == '\0')
			return;
		if (**p == '(')
			depth++;
		else if (**p == ')' && depth > 0)
			depth--;
		else if (**p == '\\' && depth > 0 && (*p)[1] != '\0')
			(*p)++;
		else if (depth == 0 && !isspace((unsigned char)**p))
			return;
	}
}

static bool
read_number(const char **p, int min_digits, int max_digits, int *value_r,
	    int *digits_r)
{
	int n = 0, v = 0;

	skip_cfws(p);
	while (n < max_digits && isdigit((unsigned char)**p)) {
		v = v * 10 + (**p - '0');
		(*p)++;
		n++;
	}
	*value_r = v;
	if (digits_r != NULL)
		*digits_r = n;
	return n >= min_digits && !isdigit((unsigned char)**p);
}

static size_t
read_word(const char **p, char *buf, size_t size)
{
	size_t n = 0;

	skip_cfws(p);
	while (isalpha((unsigned char)**p)) {
		if (n + 1 < size)
			buf[n++] = **p;
		(*p)++;
	}
	buf[n] = '\0';
	return n;
}

static bool
parse_month(const char **p, int *mon_r)
{
	static const char months[] = "janfebmaraprmayjunjulaugsepoctnovdec";
	char word[16];

	if (read_word(p, word, sizeof(word)) < 3)
		return false;
	for (int i = 0; i < 12; i++) {
		if (strncasecmp(word, months + 3 * i, 3) == 0) {
			*mon_r = i;
			return true;
		}
	}
	return false;
}

/* Zone offset in seconds east of UTC. Obsolete US zone names are
 * mapped; RFC 5322 says military letters carry no information, so they
 * and a missing zone count as +0000. */
static bool
parse_zone(const char **p, long *offset_r)
{
	static const struct {
		const char *name;
		int hours;
	} names[] = {{"EST", -5}, {"EDT", -4}, {"CST", -6}, {"CDT", -5},
		     {"MST", -7}, {"MDT", -6}, {"PST", -8}, {"PDT", -7}};
	char word[16];
	int hhmm, digits, sign;

	*offset_r = 0;
	skip_cfws(p);
	if (**p == '+' || **p == '-') {
		sign = **p == '-' ? -1 : 1;
		(*p)++;
		if (!read_number(p, 4, 4, &hhmm, &digits) || hhmm % 100 > 59)
			return false;
		*offset_r = sign * ((hhmm / 100) * 3600L + (hhmm % 100) * 60L);
		return true;
	}
	read_word(p, word, sizeof(word));
	for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++) {
		if (strcasecmp(word, names[i].name) == 0)
			*offset_r = names[i].hours * 3600L;
	}
	return true;
}

static bool
parse_time_of_day(const char **p, struct tm *tm)
{
	if (!read_number(p, 1, 2, &tm->tm_hour, NULL))
		return false;
	skip_cfws(p);
	if (**p != ':')
		return false;
	(*p)++;
	if (!read_number(p, 2, 2, &tm->tm_min, NULL))
		return false;
	skip_cfws(p);
	if (**p == ':') {
		(*p)++;
		if (!read_number(p, 2, 2, &tm->tm_sec, NULL))
			return false;
	}
	return tm->tm_hour < 24 && tm->tm_min < 60 && tm->tm_sec <= 60;
}

/* Parse an RFC 5322 date-time, with the obsolete forms of section 4.3
 * (two- and three-digit years, zone names, comments). */
static bool
parse_rfc5322_date(const char *s, time_t *t_r)
{
	struct tm tm = {0};
	int year, digits;
	long offset;
	char word[16];
	const char *p = s;

	skip_cfws(&p);
	if (isalpha((unsigned char)*p)) {
		read_word(&p, word, sizeof(word));
		skip_cfws(&p);
		if (*p == ',')
			p++;
	}
	if (!read_number(&p, 1, 2, &tm.tm_mday, NULL) || tm.tm_mday < 1 ||
	    tm.tm_mday > 31 || !parse_month(&p, &tm.tm_mon) ||
	    !read_number(&p, 2, 4, &year, &digits) ||
	    !parse_time_of_day(&p, &tm) || !parse_zone(&p, &offset))
		return false;

	if (digits == 2)
		year += year < 50 ? 2000 : 1900;
	else if (digits == 3)
		year += 1900;
	tm.tm_year = year - 1900;
	*t_r = timegm(&tm) - offset;
	return true;
}

/* Returns true with line's value appended when line continues the Date
 * field being collected or starts one. */
static bool
collect_date_line(const char *line, bool *in_date, char **value,
		  size_t *len, size_t *cap)
{
	if (line[0] == ' ' || line[0] == '\t') {
		if (*in_date)
			md_buf_append(value, len, cap, line, strlen(line));
		return *in_date;
	}
	if (*value != NULL) {
		*in_date = false;
		return false;
	}
	*in_date = strncasecmp(line, "Date:", 5) == 0;
	if (*in_date)
		md_buf_append(value, len, cap, line + 5, strlen(line + 5));
	return *in_date;
}

/* Find the first Date field in the header section of path. Lines are
 * read in pieces of at most sizeof(buf) bytes, so a huge line is never
 * held whole. Reading stops at the empty line that ends the header, or
 * after MAX_HEADER_BYTES. */
static char *
read_date_field(const char *path)
{
	char buf[1024], *value = NULL;
	size_t len = 0, cap = 0, total = 0, n;
	bool in_date = false, line_start = true;
	FILE *f = fopen(path, "re");

	if (f == NULL)
		return NULL;
	while (total < MAX_HEADER_BYTES && fgets(buf, sizeof(buf), f)) {
		n = strlen(buf);
		total += n;
		if (!line_start) {
			if (in_date)
				md_buf_append(&value, &len, &cap, buf, n);
		} else if (buf[strspn(buf, "\r\n")] == '\0') {
			break;
		} else if (!collect_date_line(buf, &in_date, &value, &len,
					      &cap) &&
			   value != NULL) {
			break;
		}
		line_start = n > 0 && buf[n - 1] == '\n';
	}
	fclose(f);
	return value;
}

/* A Date before 1990 is kept, since old archives hold such mail, but
 * one more than a day in the future is as implausible as such an mtime. */
static bool
header_date(const char *path, time_t now, time_t *t_r)
{
	char *value = read_date_field(path);
	bool ok;

	if (value == NULL)
		return false;
	ok = parse_rfc5322_date(value, t_r) && *t_r >= 0 &&
	     *t_r <= now + PLAUSIBLE_FUTURE;
	free(value);
	return ok;
}

time_t
md_internaldate(const char *path, const char *uniq, time_t mtime,
		const char **source_r)
{
	time_t now = time(NULL), t;
	const char *source;

	if (time_plausible(mtime, now)) {
		t = mtime;
		source = "mtime";
	} else if (name_epoch(uniq, now, &t)) {
		source = "name";
	} else if (header_date(path, now, &t)) {
		source = "header";
	} else {
		t = now;
		source = "now";
	}
	if (source_r != NULL)
		*source_r = source;
	return t;
}
