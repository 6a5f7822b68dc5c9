/* Read-only access to a Maildir++ tree: users, folders, subscriptions,
 * messages with their flags and dates, and the CRLF-form content hash.
 * Directories are only listed and files only opened O_RDONLY. */
#include <config.h>
#include "maildir.h"
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

/* 1990-01-01T00:00:00Z. An earlier mtime or name epoch is taken as a
 * broken clock or a bad restore, not as a real delivery time. */
#define PLAUSIBLE_MIN ((time_t)631152000)
#define PLAUSIBLE_FUTURE ((time_t)86400)
#define READ_CHUNK (64 * 1024)
/* A message whose header section has no end within this many bytes is
 * not searched further for a Date field. */
#define MAX_HEADER_BYTES (256 * 1024)
#define N_KEYWORDS 26

/* ---- Small helpers ---------------------------------------------------- */

static struct md_stats *
stats_or_dummy(struct md_stats *stats, struct md_stats *dummy)
{
	memset(dummy, 0, sizeof(*dummy));
	return stats != NULL ? stats : dummy;
}

static void
buf_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
	*buf = xgrow(*buf, cap, *len + n + 1, 1);
	memcpy(*buf + *len, s, n);
	*len += n;
	(*buf)[*len] = '\0';
}

/* A directory entry that is a directory, following symlinks, because
 * sites link user or folder directories to other disks. */
static bool
entry_is_dir(int dir_fd, const struct dirent *de)
{
	struct stat st;

	if (de->d_type == DT_DIR)
		return true;
	if (de->d_type != DT_UNKNOWN && de->d_type != DT_LNK)
		return false;
	return fstatat(dir_fd, de->d_name, &st, 0) == 0 &&
	       S_ISDIR(st.st_mode);
}

/* Returns 1 when dir/cur or dir/new is a directory, 0 when neither
 * exists, and -1 with *err_r set when one of them cannot be checked. */
static int
has_maildir_subdirs(const char *dir, int *err_r)
{
	static const char *const subdirs[] = {"cur", "new"};
	int ret = 0;

	*err_r = 0;
	for (size_t i = 0; i < 2 && ret != 1; i++) {
		char *path = xasprintf("%s/%s", dir, subdirs[i]);
		struct stat st;

		if (stat(path, &st) == 0) {
			ret = S_ISDIR(st.st_mode) ? 1 : ret;
		} else if (errno != ENOENT) {
			*err_r = errno;
			ret = -1;
		}
		free(path);
	}
	return ret;
}

/* ---- User path templates ---------------------------------------------- */

enum { VAR_U, VAR_N, VAR_D, N_VARS };

/* Values of %u, %n and %d bound while matching a template. */
struct bindings {
	char *var[N_VARS];
};

static int
var_index(char c)
{
	switch (c) {
	case 'u':
		return VAR_U;
	case 'n':
		return VAR_N;
	case 'd':
		return VAR_D;
	default:
		return -1;
	}
}

/* Split a login at its first '@' the way Dovecot's %n and %d do: without
 * '@' the local part is the whole login and the domain is empty. */
static void
split_login(const char *login, char **local_r, char **domain_r)
{
	const char *at = strchr(login, '@');

	*local_r = at != NULL ? xstrndup(login, (size_t)(at - login))
			      : xstrdup(login);
	*domain_r = xstrdup(at != NULL ? at + 1 : "");
}

static char *
expand_template(const char *tpl, const char *login)
{
	char *local, *domain, *out = NULL;
	size_t len = 0, cap = 0;

	split_login(login, &local, &domain);
	buf_append(&out, &len, &cap, "", 0);
	for (const char *p = tpl; *p != '\0'; p++) {
		const char *value[N_VARS] = {login, local, domain};
		int v = p[0] == '%' ? var_index(p[1]) : -1;

		if (v >= 0) {
			buf_append(&out, &len, &cap, value[v],
				   strlen(value[v]));
			p++;
			continue;
		}
		buf_append(&out, &len, &cap, p, 1);
		if (p[0] == '%' && p[1] == '%')
			p++;
	}
	free(local);
	free(domain);
	return out;
}

char *
md_user_path(const struct config *cfg, const char *user)
{
	char *rel = expand_template(cfg->user_path, user);
	const char *root = cfg->maildir_root;
	size_t rlen = strlen(root);
	char *path;

	path = xasprintf("%s%s%s", root,
			 rlen > 0 && root[rlen - 1] == '/' ? "" : "/", rel);
	free(rel);
	return path;
}

static bool match_component(const char *pat, const char *name,
			    struct bindings *b);

/* Try every non-empty prefix of name as the value of the unbound
 * variable v; %n never contains '@' because it is the local part. */
static bool
match_unbound(const char *pat, const char *name, struct bindings *b, int v)
{
	size_t max = strlen(name);

	for (size_t len = 1; len <= max; len++) {
		if (v == VAR_N && name[len - 1] == '@')
			break;
		b->var[v] = xstrndup(name, len);
		if (match_component(pat + 2, name + len, b))
			return true;
		xfree(&b->var[v]);
	}
	return false;
}

/* Match one path component of the template against a directory name,
 * binding variables; a variable already bound must repeat its value. */
static bool
match_component(const char *pat, const char *name, struct bindings *b)
{
	int v = pat[0] == '%' ? var_index(pat[1]) : -1;
	size_t n;

	if (pat[0] == '\0')
		return name[0] == '\0';
	if (v < 0) {
		if (pat[0] != name[0])
			return false;
		n = pat[0] == '%' && pat[1] == '%' ? 2 : 1;
		return match_component(pat + n, name + 1, b);
	}
	if (b->var[v] == NULL)
		return match_unbound(pat, name, b, v);
	n = strlen(b->var[v]);
	return strncmp(name, b->var[v], n) == 0 &&
	       match_component(pat + 2, name + n, b);
}

