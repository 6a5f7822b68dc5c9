/* The configuration loader. iniparser 4.1 returns values only: it keeps no
 * line numbers, lets a duplicate key silently replace the first one and
 * rejects the whole file for one malformed line without saying which. So
 * the file is first scanned here line by line (syntax, unknown sections and
 * keys, duplicates), then loaded with iniparser for the values, which are
 * then parsed and checked into struct config. */
#include <config.h>
#include "cfg.h"
#include "util.h"

#ifdef HAVE_INIPARSER_INIPARSER_H
#include <iniparser/iniparser.h>
#else
#include <iniparser.h>
#endif

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* iniparser 4.1 reads lines with fgets into a 1024-byte buffer and fails
 * the whole file when a line (joined with its continuations) does not fit
 * together with its newline. */
#define INI_MAX_LINE 1022

/* A key found by the scan, lower-cased as iniparser stores it. */
struct ini_key {
	char *section;
	char *key;
	unsigned lineno;
};

struct loader {
	const char *path;
	mode_t mode; /* permission bits of the config file */
	struct ini_key *keys;
	size_t nkeys, keys_cap;
	char *section; /* current section during the scan */
	dictionary *dict;
	struct config *cfg;
	char *error;
};

struct key_spec;
typedef int parse_fn(struct loader *ld, const struct key_spec *spec,
		     const char *value);

/* One known key: where it lives, how its value is parsed and into which
 * field of struct config. min and max bound the numeric keys. */
struct key_spec {
	const char *section;
	const char *key;
	parse_fn *parse;
	size_t offset;
	unsigned long long min, max;
};

enum num_kind { NUM_COUNT, NUM_SECONDS, NUM_BYTES };

static parse_fn parse_mode, parse_tls, parse_layout, parse_path, parse_host,
	parse_user, parse_secret, parse_count, parse_seconds, parse_bytes,
	parse_user_path, parse_fingerprint, parse_listen, parse_networks,
	parse_url, parse_mail_to;

#define FIELD(name) offsetof(struct config, name)
#define GIB (1ULL << 30)

static const struct key_spec key_specs[] = {
	{"general", "mode", parse_mode, 0, 0, 0},
	{"general", "state_dir", parse_path, FIELD(state_dir), 0, 0},
	{"general", "log_file", parse_path, FIELD(log_file), 0, 0},
	{"general", "control_socket", parse_path, FIELD(control_socket), 0, 0},
	{"general", "out_of_sync_after", parse_seconds,
	 FIELD(out_of_sync_after), 1, 86400},
	{"general", "metrics_file", parse_path, FIELD(metrics_file), 0, 0},

	{"maildir", "root", parse_path, FIELD(maildir_root), 0, 0},
	{"maildir", "user_path", parse_user_path, FIELD(user_path), 0, 0},
	{"maildir", "layout", parse_layout, 0, 0, 0},

	{"master", "replica_host", parse_host, FIELD(replica_host), 0, 0},
	{"master", "imap_port", parse_count, FIELD(imap_port), 1, 65535},
	{"master", "imap_tls", parse_tls, 0, 0, 0},
	{"master", "control_port", parse_count, FIELD(control_port), 0, 65535},
	{"master", "admin_user", parse_user, FIELD(admin_user), 0, 0},
	{"master", "admin_password_file", parse_path,
	 FIELD(admin_password_file), 0, 0},
	{"master", "admin_password", parse_secret, FIELD(admin_password), 0, 0},
	{"master", "tls_ca_file", parse_path, FIELD(tls_ca_file), 0, 0},
	{"master", "tls_fingerprint", parse_fingerprint, FIELD(tls_fingerprint),
	 0, 0},
	{"master", "workers", parse_count, FIELD(workers), 1, 64},
	{"master", "batch_messages", parse_count, FIELD(batch_messages), 1,
	 1000},
	{"master", "batch_bytes", parse_bytes, FIELD(batch_bytes), 1, GIB},
	{"master", "max_message_size", parse_bytes, FIELD(max_message_size), 0,
	 ULLONG_MAX},
	{"master", "imap_timeout", parse_seconds, FIELD(imap_timeout), 1, 3600},
	{"master", "reconcile_interval", parse_seconds,
	 FIELD(reconcile_interval), 60, 604800},

	{"replica", "listen", parse_listen, FIELD(listen), 0, 0},
	{"replica", "trusted_networks", parse_networks, FIELD(trusted_networks),
	 0, 0},
	{"replica", "admin_user", parse_user, FIELD(replica_admin_user), 0, 0},
	{"replica", "imap_host", parse_host, FIELD(replica_imap_host), 0, 0},
	{"replica", "imap_port", parse_count, FIELD(replica_imap_port), 1,
	 65535},
	{"replica", "tls_cert_file", parse_path, FIELD(tls_cert_file), 0, 0},
	{"replica", "tls_key_file", parse_path, FIELD(tls_key_file), 0, 0},

	{"alert", "url", parse_url, FIELD(alert_url), 0, 0},
	{"alert", "mail_to", parse_mail_to, FIELD(alert_mail_to), 0, 0},
	{"alert", "after", parse_seconds, FIELD(alert_after), 1, 604800},
};

