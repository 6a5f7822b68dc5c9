/* Message commands of the IMAP client in the selected mailbox: FETCH,
 * STORE and UID EXPUNGE. */
#include <config.h>
#include "imapc.h"
#include "imapc_private.h"
#include "log.h"
#include "util.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* Ranges per UID STORE / UID EXPUNGE command. Each range takes at most 22
 * bytes ("4294967294:4294967295,"), so a command stays far below the
 * 64 KiB line limit that Dovecot applies by default. */
#define UID_SET_MAX_RANGES 1000

/* Convert an INTERNALDATE to UTC seconds. dt_zone is the offset as
 * written, +0130 being 130. */
static time_t
date_time_to_utc(const struct mailimap_date_time *dt)
{
	struct tm tm;
	int zone = dt->dt_zone < 0 ? -dt->dt_zone : dt->dt_zone;
	long offset = (zone / 100) * 3600L + (zone % 100) * 60L;

	memset(&tm, 0, sizeof(tm));
	tm.tm_year = dt->dt_year - 1900;
	tm.tm_mon = dt->dt_month - 1;
	tm.tm_mday = dt->dt_day;
	tm.tm_hour = dt->dt_hour;
	tm.tm_min = dt->dt_min;
	tm.tm_sec = dt->dt_sec;
	if (dt->dt_zone < 0)
		offset = -offset;
	return timegm(&tm) - offset;
}

static void
flags_from_fetch(struct flagset *fs, const struct mailimap_msg_att_dynamic *dyn)
{
	static const char *const names[] = {
		[MAILIMAP_FLAG_ANSWERED] = "\\Answered",
		[MAILIMAP_FLAG_FLAGGED] = "\\Flagged",
		[MAILIMAP_FLAG_DELETED] = "\\Deleted",
		[MAILIMAP_FLAG_SEEN] = "\\Seen",
		[MAILIMAP_FLAG_DRAFT] = "\\Draft",
	};
	clistiter *it;

	if (dyn == NULL || dyn->att_list == NULL)
		return;
	for (it = clist_begin(dyn->att_list); it != NULL; it = clist_next(it)) {
		struct mailimap_flag_fetch *ff = clist_content(it);
		struct mailimap_flag *flag = ff->fl_flag;

		/* \Recent and other backslash extensions are not kept. */
		if (ff->fl_type != MAILIMAP_FLAG_FETCH_OTHER || flag == NULL)
			continue;
		if (flag->fl_type == MAILIMAP_FLAG_KEYWORD &&
		    flag->fl_data.fl_keyword != NULL)
			flagset_add_keyword(fs, flag->fl_data.fl_keyword);
		else if (flag->fl_type >= MAILIMAP_FLAG_ANSWERED &&
			 flag->fl_type <= MAILIMAP_FLAG_DRAFT)
			flagset_add_imap(fs, names[flag->fl_type]);
	}
}

enum {
	HAVE_UID = 1 << 0,
	HAVE_FLAGS = 1 << 1,
	HAVE_SIZE = 1 << 2,
	HAVE_DATE = 1 << 3,
	HAVE_ALL = HAVE_UID | HAVE_FLAGS | HAVE_SIZE | HAVE_DATE,
};

static unsigned
msg_from_fetch(struct imapc_msg *msg, const struct mailimap_msg_att *att)
{
	unsigned have = 0;

	flagset_init(&msg->flags);
	for (clistiter *it = clist_begin(att->att_list); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_msg_att_item *item = clist_content(it);
		struct mailimap_msg_att_static *st;

		if (item->att_type == MAILIMAP_MSG_ATT_ITEM_DYNAMIC) {
			flags_from_fetch(&msg->flags, item->att_data.att_dyn);
			have |= HAVE_FLAGS;
			continue;
		}
		if (item->att_type != MAILIMAP_MSG_ATT_ITEM_STATIC)
			continue;
		st = item->att_data.att_static;
		if (st->att_type == MAILIMAP_MSG_ATT_UID) {
			msg->uid = st->att_data.att_uid;
			have |= HAVE_UID;
		} else if (st->att_type == MAILIMAP_MSG_ATT_RFC822_SIZE) {
			msg->size = st->att_data.att_rfc822_size;
			have |= HAVE_SIZE;
		} else if (st->att_type == MAILIMAP_MSG_ATT_INTERNALDATE) {
			msg->internaldate = date_time_to_utc(
				st->att_data.att_internal_date);
			have |= HAVE_DATE;
		}
	}
	return have;
}

