/* Users of a Maildir tree: the user_path template, listing and
 * selecting users, and whether the tree holds any mail. */
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
	md_buf_append(&out, &len, &cap, "", 0);
	for (const char *p = tpl; *p != '\0'; p++) {
		const char *value[N_VARS] = {login, local, domain};
		int v = p[0] == '%' ? var_index(p[1]) : -1;

		if (v >= 0) {
			md_buf_append(&out, &len, &cap, value[v],
				   strlen(value[v]));
			p++;
			continue;
		}
		md_buf_append(&out, &len, &cap, p, 1);
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
	int err, maildir = md_has_maildir_subdirs(path, &err);
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

		if (de->d_name[0] == '.' || !md_entry_is_dir(dirfd(d), de))
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