static void
bindings_copy(struct bindings *dst, const struct bindings *src)
{
	for (int i = 0; i < N_VARS; i++)
		dst->var[i] = src->var[i] != NULL ? xstrdup(src->var[i]) : NULL;
}

static void
bindings_clear(struct bindings *b)
{
	for (int i = 0; i < N_VARS; i++)
		xfree(&b->var[i]);
}

/* The login a complete match stands for, or NULL when %u disagrees with
 * %n or %d found elsewhere in the path. */
static char *
login_from_bindings(const struct bindings *b)
{
	const char *u = b->var[VAR_U], *n = b->var[VAR_N], *d = b->var[VAR_D];
	char *local, *domain;
	bool ok;

	if (u == NULL)
		return d != NULL ? xasprintf("%s@%s", n, d) : xstrdup(n);
	split_login(u, &local, &domain);
	ok = (n == NULL || strcmp(n, local) == 0) &&
	     (d == NULL || strcmp(d, domain) == 0);
	free(local);
	free(domain);
	return ok ? xstrdup(u) : NULL;
}

struct user_walk {
	char **comps; /* template split at '/' */
	size_t ncomps;
	struct md_user *users;
	size_t count, cap;
};

static void
log_user_skip(const char *path, const char *reason, int err)
{
	struct logline *line = log_begin(LOG_LVL_WARN, "skip");

	log_str(line, "path", path);
	log_str(line, "reason", reason);
	if (err != 0)
		log_str(line, "error", strerror(err));
	log_end(line);
}

static void
add_user(struct user_walk *w, const char *path, const struct bindings *b)
{
	int err, maildir = has_maildir_subdirs(path, &err);
	char *login;

	if (maildir < 0) {
		log_user_skip(path, "unreadable", err);
		return;
	}
	if (maildir == 0)
		return;
	login = login_from_bindings(b);
	if (login == NULL)
		return;
	w->users = xgrow(w->users, &w->cap, w->count + 1, sizeof(*w->users));
	w->users[w->count].name = login;
	w->users[w->count].path = xstrdup(path);
	w->count++;
}

static int walk_users(struct user_walk *w, const char *dir, size_t depth,
		      const struct bindings *b, bool below_var,
		      char **error_r);

/* List dir and descend into every entry that matches the template
 * component at depth. Until a variable component has been passed, dir is
 * the configured root or a fixed path below it, so failing to list it is
 * an error. A failure deeper down only skips that branch. */
static int
walk_pattern(struct user_walk *w, const char *dir, size_t depth,
	     const struct bindings *b, bool below_var, char **error_r)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int ret = 0;

	if (d == NULL)
		goto failed;
	while (errno = 0, (de = readdir(d)) != NULL) {
		struct bindings nb;

		if (de->d_name[0] == '.' || !entry_is_dir(dirfd(d), de))
			continue;
		bindings_copy(&nb, b);
		if (match_component(w->comps[depth], de->d_name, &nb)) {
			char *path = xasprintf("%s/%s", dir, de->d_name);

			walk_users(w, path, depth + 1, &nb, true, error_r);
			free(path);
		}
		bindings_clear(&nb);
	}
	if (errno == 0) {
		closedir(d);
		return 0;
	}
failed:
	if (below_var)
		log_user_skip(dir, "unreadable", errno);
	else
		*error_r = xasprintf("cannot list mail root %s: %s; check "
				     "[maildir] root and user_path",
				     dir, strerror(errno));
	ret = below_var ? 0 : -1;
	if (d != NULL)
		closedir(d);
	return ret;
}

static int
walk_users(struct user_walk *w, const char *dir, size_t depth,
	   const struct bindings *b, bool below_var, char **error_r)
{
	char *path;
	int ret;

	if (depth == w->ncomps) {
		add_user(w, dir, b);
		return 0;
	}
	if (strchr(w->comps[depth], '%') != NULL)
		return walk_pattern(w, dir, depth, b, below_var, error_r);

	path = xasprintf("%s/%s", dir, w->comps[depth]);
	ret = walk_users(w, path, depth + 1, b, below_var, error_r);
	free(path);
	return ret;
}

/* Split the template at '/' and unescape components without variables,
 * so that only pattern components keep a '%'. */
static void
split_template(const char *tpl, struct user_walk *w)
{
	char *copy = xstrdup(tpl), *save = NULL, *tok;
	size_t cap = 0;

	for (tok = strtok_r(copy, "/", &save); tok != NULL;
	     tok = strtok_r(NULL, "/", &save)) {
		if (strcmp(tok, ".") == 0)
			continue;
		w->comps = xgrow(w->comps, &cap, w->ncomps + 1, sizeof(char *));
		w->comps[w->ncomps++] = xstrdup(tok);
	}
	free(copy);

	for (size_t i = 0; i < w->ncomps; i++) {
		char *c = w->comps[i];

		if (strstr(c, "%u") != NULL || strstr(c, "%n") != NULL ||
		    strstr(c, "%d") != NULL)
			continue;
		w->comps[i] = expand_template(c, "");
		free(c);
	}
}

static int
user_compare(const void *a, const void *b)
{
	const struct md_user *ua = a, *ub = b;

	return strcmp(ua->name, ub->name);
}

