/* The Maildir watcher on inotify. Every watched directory has an entry,
 * indexed by its watch descriptor. The entry records what the directory
 * is (a level of the user_path template, a user's Maildir, a folder, or
 * a new/ or cur/ directory) and which user and folder it belongs to. */
#include <config.h>
#include "watch.h"
#include "cfg.h"
#include "log.h"
#include "maildir.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_USER_WATCHES_PATH "/proc/sys/fs/inotify/max_user_watches"

/* One mask for every kind, so that adding a directory again as another
 * kind never narrows the events of the watch the kernel already has. */
#define WATCH_MASK                                                             \
	(IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |                 \
	 IN_CLOSE_WRITE | IN_ONLYDIR)

enum watch_kind {
	WK_TREE,    /* the root or a directory above the users' Maildirs */
	WK_PENDING, /* where a user's Maildir may appear (no cur/ or new/) */
	WK_USER,    /* a user's Maildir, which is also INBOX */
	WK_FOLDER,  /* a ".A.B" folder directory */
	WK_MSGDIR,  /* new/ or cur/ of a folder */
};

struct watch_dir {
	enum watch_kind kind;
	size_t depth; /* directory levels below the mail root */
	char *path;
	char *user;   /* NULL for WK_TREE and WK_PENDING */
	char *folder; /* "INBOX" or the name without the dot */
};

/* A folder directory renamed away from the user's Maildir, waiting for
 * the IN_MOVED_TO with the same cookie. */
struct pending_move {
	bool active;
	uint32_t cookie;
	char *user;
	char *path; /* the folder directory's path before the move */
};

struct watch {
	const struct config *cfg;
	int fd;
	/* the user_path template split at '/' */
	char **comps;
	size_t ncomps;
	/* entries indexed by watch descriptor */
	struct watch_dir **dirs;
	size_t dirs_cap;
	/* While watch_new plans, directories are collected here instead of
	 * being watched, so that they can be counted against the limit. */
	bool planning;
	struct watch_dir *plan;
	size_t plan_count, plan_cap;
	struct pending_move move;
	bool overflow;
	watch_change_fn *on_change;
	void *ctx;
};

static void
dir_free(struct watch_dir *d)
{
	if (d == NULL)
		return;
	free(d->path);
	free(d->user);
	free(d->folder);
}

