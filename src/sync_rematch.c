/* Re-matching: find which replica messages are copies of which Maildir
 * messages when the map cannot tell, after a crash between an APPEND and
 * its record, a lost state store or a new UIDVALIDITY. Messages pair by
 * CRLF size first, and then by a SHA-256 of the content, so that a body
 * is fetched from the replica only when its size already matches. */
#include <config.h>
#include "sync_private.h"

#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

struct candidate {
	size_t index; /* into rmsgs */
	uint64_t size;
	bool hashed, paired;
	unsigned char digest[32];
};

static int
cmp_size(const void *a, const void *b)
{
	const struct candidate *x = a, *y = b;

	return x->size < y->size ? -1 : x->size > y->size;
}

/* First candidate of the given size, by binary search; n if none. */
static size_t
first_of_size(const struct candidate *c, size_t n, uint64_t size)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (c[mid].size < size)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int
hash_candidate(struct sync_worker *w, const struct imapc_msg *rmsgs,
	       struct candidate *cand, struct mrerr *err)
{
	struct crlf_hasher *h;
	char *data = NULL;
	size_t len = 0;
	uint64_t size;

	if (imapc_fetch_body(w->conn, rmsgs[cand->index].uid, &data, &len,
			     err) < 0)
		return -1;
	h = crlf_hasher_new();
	crlf_hasher_update(h, data, len);
	crlf_hasher_finish(&h, cand->digest, &size);
	free(data);
	cand->hashed = true;
	return 0;
}

long
sync_rematch(struct sync_worker *w, const struct md_message *msgs,
	     const size_t *wanted, size_t nwanted,
	     const struct imapc_msg *rmsgs, const size_t *unknown,
	     size_t nunknown, size_t *match_r, struct mrerr *err)
{
	struct candidate *cand;
	long pairs = 0;

	for (size_t k = 0; k < nwanted; k++)
		match_r[k] = SIZE_MAX;
	if (nwanted == 0 || nunknown == 0)
		return 0;

	cand = xcalloc(nunknown, sizeof(*cand));
	for (size_t i = 0; i < nunknown; i++) {
		cand[i].index = unknown[i];
		cand[i].size = rmsgs[unknown[i]].size;
	}
	qsort(cand, nunknown, sizeof(*cand), cmp_size);

	for (size_t k = 0; k < nwanted; k++) {
		const struct md_message *m = &msgs[wanted[k]];
		unsigned char digest[32];
		uint64_t size;
		size_t i;

		if (md_hash_file(m->path, digest, &size) < 0)
			continue; /* vanished since the scan */
		for (i = first_of_size(cand, nunknown, size);
		     i < nunknown && cand[i].size == size; i++) {
			if (cand[i].paired)
				continue;
			if (!cand[i].hashed &&
			    hash_candidate(w, rmsgs, &cand[i], err) < 0) {
				free(cand);
				return -1;
			}
			if (memcmp(cand[i].digest, digest, 32) == 0)
				break;
		}
		if (i < nunknown && cand[i].size == size) {
			cand[i].paired = true;
			match_r[k] = cand[i].index;
			pairs++;
		}
	}
	free(cand);
	return pairs;
}
