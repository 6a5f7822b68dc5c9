/* The initial replication, second phase: one folder as a diff of the
 * Maildir against the message map and the replica.
 *
 *   map and replica agree          -> fix flags where they differ
 *   map entry, no Maildir file     -> UID EXPUNGE on the replica
 *   Maildir file, no map entry     -> re-match by content, else APPEND
 *   replica message, no map entry  -> UID EXPUNGE (the master is
 *                                     authoritative)
 *
 * Every APPEND is preceded by an intent record with the replica's
 * UIDNEXT, so that a copy that landed before a crash is found by the
 * re-match and adopted instead of uploaded twice. */
#include <config.h>
#include "sync_private.h"

#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

struct folder_ctx {
	struct sync_worker *w;
	const char *user;
	const struct md_folder *mdf;
	const char *folder; /* Maildir++ name */
	char *rname;        /* replica name */
	bool dry_run;
	struct imapc_status st;

	struct md_message *msgs; /* Maildir, sorted by uniq */
	size_t n;
	struct store_msg *map; /* sorted by uniq */
	size_t nmap;
	struct imapc_msg *rmsgs; /* replica, sorted by UID */
	size_t nr;
	bool *claimed;        /* rmsgs[r] belongs to a Maildir message */
	size_t *rindex;       /* rmsgs index of msgs[i], or SIZE_MAX */
	struct flagset *want; /* flags to push per msgs[i] */

	size_t *wanted; /* msgs indexes to upload */
	size_t nwanted;
	uint32_t *expunge;
	size_t nexpunge, expunge_cap;
};

static void
add_expunge(struct folder_ctx *f, uint32_t uid)
{
	f->expunge = xgrow(f->expunge, &f->expunge_cap, f->nexpunge + 1,
			   sizeof(*f->expunge));
	f->expunge[f->nexpunge++] = uid;
}

