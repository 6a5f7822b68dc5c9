/* The initial replication, first phase: prepare one user on the replica.
 *
 * Folders are created parents first and subscriptions copied before any
 * message moves, so that the second phase can work on folders in any
 * order and in parallel. */
#include <config.h>
#include "sync_private.h"

#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct user_ctx {
	struct sync_worker *w;
	size_t ui;
	const char *user;
	const char *user_path;
	bool dry_run;
	struct md_folder *folders;
	size_t nfolders;
	struct imapc_mailbox *rlist;
	size_t nrlist;
};

static void
log_folder_event(const char *event, const char *user, const char *folder)
{
	struct logline *line = log_begin(LOG_LVL_INFO, event);
	char *display = mutf7_to_utf8(folder);

	log_str(line, "user", user);
	log_str(line, "folder", display);
	log_end(line);
	free(display);
}

static void
log_move(const char *user, const char *from, const char *to,
	 const char *uniq, uint32_t uid)
{
	struct logline *line = log_begin(LOG_LVL_INFO, "move");
	char *from_display = mutf7_to_utf8(from);
	char *to_display = mutf7_to_utf8(to);

	log_str(line, "user", user);
	log_str(line, "folder", from_display);
	log_str(line, "to", to_display);
	log_str(line, "file", uniq);
	log_int(line, "uid", uid);
	log_end(line);
	free(from_display);
	free(to_display);
}

static void
log_move_folder(const char *user, const char *from, const char *to)
{
	struct logline *line = log_begin(LOG_LVL_INFO, "folder_rename");
	char *dfrom = mutf7_to_utf8(from), *dto = mutf7_to_utf8(to);

	log_str(line, "user", user);
	log_str(line, "folder", dfrom);
	log_str(line, "to", dto);
	log_end(line);
	free(dfrom);
	free(dto);
}

static bool
replica_has(const struct user_ctx *u, const char *name, bool selectable)
{
	for (size_t i = 0; i < u->nrlist; i++) {
		if (strcmp(u->rlist[i].name, name) == 0)
			return !selectable || !u->rlist[i].noselect;
	}
	return false;
}

/* The master folder whose replica name is name, or NULL. */
static const struct md_folder *
master_folder(const struct user_ctx *u, const char *name)
{
	const struct md_folder *found = NULL;

	for (size_t i = 0; i < u->nfolders && found == NULL; i++) {
		char *rname = imapc_replica_name(u->w->conn,
						u->folders[i].name);

		if (strcmp(rname, name) == 0)
			found = &u->folders[i];
		free(rname);
	}
	return found;
}

static int
relist(struct user_ctx *u, struct mrerr *err)
{
	imapc_mailboxes_free(&u->rlist, u->nrlist);
	return imapc_list(u->w->conn, false, &u->rlist, &u->nrlist, err);
}

/* Sort mailbox names so that children come before their parents. */
static int
cmp_desc(const void *a, const void *b)
{
	const struct imapc_mailbox *x = a, *y = b;

	return strcmp(y->name, x->name);
}

static int
expunge_all(struct user_ctx *u, const char *name, struct mrerr *err)
{
	struct imapc_status st;
	struct imapc_msg *msgs = NULL;
	uint32_t *uids = NULL;
	size_t n = 0;
	int ret = -1;

	if (imapc_select(u->w->conn, name, &st, err) < 0 ||
	    imapc_fetch_all(u->w->conn, 1, &msgs, &n, err) < 0)
		goto out;
	uids = xcalloc(n ? n : 1, sizeof(*uids));
	for (size_t i = 0; i < n; i++)
		uids[i] = msgs[i].uid;
	if (n > 0 && imapc_expunge_uids(u->w->conn, uids, n, err) < 0)
		goto out;
	u->w->counts.expunged += n;
	ret = 0;
out:
	free(uids);
	imapc_msgs_free(&msgs, n);
	return ret;
}

/* Count what a reset would expunge from mailbox (for a dry run). */
static int
count_messages(struct user_ctx *u, const char *name, struct mrerr *err)
{
	struct imapc_status st;

	if (imapc_select(u->w->conn, name, &st, err) < 0)
		return -1;
	u->w->counts.expunged += st.exists;
	return 0;
}

/* Empty the user's mailboxes on the replica (--reset-replica): every
 * folder but INBOX is deleted, children first, and INBOX is expunged. */