#define N_SPECS (sizeof(key_specs) / sizeof(key_specs[0]))

static const char *const section_names[] = {"general", "maildir", "master",
					    "replica", "alert"};
static const char *const mode_names[] = {
	[CFG_MODE_STANDALONE] = "standalone",
	[CFG_MODE_MASTER] = "master",
	[CFG_MODE_REPLICA] = "replica",
};
static const char *const tls_names[] = {
	[CFG_TLS_STARTTLS] = "starttls",
	[CFG_TLS_IMAPS] = "imaps",
	[CFG_TLS_NONE] = "none",
};
static const char *const layout_names[] = {
	[CFG_LAYOUT_MAILDIRPP] = "maildir++",
	[CFG_LAYOUT_FS] = "fs",
};
static const char *const url_schemes[] = {"smtp://", "smtps://", "https://",
					  "http://"};

#define N_ELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- errors ---- */

static int __attribute__((format(printf, 2, 3)))
fail(struct loader *ld, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	free(ld->error);
	ld->error = xvasprintf(fmt, ap);
	va_end(ap);
	return -1;
}

static const struct key_spec *
find_spec(const char *section, const char *key)
{
	for (size_t i = 0; i < N_SPECS; i++) {
		if (strcmp(key_specs[i].section, section) == 0 &&
		    strcmp(key_specs[i].key, key) == 0)
			return &key_specs[i];
	}
	return NULL;
}

static unsigned
key_lineno(const struct loader *ld, const char *section, const char *key)
{
	for (size_t i = 0; i < ld->nkeys; i++) {
		if (strcmp(ld->keys[i].section, section) == 0 &&
		    strcmp(ld->keys[i].key, key) == 0)
			return ld->keys[i].lineno;
	}
	return 0;
}

/* Offset of the password in "scheme://user:password@host/...", with its
 * length, or -1 when the URL carries none. */
static long
url_password_span(const char *url, size_t *len_r)
{
	const char *start = strstr(url, "://");
	const char *end, *at, *colon;

	if (start == NULL)
		return -1;
	start += 3;
	end = start + strcspn(start, "/?#");
	at = memrchr(start, '@', end - start);
	if (at == NULL)
		return -1;
	colon = memchr(start, ':', at - start);
	if (colon == NULL)
		return -1;
	*len_r = at - colon - 1;
	return colon + 1 - url;
}

/* Return a copy of value for an error message, with any password replaced
 * by a placeholder. */
static char *
redacted_value(const struct key_spec *spec, const char *value)
{
	size_t len;
	long pos;

	if (spec->parse == parse_secret)
		return xstrdup("(not shown)");
	pos = spec->parse == parse_url ? url_password_span(value, &len) : -1;
	if (pos < 0)
		return xstrdup(value);
	return xasprintf("%.*s(password not shown)%s", (int)pos, value,
			 value + pos + len);
}

/* Fail with "FILE:LINE: [section] key = "value": message". */
static int __attribute__((format(printf, 4, 5)))
value_fail(struct loader *ld, const struct key_spec *spec, const char *value,
	   const char *fmt, ...)
{
	unsigned lineno = key_lineno(ld, spec->section, spec->key);
	char *shown = redacted_value(spec, value);
	char *where, *message;
	va_list ap;

	va_start(ap, fmt);
	message = xvasprintf(fmt, ap);
	va_end(ap);
	where = lineno ? xasprintf("%s:%u", ld->path, lineno)
		       : xstrdup(ld->path);
	fail(ld, "%s: [%s] %s = \"%s\": %s", where, spec->section, spec->key,
	     shown, message);
	free(where);
	free(message);
	free(shown);
	return -1;
}

/* ---- the line scan ---- */

static char *
strip(char *s)
{
	size_t len = strlen(s);

	while (len > 0 && isspace((unsigned char)s[len - 1]))
		s[--len] = '\0';
	while (isspace((unsigned char)*s))
		s++;
	return s;
}

static void
lowercase(char *s)
{
	for (; *s; s++)
		*s = tolower((unsigned char)*s);
}

static bool
section_is_known(const char *section)
{
	for (size_t i = 0; i < N_ELEMS(section_names); i++) {
		if (strcmp(section_names[i], section) == 0)
			return true;
	}
	return false;
}

static char *
known_keys(const char *section)
{
	char *list = xstrdup(""), *next;

	for (size_t i = 0; i < N_SPECS; i++) {
		if (strcmp(key_specs[i].section, section) != 0)
			continue;
		next = xasprintf("%s%s%s", list, *list ? ", " : "",
				 key_specs[i].key);
		free(list);
		list = next;
	}
	return list;
}