int
md_list_users(const struct config *cfg, struct md_user **users_r,
	      size_t *count_r, char **error_r)
{
	struct user_walk w = {0};
	struct bindings none = {{NULL}};
	int ret = -1;

	*users_r = NULL;
	*count_r = 0;
	if (strstr(cfg->user_path, "%u") == NULL &&
	    strstr(cfg->user_path, "%n") == NULL) {
		*error_r = xasprintf("[maildir] user_path \"%s\" contains "
				     "neither %%u nor %%n, so no login can be "
				     "derived from it; use e.g. %%u/Maildir",
				     cfg->user_path);
		goto out;
	}
	split_template(cfg->user_path, &w);
	if (walk_users(&w, cfg->maildir_root, 0, &none, false, error_r) < 0)
		goto out;

	qsort(w.users, w.count, sizeof(*w.users), user_compare);
	*users_r = w.users;
	*count_r = w.count;
	w.users = NULL;
	ret = 0;
out:
	md_users_free(&w.users, w.count);
	for (size_t i = 0; i < w.ncomps; i++)
		free(w.comps[i]);
	free(w.comps);
	return ret;
}

void
md_users_free(struct md_user **users, size_t count)
{
	if (*users == NULL)
		return;
	for (size_t i = 0; i < count; i++) {
		free((*users)[i].name);
		free((*users)[i].path);
	}
	xfree(users);
}

/* ---- Folders ---------------------------------------------------------- */

/* Rank of a byte in folder order: '.' sorts before any other byte so
 * that a folder's subtree follows it directly ("A", "A.B", "A-x"). */
static int
folder_byte_rank(char c)
{
	if (c == '\0')
		return 0;
	return c == '.' ? 1 : (unsigned char)c + 2;
}

static int
folder_compare(const void *a, const void *b)
{
	const char *na = ((const struct md_folder *)a)->name;
	const char *nb = ((const struct md_folder *)b)->name;

	while (*na != '\0' && *na == *nb) {
		na++;
		nb++;
	}
	return folder_byte_rank(*na) - folder_byte_rank(*nb);
}

/* A Maildir++ folder name ".A.B" is valid when no component is empty. */
static bool
folder_name_valid(const char *dirname)
{
	const char *name = dirname + 1;
	size_t len = strlen(name);

	return len > 0 && name[0] != '.' && name[len - 1] != '.' &&
	       strstr(name, "..") == NULL;
}

static void
log_folder_skip(const char *path, const char *name, const char *reason,
		int err)
{
	struct logline *line = log_begin(LOG_LVL_WARN, "skip");
	char *display = mutf7_to_utf8(name);

	log_str(line, "folder", display);
	log_str(line, "path", path);
	log_str(line, "reason", reason);
	if (err != 0)
		log_str(line, "error", strerror(err));
	log_end(line);
	free(display);
}

/* Returns the folder for a directory entry of the user root, or NULL
 * when the entry is not a folder (counted in stats when it looks like
 * one but cannot be used). */
static struct md_folder *
folder_from_entry(const char *user_path, int dir_fd, const struct dirent *de,
		  struct md_stats *stats)
{
	const char *dirname = de->d_name;
	struct md_folder *folder = NULL;
	char *path;
	int err, maildir;

	/* "..DOVECOT-TRASHED" and other ".." names are Dovecot's own. */
	if (dirname[0] != '.' || dirname[1] == '\0' || dirname[1] == '.' ||
	    !entry_is_dir(dir_fd, de))
		return NULL;

	path = xasprintf("%s/%s", user_path, dirname);
	if (!folder_name_valid(dirname)) {
		stats->skipped_folders++;
		log_folder_skip(path, dirname + 1, "empty_name_component", 0);
		goto out;
	}
	maildir = has_maildir_subdirs(path, &err);
	if (maildir <= 0) {
		stats->skipped_folders++;
		log_folder_skip(path, dirname + 1,
				maildir < 0 ? "unreadable" : "no_cur_or_new",
				err);
		goto out;
	}
	folder = xcalloc(1, sizeof(*folder));
	folder->name = xstrdup(dirname + 1);
	folder->path = path;
	path = NULL;
out:
	free(path);
	return folder;
}

int
md_list_folders(const char *user_path, struct md_folder **folders_r,
		size_t *count_r, struct md_stats *stats, char **error_r)
{
	struct md_folder *folders = NULL, *f;
	struct md_stats dummy;
	size_t count = 0, cap = 0;
	struct dirent *de;
	DIR *dir;
	int ret = -1;

	stats = stats_or_dummy(stats, &dummy);
	*folders_r = NULL;
	*count_r = 0;
	dir = opendir(user_path);
	if (dir == NULL) {
		*error_r = xasprintf("cannot list Maildir %s: %s", user_path,
				     strerror(errno));
		return -1;
	}
	folders = xgrow(folders, &cap, 1, sizeof(*folders));
	folders[count].name = xstrdup("INBOX");
	folders[count++].path = xstrdup(user_path);

	/* A partial list would make folders look deleted, so a readdir
	 * error fails the whole listing. */
	while (errno = 0, (de = readdir(dir)) != NULL) {
		f = folder_from_entry(user_path, dirfd(dir), de, stats);
		if (f == NULL)
			continue;
		folders = xgrow(folders, &cap, count + 1, sizeof(*folders));
		folders[count++] = *f;
		free(f);
	}
	if (errno != 0) {
		*error_r = xasprintf("cannot list Maildir %s: %s", user_path,
				     strerror(errno));
		goto out;
	}

	qsort(folders + 1, count - 1, sizeof(*folders), folder_compare);
	*folders_r = folders;
	*count_r = count;
	folders = NULL;
	ret = 0;
out:
	closedir(dir);
	md_folders_free(&folders, count);
	return ret;
}