static int
reset_user(struct user_ctx *u, struct mrerr *err)
{
	qsort(u->rlist, u->nrlist, sizeof(*u->rlist), cmp_desc);
	log_folder_event("reset", u->user, "*");
	for (size_t i = 0; i < u->nrlist; i++) {
		const char *name = u->rlist[i].name;

		/* A \Noselect parent goes away with its last child. */
		if (u->rlist[i].noselect)
			continue;
		if (u->dry_run) {
			if (count_messages(u, name, err) < 0)
				return -1;
			continue;
		}
		if (strcasecmp(name, "INBOX") == 0) {
			if (expunge_all(u, name, err) < 0)
				return -1;
		} else if (count_messages(u, name, err) < 0 ||
			   imapc_delete(u->w->conn, name, err) < 0) {
			return -1;
		}
	}
	if (u->dry_run) {
		pthread_mutex_lock(&u->w->run->lock);
		u->w->run->dry_reset[u->ui] = true;
		pthread_mutex_unlock(&u->w->run->lock);
	}
	if (!u->dry_run && store_user_forget(u->w->store, u->user) < 0)
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				 "state store: %s", store_error(u->w->store));
	return u->dry_run ? 0 : relist(u, err);
}

/* Adopt the replica messages of one folder that are copies of the
 * master's; returns how many replica messages are not. */
static long
adopt_folder(struct user_ctx *u, const struct md_folder *folder,
	     const char *rname, struct mrerr *err)
{
	struct sync_worker *w = u->w;
	struct md_message *msgs = NULL;
	struct imapc_msg *rmsgs = NULL;
	size_t n = 0, nr = 0, *wanted = NULL, *unknown = NULL, *match = NULL;
	struct md_stats stats = {0};
	struct imapc_status st;
	char *error = NULL;
	long pairs, ret = -1;

	if (imapc_select(w->conn, rname, &st, err) < 0 ||
	    imapc_fetch_all(w->conn, 1, &rmsgs, &nr, err) < 0)
		goto out;
	if (md_scan_folder(folder, u->user, &msgs, &n, &stats, &error) < 0) {
		mrerr_set(err, MRERR_FOLDER, MRERR_RETRY_LATER, "%s", error);
		goto out;
	}
	wanted = xcalloc(n + 1, sizeof(size_t));
	unknown = xcalloc(nr + 1, sizeof(size_t));
	match = xcalloc(n + 1, sizeof(size_t));
	for (size_t i = 0; i < n; i++)
		wanted[i] = i;
	for (size_t i = 0; i < nr; i++)
		unknown[i] = i;
	pairs = sync_rematch(w, msgs, wanted, n, rmsgs, unknown, nr, match,
			     err);
	if (pairs < 0)
		goto out;

	if (!u->dry_run) {
		store_begin(w->store);
		store_folder_set(w->store, u->user, folder->name,
				 st.uidvalidity);
		for (size_t i = 0; i < n; i++) {
			char *flags;

			if (match[i] == SIZE_MAX)
				continue;
			flags = flagset_format(&rmsgs[match[i]].flags);
			store_msg_put(w->store, u->user, folder->name,
				      msgs[i].uniq, rmsgs[match[i]].uid, flags,
				      rmsgs[match[i]].size);
			free(flags);
		}
		if (store_commit(w->store) < 0) {
			mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				  "state store: %s", store_error(w->store));
			goto out;
		}
	}
	w->counts.adopted += (unsigned long long)pairs;
	ret = (long)nr - pairs;
out:
	free(error);
	free(wanted);
	free(unknown);
	free(match);
	md_messages_free(&msgs, n);
	imapc_msgs_free(&rmsgs, nr);
	return ret;
}

/* A user we never replicated to must have an empty replica, or one that
 * holds only copies of the master's messages (the state store was lost):
 * those are adopted. Anything else is someone else's mail. */