/* Index of uid in rmsgs (sorted by UID), or SIZE_MAX. */
static size_t
find_uid(const struct folder_ctx *f, uint32_t uid)
{
	size_t lo = 0, hi = f->nr;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (f->rmsgs[mid].uid == uid)
			return mid;
		if (f->rmsgs[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return SIZE_MAX;
}

static void
log_msg_event(const struct folder_ctx *f, enum log_level level,
	      const char *event, const char *uniq, uint32_t uid,
	      const char *detail_key, const char *detail)
{
	struct logline *line = log_begin(level, event);
	char *display = mutf7_to_utf8(f->folder);

	log_str(line, "user", f->user);
	log_str(line, "folder", display);
	if (uniq != NULL)
		log_str(line, "file", uniq);
	if (uid != 0)
		log_int(line, "uid", uid);
	if (detail_key != NULL)
		log_str(line, detail_key, detail);
	log_end(line);
	free(display);
}

static int
store_failed(struct folder_ctx *f, struct mrerr *err)
{
	return mrerr_set(
		err, MRERR_CONFIG, MRERR_RETRY_NEVER, "state store in %s: %s",
		f->w->run->opt->cfg->state_dir, store_error(f->w->store));
}

/* Set the flags the replica should have, without keywords where the
 * mailbox does not accept them. */
static void
compute_wanted_flags(struct folder_ctx *f)
{
	f->want = xcalloc(f->n + 1, sizeof(*f->want));
	for (size_t i = 0; i < f->n; i++) {
		flagset_init(&f->want[i]);
		f->want[i].sys = f->msgs[i].flags.sys;
		if (!f->st.keywords_allowed)
			continue;
		for (size_t k = 0; k < f->msgs[i].flags.nkeywords; k++)
			flagset_add_keyword(&f->want[i],
					    f->msgs[i].flags.keywords[k]);
	}
}

/* SELECT the folder. In a dry run, a folder not created yet, or one that
 * the reset would empty, counts as empty and sets *missing_r. */
static int
select_folder(struct folder_ctx *f, bool *missing_r, struct mrerr *err)
{
	struct sync_worker *w = f->w;

	*missing_r = f->dry_run && w->run->dry_reset[w->conn_user];
	if (!*missing_r && imapc_select(w->conn, f->rname, &f->st, err) == 0)
		return 0;
	if (!*missing_r && (!f->dry_run || err->scope != MRERR_FOLDER))
		return -1;
	mrerr_clear(err);
	f->st = (struct imapc_status){.keywords_allowed = true};
	*missing_r = true;
	return 0;
}

/* Compare the replica's UIDVALIDITY with the stored one; a new one drops
 * the folder's map, and the re-match rebuilds it. */
static int
check_uidvalidity(struct folder_ctx *f, struct mrerr *err)
{
	struct sync_worker *w = f->w;
	uint32_t known;

	if (store_folder_get(w->store, f->user, f->folder, &known) < 0)
		return store_failed(f, err);
	if (known == f->st.uidvalidity)
		return 0;
	if (known != 0)
		log_msg_event(f, LOG_LVL_WARN, "uidvalidity_changed", NULL, 0,
			      "msg",
			      "replica folder was recreated; re-matching its "
			      "messages");
	if (!f->dry_run && store_folder_set(w->store, f->user, f->folder,
					    f->st.uidvalidity) < 0)
		return store_failed(f, err);
	return 0;
}

static int
cmp_rmsg_uid(const void *a, const void *b)
{
	uint32_t x = ((const struct imapc_msg *)a)->uid;
	uint32_t y = ((const struct imapc_msg *)b)->uid;

	return x < y ? -1 : x > y;
}

/* The replica's messages as the map recorded them, with the Maildir's
 * INTERNALDATE (the map does not keep one), followed by newer[]. Returns
 * false when a flag text in the map does not parse. */
static bool
replica_from_map(struct folder_ctx *f, struct imapc_msg *newer, size_t nnewer)
{
	size_t i = 0, n = 0;

	f->rmsgs = xcalloc(f->nmap + nnewer + 1, sizeof(*f->rmsgs));
	for (size_t j = 0; j < f->nmap; j++) {
		struct imapc_msg *rm = &f->rmsgs[n++];

		while (i < f->n && strcmp(f->msgs[i].uniq, f->map[j].uniq) < 0)
			i++;
		rm->uid = f->map[j].uid;
		rm->size = f->map[j].size;
		if (i < f->n && strcmp(f->msgs[i].uniq, f->map[j].uniq) == 0)
			rm->internaldate = f->msgs[i].internaldate;
		flagset_init(&rm->flags);
		if (flagset_parse(&rm->flags, f->map[j].flags) < 0) {
			imapc_msgs_free(&f->rmsgs, n);
			return false;
		}
	}
	qsort(f->rmsgs, n, sizeof(*f->rmsgs), cmp_rmsg_uid);
	/* newer[] contains UIDs above every mapped one, sorted, so they go
	 * last. */
	memcpy(f->rmsgs + n, newer, nnewer * sizeof(*newer));
	f->nr = n + nnewer;
	return true;
}

/* The replica's messages. For a watched change (trust_map), the map
 * stands for the messages up to its highest UID, and only newer ones are
 * fetched: a delivery then costs one short FETCH, not one line per
 * message of the folder. That holds only while nothing else changed the
 * folder, so with an APPEND intent open, or a message count on the
 * replica that differs from the map's, everything is fetched. A
 * reconcile always fetches everything. */
static int
fetch_replica(struct folder_ctx *f, struct mrerr *err)
{
	struct sync_worker *w = f->w;
	struct imapc_msg *newer = NULL;
	size_t nnewer = 0, kept = 0;
	uint32_t top = 0, intent = 0;

	if (!w->trust_map || !w->run->opt->live || f->nmap == 0)
		return imapc_fetch_all(w->conn, 1, &f->rmsgs, &f->nr, err);
	if (store_intent_min_uidnext(w->store, f->user, f->folder, &intent) < 0)
		return store_failed(f, err);
	for (size_t j = 0; j < f->nmap; j++)
		top = f->map[j].uid > top ? f->map[j].uid : top;
	if (intent != 0 || top == UINT32_MAX)
		return imapc_fetch_all(w->conn, 1, &f->rmsgs, &f->nr, err);
	if (imapc_fetch_all(w->conn, top + 1, &newer, &nnewer, err) < 0)
		return -1;
	/* "UID FETCH top+1:*" also returns the last message when none is
	 * above top. */
	for (size_t k = 0; k < nnewer; k++) {
		if (newer[k].uid > top)
			newer[kept++] = newer[k];
		else
			flagset_clear(&newer[k].flags);
	}
	if (f->st.exists == f->nmap + kept &&
	    replica_from_map(f, newer, kept)) {
		free(newer);
		return 0;
	}
	imapc_msgs_free(&newer, kept);
	return imapc_fetch_all(w->conn, 1, &f->rmsgs, &f->nr, err);
}

static int
load_state(struct folder_ctx *f, struct mrerr *err)
{
	struct sync_worker *w = f->w;
	struct md_stats stats = {0};
	char *error = NULL;
	bool missing;

	if (select_folder(f, &missing, err) < 0)
		return -1;
	if (!missing && check_uidvalidity(f, err) < 0)
		return -1;

	if (md_scan_folder(f->mdf, f->user, &f->msgs, &f->n, &stats, &error) <
	    0) {
		mrerr_set(err, MRERR_FOLDER, MRERR_RETRY_LATER, "%s", error);
		free(error);
		return -1;
	}
	w->counts.messages += f->n;
	w->counts.bytes += stats.bytes;
	w->counts.skipped += md_stats_skipped(&stats);

	if (!missing && (store_msgs_load(w->store, f->user, f->folder, &f->map,
					 &f->nmap) < 0))
		return store_failed(f, err);
	if (!missing && fetch_replica(f, err) < 0)
		return -1;
	f->claimed = xcalloc(f->nr + 1, sizeof(bool));
	f->wanted = xcalloc(f->n + 1, sizeof(size_t));
	f->rindex = xcalloc(f->n + 1, sizeof(size_t));
	for (size_t i = 0; i < f->n; i++)
		f->rindex[i] = SIZE_MAX;
	compute_wanted_flags(f);
	return 0;
}

/* A map entry whose replica message is gone or stale is forgotten. */
static void
forget(struct folder_ctx *f, const char *uniq)
{
	if (!f->dry_run)
		store_msg_delete(f->w->store, f->user, f->folder, uniq);
}

/* Walk the Maildir and the map together (both sorted by uniq). */
static void
merge_map(struct folder_ctx *f)
{
	size_t i = 0, j = 0;

	while (i < f->n || j < f->nmap) {
		int cmp = i >= f->n ? 1
			  : j >= f->nmap
				  ? -1
				  : strcmp(f->msgs[i].uniq, f->map[j].uniq);
		size_t r;

		if (cmp < 0) {
			f->wanted[f->nwanted++] = i++;
			continue;
		}
		r = find_uid(f, f->map[j].uid);
		if (cmp > 0) {
			/* Deleted on the master. */
			if (r != SIZE_MAX) {
				f->claimed[r] = true;
				add_expunge(f, f->map[j].uid);
				log_msg_event(f, LOG_LVL_INFO, "expunge",
					      f->map[j].uniq, f->map[j].uid,
					      "msg", "deleted on the master");
			}
			forget(f, f->map[j].uniq);
			j++;
			continue;
		}
		if (r == SIZE_MAX ||
		    f->rmsgs[r].internaldate != f->msgs[i].internaldate) {
			/* Gone from the replica, or a different message
			 * under that UID: upload again. */
			if (r != SIZE_MAX) {
				f->claimed[r] = true;
				add_expunge(f, f->map[j].uid);
				log_msg_event(f, LOG_LVL_INFO, "expunge",
					      f->map[j].uniq, f->map[j].uid,
					      "msg",
					      "INTERNALDATE differs from "
					      "the master's; uploading again");
			}
			forget(f, f->map[j].uniq);
			f->wanted[f->nwanted++] = i;
		} else {
			f->claimed[r] = true;
			f->rindex[i] = r;
		}
		i++;
		j++;
	}
}

/* Adopt replica messages that no map entry claims when they are copies
 * of wanted Maildir messages; expunge the rest. */
static int
rematch(struct folder_ctx *f, struct mrerr *err)
{
	size_t *unknown = xcalloc(f->nr + 1, sizeof(size_t));
	size_t *match = xcalloc(f->nwanted + 1, sizeof(size_t));
	size_t nunknown = 0, kept = 0;
	long pairs;

	for (size_t r = 0; r < f->nr; r++) {
		if (!f->claimed[r])
			unknown[nunknown++] = r;
	}
	pairs = sync_rematch(f->w, f->msgs, f->wanted, f->nwanted, f->rmsgs,
			     unknown, nunknown, match, err);
	if (pairs < 0)
		goto out;

	for (size_t k = 0; k < f->nwanted; k++) {
		const struct md_message *m = &f->msgs[f->wanted[k]];
		size_t r = match[k];
		char *flags;

		if (r == SIZE_MAX) {
			f->wanted[kept++] = f->wanted[k];
			continue;
		}
		f->claimed[r] = true;
		f->rindex[f->wanted[k]] = r;
		log_msg_event(f, LOG_LVL_INFO, "adopt", m->uniq,
			      f->rmsgs[r].uid, NULL, NULL);
		flags = flagset_format(&f->rmsgs[r].flags);
		if (!f->dry_run &&
		    (store_msg_put(f->w->store, f->user, f->folder, m->uniq,
				   f->rmsgs[r].uid, flags,
				   f->rmsgs[r].size) < 0 ||
		     store_intent_delete(f->w->store, f->user, f->folder,
					 m->uniq) < 0)) {
			free(flags);
			pairs = store_failed(f, err);
			goto out;
		}
		free(flags);
	}
	f->nwanted = kept;
	f->w->counts.adopted += (unsigned long long)pairs;

	for (size_t r = 0; r < f->nr; r++) {
		if (f->claimed[r])
			continue;
		log_msg_event(f, LOG_LVL_INFO, "expunge_extra", NULL,
			      f->rmsgs[r].uid, "msg",
			      "on the replica but not on the master");
		add_expunge(f, f->rmsgs[r].uid);
	}
out:
	free(unknown);
	free(match);
	return pairs < 0 ? -1 : 0;
}

static int
fix_flags(struct folder_ctx *f, struct mrerr *err)
{
	for (size_t i = 0; i < f->n; i++) {
		size_t r = f->rindex[i];
		char *text;

		if (r == SIZE_MAX ||
		    flagset_equal(&f->rmsgs[r].flags, &f->want[i]))
			continue;
		text = flagset_format(&f->want[i]);
		log_msg_event(f, LOG_LVL_INFO, "flags", f->msgs[i].uniq,
			      f->rmsgs[r].uid, "flags", text);
		f->w->counts.flag_updates++;
		if (!f->dry_run &&
		    imapc_store_flags(f->w->conn, f->rmsgs[r].uid, &f->want[i],
				      err) < 0) {
			free(text);
			return -1;
		}
		if (!f->dry_run)
			store_msg_set_flags(f->w->store, f->user, f->folder,
					    f->msgs[i].uniq, text);
		free(text);
	}
	return 0;
}

static int
expunge(struct folder_ctx *f, struct mrerr *err)
{
	if (f->nexpunge == 0)
		return 0;
	f->w->counts.expunged += f->nexpunge;
	if (f->dry_run)
		return 0;
	return imapc_expunge_uids(f->w->conn, f->expunge, f->nexpunge, err);
}

/* Record the intent of a batch with the replica's UIDNEXT before it is
 * sent: after a crash, copies that landed have UIDs >= uidnext. */
static int
record_intents(struct folder_ctx *f, const size_t *batch, size_t count,
	       struct mrerr *err)
{
	struct store *store = f->w->store;

	if (store_begin(store) < 0)
		return store_failed(f, err);
	for (size_t k = 0; k < count; k++) {
		const struct md_message *m = &f->msgs[batch[k]];

		if (store_intent_add(store, f->user, f->folder, m->uniq,
				     f->st.uidvalidity, f->st.uidnext,
				     (uint64_t)m->size) < 0) {
			store_rollback(store);
			return store_failed(f, err);
		}
	}
	return store_commit(store) < 0 ? store_failed(f, err) : 0;
}

static void
note_rejected(struct folder_ctx *f, const struct md_message *m,
	      const struct mrerr *why)
{
	log_msg_event(f, LOG_LVL_WARN, "reject", m->uniq, 0, "reason",
		      why->text);
	f->w->counts.rejected++;
	store_rejected_add(f->w->store, f->w->run->run_id, f->user, f->folder,
			   m->uniq, why->text);
	store_intent_delete(f->w->store, f->user, f->folder, m->uniq);
}

static void
log_upload(const struct folder_ctx *f, const struct md_message *m, uint32_t uid)
{
	struct logline *line = log_begin(LOG_LVL_INFO, "upload");
	char *display = mutf7_to_utf8(f->folder);

	log_str(line, "user", f->user);
	log_str(line, "folder", display);
	log_str(line, "file", m->uniq);
	log_int(line, "uid", uid);
	log_int(line, "size", (long long)m->size);
	log_end(line);
	free(display);
}

/* One line per APPEND command (a MULTIAPPEND of count messages). */
static void
log_batch(const struct folder_ctx *f, const size_t *batch,
	  const struct imapc_append *app, size_t count, long long ms)
{
	struct logline *line = log_begin(LOG_LVL_INFO, "batch");
	char *display = mutf7_to_utf8(f->folder);
	unsigned long long bytes = 0;
	size_t stored = 0;

	for (size_t k = 0; k < count; k++) {
		if (app[k].uid == 0)
			continue;
		stored++;
		bytes += (unsigned long long)f->msgs[batch[k]].size;
	}
	log_str(line, "user", f->user);
	log_str(line, "folder", display);
	log_int(line, "count", (long long)stored);
	log_int(line, "rejected", (long long)(count - stored));
	log_int(line, "bytes", (long long)bytes);
	log_int(line, "ms", ms);
	log_end(line);
	free(display);
}

static int
record_batch(struct folder_ctx *f, const size_t *batch,
	     const struct imapc_append *app, size_t count, struct mrerr *err)
{
	struct store *store = f->w->store;

	if (store_begin(store) < 0)
		return store_failed(f, err);
	for (size_t k = 0; k < count; k++) {
		const struct md_message *m = &f->msgs[batch[k]];
		char *flags;

		if (app[k].uid == 0) {
			note_rejected(f, m, &app[k].error);
			continue;
		}
		flags = flagset_format(app[k].flags);
		if (store_msg_put(store, f->user, f->folder, m->uniq,
				  app[k].uid, flags, (uint64_t)m->size) < 0 ||
		    store_intent_delete(store, f->user, f->folder, m->uniq) <
			    0) {
			free(flags);
			store_rollback(store);
			return store_failed(f, err);
		}
		free(flags);
		log_upload(f, m, app[k].uid);
		if (app[k].uid >= f->st.uidnext)
			f->st.uidnext = app[k].uid + 1;
		f->w->counts.uploaded++;
		f->w->counts.uploaded_bytes += (unsigned long long)m->size;
	}
	return store_commit(store) < 0 ? store_failed(f, err) : 0;
}

static int
upload_batch(struct folder_ctx *f, const size_t *batch, size_t count,
	     struct mrerr *err)
{
	struct imapc_append *app = xcalloc(count, sizeof(*app));
	uint32_t uidvalidity = 0;
	long long started;
	int ret = -1;

	for (size_t k = 0; k < count; k++) {
		app[k].path = f->msgs[batch[k]].path;
		app[k].flags = &f->want[batch[k]];
		app[k].internaldate = f->msgs[batch[k]].internaldate;
	}
	if (record_intents(f, batch, count, err) < 0)
		goto out;
	started = monotonic_ms();
	if (imapc_append_batch(f->w->conn, f->rname, app, count, &uidvalidity,
			       err) < 0)
		goto out;
	log_batch(f, batch, app, count, monotonic_ms() - started);
	if (uidvalidity != 0 && uidvalidity != f->st.uidvalidity) {
		mrerr_set(err, MRERR_FOLDER, MRERR_RETRY_NOW,
			  "UIDVALIDITY of %s changed during the upload",
			  f->rname);
		goto out;
	}
	ret = record_batch(f, batch, app, count, err);
out:
	free(app);
	return ret;
}

/* Leave out messages above [master] max_message_size: reported and
 * counted as skipped, never sent. */
static void
skip_oversized(struct folder_ctx *f, unsigned long long max)
{
	size_t kept = 0;

	if (max == 0)
		return;
	for (size_t k = 0; k < f->nwanted; k++) {
		const struct md_message *m = &f->msgs[f->wanted[k]];

		if ((unsigned long long)m->size <= max) {
			f->wanted[kept++] = f->wanted[k];
			continue;
		}
		log_msg_event(f, LOG_LVL_WARN, "skip", m->uniq, 0, "reason",
			      "larger than [master] max_message_size");
		f->w->counts.skipped++;
	}
	f->nwanted = kept;
}

static int
upload(struct folder_ctx *f, struct mrerr *err)
{
	const struct config *cfg = f->w->run->opt->cfg;
	size_t start = 0;

	skip_oversized(f, cfg->max_message_size);
	if (f->dry_run) {
		f->w->counts.uploaded += f->nwanted;
		return 0;
	}
	while (start < f->nwanted) {
		unsigned long long bytes = 0;
		size_t count = 0;

		/* A batch ends at batch_messages or batch_bytes, but always
		 * holds at least one message. */
		while (start + count < f->nwanted &&
		       count < cfg->batch_messages &&
		       (count == 0 ||
			bytes + (unsigned long long)f
						->msgs[f->wanted[start + count]]
						.size <=
				cfg->batch_bytes)) {
			bytes += (unsigned long long)f
					 ->msgs[f->wanted[start + count]]
					 .size;
			count++;
		}
		if (upload_batch(f, f->wanted + start, count, err) < 0)
			return -1;
		atomic_fetch_add(&f->w->run->progress.messages_done, count);
		atomic_fetch_add(&f->w->run->progress.bytes_done, bytes);
		start += count;
	}
	return 0;
}

/* Live runs: whether a file left this folder, or a new one is mapped in
 * another folder of the user. Either may be half of a move, which
 * sync_user_moves() turns into a UID MOVE on the replica. */
static int
maybe_moved(struct folder_ctx *f, bool *moved_r, struct mrerr *err)
{
	size_t i = 0, j = 0;

	*moved_r = false;
	while (!*moved_r && (i < f->n || j < f->nmap)) {
		int cmp = i >= f->n ? 1
			  : j >= f->nmap
				  ? -1
				  : strcmp(f->msgs[i].uniq, f->map[j].uniq);

		if (cmp > 0) {
			*moved_r = true;
		} else if (cmp < 0) {
			if (store_msg_elsewhere(f->w->store, f->user, f->folder,
						f->msgs[i].uniq, moved_r) < 0)
				return store_failed(f, err);
			i++;
		} else {
			i++;
			j++;
		}
	}
	return 0;
}

/* Live runs send a message that the replica rejected once in this run
 * no more: it stays reported, and the folder goes on. */
static int
drop_rejected(struct folder_ctx *f, struct mrerr *err)
{
	size_t kept = 0;

	for (size_t k = 0; k < f->nwanted; k++) {
		const struct md_message *m = &f->msgs[f->wanted[k]];
		bool found;

		if (store_rejected_has(f->w->store, f->w->run->run_id, f->user,
				       f->folder, m->uniq, &found) < 0)
			return store_failed(f, err);
		if (!found)
			f->wanted[kept++] = f->wanted[k];
	}
	f->nwanted = kept;
	return 0;
}

/* Messages already in place count as done for the progress line. */
static void
report_in_place(struct folder_ctx *f)
{
	unsigned long long bytes = 0;

	for (size_t i = 0; i < f->n; i++)
		bytes += (unsigned long long)f->msgs[i].size;
	for (size_t k = 0; k < f->nwanted; k++)
		bytes -= (unsigned long long)f->msgs[f->wanted[k]].size;
	atomic_fetch_add(&f->w->run->progress.messages_done, f->n - f->nwanted);
	atomic_fetch_add(&f->w->run->progress.bytes_done, bytes);
}

static void
folder_ctx_free(struct folder_ctx *f)
{
	for (size_t i = 0; f->want != NULL && i < f->n; i++)
		flagset_clear(&f->want[i]);
	free(f->want);
	free(f->rname);
	md_messages_free(&f->msgs, f->n);
	store_msgs_free(&f->map, f->nmap);
	imapc_msgs_free(&f->rmsgs, f->nr);
	free(f->claimed);
	free(f->rindex);
	free(f->wanted);
	free(f->expunge);
}

int
sync_folder(struct sync_worker *w, const struct sync_unit *unit,
	    struct mrerr *err)
{
	struct folder_ctx f = {
		.w = w,
		.user = w->run->users[unit->user].name,
		.mdf = &unit->folder,
		.folder = unit->folder.name,
		.rname = imapc_replica_name(w->conn, unit->folder.name),
		.dry_run = w->run->opt->dry_run,
	};
	int ret = -1;

	if (load_state(&f, err) < 0)
		goto out;
	if (w->run->opt->live && !w->moves_checked) {
		bool moved;

		if (maybe_moved(&f, &moved, err) < 0)
			goto out;
		if (moved) {
			ret = SYNC_FOLDER_MOVES;
			goto out;
		}
	}
	merge_map(&f);
	if (rematch(&f, err) < 0 || fix_flags(&f, err) < 0 ||
	    expunge(&f, err) < 0)
		goto out;
	if (w->run->opt->live && drop_rejected(&f, err) < 0)
		goto out;
	report_in_place(&f);
	ret = upload(&f, err);
out:
	folder_ctx_free(&f);
	return ret;
}
