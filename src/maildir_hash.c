/* The CRLF-form content hash of a message, and modified UTF-7 names
 * for display. */
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
