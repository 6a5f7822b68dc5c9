/* "mailrepl verify": an independent comparison of master and replica. */
#include <config.h>
#include "verify.h"

#include "imapc.h"
#include "log.h"
#include "maildir.h"
#include "util.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* One message on either side, reduced to what must be equal. */
struct item {
	unsigned char digest[32];
	uint64_t size;
	time_t date;
	char *flags;	  /* canonical text */
	const char *name; /* Maildir unique name, or NULL on the replica */
	uint32_t uid;	  /* replica UID, or 0 on the master */
};

struct verify_ctx {
	const struct verify_options *opt;
	struct imapc_params params;
	FILE *out;
	struct verify_counts *counts;
	const char *user;
	struct imapc *conn;
};

static void
differ(struct verify_ctx *v, const char *folder, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void
differ(struct verify_ctx *v, const char *folder, const char *fmt, ...)
{
	char *display = folder != NULL ? mutf7_to_utf8(folder) : NULL;
	va_list ap;

	fprintf(v->out, "%s", v->user);
	if (display != NULL)
		fprintf(v->out, " %s", display);
	fprintf(v->out, ": ");
	va_start(ap, fmt);
	vfprintf(v->out, fmt, ap);
	va_end(ap);
	fputc('\n', v->out);
	v->counts->differences++;
	free(display);
}

static int
cmp_item(const void *a, const void *b)
{
	const struct item *x = a, *y = b;
	int c = memcmp(x->digest, y->digest, 32);

	if (c != 0)
		return c;
	c = strcmp(x->flags, y->flags);
	if (c != 0)
		return c;
	return x->date < y->date ? -1 : x->date > y->date;
}

static void
items_free(struct item *items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(items[i].flags);
	free(items);
}

static int
master_items(struct verify_ctx *v, const struct md_folder *folder,
	     struct item **items_r, size_t *n_r, struct md_message **msgs_r,
	     size_t *nmsgs_r, char **error_r)
{
	struct md_stats stats = {0};
	struct item *items;
	size_t n, kept = 0;

	if (md_scan_folder(folder, v->user, msgs_r, &n, &stats, error_r) < 0)
		return -1;
	*nmsgs_r = n;
	v->counts->skipped += md_stats_skipped(&stats);
	items = xcalloc(n + 1, sizeof(*items));
	for (size_t i = 0; i < n; i++) {
		const struct md_message *m = &(*msgs_r)[i];

		if (md_hash_file(m->path, items[kept].digest,
				 &items[kept].size) < 0) {
			v->counts->skipped++;
			continue;
		}
		items[kept].date = m->internaldate;
		items[kept].flags = flagset_format(&m->flags);
		items[kept].name = m->uniq;
		kept++;
	}
	*items_r = items;
	*n_r = kept;
	return 0;
}

static int
replica_items(struct verify_ctx *v, struct item **items_r, size_t *n_r,
	      struct mrerr *err)
{
	struct imapc_msg *msgs = NULL;
	struct item *items;
	size_t n = 0;

	if (imapc_fetch_all(v->conn, 1, &msgs, &n, err) < 0)
		return -1;
	items = xcalloc(n + 1, sizeof(*items));
	for (size_t i = 0; i < n; i++) {
		struct crlf_hasher *h;
		char *data;
		size_t len;
		uint64_t size;

		if (imapc_fetch_body(v->conn, msgs[i].uid, &data, &len, err) <
		    0) {
			items_free(items, i);
			imapc_msgs_free(&msgs, n);
			return -1;
		}
		h = crlf_hasher_new();
		crlf_hasher_update(h, data, len);
		crlf_hasher_finish(&h, items[i].digest, &size);
		free(data);
		items[i].size = msgs[i].size;
		items[i].date = msgs[i].internaldate;
		items[i].flags = flagset_format(&msgs[i].flags);
		items[i].uid = msgs[i].uid;
	}
	imapc_msgs_free(&msgs, n);
	*items_r = items;
	*n_r = n;
	return 0;
}

static void
format_date(time_t t, char *buf, size_t size)
{
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Walk both sides sorted by content, flags and date, and report every
 * message that has no partner or whose flags or date differ. */
static void
compare_items(struct verify_ctx *v, const char *folder, struct item *m,
	      size_t nm, struct item *r, size_t nr)
{
	size_t i = 0, j = 0;

	qsort(m, nm, sizeof(*m), cmp_item);
	qsort(r, nr, sizeof(*r), cmp_item);
	while (i < nm || j < nr) {
		int c = i >= nm	  ? 1
			: j >= nr ? -1
				  : memcmp(m[i].digest, r[j].digest, 32);
		char a[32], b[32];

		if (c < 0) {
			differ(v, folder, "missing on the replica: %s (%llu "
			       "bytes)", m[i].name,
			       (unsigned long long)m[i].size);
			i++;
			continue;
		}
		if (c > 0) {
			differ(v, folder, "extra on the replica: UID %u "
			       "(%llu bytes)", r[j].uid,
			       (unsigned long long)r[j].size);
			j++;
			continue;
		}
		if (strcmp(m[i].flags, r[j].flags) != 0)
			differ(v, folder, "flags differ for %s (UID %u): "
			       "master \"%s\", replica \"%s\"", m[i].name,
			       r[j].uid, m[i].flags, r[j].flags);
		if (m[i].date != r[j].date) {
			format_date(m[i].date, a, sizeof(a));
			format_date(r[j].date, b, sizeof(b));
			differ(v, folder, "INTERNALDATE differs for %s (UID "
			       "%u): master %s, replica %s", m[i].name,
			       r[j].uid, a, b);
		}
		i++;
		j++;
	}
}

static int
verify_folder(struct verify_ctx *v, const struct md_folder *folder,
	      struct mrerr *err)
{
	struct item *m = NULL, *r = NULL;
	struct md_message *msgs = NULL;
	size_t nm = 0, nr = 0, nmsgs = 0;
	char *rname = imapc_replica_name(v->conn, folder->name), *error = NULL;
	struct imapc_status st;
	int ret = -1;

	if (master_items(v, folder, &m, &nm, &msgs, &nmsgs, &error) < 0) {
		mrerr_set(err, MRERR_FOLDER, MRERR_RETRY_NEVER, "%s", error);
		goto out;
	}
	v->counts->messages += nm;
	if (imapc_select(v->conn, rname, &st, err) < 0) {
		differ(v, folder->name, "cannot select the folder on the "
		       "replica: %s", err->text);
		ret = 0;
		goto out;
	}
	if (replica_items(v, &r, &nr, err) < 0)
		goto out;
	compare_items(v, folder->name, m, nm, r, nr);
	ret = 0;
out:
	free(error);
	free(rname);
	items_free(m, nm);
	items_free(r, nr);
	md_messages_free(&msgs, nmsgs);
	return ret;
}

static bool
in_names(char **names, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(names[i], name) == 0)
			return true;
	}
	return false;
}

