/* Read-only access to a Maildir++ tree: folders, subscriptions, and
 * messages with their flags. Directories are only listed and files only
 * opened O_RDONLY. Users are in maildir_users.c, dates in maildir_date.c
 * and the content hash in maildir_hash.c. */
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

/* ---- Small helpers ---------------------------------------------------- */

struct md_stats *
md_stats_or_dummy(struct md_stats *stats, struct md_stats *dummy)
{
	memset(dummy, 0, sizeof(*dummy));
	return stats != NULL ? stats : dummy;
}

void
md_buf_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
	*buf = xgrow(*buf, cap, *len + n + 1, 1);
	memcpy(*buf + *len, s, n);
	*len += n;
	(*buf)[*len] = '\0';
}

/* A directory entry that is a directory, following symlinks, because
 * sites link user or folder directories to other disks. */
bool
md_entry_is_dir(int dir_fd, const struct dirent *de)
{
	struct stat st;

	if (de->d_type == DT_DIR)
		return true;
	if (de->d_type != DT_UNKNOWN && de->d_type != DT_LNK)
		return false;
	return fstatat(dir_fd, de->d_name, &st, 0) == 0 && S_ISDIR(st.st_mode);
}

/* Returns 1 when dir/cur or dir/new is a directory, 0 when neither
 * exists, and -1 with *err_r set when one of them cannot be checked. */
int
md_has_maildir_subdirs(const char *dir, int *err_r)
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
log_folder_skip(const char *path, const char *name, const char *reason, int err)
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
	    !md_entry_is_dir(dir_fd, de))
		return NULL;

	path = xasprintf("%s/%s", user_path, dirname);
	if (!folder_name_valid(dirname)) {
		stats->skipped_folders++;
		log_folder_skip(path, dirname + 1, "empty_name_component", 0);
		goto out;
	}
	maildir = md_has_maildir_subdirs(path, &err);
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

	stats = md_stats_or_dummy(stats, &dummy);
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
			md_buf_append(out, len, cap, s + i, 1);
			continue;
		}
		if (i + 1 == n)
			break;
		i++;
		code = strchr(codes, s[i]);
		if (code != NULL)
			md_buf_append(out, len, cap, values + (code - codes),
				      1);
		else
			md_buf_append(out, len, cap, s + i, 1);
	}
}

static char *
subscription_v2_name(const char *line)
{
	char *out = NULL;
	size_t len = 0, cap = 0;
	const char *tab;

	md_buf_append(&out, &len, &cap, "", 0);
	while ((tab = strchr(line, '\t')) != NULL) {
		append_tab_unescaped(&out, &len, &cap, line,
				     (size_t)(tab - line));
		md_buf_append(&out, &len, &cap, ".", 1);
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
md_read_subscriptions(const char *user_path, char ***names_r, size_t *count_r,
		      char **error_r)
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
md_read_keywords(const char *folder_path, char *keywords_r[26], char **error_r)
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

/* ---- Messages --------------------------------------------------------- */

/* Per-scan state; unmapped keyword letters and date fallbacks are
 * summed per folder so that one bad folder logs a few lines, not one
 * per message. */
struct scan {
	const struct md_folder *folder;
	const char *user;
	/* The directory being listed, so that each file is looked up by
	 * its name alone rather than by a whole path; AT_FDCWD when the
	 * name is a whole path. */
	int dir_fd;
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
check_message_file(const struct scan *sc, const char *name, const char *path,
		   struct stat *st)
{
	const char *user = sc->user;
	const struct md_folder *folder = sc->folder;
	struct md_stats *stats = sc->stats;
	int fd;

	if (fstatat(sc->dir_fd, name, st, AT_SYMLINK_NOFOLLOW) < 0)
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
	fd = openat(sc->dir_fd, name,
		    O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
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
	if (check_message_file(sc,
			       sc->dir_fd == AT_FDCWD ? msg->path : filename,
			       msg->path, &st) < 0)
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
	msg->internaldate =
		md_internaldate(msg->path, uniq, st.st_mtime, &source);
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
	char *path =
		xasprintf("%s/%s", sc->folder->path, in_new ? "new" : "cur");
	struct dirent *de;
	DIR *dir = opendir(path);
	int ret = -1;

	if (dir == NULL) {
		ret = errno == ENOENT ? 0 : -1;
		goto out;
	}
	sc->dir_fd = dirfd(dir);
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
	sc->dir_fd = AT_FDCWD;
out:
	if (ret < 0)
		*error_r =
			xasprintf("cannot list %s: %s", path, strerror(errno));
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
	struct scan sc = {.folder = folder, .user = user, .dir_fd = AT_FDCWD};
	int listed_new, listed_cur = -1, ret = -1;

	sc.stats = md_stats_or_dummy(stats, &dummy);
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
				     "a Maildir folder",
				     folder->path);
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
md_read_message(const struct md_folder *folder, const char *user, bool in_new,
		const char *filename, char *const keywords[26],
		struct md_message *msg_r, struct md_stats *stats)
{
	struct md_stats dummy;
	struct scan sc = {.folder = folder, .user = user, .dir_fd = AT_FDCWD};
	int ret;

	sc.stats = md_stats_or_dummy(stats, &dummy);
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

unsigned long
md_stats_skipped(const struct md_stats *stats)
{
	return stats->skipped_malformed + stats->skipped_unreadable +
	       stats->skipped_empty + stats->skipped_vanished +
	       stats->skipped_not_file;
}