static int
check_foreign(struct user_ctx *u, struct mrerr *err)
{
	unsigned long long foreign = 0;
	const char *where = NULL;

	for (size_t i = 0; i < u->nrlist; i++) {
		const char *rname = u->rlist[i].name;
		const struct md_folder *mf;
		struct imapc_status st;
		long left;

		if (u->rlist[i].noselect)
			continue;
		if (imapc_select(u->w->conn, rname, &st, err) < 0)
			return -1;
		if (st.exists == 0)
			continue;
		mf = master_folder(u, rname);
		left = mf != NULL ? adopt_folder(u, mf, rname, err)
				  : (long)st.exists;
		if (left < 0)
			return -1;
		if (left > 0 && where == NULL)
			where = rname;
		foreign += (unsigned long long)left;
	}
	if (foreign == 0)
		return 0;

	if (!u->dry_run)
		store_user_forget(u->w->store, u->user);
	return mrerr_set(err, MRERR_USER, MRERR_RETRY_NEVER,
			 "replica mailbox of user %s already holds %llu "
			 "messages that are not copies of the master's "
			 "(first in folder %s); refusing to mix mail. Run "
			 "mailrepl init --user %s --reset-replica to empty "
			 "that user's mailboxes on the replica first",
			 u->user, foreign, where, u->user);
}

/* A folder the replica refuses (a name it does not accept, say) fails
 * alone: it is logged here, and its unit in the second phase fails and
 * is counted. Returns whether err was such a failure. */
static bool
skip_folder_error(struct user_ctx *u, const char *folder, struct mrerr *err)
{
	if (err->scope != MRERR_FOLDER)
		return false;
	sync_note_error(u->w, u->user, folder, err);
	mrerr_clear(err);
	return true;
}

static int
create_folders(struct user_ctx *u, struct mrerr *err)
{
	for (size_t i = 0; i < u->nfolders; i++) {
		char *rname = imapc_replica_name(u->w->conn,
						u->folders[i].name);
		int r = 0;

		if (!replica_has(u, rname, true)) {
			log_folder_event("folder_create", u->user,
					 u->folders[i].name);
			if (!u->dry_run)
				r = imapc_create(u->w->conn, rname, err);
			u->w->counts.folders_created++;
		}
		free(rname);
		if (r < 0 && !skip_folder_error(u, u->folders[i].name, err))
			return -1;
	}
	return 0;
}

/* How many of the sorted unique names a[] are also in the sorted map. */
static size_t
count_common(const struct md_message *a, size_t na,
	     const struct store_msg *map, size_t nmap)
{
	size_t i = 0, j = 0, common = 0;

	while (i < na && j < nmap) {
		int cmp = strcmp(a[i].uniq, map[j].uniq);

		common += cmp == 0;
		i += cmp <= 0;
		j += cmp >= 0;
	}
	return common;
}

/* The replica folder that master folder fi was renamed from: one the
 * master no longer has, whose mapped messages are mostly in fi now.
 * Returns its index in u->rlist, or SIZE_MAX. */
static size_t
renamed_from(struct user_ctx *u, size_t fi)
{
	struct md_message *msgs = NULL;
	size_t n = 0, found = SIZE_MAX;
	char *error = NULL;

	if (md_scan_folder(&u->folders[fi], u->user, &msgs, &n, NULL,
			   &error) < 0 || n == 0) {
		free(error);
		md_messages_free(&msgs, n);
		return SIZE_MAX;
	}
	for (size_t j = 0; j < u->nrlist && found == SIZE_MAX; j++) {
		struct store_msg *map = NULL;
		size_t nmap = 0;
		char *gone;

		if (u->rlist[j].noselect ||
		    strcasecmp(u->rlist[j].name, "INBOX") == 0 ||
		    master_folder(u, u->rlist[j].name) != NULL)
			continue;
		gone = imapc_master_name(u->w->conn, u->rlist[j].name);
		if (store_msgs_load(u->w->store, u->user, gone, &map,
				    &nmap) == 0 &&
		    nmap > 0 && count_common(msgs, n, map, nmap) * 2 > nmap)
			found = j;
		store_msgs_free(&map, nmap);
		free(gone);
	}
	md_messages_free(&msgs, n);
	return found;
}

/* A folder renamed on the master is renamed on the replica, children
 * included, which keeps its messages, UIDs and flags; without this each
 * message would be moved on its own. Parents come first in u->folders,
 * so a renamed parent takes its children along before they are looked
 * at. */