static bool
in_mailboxes(const struct imapc_mailbox *list, size_t n, const char *name,
	     bool selectable)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(list[i].name, name) == 0)
			return !selectable || !list[i].noselect;
	}
	return false;
}

/* Compare the selectable folder sets, then the subscriptions. */
static int
verify_names(struct verify_ctx *v, const struct md_folder *folders,
	     size_t nfolders, const char *user_path, struct mrerr *err)
{
	struct imapc_mailbox *list = NULL, *subs = NULL;
	size_t nlist = 0, nsubs = 0, nwant = 0;
	char **names = xcalloc(nfolders + 1, sizeof(char *)), **want = NULL;
	char *error = NULL;
	int ret = -1;

	for (size_t i = 0; i < nfolders; i++)
		names[i] = imapc_replica_name(v->conn, folders[i].name);
	if (imapc_list(v->conn, false, &list, &nlist, err) < 0 ||
	    imapc_list(v->conn, true, &subs, &nsubs, err) < 0)
		goto out;
	for (size_t i = 0; i < nfolders; i++) {
		if (!in_mailboxes(list, nlist, names[i], true))
			differ(v, names[i], "folder missing on the replica");
	}
	for (size_t i = 0; i < nlist; i++) {
		if (!list[i].noselect && !in_names(names, nfolders,
						   list[i].name))
			differ(v, list[i].name, "folder exists only on the "
			       "replica");
	}

	if (md_read_subscriptions(user_path, &want, &nwant, &error) < 0) {
		mrerr_set(err, MRERR_USER, MRERR_RETRY_NEVER, "%s", error);
		goto out;
	}
	for (size_t i = 0; i < nwant; i++) {
		char *rn = imapc_replica_name(v->conn, want[i]);

		if (!in_mailboxes(subs, nsubs, rn, false))
			differ(v, rn, "subscribed on the master only");
		free(rn);
	}
	for (size_t i = 0; i < nsubs; i++) {
		bool found = false;

		for (size_t k = 0; k < nwant && !found; k++) {
			char *rn = imapc_replica_name(v->conn, want[k]);

			found = strcmp(rn, subs[i].name) == 0;
			free(rn);
		}
		if (!found)
			differ(v, subs[i].name, "subscribed on the replica "
			       "only");
	}
	ret = 0;
out:
	free(error);
	md_strings_free(&names, nfolders);
	md_strings_free(&want, nwant);
	imapc_mailboxes_free(&list, nlist);
	imapc_mailboxes_free(&subs, nsubs);
	return ret;
}