static int
scan_section(struct loader *ld, char *text, unsigned lineno)
{
	char *name;

	text[strcspn(text, "]")] = '\0';
	name = strip(text + 1);
	lowercase(name);
	if (!section_is_known(name))
		return fail(ld,
			    "%s:%u: unknown section [%s]; known sections: "
			    "[general], [maildir], [master], [replica], "
			    "[alert]",
			    ld->path, lineno, name);
	free(ld->section);
	ld->section = xstrdup(name);
	return 0;
}

static int
scan_key(struct loader *ld, char *text, unsigned lineno)
{
	const char *section = ld->section;
	unsigned first;
	char *key, *list;

	text[strcspn(text, "=")] = '\0';
	key = strip(text);
	lowercase(key);
	if (section == NULL)
		return fail(ld,
			    "%s:%u: key %s comes before any section; put it "
			    "under its section such as [general]",
			    ld->path, lineno, key);
	if (find_spec(section, key) == NULL) {
		list = known_keys(section);
		fail(ld, "%s:%u: unknown key [%s] %s; known keys: %s", ld->path,
		     lineno, section, key, list);
		free(list);
		return -1;
	}

	first = key_lineno(ld, section, key);
	if (first != 0)
		return fail(ld,
			    "%s:%u: duplicate key [%s] %s, first set on line "
			    "%u; remove one of them",
			    ld->path, lineno, section, key, first);
	ld->keys = xgrow(ld->keys, &ld->keys_cap, ld->nkeys + 1,
			 sizeof(*ld->keys));
	ld->keys[ld->nkeys++] =
		(struct ini_key){xstrdup(section), xstrdup(key), lineno};
	return 0;
}

/* Whether a malformed line may contain a password, so that an error
 * message must not quote it. */
static bool
text_may_hold_secret(const char *text)
{
	return strcasestr(text, "password") != NULL ||
	       strstr(text, "://") != NULL;
}

/* Classify one logical line as iniparser 4.1 does: a comment, a
 * "[section]" line (nothing may follow the bracket, not even a comment),
 * or "key = value" with at least one character before the '='. */
static int
scan_line(struct loader *ld, char *line, unsigned lineno)
{
	char *text = strip(line);
	size_t len = strlen(text);

	if (len == 0 || text[0] == '#' || text[0] == ';')
		return 0;
	if (text[0] == '[' && text[len - 1] == ']')
		return scan_section(ld, text, lineno);
	if (text[0] != '=' && strchr(text, '=') != NULL)
		return scan_key(ld, text, lineno);

	if (text_may_hold_secret(text))
		return fail(ld,
			    "%s:%u: malformed line (its text is not shown "
			    "because it may contain a password); expected "
			    "[section], key = value, or a comment starting "
			    "with # or ;",
			    ld->path, lineno);
	return fail(ld,
		    "%s:%u: malformed line \"%s\"; expected [section], "
		    "key = value, or a comment starting with # or ;",
		    ld->path, lineno, text);
}

static int
open_config(struct loader *ld, FILE **f_r)
{
	struct stat st;
	FILE *f;

	f = fopen(ld->path, "re");
	if (f == NULL)
		return fail(ld,
			    "%s: cannot open the configuration file: %s%s",
			    ld->path, strerror(errno),
			    errno == ENOENT ? "; name another one with -c FILE"
					    : "");
	if (fstat(fileno(f), &st) < 0 || !S_ISREG(st.st_mode)) {
		fclose(f);
		return fail(ld, "%s: the configuration is not a regular file",
			    ld->path);
	}
	ld->mode = st.st_mode & 07777;
	*f_r = f;
	return 0;
}

/* Join physical lines ending in a backslash into one logical line, as
 * iniparser does (the backslash is dropped, the next line appended as it
 * is), and check each line against iniparser's length limit. */
static int
scan_file(struct loader *ld)
{
	char *buf = NULL, *logical = NULL;
	size_t cap = 0, carried = 0, len;
	unsigned lineno = 0, first = 0;
	ssize_t n;
	FILE *f = NULL;
	int ret = -1;

	if (open_config(ld, &f) < 0)
		return -1;
	while ((n = getline(&buf, &cap, f)) >= 0) {
		lineno++;
		len = n > 0 && buf[n - 1] == '\n' ? n - 1 : n;
		if (carried + len > INI_MAX_LINE) {
			fail(ld,
			     "%s:%u: line is longer than %d bytes, the limit "
			     "of iniparser; shorten it",
			     ld->path, lineno, INI_MAX_LINE);
			goto out;
		}
		buf[len] = '\0';
		if (first == 0)
			first = lineno;
		logical = xrealloc(logical, carried + len + 1);
		memcpy(logical + carried, buf, len + 1);

		/* Trailing whitespace goes before the backslash test, so
		 * "a \   " continues too. */
		carried = strlen(logical);
		while (carried > 0 &&
		       isspace((unsigned char)logical[carried - 1]))
			logical[--carried] = '\0';
		if (carried > 0 && logical[carried - 1] == '\\') {
			logical[--carried] = '\0';
			continue;
		}
		if (scan_line(ld, logical, first) < 0)
			goto out;
		carried = 0;
		first = 0;
	}

	if (first != 0) {
		fail(ld,
		     "%s:%u: the last line ends with a backslash "
		     "(continuation) but no line follows; remove the "
		     "backslash",
		     ld->path, lineno);
		goto out;
	}
	ret = 0;
out:
	free(buf);
	free(logical);
	fclose(f);
	return ret;
}