void
md_folders_free(struct md_folder **folders, size_t count)
{
	if (*folders == NULL)
		return;
	for (size_t i = 0; i < count; i++) {
		free((*folders)[i].name);
		free((*folders)[i].path);
	}
	xfree(folders);
}

/* ---- Subscriptions ---------------------------------------------------- */

/* Dovecot 2.3.19.1 starts a new subscriptions file with this line and an
 * empty one, then writes each name as hierarchy components separated by
 * tabs. Files from older versions hold one name per line. */
#define SUBSCRIPTIONS_V2_HEADER "V\t2"

/* Undo Dovecot's tab escaping of one component: \001 followed by '0',
 * '1', 't', 'r' or 'n' stands for NUL, \001, tab, CR or LF. */
static void
append_tab_unescaped(char **out, size_t *len, size_t *cap, const char *s,
		     size_t n)
{
	static const char codes[] = "01trn", values[] = "\0\001\t\r\n";

	for (size_t i = 0; i < n; i++) {
		const char *code;

		if (s[i] != '\001') {
			buf_append(out, len, cap, s + i, 1);
			continue;
		}
		if (i + 1 == n)
			break;
		i++;
		code = strchr(codes, s[i]);
		if (code != NULL)
			buf_append(out, len, cap, values + (code - codes), 1);
		else
			buf_append(out, len, cap, s + i, 1);
	}
}

static char *
subscription_v2_name(const char *line)
{
	char *out = NULL;
	size_t len = 0, cap = 0;
	const char *tab;

	buf_append(&out, &len, &cap, "", 0);
	while ((tab = strchr(line, '\t')) != NULL) {
		append_tab_unescaped(&out, &len, &cap, line,
				     (size_t)(tab - line));
		buf_append(&out, &len, &cap, ".", 1);
		line = tab + 1;
	}
	append_tab_unescaped(&out, &len, &cap, line, strlen(line));
	return out;
}

static void
add_unique_string(char ***names, size_t *count, size_t *cap, char *name)
{
	for (size_t i = 0; i < *count; i++) {
		if (strcmp((*names)[i], name) == 0) {
			free(name);
			return;
		}
	}
	*names = xgrow(*names, cap, *count + 1, sizeof(char *));
	(*names)[(*count)++] = name;
}

int
md_read_subscriptions(const char *user_path, char ***names_r,
		      size_t *count_r, char **error_r)
{
	char *path = xasprintf("%s/subscriptions", user_path);
	char *line = NULL, **names = NULL;
	size_t linecap = 0, count = 0, cap = 0;
	bool first = true, v2 = false;
	ssize_t n;
	FILE *f;
	int ret = -1;

	*names_r = NULL;
	*count_r = 0;
	f = fopen(path, "re");
	if (f == NULL && errno == ENOENT) {
		ret = 0;
		goto out;
	}
	if (f == NULL)
		goto fail;

	while ((n = getline(&line, &linecap, f)) > 0) {
		line[strcspn(line, "\r\n")] = '\0';
		if (first && strcmp(line, SUBSCRIPTIONS_V2_HEADER) == 0)
			v2 = true;
		else if (line[0] != '\0')
			add_unique_string(&names, &count, &cap,
					  v2 ? subscription_v2_name(line)
					     : xstrdup(line));
		first = false;
	}
	if (ferror(f))
		goto fail;
	*names_r = names;
	*count_r = count;
	names = NULL;
	ret = 0;
	goto out;
fail:
	*error_r = xasprintf("cannot read subscriptions file %s: %s", path,
			     strerror(errno));
out:
	if (f != NULL)
		fclose(f);
	md_strings_free(&names, count);
	free(line);
	free(path);
	return ret;
}

void
md_strings_free(char ***strings, size_t count)
{
	if (*strings == NULL)
		return;
	for (size_t i = 0; i < count; i++)
		free((*strings)[i]);
	xfree(strings);
}

/* ---- File names, flags and keywords ----------------------------------- */

int
md_parse_filename(const char *name, char **uniq_r, char **letters_r)
{
	const char *info = NULL, *colon, *letters = "";
	size_t uniq_len;

	*uniq_r = NULL;
	*letters_r = NULL;
	if (name[0] == '\0' || name[0] == '.')
		return -1;

	/* The info starts at the last ":2,"; a ':' left before it or after
	 * it means the name is not one a Maildir writer produced. */
	for (const char *p = strstr(name, ":2,"); p != NULL;
	     p = strstr(p + 1, ":2,"))
		info = p;
	colon = strchr(name, ':');
	if (info != NULL) {
		if (colon != info || strchr(info + 3, ':') != NULL)
			return -1;
		uniq_len = (size_t)(info - name);
		letters = info + 3;
	} else if (colon != NULL) {
		/* Another info version (":1," is the experimental one)
		 * carries no flags we understand, but the part before the
		 * ':' is still the message's identity. */
		if (strchr(colon + 1, ':') != NULL)
			return -1;
		uniq_len = (size_t)(colon - name);
	} else {
		uniq_len = strlen(name);
	}
	if (uniq_len == 0)
		return -1;

	*uniq_r = xstrndup(name, uniq_len);
	*letters_r = xstrdup(letters);
	return 0;
}

static const char *
keyword_for_letter(char c, char *const *keywords, size_t nkeywords)
{
	size_t i = (size_t)(c - 'a');

	return i < nkeywords ? keywords[i] : NULL;
}