static int
msg_compare(const void *a, const void *b)
{
	const struct imapc_msg *x = a, *y = b;

	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* Convert a FETCH result to messages with uid >= first_uid. */
static struct imapc_msg *
msgs_from_fetch(clist *result, uint32_t first_uid, size_t *count_r)
{
	struct imapc_msg *msgs = xcalloc(clist_count(result), sizeof(*msgs));
	size_t n = 0;

	for (clistiter *it = clist_begin(result); it != NULL;
	     it = clist_next(it)) {
		struct imapc_msg *msg = &msgs[n];

		/* "first:*" includes the last message even when its UID is
		 * below first (RFC 3501, 6.4.8), and unsolicited FETCH
		 * responses carry FLAGS only: skip both. */
		if (msg_from_fetch(msg, clist_content(it)) != HAVE_ALL ||
		    msg->uid < first_uid) {
			flagset_clear(&msg->flags);
			continue;
		}
		n++;
	}
	qsort(msgs, n, sizeof(*msgs), msg_compare);
	*count_r = n;
	return msgs;
}

static struct mailimap_fetch_type *
fetch_type_new(struct mailimap_fetch_att *const *atts, size_t count)
{
	struct mailimap_fetch_type *type =
		mailimap_fetch_type_new_fetch_att_list_empty();

	for (size_t i = 0; i < count; i++)
		mailimap_fetch_type_new_fetch_att_list_add(type, atts[i]);
	return type;
}

int
imapc_fetch_all(struct imapc *c, uint32_t first_uid,
		struct imapc_msg **msgs_r, size_t *count_r, struct mrerr *err)
{
	struct mailimap_fetch_att *atts[] = {
		mailimap_fetch_att_new_uid(),
		mailimap_fetch_att_new_flags(),
		mailimap_fetch_att_new_rfc822_size(),
		mailimap_fetch_att_new_internaldate(),
	};
	struct mailimap_fetch_type *type = fetch_type_new(atts, 4);
	struct mailimap_set *set = NULL;
	clist *result = NULL;
	int r, ret = -1;

	*msgs_r = NULL;
	*count_r = 0;
	if (imapc_check_selected(c, "UID FETCH", err) < 0)
		goto out;
	/* NOTE: libetpan parses the whole FETCH response into memory before
	 * it returns, so memory here grows with the mailbox's size. */

	/* An empty mailbox has no "*": do not ask. libetpan keeps
	 * sel_exists current from untagged EXISTS and EXPUNGE. */
	if (c->imap->imap_selection_info->sel_exists == 0) {
		*msgs_r = xcalloc(1, sizeof(**msgs_r));
		ret = 0;
		goto out;
	}

	set = mailimap_set_new_interval(first_uid > 0 ? first_uid : 1, 0);
	r = mailimap_uid_fetch(c->imap, set, type, &result);
	if (r != MAILIMAP_NO_ERROR) {
		/* On a NO libetpan has freed the list but not cleared
		 * result. */
		result = NULL;
		imapc_fail(c, r,
			   "UID FETCH (UID FLAGS RFC822.SIZE INTERNALDATE)",
			   err);
		goto out;
	}
	*msgs_r = msgs_from_fetch(result, first_uid, count_r);
	ret = 0;
out:
	if (result != NULL)
		mailimap_fetch_list_free(result);
	if (set != NULL)
		mailimap_set_free(set);
	mailimap_fetch_type_free(type);
	return ret;
}

void
imapc_msgs_free(struct imapc_msg **msgs, size_t count)
{
	if (*msgs == NULL)
		return;
	for (size_t i = 0; i < count; i++)
		flagset_clear(&(*msgs)[i].flags);
	xfree(msgs);
}

/* Find the body of uid in a FETCH result, where unsolicited FETCH
 * responses for other messages may be mixed in. */
static const struct mailimap_msg_att_body_section *
find_body(clist *result, uint32_t uid)
{
	for (clistiter *it = clist_begin(result); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_msg_att *att = clist_content(it);
		const struct mailimap_msg_att_body_section *body = NULL;
		uint32_t got = 0;

		for (clistiter *i = clist_begin(att->att_list); i != NULL;
		     i = clist_next(i)) {
			struct mailimap_msg_att_item *item = clist_content(i);
			struct mailimap_msg_att_static *st;

			if (item->att_type != MAILIMAP_MSG_ATT_ITEM_STATIC)
				continue;
			st = item->att_data.att_static;
			if (st->att_type == MAILIMAP_MSG_ATT_UID)
				got = st->att_data.att_uid;
			else if (st->att_type == MAILIMAP_MSG_ATT_BODY_SECTION)
				body = st->att_data.att_body_section;
		}
		if (got == uid && body != NULL)
			return body;
	}
	return NULL;
}

int
imapc_fetch_body(struct imapc *c, uint32_t uid, char **data_r,
		 size_t *len_r, struct mrerr *err)
{
	struct mailimap_section *whole = mailimap_section_new(NULL);
	struct mailimap_fetch_att *atts[] = {
		mailimap_fetch_att_new_uid(),
		mailimap_fetch_att_new_body_peek_section(whole),
	};
	struct mailimap_fetch_type *type = fetch_type_new(atts, 2);
	struct mailimap_set *set = mailimap_set_new_single(uid);
	const struct mailimap_msg_att_body_section *body;
	char *command = xasprintf("UID FETCH %" PRIu32 " BODY.PEEK[]", uid);
	clist *result = NULL;
	int r, ret = -1;

	*data_r = NULL;
	*len_r = 0;
	if (imapc_check_selected(c, command, err) < 0)
		goto out;
	r = mailimap_uid_fetch(c->imap, set, type, &result);
	if (r != MAILIMAP_NO_ERROR) {
		result = NULL; /* freed by libetpan, as above */
		imapc_fail(c, r, command, err);
		/* A NO here concerns this message, such as one that the
		 * server cannot read. */
		if (err != NULL && err->scope == MRERR_FOLDER)
			err->scope = MRERR_MESSAGE;
		goto out;
	}
	body = find_body(result, uid);
	if (body == NULL || body->sec_body_part == NULL) {
		mrerr_set(err, MRERR_MESSAGE, MRERR_RETRY_NEVER,
			  "%s in %s returned no message: UID %" PRIu32
			  " does not exist (any more)",
			  command, c->selected, uid);
		goto out;
	}
	*data_r = xmalloc(body->sec_length + 1);
	memcpy(*data_r, body->sec_body_part, body->sec_length);
	(*data_r)[body->sec_length] = '\0';
	*len_r = body->sec_length;
	ret = 0;
out:
	if (result != NULL)
		mailimap_fetch_list_free(result);
	mailimap_set_free(set);
	mailimap_fetch_type_free(type);
	free(command);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Storing flags and expunging                                         */

/* PERMANENTFLAGS allows keyword when it lists it or has \*, and without
 * PERMANENTFLAGS every flag is permanent (RFC 3501, 7.1). */
bool
imapc_keyword_allowed(struct imapc *c, const char *keyword)
{
	struct mailimap_selection_info *sel = c->imap->imap_selection_info;
	clistiter *it;

	if (sel == NULL || sel->sel_perm_flags == NULL)
		return true;
	for (it = clist_begin(sel->sel_perm_flags); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_flag_perm *perm = clist_content(it);

		if (perm->fl_type == MAILIMAP_FLAG_PERM_ALL)
			return true;

		const struct mailimap_flag *flag = perm->fl_flag;

		if (keyword != NULL && flag != NULL &&
		    flag->fl_type == MAILIMAP_FLAG_KEYWORD &&
		    strcasecmp(flag->fl_data.fl_keyword, keyword) == 0)
			return true;
	}
	return false;
}

/* Whether a keyword can be sent as an IMAP atom (RFC 3501, 9). */
static bool
keyword_is_atom(const char *keyword)
{
	if (keyword[0] == '\0')
		return false;
	for (const unsigned char *p = (const unsigned char *)keyword; *p; p++)
		if (*p <= 0x20 || *p >= 0x7f || strchr("(){%*\"\\]", *p))
			return false;
	return true;
}

/* Log that keyword (NULL: every keyword) of uid is not stored. */
static void
log_keyword_skipped(struct imapc *c, uint32_t uid, const char *keyword,
		    const char *reason)
{
	struct logline *line = log_begin(LOG_LVL_WARN, "imap_keyword_skipped");

	log_str(line, "user", c->user);
	log_str(line, "folder", c->selected);
	log_int(line, "uid", uid);
	log_str(line, "keyword", keyword != NULL ? keyword : "(all)");
	log_str(line, "reason", reason);
	log_end(line);
}

static struct mailimap_flag *
keyword_new(const char *keyword)
{
	/* libetpan adopts the string. */
	return mailimap_flag_new_flag_keyword(xstrdup(keyword));
}

/* Build the flag list for fs, with the keywords that the selected mailbox
 * accepts when with_keywords. *keywords_r counts the keywords in it. */
static struct mailimap_flag_list *
flag_list_new(struct imapc *c, uint32_t uid, const struct flagset *fs,
	      bool with_keywords, size_t *keywords_r)
{
	struct mailimap_flag_list *list = mailimap_flag_list_new_empty();

	*keywords_r = 0;

	if (fs->sys & FLAG_SEEN)
		mailimap_flag_list_add(list, mailimap_flag_new_seen());
	if (fs->sys & FLAG_ANSWERED)
		mailimap_flag_list_add(list, mailimap_flag_new_answered());
	if (fs->sys & FLAG_FLAGGED)
		mailimap_flag_list_add(list, mailimap_flag_new_flagged());
	if (fs->sys & FLAG_DELETED)
		mailimap_flag_list_add(list, mailimap_flag_new_deleted());
	if (fs->sys & FLAG_DRAFT)
		mailimap_flag_list_add(list, mailimap_flag_new_draft());

	for (size_t i = 0; with_keywords && i < fs->nkeywords; i++) {
		const char *kw = fs->keywords[i];

		if (!keyword_is_atom(kw)) {
			log_keyword_skipped(c, uid, kw,
					    "not a valid IMAP keyword");
		} else if (!imapc_keyword_allowed(c, kw)) {
			log_keyword_skipped(c, uid, kw,
					    "PERMANENTFLAGS does not allow it");
		} else {
			mailimap_flag_list_add(list, keyword_new(kw));
			(*keywords_r)++;
		}
	}
	return list;
}

/* UID STORE set FLAGS.SILENT or +FLAGS.SILENT. libetpan's
 * mailimap_uid_store_unchangedsince() sends a malformed command in 1.9.4,
 * so only the plain form is used. */
static int
uid_store(struct imapc *c, struct mailimap_set *set,
	  struct mailimap_flag_list *list, bool add)
{
	struct mailimap_store_att_flags *att =
		add ? mailimap_store_att_flags_new_add_flags_silent(list)
		    : mailimap_store_att_flags_new_set_flags_silent(list);
	int r = mailimap_uid_store(c->imap, set, att);

	mailimap_store_att_flags_free(att);
	return r;
}

int
imapc_store_flags(struct imapc *c, uint32_t uid,
		  const struct flagset *flags, struct mrerr *err)
{
	char *command = xasprintf("UID STORE %" PRIu32 " FLAGS.SILENT", uid);
	struct mailimap_set *set = mailimap_set_new_single(uid);
	char text[IMAPC_RESPONSE_TEXT_MAX];
	struct mrerr first;
	size_t sent;
	int r, ret = -1;

	if (imapc_check_selected(c, command, err) < 0)
		goto out;
	r = uid_store(c, set, flag_list_new(c, uid, flags, true, &sent),
		      false);
	if (r == MAILIMAP_NO_ERROR) {
		ret = 0;
		goto out;
	}
	imapc_fail(c, r, command, &first);
	if (first.scope != MRERR_FOLDER || sent == 0) {
		if (err != NULL)
			*err = first;
		goto out;
	}

	/* A message is never lost over a flag. The server may reject a
	 * keyword, so store the system flags alone. */
	imapc_last_response(c, text, sizeof(text));
	log_keyword_skipped(c, uid, NULL, text);
	r = uid_store(c, set, flag_list_new(c, uid, flags, false, &sent),
		      false);
	if (r != MAILIMAP_NO_ERROR) {
		imapc_fail(c, r, command, err);
		goto out;
	}
	ret = 0;
out:
	mailimap_set_free(set);
	free(command);
	return ret;
}

static int
uid_compare(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Build a set of the sorted, unique uids from *pos on, of at most
 * UID_SET_MAX_RANGES ranges, and advance *pos past them. */
static struct mailimap_set *
uid_set_next(const uint32_t *uids, size_t count, size_t *pos)
{
	struct mailimap_set *set = mailimap_set_new_empty();
	size_t i = *pos;

	for (size_t ranges = 0; i < count && ranges < UID_SET_MAX_RANGES;
	     ranges++) {
		size_t j = i;

		while (j + 1 < count && uids[j + 1] == uids[j] + 1)
			j++;
		if (j == i)
			mailimap_set_add_single(set, uids[i]);
		else
			mailimap_set_add_interval(set, uids[i], uids[j]);
		i = j + 1;
	}
	*pos = i;
	return set;
}

/* Sort uids, drop duplicates and zeros, and return the new count. */
static size_t
uids_normalise(uint32_t *uids, size_t count)
{
	size_t n = 0;

	qsort(uids, count, sizeof(*uids), uid_compare);
	for (size_t i = 0; i < count; i++)
		if (uids[i] != 0 && (n == 0 || uids[n - 1] != uids[i]))
			uids[n++] = uids[i];
	return n;
}

static int
expunge_set(struct imapc *c, struct mailimap_set *set, struct mrerr *err)
{
	struct mailimap_flag_list *list = mailimap_flag_list_new_empty();
	int r;

	mailimap_flag_list_add(list, mailimap_flag_new_deleted());
	r = uid_store(c, set, list, true);
	if (r != MAILIMAP_NO_ERROR)
		return imapc_fail(c, r, "UID STORE +FLAGS.SILENT (\\Deleted)",
				  err);
	/* UID EXPUNGE (RFC 4315) removes only these UIDs, whereas a plain
	 * EXPUNGE would remove every message marked \Deleted. */
	r = mailimap_uid_expunge(c->imap, set);
	if (r != MAILIMAP_NO_ERROR)
		return imapc_fail(c, r, "UID EXPUNGE", err);
	return 0;
}

int
imapc_expunge_uids(struct imapc *c, const uint32_t *uids, size_t count,
		   struct mrerr *err)
{
	uint32_t *sorted = NULL;
	size_t n, pos = 0;
	int ret = -1;

	if (count == 0)
		return 0;
	if (imapc_check_selected(c, "UID EXPUNGE", err) < 0)
		goto out;
	sorted = xmalloc(count * sizeof(*sorted));
	memcpy(sorted, uids, count * sizeof(*sorted));
	n = uids_normalise(sorted, count);

	while (pos < n) {
		struct mailimap_set *set = uid_set_next(sorted, n, &pos);
		int r = expunge_set(c, set, err);

		mailimap_set_free(set);
		if (r < 0)
			goto out;
	}
	ret = 0;
out:
	free(sorted);
	return ret;
}