/* ---- numbers ---- */

static unsigned long long
suffix_multiplier(enum num_kind kind, const char *suffix)
{
	if (suffix[0] == '\0')
		return 1;
	if (suffix[1] != '\0')
		return 0;
	if (kind == NUM_SECONDS)
		return suffix[0] == 's' ? 1 : 0;
	if (kind != NUM_BYTES)
		return 0;
	switch (toupper((unsigned char)suffix[0])) {
	case 'K':
		return 1ULL << 10;
	case 'M':
		return 1ULL << 20;
	case 'G':
		return 1ULL << 30;
	default:
		return 0;
	}
}

/* Parse decimal digits and the unit suffix allowed for kind. Returns 0,
 * -1 when s has another form, or -2 on overflow. strtoull alone would also
 * take a sign and leading spaces, and iniparser's own getters take octal
 * ("010" is 8) and hexadecimal. */
static int
parse_number(const char *s, enum num_kind kind, unsigned long long *n_r)
{
	unsigned long long n, mult;
	char *end;

	if (!isdigit((unsigned char)s[0]))
		return -1;
	errno = 0;
	n = strtoull(s, &end, 10);
	if (errno == ERANGE)
		return -2;
	mult = suffix_multiplier(kind, end);
	if (mult == 0)
		return -1;
	if (n > ULLONG_MAX / mult)
		return -2;
	*n_r = n * mult;
	return 0;
}

static char *
describe_range(enum num_kind kind, unsigned long long min,
	       unsigned long long max)
{
	static const char *const forms[] = {
		[NUM_COUNT] = "a whole number",
		[NUM_SECONDS] = "a number of seconds with an optional s suffix",
		[NUM_BYTES] = "a number of bytes with an optional K, M or G "
			      "suffix (1K = 1024)",
	};

	if (max == ULLONG_MAX)
		return xasprintf("%s, %llu or more (0 means no limit)",
				 forms[kind], min);
	return xasprintf("%s from %llu to %llu", forms[kind], min, max);
}

static int
parse_ranged(struct loader *ld, const struct key_spec *spec, const char *value,
	     enum num_kind kind, unsigned long long *n_r)
{
	char *allowed = describe_range(kind, spec->min, spec->max);
	int rc = parse_number(value, kind, n_r);

	if (rc == -1)
		value_fail(ld, spec, value, "invalid; expected %s", allowed);
	else if (rc == -2 || *n_r < spec->min || *n_r > spec->max)
		rc = value_fail(ld, spec, value, "out of range; expected %s",
				allowed);
	free(allowed);
	return rc < 0 ? -1 : 0;
}

static unsigned *
uint_field(struct config *cfg, const struct key_spec *spec)
{
	return (unsigned *)((char *)cfg + spec->offset);
}

static int
parse_count(struct loader *ld, const struct key_spec *spec, const char *value)
{
	unsigned long long n;

	if (parse_ranged(ld, spec, value, NUM_COUNT, &n) < 0)
		return -1;
	*uint_field(ld->cfg, spec) = (unsigned)n;
	return 0;
}

static int
parse_seconds(struct loader *ld, const struct key_spec *spec, const char *value)
{
	unsigned long long n;

	if (parse_ranged(ld, spec, value, NUM_SECONDS, &n) < 0)
		return -1;
	*uint_field(ld->cfg, spec) = (unsigned)n;
	return 0;
}

static int
parse_bytes(struct loader *ld, const struct key_spec *spec, const char *value)
{
	unsigned long long n;

	if (parse_ranged(ld, spec, value, NUM_BYTES, &n) < 0)
		return -1;
	*(unsigned long long *)((char *)ld->cfg + spec->offset) = n;
	return 0;
}

/* ---- names ---- */

static int
name_index(const char *const *names, size_t count, const char *value)
{
	for (size_t i = 0; i < count; i++) {
		if (strcmp(names[i], value) == 0)
			return (int)i;
	}
	return -1;
}

static int
parse_mode(struct loader *ld, const struct key_spec *spec, const char *value)
{
	int i = name_index(mode_names, N_ELEMS(mode_names), value);

	if (i < 0)
		return value_fail(ld, spec, value,
				  "invalid; allowed: standalone, master, "
				  "replica");
	ld->cfg->mode = (enum cfg_mode)i;
	return 0;
}

static int
parse_tls(struct loader *ld, const struct key_spec *spec, const char *value)
{
	int i = name_index(tls_names, N_ELEMS(tls_names), value);

	if (i < 0)
		return value_fail(ld, spec, value,
				  "invalid; allowed: starttls, imaps, none");
	ld->cfg->imap_tls = (enum cfg_tls)i;
	return 0;
}