unsigned
md_letters_to_flags(const char *letters, char *const *keywords,
		    size_t nkeywords, struct flagset *fs)
{
	unsigned unmapped = 0;

	flagset_init(fs);
	for (const char *p = letters; *p != '\0'; p++) {
		const char *kw;

		switch (*p) {
		case 'D':
			fs->sys |= FLAG_DRAFT;
			break;
		case 'F':
			fs->sys |= FLAG_FLAGGED;
			break;
		case 'P':
			flagset_add_keyword(fs, "$Forwarded");
			break;
		case 'R':
			fs->sys |= FLAG_ANSWERED;
			break;
		case 'S':
			fs->sys |= FLAG_SEEN;
			break;
		case 'T':
			fs->sys |= FLAG_DELETED;
			break;
		default:
			if (*p < 'a' || *p > 'z')
				break;
			kw = keyword_for_letter(*p, keywords, nkeywords);
			if (kw != NULL)
				flagset_add_keyword(fs, kw);
			else
				unmapped++;
		}
	}
	return unmapped;
}

/* Parse one "<index> <name>" line of dovecot-keywords into the table. */
static void
parse_keyword_line(char *line, char *keywords_r[N_KEYWORDS])
{
	char *end;
	unsigned long idx;

	line[strcspn(line, "\r\n")] = '\0';
	if (!isdigit((unsigned char)line[0]))
		return;
	idx = strtoul(line, &end, 10);
	if (*end != ' ' || end[1] == '\0' || idx >= N_KEYWORDS)
		return;
	free(keywords_r[idx]);
	keywords_r[idx] = xstrdup(end + 1);
}

int
md_read_keywords(const char *folder_path, char *keywords_r[26],
		 char **error_r)
{
	char *path = xasprintf("%s/dovecot-keywords", folder_path);
	char *line = NULL;
	size_t linecap = 0;
	FILE *f;
	int err = 0;

	memset(keywords_r, 0, N_KEYWORDS * sizeof(char *));
	f = fopen(path, "re");
	if (f == NULL) {
		err = errno == ENOENT ? 0 : errno;
		goto out;
	}
	while (getline(&line, &linecap, f) > 0)
		parse_keyword_line(line, keywords_r);
	err = ferror(f) ? errno : 0;
out:
	if (err != 0) {
		*error_r = xasprintf("cannot read keywords file %s: %s", path,
				     strerror(err));
		md_keywords_free(keywords_r);
	}
	if (f != NULL)
		fclose(f);
	free(line);
	free(path);
	return err != 0 ? -1 : 0;
}

void
md_keywords_free(char *keywords[26])
{
	for (size_t i = 0; i < N_KEYWORDS; i++)
		xfree(&keywords[i]);
}

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
			buf_append(value, len, cap, line, strlen(line));
		return *in_date;
	}
	if (*value != NULL) {
		*in_date = false;
		return false;
	}
	*in_date = strncasecmp(line, "Date:", 5) == 0;
	if (*in_date)
		buf_append(value, len, cap, line + 5, strlen(line + 5));
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
				buf_append(&value, &len, &cap, buf, n);
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

/* ---- Messages --------------------------------------------------------- */

/* Per-scan state; unmapped keyword letters and date fallbacks are
 * summed per folder so that one bad folder logs a few lines, not one
 * per message. */
struct scan {
	const struct md_folder *folder;
	const char *user;
	char *keywords[N_KEYWORDS];
	struct md_stats *stats;
	struct md_message *msgs;
	size_t count, cap;
	unsigned long unmapped[N_KEYWORDS];
	unsigned long date_sources[3]; /* name, header, now */
};

static void
log_message_skip(const char *user, const struct md_folder *folder,
		 const char *path, const char *reason, int err)
{
	struct logline *line = log_begin(LOG_LVL_WARN, "skip");
	char *display = mutf7_to_utf8(folder->name);

	if (user != NULL)
		log_str(line, "user", user);
	log_str(line, "folder", display);
	log_str(line, "file", path);
	log_str(line, "reason", reason);
	if (err != 0)
		log_str(line, "error", strerror(err));
	log_end(line);
	free(display);
}

/* Returns 0 when path is a readable, non-empty regular file; otherwise
 * counts and logs the skip and returns -1. */
static int
check_message_file(const char *user, const struct md_folder *folder,
		   const char *path, struct stat *st, struct md_stats *stats)
{
	int fd;

	if (fstatat(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW) < 0)
		goto failed;
	if (!S_ISREG(st->st_mode)) {
		stats->skipped_not_file++;
		log_message_skip(user, folder, path, "not_regular_file", 0);
		return -1;
	}
	if (st->st_size == 0) {
		stats->skipped_empty++;
		log_message_skip(user, folder, path, "empty", 0);
		return -1;
	}
	/* Only open() shows whether the file can be read, because root
	 * may read a file whose permission bits deny it. */
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		goto failed;
	close(fd);
	return 0;
failed:
	if (errno == ENOENT) {
		stats->skipped_vanished++;
		log_message_skip(user, folder, path, "vanished", 0);
	} else {
		stats->skipped_unreadable++;
		log_message_skip(user, folder, path, "unreadable", errno);
	}
	return -1;
}

static void
note_unmapped(struct scan *sc, const struct md_message *msg,
	      const char *letters, unsigned unmapped)
{
	struct logline *line;

	sc->stats->unmapped_keywords += unmapped;
	for (const char *p = letters; *p != '\0'; p++) {
		char letter[2] = {*p, '\0'};

		if (*p < 'a' || *p > 'z' ||
		    keyword_for_letter(*p, sc->keywords, N_KEYWORDS) != NULL)
			continue;
		sc->unmapped[*p - 'a']++;
		line = log_begin(LOG_LVL_DEBUG, "keyword_unmapped");
		log_str(line, "file", msg->path);
		log_str(line, "letter", letter);
		log_end(line);
	}
}