static char *
strdup_or_null(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

static void
report(struct watch *w, const char *user, const char *folder, const char *hint)
{
	if (w->on_change != NULL)
		w->on_change(user, folder, hint, w->ctx);
}

/* Names */

/* Dovecot's own files and hidden files never carry mail. */
static bool
name_ignored(const char *name)
{
	size_t len = strlen(name);

	return name[0] == '.' || strcmp(name, "dovecot-uidlist") == 0 ||
	       strncmp(name, "dovecot.index", 13) == 0 ||
	       strncmp(name, "dovecot.list.index", 18) == 0 ||
	       (len >= 5 && strcmp(name + len - 5, ".lock") == 0);
}

/* A Maildir++ folder directory is ".NAME". Names starting with ".." (as
 * "..DOVECOT-TRASHED", where Dovecot moves a folder it deletes) are not
 * folders. */
static bool
is_folder_dirname(const char *name)
{
	return name[0] == '.' && name[1] != '\0' && name[1] != '.';
}

static bool
is_msgdir_name(const char *name)
{
	return strcmp(name, "new") == 0 || strcmp(name, "cur") == 0;
}

/* Whether a directory name fits the template component at depth: any
 * visible name for a component with a variable, else the literal. */
static bool
matches_component(const struct watch *w, size_t depth, const char *name)
{
	const char *comp = w->comps[depth];

	if (name[0] == '.')
		return false;
	return strchr(comp, '%') != NULL || strcmp(comp, name) == 0;
}

static void
split_template(struct watch *w, const char *tpl)
{
	size_t cap = 0;
	const char *p = tpl;

	while (*p != '\0') {
		size_t len = strcspn(p, "/");

		if (len > 0) {
			w->comps = xgrow(w->comps, &cap, w->ncomps + 1,
					 sizeof(*w->comps));
			w->comps[w->ncomps++] = xstrndup(p, len);
		}
		p += len;
		if (*p == '/')
			p++;
	}
}

/* Watch descriptors */

static struct watch_dir *
dir_by_wd(struct watch *w, int wd)
{
	if (wd < 0 || (size_t)wd >= w->dirs_cap)
		return NULL;
	return w->dirs[wd];
}

static void
dir_drop(struct watch *w, int wd)
{
	struct watch_dir *d = dir_by_wd(w, wd);

	if (d == NULL)
		return;
	dir_free(d);
	free(d);
	w->dirs[wd] = NULL;
}

static void
log_watch_failure(const char *path, int err)
{
	struct logline *line = log_begin(LOG_LVL_ERROR, "watch_failed");

	log_str(line, "path", path);
	log_str(line, "error", strerror(err));
	if (err == ENOSPC)
		log_str(line, "msg",
			"fs.inotify.max_user_watches was "
			"reached, so this directory is not "
			"watched. Raise it with sysctl -w and "
			"in /etc/sysctl.d/, then restart");
	log_end(line);
}

/* Record the entry under wd. A user's Maildir is never turned back into
 * a pending directory by a later scan of its parent. */
static void
dir_store(struct watch *w, int wd, const struct watch_dir *entry)
{
	struct watch_dir *old;
	size_t need = (size_t)wd + 1;

	if (need > w->dirs_cap) {
		size_t old_cap = w->dirs_cap;

		w->dirs = xgrow(w->dirs, &w->dirs_cap, need, sizeof(*w->dirs));
		memset(w->dirs + old_cap, 0,
		       (w->dirs_cap - old_cap) * sizeof(*w->dirs));
	}
	old = w->dirs[wd];
	if (old != NULL && old->kind == WK_USER && entry->kind == WK_PENDING)
		return;
	dir_drop(w, wd);
	w->dirs[wd] = xmalloc(sizeof(*entry));
	w->dirs[wd]->kind = entry->kind;
	w->dirs[wd]->depth = entry->depth;
	w->dirs[wd]->path = xstrdup(entry->path);
	w->dirs[wd]->user = strdup_or_null(entry->user);
	w->dirs[wd]->folder = strdup_or_null(entry->folder);
}

/* Watch one directory, or only plan it while watch_new counts. Returns 0,
 * or -1 when the watch could not be added. A directory that is gone by
 * now is not logged, because its parent's event reports it. */
static int
dir_add(struct watch *w, enum watch_kind kind, const char *path,
	const char *user, const char *folder, size_t depth)
{
	struct watch_dir entry = {
		.kind = kind,
		.depth = depth,
		.path = (char *)path,
		.user = (char *)user,
		.folder = (char *)folder,
	};
	int wd;

	if (w->planning) {
		w->plan = xgrow(w->plan, &w->plan_cap, w->plan_count + 1,
				sizeof(*w->plan));
		w->plan[w->plan_count].kind = kind;
		w->plan[w->plan_count].depth = depth;
		w->plan[w->plan_count].path = xstrdup(path);
		w->plan[w->plan_count].user = strdup_or_null(user);
		w->plan[w->plan_count++].folder = strdup_or_null(folder);
		return 0;
	}

	wd = inotify_add_watch(w->fd, path, WATCH_MASK);
	if (wd < 0) {
		if (errno != ENOENT && errno != ENOTDIR)
			log_watch_failure(path, errno);
		return -1;
	}
	dir_store(w, wd, &entry);
	return 0;
}

/* Scanning, each directory watched before it is listed */

/* Watch a folder directory with its new/ and cur/ and report the whole
 * folder, because messages may have arrived before the watches. */
static void
add_folder(struct watch *w, const char *user, const char *user_path,
	   const char *dirname, size_t depth)
{
	const char *folder = dirname != NULL ? dirname + 1 : "INBOX";
	size_t folder_depth = dirname != NULL ? depth + 1 : depth;
	char *path = dirname != NULL ? xasprintf("%s/%s", user_path, dirname)
				     : xstrdup(user_path);
	static const char *const subdirs[] = {"new", "cur"};

	if (dirname != NULL &&
	    dir_add(w, WK_FOLDER, path, user, folder, folder_depth) < 0)
		goto out;
	for (size_t i = 0; i < 2; i++) {
		char *sub = xasprintf("%s/%s", path, subdirs[i]);

		dir_add(w, WK_MSGDIR, sub, user, folder, folder_depth + 1);
		free(sub);
	}
	report(w, user, folder, "rescan");
out:
	free(path);
}

/* Watch a user's Maildir, then every folder found in it. */
static void
add_user(struct watch *w, const char *user, const char *path)
{
	size_t depth = w->ncomps;
	struct dirent *de;
	DIR *dir;

	if (dir_add(w, WK_USER, path, user, "INBOX", depth) < 0)
		return;
	report(w, user, "", "folders");
	add_folder(w, user, path, NULL, depth);

	dir = opendir(path);
	if (dir == NULL) {
		log_watch_failure(path, errno);
		return;
	}
	while ((de = readdir(dir)) != NULL) {
		struct stat st;

		if (!is_folder_dirname(de->d_name) ||
		    fstatat(dirfd(dir), de->d_name, &st, 0) < 0 ||
		    !S_ISDIR(st.st_mode))
			continue;
		add_folder(w, user, path, de->d_name, depth);
	}
	closedir(dir);
}

static bool
is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool
has_msgdirs(const char *path)
{
	char *cur = xasprintf("%s/cur", path), *new = xasprintf("%s/new", path);
	bool found = is_dir(cur) || is_dir(new);

	free(cur);
	free(new);
	return found;
}

/* Watch the directories below dir (at depth) that lead to users' Maildirs
 * by the template. A directory where a Maildir may appear is watched as
 * pending, so that its cur/ or new/ is seen when it is created. */
static void
scan_tree(struct watch *w, const char *dir, size_t depth)
{
	struct dirent *de;
	DIR *d;

	if (depth >= w->ncomps || (d = opendir(dir)) == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		struct stat st;
		char *path;

		if (!matches_component(w, depth, de->d_name) ||
		    fstatat(dirfd(d), de->d_name, &st, 0) < 0 ||
		    !S_ISDIR(st.st_mode))
			continue;
		path = xasprintf("%s/%s", dir, de->d_name);
		if (depth + 1 < w->ncomps) {
			if (dir_add(w, WK_TREE, path, NULL, NULL, depth + 1) ==
			    0)
				scan_tree(w, path, depth + 1);
		} else if (!w->planning || !has_msgdirs(path)) {
			/* At runtime the watch comes first even for a
			 * Maildir, because cur/ may appear after the check. */
			dir_add(w, WK_PENDING, path, NULL, NULL, depth + 1);
		}
		free(path);
	}
	closedir(d);
}

static int
compare_strings(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Paths of the users' Maildirs watched now, sorted. */
static char **
watched_user_paths(struct watch *w, size_t *count_r)
{
	char **paths = NULL;
	size_t count = 0, cap = 0;

	for (size_t i = 0; i < w->dirs_cap; i++) {
		if (w->dirs[i] == NULL || w->dirs[i]->kind != WK_USER)
			continue;
		paths = xgrow(paths, &cap, count + 1, sizeof(*paths));
		paths[count++] = w->dirs[i]->path;
	}
	if (count > 0)
		qsort(paths, count, sizeof(*paths), compare_strings);
	*count_r = count;
	return paths;
}

/* List the users again and watch those not watched yet. */
static void
rescan_users(struct watch *w)
{
	struct md_user *users = NULL;
	size_t count = 0, nknown = 0;
	char *error = NULL, **known;

	if (md_list_users(w->cfg, &users, &count, &error) < 0) {
		log_msg(LOG_LVL_ERROR, "watch_failed", "%s", error);
		free(error);
		return;
	}
	known = watched_user_paths(w, &nknown);
	for (size_t i = 0; i < count; i++) {
		const char *path = users[i].path;

		if (nknown == 0 || bsearch(&path, known, nknown, sizeof(*known),
					   compare_strings) == NULL)
			add_user(w, users[i].name, path);
	}
	free(known);
	md_users_free(&users, count);
}

/* Folder renames */

static void
move_clear(struct pending_move *move)
{
	xfree(&move->user);
	xfree(&move->path);
	move->active = false;
}

static bool
path_within(const char *path, const char *dir)
{
	size_t len = strlen(dir);

	return strncmp(path, dir, len) == 0 &&
	       (path[len] == '\0' || path[len] == '/');
}

/* Stop watching a folder directory that left the user's Maildir (moved
 * out, or to "..DOVECOT-TRASHED" before Dovecot deletes it). */
static void
forget_folder(struct watch *w, const char *folder_path)
{
	for (size_t i = 0; i < w->dirs_cap; i++) {
		struct watch_dir *d = w->dirs[i];

		if (d == NULL || !path_within(d->path, folder_path))
			continue;
		inotify_rm_watch(w->fd, (int)i);
		dir_drop(w, (int)i);
	}
}

/* A renamed directory keeps its watch descriptors, so only the paths and
 * the folder name of the entries change. */
static void
rename_folder(struct watch *w, const struct watch_dir *user_dir,
	      const char *old_path, const char *new_dirname)
{
	size_t old_len = strlen(old_path);

	for (size_t i = 0; i < w->dirs_cap; i++) {
		struct watch_dir *d = w->dirs[i];
		char *path;

		if (d == NULL || !path_within(d->path, old_path))
			continue;
		path = xasprintf("%s/%s%s", user_dir->path, new_dirname,
				 d->path + old_len);
		free(d->path);
		d->path = path;
		free(d->folder);
		d->folder = xstrdup(new_dirname + 1);
	}
}

/* Finish a pending folder move whose IN_MOVED_TO never came: the folder
 * left the watched tree. */
static void
move_expire(struct watch *w)
{
	if (!w->move.active)
		return;
	forget_folder(w, w->move.path);
	move_clear(&w->move);
}

/* Event dispatch */

static void
on_msgdir_event(struct watch *w, const struct watch_dir *d,
		const struct inotify_event *ev)
{
	if ((ev->mask & IN_ISDIR) != 0 || name_ignored(ev->name))
		return;
	report(w, d->user, d->folder, ev->name);
}

/* new/ or cur/ of a folder appeared or vanished. */
static void
on_subdir_event(struct watch *w, const struct watch_dir *d,
		const struct inotify_event *ev)
{
	char *path;

	if (!is_msgdir_name(ev->name))
		return;
	if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) != 0) {
		path = xasprintf("%s/%s", d->path, ev->name);
		dir_add(w, WK_MSGDIR, path, d->user, d->folder, d->depth + 1);
		free(path);
	}
	report(w, d->user, d->folder, "rescan");
}