static int
parse_layout(struct loader *ld, const struct key_spec *spec, const char *value)
{
	int i = name_index(layout_names, N_ELEMS(layout_names), value);

	if (i < 0)
		return value_fail(ld, spec, value,
				  "invalid; allowed: maildir++, fs");
	ld->cfg->layout = (enum cfg_layout)i;
	return 0;
}

/* ---- strings ---- */

static void
set_string(struct loader *ld, const struct key_spec *spec, const char *value)
{
	char **field = (char **)((char *)ld->cfg + spec->offset);

	free(*field);
	*field = xstrdup(value);
}

static int
parse_path(struct loader *ld, const struct key_spec *spec, const char *value)
{
	if (value[0] != '/')
		return value_fail(ld, spec, value,
				  "not an absolute path; write the full path "
				  "starting with /");
	set_string(ld, spec, value);
	return 0;
}

/* An IP address, or a host name of letters, digits, '-', '_' and '.'. */
static bool
host_is_valid(const char *host)
{
	unsigned char addr[sizeof(struct in6_addr)];
	size_t len = strlen(host);

	if (inet_pton(AF_INET6, host, addr) == 1)
		return true;
	if (len == 0 || len > 253 || !isalnum((unsigned char)host[0]))
		return false;
	for (const char *p = host; *p; p++) {
		if (!isalnum((unsigned char)*p) && strchr("-_.", *p) == NULL)
			return false;
	}
	return strstr(host, "..") == NULL;
}

static int
parse_host(struct loader *ld, const struct key_spec *spec, const char *value)
{
	if (!host_is_valid(value))
		return value_fail(ld, spec, value,
				  "invalid; expected a host name or an IP "
				  "address, without brackets or port");
	set_string(ld, spec, value);
	return 0;
}

static bool
has_space_or_control(const char *s)
{
	for (; *s; s++) {
		if (isspace((unsigned char)*s) || iscntrl((unsigned char)*s))
			return true;
	}
	return false;
}

static int
parse_user(struct loader *ld, const struct key_spec *spec, const char *value)
{
	if (has_space_or_control(value))
		return value_fail(ld, spec, value,
				  "invalid; a user name has no spaces or "
				  "control characters");
	set_string(ld, spec, value);
	return 0;
}

static int
parse_secret(struct loader *ld, const struct key_spec *spec, const char *value)
{
	set_string(ld, spec, value);
	return 0;
}

/* The template is joined to [maildir] root, so it must stay below it. */
static int
parse_user_path(struct loader *ld, const struct key_spec *spec,
		const char *value)
{
	bool names_user = false;

	if (value[0] == '/')
		return value_fail(ld, spec, value,
				  "must be relative to [maildir] root; remove "
				  "the leading /");
	for (const char *p = value; *p; p++) {
		if (*p != '%')
			continue;
		p++;
		if (*p == '\0' || strchr("und%", *p) == NULL)
			return value_fail(ld, spec, value,
					  "invalid %% sequence; allowed: %%u "
					  "(user), %%n (local part), %%d "
					  "(domain), %%%% (a %% sign)");
		names_user |= *p == 'u' || *p == 'n';
	}
	if (!names_user)
		return value_fail(ld, spec, value,
				  "names no user; it must contain %%u or %%n");
	if (strcmp(value, "..") == 0 || strncmp(value, "../", 3) == 0 ||
	    strstr(value, "/../") != NULL ||
	    (strlen(value) >= 3 &&
	     strcmp(value + strlen(value) - 3, "/..") == 0))
		return value_fail(ld, spec, value,
				  "must not contain a .. component");
	set_string(ld, spec, value);
	return 0;
}

/* Store "sha256:" and 64 lowercase hex digits. The input may use either
 * case and may separate the bytes with colons, as "openssl x509 -noout
 * -fingerprint -sha256" prints them. */
static int
parse_fingerprint(struct loader *ld, const struct key_spec *spec,
		  const char *value)
{
	char hex[65];
	const char *p;
	bool colons;
	size_t i, n = 0;

	if (strncasecmp(value, "sha256:", 7) != 0)
		goto bad;
	p = value + 7;
	colons = strchr(p, ':') != NULL;
	for (i = 0; p[i] != '\0'; i++) {
		if (colons && i % 3 == 2) {
			if (p[i] != ':')
				goto bad;
			continue;
		}
		if (!isxdigit((unsigned char)p[i]) || n == 64)
			goto bad;
		hex[n++] = tolower((unsigned char)p[i]);
	}
	if (n != 64 || (colons && i != 95))
		goto bad;
	hex[n] = '\0';

	free(ld->cfg->tls_fingerprint);
	ld->cfg->tls_fingerprint = xasprintf("sha256:%s", hex);
	return 0;
bad:
	return value_fail(ld, spec, value,
			  "invalid; expected sha256: followed by 64 hex "
			  "digits, optionally as colon-separated pairs");
}