static void
note_date_source(struct scan *sc, const struct md_message *msg,
		 const char *source)
{
	static const char *const names[] = {"name", "header", "now"};
	struct logline *line;

	if (strcmp(source, "mtime") == 0)
		return;
	sc->stats->date_fallbacks++;
	for (size_t i = 0; i < 3; i++) {
		if (strcmp(source, names[i]) == 0)
			sc->date_sources[i]++;
	}
	line = log_begin(LOG_LVL_DEBUG, "date_fallback");
	log_str(line, "file", msg->path);
	log_str(line, "source", source);
	log_end(line);
}

/* Examine one file; returns 1 with *msg filled, or 0 when skipped. */
static int
read_message(struct scan *sc, bool in_new, const char *filename,
	     struct md_message *msg)
{
	char *uniq = NULL, *letters = NULL;
	const char *source;
	unsigned unmapped;
	struct stat st;

	memset(msg, 0, sizeof(*msg));
	msg->path = xasprintf("%s/%s/%s", sc->folder->path,
			      in_new ? "new" : "cur", filename);
	if (md_parse_filename(filename, &uniq, &letters) < 0) {
		sc->stats->skipped_malformed++;
		log_message_skip(sc->user, sc->folder, msg->path,
				 "malformed_name", 0);
		goto skip;
	}
	if (check_message_file(sc->user, sc->folder, msg->path, &st,
			       sc->stats) < 0)
		goto skip;

	msg->uniq = uniq;
	msg->filename = xstrdup(filename);
	msg->in_new = in_new;
	msg->size = st.st_size;
	unmapped = md_letters_to_flags(letters, sc->keywords, N_KEYWORDS,
				       &msg->flags);
	if (unmapped > 0)
		note_unmapped(sc, msg, letters, unmapped);
	/* A message still in new/ has not been seen by any client. */
	if (in_new)
		msg->flags.sys &= ~(unsigned)FLAG_SEEN;
	msg->internaldate = md_internaldate(msg->path, uniq, st.st_mtime,
					    &source);
	note_date_source(sc, msg, source);
	free(letters);
	return 1;
skip:
	free(uniq);
	free(letters);
	xfree(&msg->path);
	return 0;
}

/* List one of new/ and cur/. Returns 1 when listed, 0 when it does not
 * exist, -1 with *error_r when it exists but cannot be listed. */
static int
scan_subdir(struct scan *sc, bool in_new, char **error_r)
{
	char *path = xasprintf("%s/%s", sc->folder->path,
			       in_new ? "new" : "cur");
	struct dirent *de;
	DIR *dir = opendir(path);
	int ret = -1;

	if (dir == NULL) {
		ret = errno == ENOENT ? 0 : -1;
		goto out;
	}
	while (errno = 0, (de = readdir(dir)) != NULL) {
		/* Hidden names (".", "..", NFS's ".nfs*") are not messages
		 * and are not counted as skipped. */
		if (de->d_name[0] == '.')
			continue;
		sc->msgs = xgrow(sc->msgs, &sc->cap, sc->count + 1,
				 sizeof(*sc->msgs));
		sc->count += (size_t)read_message(sc, in_new, de->d_name,
						  &sc->msgs[sc->count]);
	}
	ret = errno != 0 ? -1 : 1;
out:
	if (ret < 0)
		*error_r = xasprintf("cannot list %s: %s", path,
				     strerror(errno));
	if (dir != NULL)
		closedir(dir);
	free(path);
	return ret;
}

/* Order by uniq, then cur/ before new/, so that de-duplication keeps the
 * cur/ copy of a message caught while it moved. */
static int
message_compare(const void *a, const void *b)
{
	const struct md_message *ma = a, *mb = b;
	int cmp = strcmp(ma->uniq, mb->uniq);

	if (cmp != 0)
		return cmp;
	if (ma->in_new != mb->in_new)
		return ma->in_new ? 1 : -1;
	return strcmp(ma->filename, mb->filename);
}

void
md_message_clear(struct md_message *msg)
{
	free(msg->uniq);
	free(msg->filename);
	free(msg->path);
	flagset_clear(&msg->flags);
	memset(msg, 0, sizeof(*msg));
}

static void
drop_duplicates(struct scan *sc)
{
	size_t kept = 0;

	for (size_t i = 0; i < sc->count; i++) {
		struct md_message *m = &sc->msgs[i];

		if (kept > 0 && strcmp(sc->msgs[kept - 1].uniq, m->uniq) == 0) {
			sc->stats->skipped_duplicate++;
			log_message_skip(sc->user, sc->folder, m->path,
					 "duplicate_uniq", 0);
			md_message_clear(m);
			continue;
		}
		sc->msgs[kept++] = *m;
	}
	sc->count = kept;
}

