/* Read-only access to a Maildir++ tree as Dovecot writes it. Nothing here
 * ever creates, renames, writes or deletes anything under the mail root:
 * files are opened O_RDONLY and directories only listed. */
#ifndef MAILREPL_MAILDIR_H
#define MAILREPL_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "flags.h"

struct config;

/* Skip counters of a scan; every skipped entry is also logged with its
 * path and reason (event=skip). */
struct md_stats {
	unsigned long long messages; /* messages returned */
	unsigned long long bytes;    /* their on-disk size */
	unsigned long skipped_malformed;   /* file name not a Maildir name */
	unsigned long skipped_unreadable;  /* open or stat failed */
	unsigned long skipped_empty;	   /* zero-byte file */
	unsigned long skipped_vanished;    /* gone between readdir and stat */
	unsigned long skipped_not_file;    /* directory, symlink, FIFO... */
	unsigned long skipped_duplicate;   /* uniq seen twice (new/ and cur/
					    * during a move: cur/ is kept) */
	unsigned long skipped_folders;	   /* folder unreadable or invalid */
	unsigned long unmapped_keywords;   /* keyword letter not in the file */
	unsigned long date_fallbacks;	   /* INTERNALDATE not from mtime */
};

/* Messages skipped for a reason worth reporting: everything but the
 * duplicate of a message caught moving from new/ to cur/. */
unsigned long md_stats_skipped(const struct md_stats *stats);

struct md_user {
	char *name; /* login name, as %u */
	char *path; /* absolute path of the user's Maildir */
};

/* List the users under cfg->maildir_root that match cfg->user_path, sorted
 * by name. Returns 0 and an array (free with md_users_free), or -1 with
 * *error_r when the root cannot be read. */
int md_list_users(const struct config *cfg, struct md_user **users_r,
		  size_t *count_r, char **error_r);
void md_users_free(struct md_user **users, size_t count);
/* List the users as md_list_users() does, keeping only names[] when
 * names is not NULL. A name that is not a user on the master is an
 * error that names it. */
int md_select_users(const struct config *cfg, char *const *names,
		    size_t nnames, struct md_user **users_r, size_t *count_r,
		    char **error_r);
/* Build the Maildir path of one user from the template. Caller frees. */
char *md_user_path(const struct config *cfg, const char *user);

struct md_folder {
	char *name; /* IMAP name with '.' as separator, "INBOX" for the
		     * root; modified UTF-7 exactly as on disk */
	char *path; /* the folder's directory */
};

/* Returns 1 when dir/cur or dir/new is a directory, 0 when neither
 * exists, and -1 with *err_r set when one of them cannot be checked. */
int md_has_maildir_subdirs(const char *dir, int *err_r);
/* List INBOX and every ".A.B" folder that has a cur/ or new/ directory,
 * sorted so that every parent comes before its children. Directories that
 * are not folders (tmp, Dovecot's files, "..DOVECOT-TRASHED") are ignored.
 * A ".A" directory without cur/ or new/, or with an empty name component
 * (".A..B"), is counted in stats->skipped_folders and logged; a missing
 * parent is not invented. INBOX is always listed first. Returns 0 or -1
 * with *error_r when the user's directory is unreadable. */
int md_list_folders(const char *user_path, struct md_folder **folders_r,
		    size_t *count_r, struct md_stats *stats, char **error_r);
void md_folders_free(struct md_folder **folders, size_t count);

/* Whether any user's folder under cfg->maildir_root holds a message
 * file (in new/ or cur/). Returns 1, 0, or -1 when the tree cannot be
 * read. Stops at the first message, so an empty tree costs most. */
int md_tree_holds_mail(const struct config *cfg);

/* Read the subscriptions file, in either of Dovecot's formats: one name
 * per line, or the "V\t2" header with tab-separated components. Names
 * are returned with '.' as separator, in file order, without duplicates.
 * A missing file is an empty list. */
int md_read_subscriptions(const char *user_path, char ***names_r,
			  size_t *count_r, char **error_r);
void md_strings_free(char ***strings, size_t count);

struct md_message {
	char *uniq;	    /* unique name: the file name before ":2," */
	char *filename;	    /* file name within new/ or cur/ */
	char *path;	    /* full path */
	bool in_new;	    /* in new/, so never \Seen */
	struct flagset flags;
	time_t internaldate; /* UTC seconds */
	off_t size;	    /* on disk, before CRLF conversion */
};