static bool
port_is_valid(const char *s)
{
	unsigned long long port;

	return parse_number(s, NUM_COUNT, &port) == 0 && port >= 1 &&
	       port <= 65535;
}

/* "[IPv6]:port", "IPv4:port" or "host:port". */
static int
parse_listen(struct loader *ld, const struct key_spec *spec, const char *value)
{
	const char *colon = strrchr(value, ':');
	unsigned char addr[sizeof(struct in6_addr)];
	char *host = NULL;
	bool valid = false;

	if (colon == NULL || colon == value)
		goto out;
	if (value[0] == '[') {
		if (colon[-1] != ']')
			goto out;
		host = xstrndup(value + 1, colon - value - 2);
		valid = inet_pton(AF_INET6, host, addr) == 1;
	} else {
		host = xstrndup(value, colon - value);
		valid = strchr(host, ':') == NULL && host_is_valid(host);
	}
	valid = valid && port_is_valid(colon + 1);
out:
	free(host);
	if (!valid)
		return value_fail(ld, spec, value,
				  "invalid; expected ADDRESS:PORT such as "
				  "[::]:2005 or 0.0.0.0:2005");
	set_string(ld, spec, value);
	return 0;
}

/* "address/prefix" with the prefix in range for the address family. */
static bool
cidr_is_valid(const char *item)
{
	unsigned char addr[sizeof(struct in6_addr)];
	const char *slash = strchr(item, '/');
	unsigned long long prefix;
	char *address;
	int family;
	bool valid;

	if (slash == NULL)
		return false;
	address = xstrndup(item, slash - item);
	family = strchr(address, ':') != NULL ? AF_INET6 : AF_INET;
	valid = inet_pton(family, address, addr) == 1 && slash[1] != '\0' &&
		strlen(slash + 1) <= 3 &&
		parse_number(slash + 1, NUM_COUNT, &prefix) == 0 &&
		prefix <= (family == AF_INET6 ? 128U : 32U);
	free(address);
	return valid;
}

/* Call check on each comma-separated item of list, stripped of spaces.
 * Returns a copy of the first item it rejects, or NULL. An empty item is
 * rejected too. */
static char *
find_bad_item(const char *list, bool (*check)(const char *item))
{
	char *copy = xstrdup(list), *rest = copy, *item, *bad = NULL;

	do {
		item = strsep(&rest, ",");
		item = strip(item);
		if (*item == '\0' || !check(item))
			bad = xstrdup(item);
	} while (bad == NULL && rest != NULL);
	free(copy);
	return bad;
}

static int
parse_networks(struct loader *ld, const struct key_spec *spec,
	       const char *value)
{
	char *bad = find_bad_item(value, cidr_is_valid);

	if (bad != NULL) {
		value_fail(ld, spec, value,
			   "item \"%s\" is not a network in CIDR form; "
			   "expected a comma-separated list such as "
			   "127.0.0.0/8, ::1/128",
			   bad);
		free(bad);
		return -1;
	}
	set_string(ld, spec, value);
	return 0;
}

static int
parse_url(struct loader *ld, const struct key_spec *spec, const char *value)
{
	const char *host = NULL, *at;
	size_t len;

	for (size_t i = 0; i < N_ELEMS(url_schemes); i++) {
		len = strlen(url_schemes[i]);
		if (strncasecmp(value, url_schemes[i], len) == 0)
			host = value + len;
	}
	if (host == NULL)
		return value_fail(ld, spec, value,
				  "unsupported; the URL must start with "
				  "smtp://, smtps:// or https://");

	len = strcspn(host, "/?#");
	at = memrchr(host, '@', len);
	if (at != NULL) {
		len -= at + 1 - host;
		host = at + 1;
	}
	if (len == 0 || has_space_or_control(value))
		return value_fail(ld, spec, value,
				  "invalid; expected a URL with a host and "
				  "no spaces");
	/* Plain HTTP carries the alert unencrypted, so it is accepted only
	 * for a listener on this host (a local relay, or a test). */
	if (strncasecmp(value, "http://", 7) == 0 &&
	    !(len >= 4 && strncmp(host, "127.", 4) == 0) &&
	    !(len >= 5 && strncmp(host, "[::1]", 5) == 0))
		return value_fail(ld, spec, value,
				  "unsupported; http:// is accepted only for "
				  "127.0.0.0/8 and [::1]; use https://");
	set_string(ld, spec, value);
	return 0;
}

static bool
address_is_valid(const char *address)
{
	const char *at = strchr(address, '@');

	return at != NULL && at != address && at[1] != '\0' &&
	       strchr(at + 1, '@') == NULL && !has_space_or_control(address);
}

static int
parse_mail_to(struct loader *ld, const struct key_spec *spec, const char *value)
{
	char *bad = find_bad_item(value, address_is_valid);

	if (bad != NULL) {
		value_fail(ld, spec, value,
			   "\"%s\" is not a mail address; expected one or "
			   "more addresses such as ops@example.org, "
			   "separated by commas",
			   bad);
		free(bad);
		return -1;
	}
	set_string(ld, spec, value);
	return 0;
}