static void
log_scan_summary(const struct scan *sc)
{
	static const char *const sources[] = {"name", "header", "now"};
	char *display = mutf7_to_utf8(sc->folder->name);
	struct logline *line;

	for (int i = 0; i < N_KEYWORDS; i++) {
		char letter[2] = {(char)('a' + i), '\0'};

		if (sc->unmapped[i] == 0)
			continue;
		line = log_begin(LOG_LVL_WARN, "keyword_unmapped");
		if (sc->user != NULL)
			log_str(line, "user", sc->user);
		log_str(line, "folder", display);
		log_str(line, "letter", letter);
		log_int(line, "messages", (long long)sc->unmapped[i]);
		log_str(line, "reason", "letter not in dovecot-keywords");
		log_end(line);
	}
	for (int i = 0; i < 3; i++) {
		if (sc->date_sources[i] == 0)
			continue;
		line = log_begin(LOG_LVL_WARN, "date_fallback");
		if (sc->user != NULL)
			log_str(line, "user", sc->user);
		log_str(line, "folder", display);
		log_str(line, "source", sources[i]);
		log_int(line, "messages", (long long)sc->date_sources[i]);
		log_end(line);
	}
	free(display);
}

static void
load_scan_keywords(struct scan *sc)
{
	char *error = NULL;
	struct logline *line;

	if (md_read_keywords(sc->folder->path, sc->keywords, &error) == 0)
		return;
	/* Keyword letters then count as unmapped; the messages and their
	 * system flags are still worth copying. */
	line = log_begin(LOG_LVL_WARN, "keywords_unreadable");
	if (sc->user != NULL)
		log_str(line, "user", sc->user);
	log_str(line, "error", error);
	log_end(line);
	free(error);
}

int
md_scan_folder(const struct md_folder *folder, const char *user,
	       struct md_message **msgs_r, size_t *count_r,
	       struct md_stats *stats, char **error_r)
{
	struct md_stats dummy;
	struct scan sc = {.folder = folder, .user = user};
	int listed_new, listed_cur = -1, ret = -1;

	sc.stats = stats_or_dummy(stats, &dummy);
	*msgs_r = NULL;
	*count_r = 0;
	load_scan_keywords(&sc);

	/* A folder with one unlistable directory fails as a whole: a
	 * partial list would make its messages look deleted. */
	listed_new = scan_subdir(&sc, true, error_r);
	if (listed_new >= 0)
		listed_cur = scan_subdir(&sc, false, error_r);
	if (listed_new < 0 || listed_cur < 0)
		goto out;
	if (listed_new == 0 && listed_cur == 0) {
		*error_r = xasprintf("%s has neither new/ nor cur/; it is not "
				     "a Maildir folder", folder->path);
		goto out;
	}

	qsort(sc.msgs, sc.count, sizeof(*sc.msgs), message_compare);
	drop_duplicates(&sc);
	log_scan_summary(&sc);
	for (size_t i = 0; i < sc.count; i++) {
		sc.stats->messages++;
		sc.stats->bytes += (unsigned long long)sc.msgs[i].size;
	}
	*msgs_r = sc.msgs;
	*count_r = sc.count;
	sc.msgs = NULL;
	ret = 0;
out:
	md_messages_free(&sc.msgs, sc.count);
	md_keywords_free(sc.keywords);
	return ret;
}

int
md_read_message(const struct md_folder *folder, const char *user,
		bool in_new, const char *filename, char *const keywords[26],
		struct md_message *msg_r, struct md_stats *stats)
{
	struct md_stats dummy;
	struct scan sc = {.folder = folder, .user = user};
	int ret;

	sc.stats = stats_or_dummy(stats, &dummy);
	for (size_t i = 0; i < N_KEYWORDS; i++)
		sc.keywords[i] = keywords != NULL ? keywords[i] : NULL;
	ret = read_message(&sc, in_new, filename, msg_r);
	if (ret == 1) {
		sc.stats->messages++;
		sc.stats->bytes += (unsigned long long)msg_r->size;
	}
	log_scan_summary(&sc);
	return ret;
}

void
md_messages_free(struct md_message **msgs, size_t count)
{
	if (*msgs == NULL)
		return;
	for (size_t i = 0; i < count; i++)
		md_message_clear(&(*msgs)[i]);
	xfree(msgs);
}

/* ---- Content hash ----------------------------------------------------- */

struct crlf_hasher {
	gnutls_hash_hd_t hash;
	bool pending_cr; /* the last byte was a CR, already emitted */
	uint64_t size;
	size_t len;
	unsigned char buf[8192]; /* converted bytes not yet hashed */
};

struct crlf_hasher *
crlf_hasher_new(void)
{
	struct crlf_hasher *h = xcalloc(1, sizeof(*h));

	/* SHA-256 is always built into GnuTLS; failing here means memory
	 * is exhausted or the library is broken, as in xmalloc(). */
	if (gnutls_hash_init(&h->hash, GNUTLS_DIG_SHA256) < 0) {
		fprintf(stderr, "mailrepl: gnutls_hash_init(SHA-256) "
				"failed\n");
		abort();
	}
	return h;
}

static void
hasher_emit(struct crlf_hasher *h, unsigned char c)
{
	h->buf[h->len++] = c;
	h->size++;
	if (h->len == sizeof(h->buf)) {
		gnutls_hash(h->hash, h->buf, h->len);
		h->len = 0;
	}
}

void
crlf_hasher_update(struct crlf_hasher *h, const void *data, size_t len)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < len; i++) {
		/* A CR is emitted at once; the byte after it decides
		 * whether an LF has to be added to complete the pair. */
		if (h->pending_cr) {
			h->pending_cr = false;
			hasher_emit(h, '\n');
			if (p[i] == '\n')
				continue;
		}
		if (p[i] == '\r') {
			hasher_emit(h, '\r');
			h->pending_cr = true;
		} else if (p[i] == '\n') {
			hasher_emit(h, '\r');
			hasher_emit(h, '\n');
		} else {
			hasher_emit(h, p[i] == '\0' ? 0x80 : p[i]);
		}
	}
}

