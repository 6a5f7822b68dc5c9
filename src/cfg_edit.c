/* Changing [general] mode in the configuration file, byte for byte. */
#include <config.h>
#include "cfg_edit.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* The output under construction. */
struct buf {
	char *data;
	size_t len, cap;
};

static void
buf_add(struct buf *b, const char *s, size_t n)
{
	b->data = xgrow(b->data, &b->cap, b->len + n + 1, 1);
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void
buf_str(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

/* One physical line: [start, content_end) is the text without its line
 * ending, [content_end, end) the "\n" or "\r\n" (empty on the last line
 * when the file does not end in a newline). */
struct line {
	const char *start, *content_end, *end;
};

static bool
next_line(const char **pos, const char *text_end, struct line *l)
{
	const char *nl;

	if (*pos >= text_end)
		return false;
	l->start = *pos;
	nl = memchr(*pos, '\n', (size_t)(text_end - *pos));
	l->end = nl != NULL ? nl + 1 : text_end;
	l->content_end = nl != NULL ? nl : text_end;
	if (l->content_end > l->start && l->content_end[-1] == '\r')
		l->content_end--;
	*pos = l->end;
	return true;
}

static const char *
skip_blanks(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	return p;
}

static const char *
trim_end(const char *start, const char *end)
{
	while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	return end;
}

/* Whether [s, e), with blanks around it trimmed, is name in any case. */
static bool
word_is(const char *s, const char *e, const char *name)
{
	s = skip_blanks(s, e);
	e = trim_end(s, e);
	return (size_t)(e - s) == strlen(name) &&
	       strncasecmp(s, name, strlen(name)) == 0;
}

/* The line ending the file uses, taken from its first line. */
static const char *
line_ending(const char *text, size_t len)
{
	const char *nl = memchr(text, '\n', len);

	return nl != NULL && nl > text && nl[-1] == '\r' ? "\r\n" : "\n";
}

/* Find the value of a "mode = value" line: [*vs_r, *ve_r) is what to
 * replace. A quoted value keeps its quotes, and an unquoted one ends
 * where an inline comment (# or ;) or trailing blanks begin, as the
 * loader reads it. */
static int
find_value(const struct line *l, const char *eq, const char **vs_r,
	   const char **ve_r, char **error_r)
{
	const char *vs = skip_blanks(eq + 1, l->content_end), *ve;

	if (vs < l->content_end && (*vs == '"' || *vs == '\'')) {
		ve = memchr(vs + 1, *vs, (size_t)(l->content_end - vs - 1));
		if (ve == NULL) {
			*error_r = xstrdup("the mode value has no closing "
					   "quote");
			return -1;
		}
		*vs_r = vs + 1;
		*ve_r = ve;
		return 0;
	}
	ve = vs;
	while (ve < l->content_end && *ve != '#' && *ve != ';')
		ve++;
	*vs_r = vs;
	*ve_r = trim_end(vs, ve);
	return 0;
}

/* Scan text for the mode line of [general]. Sets *vs_r and *ve_r to the
 * value to replace, or leaves them NULL and sets *header_end_r to the end
 * of the first [general] header line (NULL when there is none). */
static int
scan(const char *text, size_t len, const char **vs_r, const char **ve_r,
     const char **header_end_r, char **error_r)
{
	const char *pos = text, *end = text + len, *p, *eq;
	bool in_general = false, continued = false, was_continued;
	struct line l;

	while (next_line(&pos, end, &l)) {
		was_continued = continued;
		continued =
			l.content_end > l.start && l.content_end[-1] == '\\';
		if (was_continued)
			continue;
		p = skip_blanks(l.start, l.content_end);
		if (p == l.content_end || *p == '#' || *p == ';')
			continue;
		if (*p == '[') {
			eq = memchr(p, ']', (size_t)(l.content_end - p));
			in_general =
				eq != NULL && word_is(p + 1, eq, "general");
			if (in_general && *header_end_r == NULL)
				*header_end_r = l.end;
			continue;
		}
		eq = memchr(p, '=', (size_t)(l.content_end - p));
		if (!in_general || eq == NULL || !word_is(p, eq, "mode"))
			continue;
		if (continued) {
			*error_r = xstrdup("the mode line continues on the "
					   "next line (ends in \\)");
			return -1;
		}
		return find_value(&l, eq, vs_r, ve_r, error_r);
	}
	return 0;
}

int
cfg_edit_set_mode(const char *text, size_t len, const char *mode_name,
		  char **out_r, size_t *out_len_r, char **error_r)
{
	const char *vs = NULL, *ve = NULL, *header_end = NULL;
	const char *eol = line_ending(text, len);
	struct buf out = {0};

	if (scan(text, len, &vs, &ve, &header_end, error_r) < 0)
		return -1;

	if (vs != NULL) {
		buf_add(&out, text, (size_t)(vs - text));
		buf_str(&out, mode_name);
		buf_add(&out, ve, (size_t)(text + len - ve));
	} else if (header_end != NULL) {
		buf_add(&out, text, (size_t)(header_end - text));
		/* A header on the last line without a newline needs one. */
		if (header_end == text + len &&
		    (len == 0 || text[len - 1] != '\n'))
			buf_str(&out, eol);
		buf_str(&out, "mode = ");
		buf_str(&out, mode_name);
		buf_str(&out, eol);
		buf_add(&out, header_end, (size_t)(text + len - header_end));
	} else {
		buf_str(&out, "[general]");
		buf_str(&out, eol);
		buf_str(&out, "mode = ");
		buf_str(&out, mode_name);
		buf_str(&out, eol);
		if (len > 0)
			buf_str(&out, eol);
		buf_add(&out, text, len);
	}
	if (out.data == NULL)
		buf_add(&out, "", 0);
	*out_r = out.data;
	*out_len_r = out.len;
	return 0;
}

/* Read the whole file; *st_r gets its permissions and owner. */
static int
read_file(const char *path, char **text_r, size_t *len_r, struct stat *st_r,
	  char **error_r)
{
	struct buf b = {0};
	char chunk[8192];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, st_r) < 0) {
		*error_r =
			xasprintf("cannot open the configuration file %s: %s",
				  path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	while ((n = read(fd, chunk, sizeof(chunk))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*error_r = xasprintf("cannot read %s: %s", path,
					     strerror(errno));
			close(fd);
			free(b.data);
			return -1;
		}
		buf_add(&b, chunk, (size_t)n);
	}
	close(fd);
	*text_r = b.data != NULL ? b.data : xstrdup("");
	*len_r = b.len;
	return 0;
}

static bool
write_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		data += n;
		len -= (size_t)n;
	}
	return true;
}