static int
sync_renames(struct user_ctx *u, struct mrerr *err)
{
	for (size_t i = 0; i < u->nfolders; i++) {
		char *to = imapc_replica_name(u->w->conn, u->folders[i].name);
		size_t j;
		char *from_folder;
		int r = 0;

		if (replica_has(u, to, false) ||
		    (j = renamed_from(u, i)) == SIZE_MAX) {
			free(to);
			continue;
		}
		from_folder = imapc_master_name(u->w->conn, u->rlist[j].name);
		log_move_folder(u->user, from_folder, u->folders[i].name);
		if (!u->dry_run) {
			r = imapc_rename(u->w->conn, u->rlist[j].name, to, err);
			if (r == 0 &&
			    store_folder_rename(u->w->store, u->user,
						from_folder,
						u->folders[i].name) < 0)
				r = mrerr_set(err, MRERR_CONFIG,
					      MRERR_RETRY_NEVER,
					      "state store: %s",
					      store_error(u->w->store));
			if (r == 0)
				r = relist(u, err);
		}
		free(from_folder);
		free(to);
		if (r < 0 && !skip_folder_error(u, u->folders[i].name, err))
			return -1;
	}
	return 0;
}

/* The master is authoritative: replica folders that the master does not
 * have are deleted, children first. */
static int
delete_extra_folders(struct user_ctx *u, struct mrerr *err)
{
	qsort(u->rlist, u->nrlist, sizeof(*u->rlist), cmp_desc);
	for (size_t i = 0; i < u->nrlist; i++) {
		const char *name = u->rlist[i].name;
		char *folder;

		if (u->rlist[i].noselect || strcasecmp(name, "INBOX") == 0 ||
		    master_folder(u, name) != NULL)
			continue;
		log_folder_event("folder_delete", u->user, name);
		u->w->counts.folders_deleted++;
		if (u->dry_run)
			continue;
		if (imapc_delete(u->w->conn, name, err) < 0)
			return -1;
		folder = imapc_master_name(u->w->conn, name);
		store_folder_delete(u->w->store, u->user, folder);
		free(folder);
	}
	return 0;
}

/* A message that left one folder (departure) or arrived in another
 * without a map entry (arrival) since the last run. The same unique name
 * on both sides is a move. */
struct move_end {
	char *uniq;
	size_t folder; /* index into u->folders */
	uint32_t uid;  /* departures: the replica UID */
};

struct move_scan {
	struct move_end *arrivals, *departures;
	size_t narrivals, ndepartures, arrivals_cap, departures_cap;
};

static void
add_end(struct move_end **ends, size_t *n, size_t *cap, const char *uniq,
	size_t folder, uint32_t uid)
{
	*ends = xgrow(*ends, cap, *n + 1, sizeof(**ends));
	(*ends)[*n] = (struct move_end){xstrdup(uniq), folder, uid};
	(*n)++;
}

/* Compare one folder's Maildir with its map (both sorted by uniq). */
static int
scan_moves_in_folder(struct user_ctx *u, size_t fi, struct move_scan *ms)
{
	struct md_message *msgs = NULL;
	struct store_msg *map = NULL;
	size_t n = 0, nmap = 0, i = 0, j = 0;
	char *error = NULL;

	if (md_scan_folder(&u->folders[fi], u->user, &msgs, &n, NULL,
			   &error) < 0) {
		free(error);
		return 0; /* the folder's unit reports it */
	}
	if (store_msgs_load(u->w->store, u->user, u->folders[fi].name, &map,
			    &nmap) < 0) {
		md_messages_free(&msgs, n);
		return -1;
	}
	while (i < n || j < nmap) {
		int cmp = i >= n      ? 1
			  : j >= nmap ? -1
				      : strcmp(msgs[i].uniq, map[j].uniq);

		if (cmp < 0)
			add_end(&ms->arrivals, &ms->narrivals,
				&ms->arrivals_cap, msgs[i++].uniq, fi, 0);
		else if (cmp > 0) {
			add_end(&ms->departures, &ms->ndepartures,
				&ms->departures_cap, map[j].uniq, fi,
				map[j].uid);
			j++;
		} else {
			i++;
			j++;
		}
	}
	md_messages_free(&msgs, n);
	store_msgs_free(&map, nmap);
	return 0;
}

static int
cmp_end(const void *a, const void *b)
{
	const struct move_end *x = a, *y = b;
	int c = x->folder < y->folder ? -1 : x->folder > y->folder;

	return c != 0 ? c : strcmp(x->uniq, y->uniq);
}

static int
cmp_uniq(const void *a, const void *b)
{
	return strcmp(((const struct move_end *)a)->uniq,
		      ((const struct move_end *)b)->uniq);
}

/* The arrival in another folder with dep's unique name, or NULL.
 * ms->arrivals is sorted by uniq. */