/* A ".NAME" directory event in a user's Maildir. */
static void
on_folder_dir_event(struct watch *w, const struct watch_dir *d,
		    const struct inotify_event *ev)
{
	const char *user = d->user;

	if ((ev->mask & IN_MOVED_FROM) != 0) {
		move_clear(&w->move);
		w->move.active = true;
		w->move.cookie = ev->cookie;
		w->move.user = xstrdup(user);
		w->move.path = xasprintf("%s/%s", d->path, ev->name);
	} else if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) != 0) {
		add_folder(w, user, d->path, ev->name, d->depth);
	}
	/* IN_DELETE needs nothing: the kernel removes the folder's
	 * watches and sends IN_IGNORED for each. */
	report(w, user, "", "folders");
}

static void
on_user_event(struct watch *w, const struct watch_dir *d,
	      const struct inotify_event *ev)
{
	bool isdir = (ev->mask & IN_ISDIR) != 0;

	if (isdir && (ev->mask & IN_MOVED_TO) != 0 && w->move.active &&
	    ev->cookie == w->move.cookie &&
	    strcmp(w->move.user, d->user) == 0) {
		if (is_folder_dirname(ev->name))
			rename_folder(w, d, w->move.path, ev->name);
		else
			forget_folder(w, w->move.path);
		move_clear(&w->move);
		report(w, d->user, "", "folders");
		/* The user's folder list only creates the new name on the
		 * replica; the messages need a pass over the folder. */
		if (is_folder_dirname(ev->name))
			report(w, d->user, ev->name + 1, "rescan");
	} else if (isdir && is_folder_dirname(ev->name)) {
		on_folder_dir_event(w, d, ev);
	} else if (isdir) {
		on_subdir_event(w, d, ev);
	} else if (strcmp(ev->name, "subscriptions") == 0) {
		report(w, d->user, "", "subscriptions");
	} else if (strcmp(ev->name, "dovecot-keywords") == 0) {
		report(w, d->user, "INBOX", "keywords");
	}
}

