/* Failure classes: every failure is classified once, where the library
 * code is known, by what it poisons and whether a retry can help. */
#ifndef MAILREPL_MRERR_H
#define MAILREPL_MRERR_H

enum mrerr_scope {
	MRERR_NONE = 0,
	MRERR_MESSAGE,	  /* one message: skip it, report it */
	MRERR_FOLDER,	  /* one folder: skip the folder, go on */
	MRERR_USER,	  /* one user: skip the user, go on */
	MRERR_CONNECTION, /* the connection is unusable: reconnect */
	MRERR_CONFIG,	  /* nothing works until the admin fixes something */
};

enum mrerr_retry {
	MRERR_RETRY_NEVER = 0,
	MRERR_RETRY_NOW,
	MRERR_RETRY_LATER,
};

struct mrerr {
	enum mrerr_scope scope;
	enum mrerr_retry retry;
	char text[512];
};

/* Set err (if not NULL) to scope and retry with a printf-style text.
 * Returns -1 so that callers can write "return mrerr_set(...)". */
int mrerr_set(struct mrerr *err, enum mrerr_scope scope,
	      enum mrerr_retry retry, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
void mrerr_clear(struct mrerr *err);
const char *mrerr_scope_name(enum mrerr_scope scope);

#endif