void
crlf_hasher_finish(struct crlf_hasher **h, unsigned char digest[32],
		   uint64_t *crlf_size_r)
{
	struct crlf_hasher *hp = *h;

	if (hp->pending_cr)
		hasher_emit(hp, '\n');
	if (hp->len > 0)
		gnutls_hash(hp->hash, hp->buf, hp->len);
	gnutls_hash_deinit(hp->hash, digest);
	if (crlf_size_r != NULL)
		*crlf_size_r = hp->size;
	free(hp);
	*h = NULL;
}

int
md_hash_file(const char *path, unsigned char digest[32],
	     uint64_t *crlf_size_r)
{
	struct crlf_hasher *h;
	unsigned char *buf;
	ssize_t n;
	int fd, saved_errno;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	buf = xmalloc(READ_CHUNK);
	h = crlf_hasher_new();
	while ((n = read(fd, buf, READ_CHUNK)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		crlf_hasher_update(h, buf, (size_t)n);
	}
	saved_errno = errno;
	crlf_hasher_finish(&h, digest, crlf_size_r);
	free(buf);
	close(fd);
	errno = saved_errno;
	return n < 0 ? -1 : 0;
}

/* ---- Modified UTF-7 --------------------------------------------------- */

/* Check the RFC 3501 shape: printable ASCII, and every '&' opens a run of
 * modified base64 closed by '-'. glibc 2.36 decodes "a&b" as "a" without
 * an error, so an unclosed run is caught here. */
static bool
mutf7_well_formed(const char *name)
{
	static const char base64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				     "abcdefghijklmnopqrstuvwxyz0123456789+,";

	for (const char *p = name; *p != '\0'; p++) {
		if (*p < 0x20 || *p > 0x7e)
			return false;
		if (*p != '&')
			continue;
		p += 1 + strspn(p + 1, base64);
		if (*p != '-')
			return false;
	}
	return true;
}

char *
mutf7_to_utf8(const char *name)
{
	size_t inleft = strlen(name), outsize = inleft * 4 + 16, outleft;
	char *in = (char *)name, *out, *result;
	iconv_t cd;

	if (!mutf7_well_formed(name))
		return xstrdup(name);
	cd = iconv_open("UTF-8", "UTF-7-IMAP");
	if (cd == (iconv_t)-1)
		return xstrdup(name);

	/* A base64 character carries 6 bits and every 16 bits become at
	 * most 3 bytes of UTF-8, so 4 output bytes per input byte suffice. */
	result = xmalloc(outsize);
	out = result;
	outleft = outsize - 1;
	if (iconv(cd, &in, &inleft, &out, &outleft) == (size_t)-1 ||
	    iconv(cd, NULL, NULL, &out, &outleft) == (size_t)-1) {
		free(result);
		result = xstrdup(name);
	} else {
		*out = '\0';
	}
	iconv_close(cd);
	return result;
}

unsigned long
md_stats_skipped(const struct md_stats *stats)
{
	return stats->skipped_malformed + stats->skipped_unreadable +
	       stats->skipped_empty + stats->skipped_vanished +
	       stats->skipped_not_file;
}

static bool
name_listed(char *const *names, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(names[i], name) == 0)
			return true;
	}
	return false;
}

int
md_select_users(const struct config *cfg, char *const *names, size_t nnames,
		struct md_user **users_r, size_t *count_r, char **error_r)
{
	struct md_user *all;
	size_t nall, kept = 0;

	if (md_list_users(cfg, &all, &nall, error_r) < 0)
		return -1;
	for (size_t i = 0; names != NULL && i < nnames; i++) {
		bool found = false;

		for (size_t j = 0; j < nall && !found; j++)
			found = strcmp(all[j].name, names[i]) == 0;
		if (!found) {
			*error_r = xasprintf("user %s not found under %s "
					     "(user_path %s); check the name "
					     "with ls %s",
					     names[i], cfg->maildir_root,
					     cfg->user_path, cfg->maildir_root);
			md_users_free(&all, nall);
			return -1;
		}
	}
	for (size_t i = 0; i < nall; i++) {
		if (names == NULL || name_listed(names, nnames, all[i].name)) {
			all[kept++] = all[i];
		} else {
			free(all[i].name);
			free(all[i].path);
		}
	}
	*users_r = all;
	*count_r = kept;
	return 0;
}

/* Whether dir has an entry that is not hidden. */
static bool
dir_has_entry(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	bool found = false;

	if (d == NULL)
		return false;
	while (!found && (de = readdir(d)) != NULL)
		found = de->d_name[0] != '.';
	closedir(d);
	return found;
}

int
md_tree_holds_mail(const struct config *cfg)
{
	struct md_user *users;
	size_t nusers;
	char *error = NULL;
	int holds = 0;

	if (md_list_users(cfg, &users, &nusers, &error) < 0) {
		free(error);
		return -1;
	}
	for (size_t u = 0; u < nusers && holds == 0; u++) {
		struct md_folder *folders;
		size_t n;

		if (md_list_folders(users[u].path, &folders, &n, NULL,
				    &error) < 0) {
			free(error);
			error = NULL;
			holds = -1;
			break;
		}
		for (size_t f = 0; f < n && holds == 0; f++) {
			char *cur = xasprintf("%s/cur", folders[f].path);
			char *new_dir = xasprintf("%s/new", folders[f].path);

			if (dir_has_entry(cur) || dir_has_entry(new_dir))
				holds = 1;
			free(cur);
			free(new_dir);
		}
		md_folders_free(&folders, n);
	}
	md_users_free(&users, nusers);
	return holds;
}