static void
on_folder_event(struct watch *w, const struct watch_dir *d,
		const struct inotify_event *ev)
{
	if ((ev->mask & IN_ISDIR) != 0)
		on_subdir_event(w, d, ev);
	else if (strcmp(ev->name, "dovecot-keywords") == 0)
		report(w, d->user, d->folder, "keywords");
}

/* A directory appeared where the template leads to users' Maildirs. */
static void
on_tree_event(struct watch *w, const struct watch_dir *d,
	      const struct inotify_event *ev)
{
	size_t depth = d->depth;
	char *path;

	/* TODO: a user's Maildir that is deleted or renamed is not
	 * reported; only the periodic full reconcile notices it. */
	if ((ev->mask & IN_ISDIR) == 0 ||
	    (ev->mask & (IN_CREATE | IN_MOVED_TO)) == 0)
		return;
	if (d->kind == WK_PENDING) {
		if (is_msgdir_name(ev->name))
			rescan_users(w);
		return;
	}
	if (!matches_component(w, depth, ev->name))
		return;
	path = xasprintf("%s/%s", d->path, ev->name);
	if (depth + 1 < w->ncomps) {
		if (dir_add(w, WK_TREE, path, NULL, NULL, depth + 1) == 0)
			scan_tree(w, path, depth + 1);
	} else {
		dir_add(w, WK_PENDING, path, NULL, NULL, depth + 1);
	}
	free(path);
	rescan_users(w);
}