/* Write data to a new temporary file beside path with the permissions and
 * owner of st, and fsync it. Returns the temporary's name (caller frees
 * and unlinks) or NULL with *error_r. */
static char *
write_temp(const char *path, const char *data, size_t len,
	   const struct stat *st, char **error_r)
{
	char *copy = xstrdup(path), *copy2 = xstrdup(path);
	char *tmp = xasprintf("%s/.%s.XXXXXX", dirname(copy), basename(copy2));
	int fd = mkstemp(tmp);
	bool ok = false;

	if (fd < 0) {
		*error_r = xasprintf("cannot create a temporary file %s: %s",
				     tmp, strerror(errno));
		goto out;
	}
	/* fchown only when the owner differs: as a non-root user it fails
	 * even when the result would be the same. */
	ok = write_all(fd, data, len) && fchmod(fd, st->st_mode & 07777) == 0 &&
	     ((st->st_uid == geteuid() && st->st_gid == getegid()) ||
	      fchown(fd, st->st_uid, st->st_gid) == 0) &&
	     fsync(fd) == 0;
	if (!ok)
		*error_r = xasprintf("cannot write %s with the owner and "
				     "permissions of %s: %s",
				     tmp, path, strerror(errno));
	close(fd);
out:
	if (!ok && fd >= 0)
		unlink(tmp);
	if (!ok)
		xfree(&tmp);
	free(copy);
	free(copy2);
	return tmp;
}

/* Return msg with every occurrence of from replaced by to. */
static char *
replace_all(const char *msg, const char *from, const char *to)
{
	struct buf b = {0};
	const char *p = msg, *hit;

	while ((hit = strstr(p, from)) != NULL) {
		buf_add(&b, p, (size_t)(hit - p));
		buf_str(&b, to);
		p = hit + strlen(from);
	}
	buf_str(&b, p);
	return b.data;
}

/* Load the temporary file as the configuration. Messages name path, the
 * file the user edits, not the temporary name. */
static int
validate(const char *tmp, const char *path, const char *mode_name,
	 struct config **cfg_r, char **error_r)
{
	char *error = NULL, *named;

	if (config_load(tmp, cfg_r, &error) == 0) {
		free((*cfg_r)->path);
		(*cfg_r)->path = xstrdup(path);
		return 0;
	}
	named = replace_all(error, tmp, path);
	*error_r = xasprintf("%s is left unchanged because with mode = %s "
			     "it would be invalid: %s",
			     path, mode_name, named);
	free(named);
	free(error);
	return -1;
}

/* Make the rename durable: the directory entry lives in the directory,
 * which needs its own fsync. */
static int
sync_dir(const char *path, char **error_r)
{
	char *copy = xstrdup(path);
	int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0 || fsync(fd) < 0) {
		*error_r = xasprintf("cannot sync the directory of %s: %s",
				     path, strerror(errno));
		ret = -1;
	}
	if (fd >= 0)
		close(fd);
	free(copy);
	return ret;
}

int
cfg_edit_write_mode(const char *path, const char *mode_name,
		    struct config **cfg_r, char **error_r)
{
	char *real = realpath(path, NULL), *text = NULL, *edited = NULL;
	char *tmp = NULL, *why = NULL;
	struct config *cfg = NULL;
	size_t len = 0, edited_len = 0;
	struct stat st;
	int ret = -1;

	if (real == NULL) {
		*error_r =
			xasprintf("cannot open the configuration file %s: %s",
				  path, strerror(errno));
		return -1;
	}
	if (read_file(real, &text, &len, &st, error_r) < 0)
		goto out;
	if (cfg_edit_set_mode(text, len, mode_name, &edited, &edited_len,
			      &why) < 0) {
		*error_r = xasprintf("cannot change the mode in %s: %s; edit "
				     "the file by hand",
				     real, why);
		goto out;
	}

	/* Order matters for a crash at any point: the temporary file is
	 * complete and on disk (fsync) before rename makes it the
	 * configuration, so the name always refers to the old or the new
	 * file, never to a partial one. The directory fsync then makes the
	 * rename itself survive a crash. */
	tmp = write_temp(real, edited, edited_len, &st, error_r);
	if (tmp == NULL)
		goto out;
	if (validate(tmp, real, mode_name, &cfg, error_r) < 0)
		goto out;
	if (rename(tmp, real) < 0) {
		*error_r = xasprintf("cannot replace %s: %s", real,
				     strerror(errno));
		goto out;
	}
	xfree(&tmp);
	if (sync_dir(real, error_r) < 0)
		goto out;
	ret = 0;
out:
	if (tmp != NULL)
		unlink(tmp);
	if (ret == 0 && cfg_r != NULL)
		*cfg_r = cfg;
	else
		config_free(&cfg);
	free(tmp);
	free(real);
	free(text);
	free(edited);
	free(why);
	return ret;
}