static int
verify_user(struct verify_ctx *v, const struct md_user *user,
	    struct mrerr *err)
{
	struct md_folder *folders = NULL;
	struct md_stats stats = {0};
	size_t n = 0;
	char *error = NULL;
	int ret = -1;

	v->user = user->name;
	v->conn = imapc_connect(&v->params, user->name, err);
	if (v->conn == NULL)
		return -1;
	if (md_list_folders(user->path, &folders, &n, &stats, &error) < 0) {
		mrerr_set(err, MRERR_USER, MRERR_RETRY_NEVER, "%s", error);
		goto out;
	}
	v->counts->folders += n;
	if (verify_names(v, folders, n, user->path, err) < 0)
		goto out;
	for (size_t i = 0; i < n; i++) {
		if (verify_folder(v, &folders[i], err) < 0)
			goto out;
	}
	ret = 0;
out:
	free(error);
	md_folders_free(&folders, n);
	imapc_free(&v->conn);
	return ret;
}

static void
log_verify_end(const struct verify_counts *counts)
{
	struct logline *line = log_begin(
		counts->differences == 0 ? LOG_LVL_INFO : LOG_LVL_WARN,
		"verify_end");

	log_int(line, "users", (long long)counts->users);
	log_int(line, "messages", (long long)counts->messages);
	log_int(line, "differences", (long long)counts->differences);
	log_end(line);
}

int
verify_run(const struct verify_options *opt, FILE *out,
	   struct verify_counts *counts_r, char **error_r)
{
	const struct config *cfg = opt->cfg;
	struct verify_ctx v = {.opt = opt, .out = out, .counts = counts_r};
	struct md_user *users = NULL;
	size_t n = 0;
	struct mrerr err;
	int ret = -1;

	memset(counts_r, 0, sizeof(*counts_r));
	imapc_params_from_config(&v.params, cfg, opt->password);
	if (md_select_users(cfg, opt->users, opt->nusers, &users, &n,
			    error_r) < 0)
		return -1;
	/* Its IMAP sessions appear in the replication log too; these lines
	 * tell them from the agent's. */
	log_msg(LOG_LVL_INFO, "verify_start", "comparing %zu users with the "
		"replica", n);
	for (size_t i = 0; i < n; i++) {
		counts_r->users++;
		mrerr_clear(&err);
		if (verify_user(&v, &users[i], &err) < 0) {
			*error_r = xasprintf("verifying user %s failed: %s",
					     users[i].name, err.text);
			goto out;
		}
	}
	ret = counts_r->differences > 0 ? 1 : 0;
	log_verify_end(counts_r);
out:
	md_users_free(&users, n);
	return ret;
}