/* ---- loading ---- */

static const char *
config_secret_key(const struct loader *ld)
{
	const char *url = iniparser_getstring(ld->dict, "alert:url", NULL);
	size_t len;

	if (iniparser_find_entry(ld->dict, "master:admin_password"))
		return "[master] admin_password";
	if (url != NULL && url_password_span(url, &len) >= 0)
		return "[alert] url";
	return NULL;
}

static int
check_config_secret(struct loader *ld)
{
	const char *secret = config_secret_key(ld);

	if (secret == NULL || (ld->mode & 077) == 0)
		return 0;
	return fail(ld,
		    "%s holds a secret (%s) and is readable by group or "
		    "others (mode %04o); run: chmod 600 %s",
		    ld->path, secret, (unsigned)ld->mode, ld->path);
}

static int
load_dictionary(struct loader *ld)
{
	ld->dict = iniparser_load(ld->path);
	if (ld->dict == NULL)
		return fail(ld,
			    "%s: iniparser could not load the file, although "
			    "every line looked valid here",
			    ld->path);
	return 0;
}

static int
apply_values(struct loader *ld)
{
	const struct key_spec *spec;
	const char *value;
	char name[64];

	for (size_t i = 0; i < N_SPECS; i++) {
		spec = &key_specs[i];
		snprintf(name, sizeof(name), "%s:%s", spec->section, spec->key);
		value = iniparser_getstring(ld->dict, name, NULL);
		if (value == NULL)
			continue;
		if (value[0] == '\0')
			return value_fail(ld, spec, value,
					  "empty; set a value or remove the "
					  "line to use the default");
		if (spec->parse(ld, spec, value) < 0)
			return -1;
	}
	return 0;
}

static bool
host_is_loopback(const char *host)
{
	struct in6_addr addr6;
	struct in_addr addr4;

	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (inet_pton(AF_INET, host, &addr4) == 1)
		return (ntohl(addr4.s_addr) >> 24) == 127;
	if (inet_pton(AF_INET6, host, &addr6) != 1)
		return false;
	return IN6_IS_ADDR_LOOPBACK(&addr6) ||
	       (IN6_IS_ADDR_V4MAPPED(&addr6) && addr6.s6_addr[12] == 127);
}

static int
missing(struct loader *ld, const char *what)
{
	return fail(ld, "%s: mode = master needs %s", ld->path, what);
}

static int
validate_master(struct loader *ld)
{
	const struct config *cfg = ld->cfg;

	if (cfg->mode != CFG_MODE_MASTER)
		return 0;
	if (cfg->replica_host == NULL)
		return missing(ld, "[master] replica_host, the replica's host "
				   "name or address");
	if (cfg->admin_user == NULL)
		return missing(ld, "[master] admin_user, the replica's IMAP "
				   "administrator (master user)");
	if (cfg->admin_password_file == NULL && cfg->admin_password == NULL)
		return missing(ld, "the administrator's password: set [master] "
				   "admin_password_file (or admin_password)");
	return 0;
}

static int
validate_tls(struct loader *ld)
{
	struct config *cfg = ld->cfg;

	if (cfg->imap_tls == CFG_TLS_IMAPS &&
	    !iniparser_find_entry(ld->dict, "master:imap_port"))
		cfg->imap_port = 993;
	if (cfg->imap_tls == CFG_TLS_NONE && cfg->replica_host != NULL &&
	    !host_is_loopback(cfg->replica_host))
		return value_fail(ld, find_spec("master", "imap_tls"), "none",
				  "imap_tls = none sends the administrator "
				  "password in clear text; only allowed for "
				  "a loopback replica_host (%s is not)",
				  cfg->replica_host);
	return 0;
}

static int
validate_pairs(struct loader *ld)
{
	const struct config *cfg = ld->cfg;
	const char *url = cfg->alert_url;

	if ((cfg->tls_cert_file == NULL) != (cfg->tls_key_file == NULL))
		return fail(ld,
			    "%s: [replica] tls_cert_file and tls_key_file "
			    "must be set together",
			    ld->path);
	if (url != NULL && strncasecmp(url, "smtp", 4) == 0 &&
	    cfg->alert_mail_to == NULL)
		return fail(ld,
			    "%s: [alert] url sends mail, so [alert] mail_to "
			    "must name the recipients",
			    ld->path);
	return 0;
}

static int
validate(struct loader *ld)
{
	if (ld->cfg->layout == CFG_LAYOUT_FS)
		return value_fail(ld, find_spec("maildir", "layout"), "fs",
				  "layout fs is not supported yet; use "
				  "maildir++");
	if (validate_master(ld) < 0 || validate_tls(ld) < 0 ||
	    validate_pairs(ld) < 0)
		return -1;
	return 0;
}