/* Scan new/ and cur/ of one folder: every regular, readable, non-empty
 * file with a valid name, sorted by uniq. Skips are counted in stats and
 * logged; the scan always goes on. Keyword letters are mapped through the
 * folder's dovecot-keywords; unmapped letters are dropped and counted.
 * Returns 0, or -1 with *error_r when neither new/ nor cur/ exists or
 * when either exists but cannot be listed: a partial list would make the
 * missing messages look deleted. stats may be NULL. */
int md_scan_folder(const struct md_folder *folder, const char *user,
		   struct md_message **msgs_r, size_t *count_r,
		   struct md_stats *stats, char **error_r);
void md_messages_free(struct md_message **msgs, size_t count);

/* Examine one file of the folder's new/ (in_new) or cur/ by name, with
 * the same checks, counters and log lines as md_scan_folder (for a file
 * name reported by inotify). keywords is the folder's table from
 * md_read_keywords, or NULL. Returns 1 with *msg_r filled (free with
 * md_message_clear), or 0 when the file is skipped. */
int md_read_message(const struct md_folder *folder, const char *user,
		    bool in_new, const char *filename,
		    char *const keywords[26], struct md_message *msg_r,
		    struct md_stats *stats);
void md_message_clear(struct md_message *msg);

/* Parse a file name of cur/ ("uniq:2,FLAGS") into the unique part and the
 * flag letters. The info starts at the last ":2,". A name without ":2,"
 * has no flags; if it contains one ':' (another info version such as
 * ":1,"), the unique part ends there. Returns 0, or -1 when the name is
 * not a valid Maildir name (empty, starts with '.', empty unique part, or
 * a ':' left in the unique part or after the info). Outputs are
 * malloc'd. */
int md_parse_filename(const char *name, char **uniq_r, char **letters_r);

/* Turn flag letters into a flag set; keywords[] is the folder's
 * dovecot-keywords table indexed by letter - 'a' (NULL where unset).
 * fs is initialised here (the caller clears it); P becomes $Forwarded and
 * letters other than D F P R S T a-z are ignored. Returns the number of
 * unmapped letters. */
unsigned md_letters_to_flags(const char *letters, char *const *keywords,
			     size_t nkeywords, struct flagset *fs);

/* Read dovecot-keywords of a folder into a table of 26 entries (NULL
 * where unset; free with md_keywords_free). A missing file is an empty
 * table. Returns 0, or -1 with *error_r and an empty table. */
int md_read_keywords(const char *folder_path, char *keywords_r[26],
		     char **error_r);
void md_keywords_free(char *keywords[26]);

/* Pick INTERNALDATE: the mtime when plausible (1990 to now + 1 day), else
 * the leading epoch of the unique name, else the Date header. Sets
 * *source_r to "mtime", "name" or "header", or "now" when none works. */
time_t md_internaldate(const char *path, const char *uniq, time_t mtime,
		       const char **source_r);

/* Hash a message file in its CRLF form (bare LF and bare CR become CRLF,
 * as the replica stores it) with SHA-256. Sets *crlf_size_r to the size
 * of that form. Returns 0, or -1 with errno set. */
int md_hash_file(const char *path, unsigned char digest[32],
		 uint64_t *crlf_size_r);

/* CRLF-form hasher usable on data arriving in pieces (from a file or from
 * the replica). It also hashes a NUL byte as 0x80, because Dovecot 2.3
 * stores a NUL but returns it as 0x80 in FETCH BODY[]; hashing both sides
 * the same way keeps such a message comparable. */
struct crlf_hasher;
struct crlf_hasher *crlf_hasher_new(void);
void crlf_hasher_update(struct crlf_hasher *h, const void *data, size_t len);
/* Finish, store the digest and the CRLF size, and free h. */
void crlf_hasher_finish(struct crlf_hasher **h, unsigned char digest[32],
			uint64_t *crlf_size_r);

/* Decode a modified UTF-7 mailbox name to UTF-8 for display. Returns a
 * malloc'd string; an invalid name is returned unchanged. */
char *mutf7_to_utf8(const char *name);

#endif