static const struct move_end *
find_arrival(const struct move_scan *ms, const struct move_end *dep)
{
	const struct move_end *hit;
	size_t k;

	hit = bsearch(dep, ms->arrivals, ms->narrivals, sizeof(*dep),
		      cmp_uniq);
	if (hit == NULL)
		return NULL;
	/* Back up to the first arrival with this name, then take the
	 * first one that is not in the departure's own folder. */
	k = (size_t)(hit - ms->arrivals);
	while (k > 0 && strcmp(ms->arrivals[k - 1].uniq, dep->uniq) == 0)
		k--;
	for (; k < ms->narrivals && strcmp(ms->arrivals[k].uniq, dep->uniq) == 0;
	     k++) {
		if (ms->arrivals[k].folder != dep->folder)
			return &ms->arrivals[k];
	}
	return NULL;
}

/* Record a move in the map: the source entry goes, and the destination
 * gets the UID from COPYUID. Without one, the second phase re-matches
 * the message in its new folder. */
static int
record_move(struct user_ctx *u, const char *from, const char *to,
	    const char *uniq, uint32_t uidvalidity, uint32_t new_uid)
{
	struct store *st = u->w->store;
	uint32_t known = 0;
	int r = store_begin(st);

	if (r == 0)
		r = store_msg_delete(st, u->user, from, uniq);
	if (r == 0 && new_uid != 0)
		r = store_folder_get(st, u->user, to, &known);
	if (r == 0 && new_uid != 0 && known != uidvalidity)
		r = store_folder_set(st, u->user, to, uidvalidity);
	if (r == 0 && new_uid != 0)
		r = store_msg_put(st, u->user, to, uniq, new_uid, "", 0);
	if (r == 0)
		return store_commit(st);
	store_rollback(st);
	return -1;
}

static int
move_one(struct user_ctx *u, const struct move_end *dep,
	 const struct move_end *arr, struct mrerr *err)
{
	const char *from = u->folders[dep->folder].name;
	const char *to = u->folders[arr->folder].name;
	char *rfrom = imapc_replica_name(u->w->conn, from);
	char *rto = imapc_replica_name(u->w->conn, to);
	struct imapc_status st;
	uint32_t uidvalidity = 0, new_uid = 0;
	int ret = -1;

	log_move(u->user, from, to, dep->uniq, dep->uid);
	u->w->counts.moved++;
	if (u->dry_run) {
		ret = 0;
		goto out;
	}
	if (imapc_select(u->w->conn, rfrom, &st, err) < 0 ||
	    imapc_move_uid(u->w->conn, dep->uid, rto, &uidvalidity, &new_uid,
			   err) < 0)
		goto out;
	if (record_move(u, from, to, dep->uniq, uidvalidity, new_uid) < 0) {
		mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
			  "state store: %s", store_error(u->w->store));
		goto out;
	}
	ret = 0;
out:
	free(rfrom);
	free(rto);
	return ret;
}

static void
move_scan_free(struct move_scan *ms)
{
	for (size_t k = 0; k < ms->narrivals; k++)
		free(ms->arrivals[k].uniq);
	for (size_t k = 0; k < ms->ndepartures; k++)
		free(ms->departures[k].uniq);
	free(ms->arrivals);
	free(ms->departures);
}

/* A file that left folder A and appeared in folder B under the same
 * unique name since the last run is a move: UID MOVE on the replica, not
 * an expunge and a new upload. A move the replica cannot do is left to
 * the second phase, which expunges and uploads instead. */
static int
sync_moves(struct user_ctx *u, struct mrerr *err)
{
	struct move_scan ms = {0};
	int ret = -1;

	for (size_t fi = 0; fi < u->nfolders; fi++) {
		if (scan_moves_in_folder(u, fi, &ms) < 0) {
			mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				  "state store: %s", store_error(u->w->store));
			goto out;
		}
	}
	qsort(ms.departures, ms.ndepartures, sizeof(*ms.departures), cmp_end);
	qsort(ms.arrivals, ms.narrivals, sizeof(*ms.arrivals), cmp_uniq);
	for (size_t k = 0; k < ms.ndepartures; k++) {
		const struct move_end *arr = find_arrival(&ms, &ms.departures[k]);

		if (arr == NULL)
			continue;
		if (move_one(u, &ms.departures[k], arr, err) < 0) {
			if (err->scope != MRERR_FOLDER)
				goto out;
			sync_note_error(u->w, u->user, NULL, err);
			mrerr_clear(err);
			break;
		}
	}
	ret = 0;
