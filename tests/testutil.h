/* Helpers shared by the Check test programs. Each aborts the running test
 * with a message when something it needs fails, so that a missing
 * dependency is a failure, never a silent skip. */
#ifndef MAILREPL_TESTUTIL_H
#define MAILREPL_TESTUTIL_H

#include <stddef.h>
#include <sys/types.h>

/* Create a fresh directory under $TMPDIR (or /tmp). Caller frees. */
char *tu_tempdir(const char *tag);
/* Remove a tree (rm -rf). */
void tu_rmrf(const char *path);
/* Create path with data and mode, creating parent directories. */
void tu_write_file(const char *path, const void *data, size_t len,
		   mode_t mode);
/* Read a whole file; caller frees. NULL when missing. */
char *tu_read_file(const char *path, size_t *len_r);
/* Run a shell command; returns its exit status (or -1). */
int tu_run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Path of a file in the source tree ($MAILREPL_SRCDIR, or "."). Caller
 * frees. */
char *tu_srcpath(const char *relative);

/* A private Dovecot started with scripts/dovecot-test.sh. */
struct tu_dovecot {
	char *dir;
	char *conf;
	unsigned imap_port;
	unsigned imaps_port;
	char *ca_file;
	char *fingerprint;
	char *admin;
	char *admin_password;
	char *mail; /* the replica's mail directory */
};
/* Start one in a new temporary directory; fails the test on error. */
struct tu_dovecot *tu_dovecot_start(void);
void tu_dovecot_stop(struct tu_dovecot **dovecot);

#endif