/* Read the password file into cfg->admin_password, which it overrides. */
static int
load_password_file(struct loader *ld)
{
	const struct key_spec *spec =
		find_spec("master", "admin_password_file");
	const char *file = ld->cfg->admin_password_file;
	char *secret = NULL, *error = NULL;
	struct stat st;

	if (file == NULL)
		return 0;
	if (stat(file, &st) < 0)
		return value_fail(ld, spec, file,
				  "cannot read the password file: %s",
				  strerror(errno));
	if (!S_ISREG(st.st_mode))
		return value_fail(ld, spec, file, "not a regular file");
	if (st.st_mode & 077)
		return value_fail(ld, spec, file,
				  "the password file is readable by group or "
				  "others (mode %04o); run: chmod 600 %s",
				  (unsigned)(st.st_mode & 07777), file);
	if (read_secret_file(file, &secret, &error) < 0) {
		value_fail(ld, spec, file, "%s", error);
		free(error);
		return -1;
	}
	secret_free(&ld->cfg->admin_password);
	ld->cfg->admin_password = secret;
	return 0;
}

static struct config *
config_new(const char *path)
{
	struct config *cfg = xcalloc(1, sizeof(*cfg));

	cfg->path = xstrdup(path);
	cfg->mode = CFG_MODE_STANDALONE;
	cfg->state_dir = xstrdup("/var/lib/mailrepl");
	cfg->log_file = xstrdup("/var/log/mailrepl/mailrepl.log");
	cfg->control_socket = xstrdup("/run/mailrepl/control.sock");
	cfg->out_of_sync_after = 60;

	cfg->maildir_root = xstrdup("/var/vmail");
	cfg->user_path = xstrdup("%u/Maildir");
	cfg->layout = CFG_LAYOUT_MAILDIRPP;

	cfg->imap_port = 143;
	cfg->imap_tls = CFG_TLS_STARTTLS;
	cfg->control_port = 2005;
	cfg->workers = 4;
	cfg->batch_messages = 50;
	cfg->batch_bytes = 8ULL << 20;
	cfg->max_message_size = 0;
	cfg->imap_timeout = 120;
	cfg->reconcile_interval = 3600;

	cfg->listen = xstrdup("[::]:2005");
	cfg->trusted_networks = xstrdup("127.0.0.0/8, ::1/128, 10.0.0.0/8, "
					"172.16.0.0/12, 192.168.0.0/16, "
					"fc00::/7");
	cfg->replica_imap_host = xstrdup("127.0.0.1");
	cfg->replica_imap_port = 143;

	cfg->alert_after = 300;
	return cfg;
}

static void
loader_cleanup(struct loader *ld)
{
	for (size_t i = 0; i < ld->nkeys; i++) {
		free(ld->keys[i].section);
		free(ld->keys[i].key);
	}
	free(ld->keys);
	free(ld->section);
	if (ld->dict != NULL)
		iniparser_freedict(ld->dict);
	config_free(&ld->cfg);
	free(ld->error);
}

int
config_load(const char *path, struct config **cfg_r, char **error_r)
{
	struct loader ld = {.path = path};
	int ret = -1;

	*cfg_r = NULL;
	ld.cfg = config_new(path);
	if (scan_file(&ld) < 0 || load_dictionary(&ld) < 0 ||
	    check_config_secret(&ld) < 0 || apply_values(&ld) < 0 ||
	    validate(&ld) < 0 || load_password_file(&ld) < 0) {
		*error_r = ld.error;
		ld.error = NULL;
		goto out;
	}

	*cfg_r = ld.cfg;
	ld.cfg = NULL;
	ret = 0;
out:
	loader_cleanup(&ld);
	return ret;
}

void
config_free(struct config **cfg_p)
{
	struct config *cfg = *cfg_p;

	if (cfg == NULL)
		return;
	free(cfg->path);
	free(cfg->state_dir);
	free(cfg->log_file);
	free(cfg->control_socket);
	free(cfg->metrics_file);
	free(cfg->maildir_root);
	free(cfg->user_path);
	free(cfg->replica_host);
	free(cfg->admin_user);
	free(cfg->admin_password_file);
	secret_free(&cfg->admin_password);
	free(cfg->tls_ca_file);
	free(cfg->tls_fingerprint);
	free(cfg->listen);
	free(cfg->trusted_networks);
	free(cfg->replica_admin_user);
	free(cfg->replica_imap_host);
	free(cfg->tls_cert_file);
	free(cfg->tls_key_file);
	free(cfg->alert_url);
	free(cfg->alert_mail_to);
	xfree(cfg_p);
}

const char *
cfg_mode_name(enum cfg_mode mode)
{
	if ((unsigned)mode >= N_ELEMS(mode_names))
		return "invalid";
	return mode_names[mode];
}

const char *
cfg_tls_name(enum cfg_tls tls)
{
	if ((unsigned)tls >= N_ELEMS(tls_names))
		return "invalid";
	return tls_names[tls];
}