static void
handle_event(struct watch *w, const struct inotify_event *ev)
{
	struct watch_dir *d;

	if ((ev->mask & IN_Q_OVERFLOW) != 0) {
		w->overflow = true;
		return;
	}
	/* The two halves of a rename are normally queued next to each
	 * other. If another event comes between them, the folder is
	 * forgotten here and added again as new at its IN_MOVED_TO, which
	 * costs only a rescan. */
	if (w->move.active &&
	    ((ev->mask & IN_MOVED_TO) == 0 || ev->cookie != w->move.cookie))
		move_expire(w);
	if ((ev->mask & IN_IGNORED) != 0) {
		dir_drop(w, ev->wd);
		return;
	}
	d = dir_by_wd(w, ev->wd);
	if (d == NULL || ev->len == 0 || ev->name[0] == '\0')
		return;

	switch (d->kind) {
	case WK_TREE:
	case WK_PENDING:
		on_tree_event(w, d, ev);
		break;
	case WK_USER:
		on_user_event(w, d, ev);
		break;
	case WK_FOLDER:
		on_folder_event(w, d, ev);
		break;
	case WK_MSGDIR:
		on_msgdir_event(w, d, ev);
		break;
	}
}

int
watch_process(struct watch *watch, watch_change_fn *on_change, void *ctx)
{
	char buf[64 * 1024]
		__attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;
	int ret;

	watch->on_change = on_change;
	watch->ctx = ctx;
	watch->overflow = false;
	while ((n = read(watch->fd, buf, sizeof(buf))) > 0) {
		for (char *p = buf; p < buf + n;) {
			const struct inotify_event *ev = (void *)p;

			handle_event(watch, ev);
			p += sizeof(*ev) + ev->len;
		}
	}
	ret = watch->overflow ? 1 : 0;
	if (n < 0 && errno != EAGAIN && errno != EINTR) {
		log_msg(LOG_LVL_ERROR, "watch_failed",
			"reading the inotify descriptor failed: %s",
			strerror(errno));
		ret = -1;
	}
	watch->on_change = NULL;
	watch->ctx = NULL;
	return ret;
}

/* Setup */