out:
	move_scan_free(&ms);
	return ret;
}

int
sync_user_moves(struct sync_worker *w, size_t ui, struct mrerr *err)
{
	struct user_ctx u = {
		.w = w,
		.ui = ui,
		.user = w->run->users[ui].name,
		.user_path = w->run->users[ui].path,
		.dry_run = w->run->opt->dry_run,
	};
	struct md_stats stats = {0};
	char *error = NULL;
	int ret;

	if (md_list_folders(u.user_path, &u.folders, &u.nfolders, &stats,
			    &error) < 0) {
		ret = mrerr_set(err, MRERR_USER, MRERR_RETRY_LATER, "%s", error);
		free(error);
		return ret;
	}
	ret = sync_moves(&u, err);
	md_folders_free(&u.folders, u.nfolders);
	return ret;
}

static bool
list_has(char **names, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++) {
		if (strcmp(names[i], name) == 0)
			return true;
	}
	return false;
}

static int
sync_subscriptions(struct user_ctx *u, struct mrerr *err)
{
	struct imapc_mailbox *subs = NULL;
	size_t nsubs = 0, nwant = 0;
	char **want = NULL, *error = NULL;
	int ret = -1;

	if (md_read_subscriptions(u->user_path, &want, &nwant, &error) < 0) {
		mrerr_set(err, MRERR_USER, MRERR_RETRY_LATER, "%s", error);
		goto out;
	}
	for (size_t i = 0; i < nwant; i++) {
		char *rname = imapc_replica_name(u->w->conn, want[i]);

		free(want[i]);
		want[i] = rname;
	}
	if (imapc_list(u->w->conn, true, &subs, &nsubs, err) < 0)
		goto out;

	for (size_t i = 0; i < nwant; i++) {
		bool have = false;

		for (size_t j = 0; j < nsubs && !have; j++)
			have = strcmp(subs[j].name, want[i]) == 0;
		if (have)
			continue;
		log_folder_event("subscribe", u->user, want[i]);
		if (!u->dry_run &&
		    imapc_subscribe(u->w->conn, want[i], true, err) < 0 &&
		    !skip_folder_error(u, want[i], err))
			goto out;
	}
	for (size_t j = 0; j < nsubs; j++) {
		if (list_has(want, nwant, subs[j].name))
			continue;
		log_folder_event("unsubscribe", u->user, subs[j].name);
		if (!u->dry_run &&
		    imapc_subscribe(u->w->conn, subs[j].name, false, err) < 0 &&
		    !skip_folder_error(u, subs[j].name, err))
			goto out;
	}
	ret = 0;
out:
	free(error);
	md_strings_free(&want, nwant);
	imapc_mailboxes_free(&subs, nsubs);
	return ret;
}

int
sync_prepare_user(struct sync_worker *w, size_t ui, struct mrerr *err)
{
	const struct sync_options *opt = w->run->opt;
	struct user_ctx u = {
		.w = w,
		.ui = ui,
		.user = w->run->users[ui].name,
		.user_path = w->run->users[ui].path,
		.dry_run = opt->dry_run,
	};
	struct md_stats stats = {0};
	char *error = NULL;
	bool known = false;
	int ret = -1;

	if (md_list_folders(u.user_path, &u.folders, &u.nfolders, &stats,
			    &error) < 0) {
		mrerr_set(err, MRERR_USER, MRERR_RETRY_LATER, "%s", error);
		goto out;
	}
	if (relist(&u, err) < 0)
		goto out;
	if (opt->reset_replica && reset_user(&u, err) < 0)
		goto out;
	if (store_user_known(w->store, u.user, &known) < 0) {
		mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
			  "state store: %s", store_error(w->store));
		goto out;
	}
	if (!known && check_foreign(&u, err) < 0)
		goto out;
	if (known && !opt->dry_run && sync_renames(&u, err) < 0)
		goto out;
	if (create_folders(&u, err) < 0)
		goto out;
	if (known && sync_moves(&u, err) < 0)
		goto out;
	/* A master folder that could not be read is not a deleted one. */
	if (known && stats.skipped_folders == 0 &&
	    delete_extra_folders(&u, err) < 0)
		goto out;
	ret = sync_subscriptions(&u, err);
out:
	free(error);
	md_folders_free(&u.folders, u.nfolders);
	imapc_mailboxes_free(&u.rlist, u.nrlist);
	return ret;
}