int
watch_check_limit(unsigned long long max_user_watches,
		  unsigned long long needed, char **error_r)
{
	if (needed <= max_user_watches)
		return 0;
	/* Twice the need leaves room for new folders and other programs
	 * of the same user, which share the limit. */
	*error_r = xasprintf("fs.inotify.max_user_watches is %llu but %llu "
			     "directories need a watch; raise it with sysctl "
			     "-w fs.inotify.max_user_watches=%llu and in "
			     "/etc/sysctl.d/",
			     max_user_watches, needed, needed * 2);
	return -1;
}

/* Read fs.inotify.max_user_watches. Returns 0, or -1 with *error_r. */
static int
read_max_user_watches(unsigned long long *value_r, char **error_r)
{
	FILE *f = fopen(MAX_USER_WATCHES_PATH, "r");
	int ret = -1;

	if (f == NULL) {
		*error_r = xasprintf("cannot read %s: %s",
				     MAX_USER_WATCHES_PATH, strerror(errno));
		return -1;
	}
	if (fscanf(f, "%llu", value_r) == 1)
		ret = 0;
	else
		*error_r = xasprintf("cannot parse %s", MAX_USER_WATCHES_PATH);
	fclose(f);
	return ret;
}

/* Collect every directory to watch into w->plan without watching. */
static int
plan_watches(struct watch *w, char **error_r)
{
	struct md_user *users = NULL;
	size_t count = 0;

	w->planning = true;
	dir_add(w, WK_TREE, w->cfg->maildir_root, NULL, NULL, 0);
	scan_tree(w, w->cfg->maildir_root, 0);
	if (md_list_users(w->cfg, &users, &count, error_r) < 0) {
		w->planning = false;
		return -1;
	}
	for (size_t i = 0; i < count; i++)
		add_user(w, users[i].name, users[i].path);
	md_users_free(&users, count);
	w->planning = false;
	return 0;
}

/* Watch the planned directories. A directory removed since it was
 * planned is skipped, and any other failure fails the start. */
static int
add_planned(struct watch *w, char **error_r)
{
	for (size_t i = 0; i < w->plan_count; i++) {
		const struct watch_dir *p = &w->plan[i];
		int wd = inotify_add_watch(w->fd, p->path, WATCH_MASK);

		if (wd < 0 && (errno == ENOENT || errno == ENOTDIR))
			continue;
		if (wd < 0) {
			*error_r = xasprintf("cannot watch %s: %s", p->path,
					     strerror(errno));
			return -1;
		}
		dir_store(w, wd, p);
	}
	return 0;
}

static void
plan_free(struct watch *w)
{
	for (size_t i = 0; i < w->plan_count; i++)
		dir_free(&w->plan[i]);
	xfree(&w->plan);
	w->plan_count = 0;
	w->plan_cap = 0;
}

struct watch *
watch_new(const struct config *cfg, char **error_r)
{
	struct watch *w = xcalloc(1, sizeof(*w));
	unsigned long long limit = 0;
	char *error = NULL;

	w->cfg = cfg;
	split_template(w, cfg->user_path);
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0) {
		*error_r = xasprintf("inotify_init1 failed: %s; check "
				     "fs.inotify.max_user_instances",
				     strerror(errno));
		goto fail;
	}
	if (plan_watches(w, error_r) < 0)
		goto fail;

	if (read_max_user_watches(&limit, &error) < 0) {
		/* Without the number, adding the watches still fails
		 * cleanly with ENOSPC at the limit. */
		log_msg(LOG_LVL_WARN, "watch_limit", "%s", error);
		free(error);
	} else if (watch_check_limit(limit, w->plan_count, error_r) < 0) {
		goto fail;
	}
	if (add_planned(w, error_r) < 0)
		goto fail;
	plan_free(w);
	return w;
fail:
	watch_free(&w);
	return NULL;
}

int
watch_fd(struct watch *watch)
{
	return watch->fd;
}

void
watch_free(struct watch **watch)
{
	struct watch *w = *watch;

	if (w == NULL)
		return;
	if (w->fd >= 0)
		close(w->fd);
	for (size_t i = 0; i < w->dirs_cap; i++)
		dir_drop(w, (int)i);
	free(w->dirs);
	plan_free(w);
	move_clear(&w->move);
	for (size_t i = 0; i < w->ncomps; i++)
		free(w->comps[i]);
	free(w->comps);
	free(w);
	*watch = NULL;
}
