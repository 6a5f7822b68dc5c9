/* End-to-end tests of "mailrepl init" and "mailrepl verify" against a
 * private Dovecot, run in-process through sync_init() and verify_run().
 * Every test owns one replica user, so tests do not see each other's
 * mail; the Dovecot is shared by the test case. */
#include <config.h>
#include "cfg.h"
#include "imapc.h"
#include "log.h"
#include "sync.h"
#include "testutil.h"
#include "util.h"
#include "verify.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utime.h>

static struct tu_dovecot *dovecot;

/* One test's master tree, state and config. */
struct env {
	char *dir;
	char *user;
	char *maildir; /* the user's Maildir on the master */
	char *conf;
	struct config *cfg;
	unsigned seq;
};

static void
start_dovecot(void)
{
	/* t01..t30 are the replica users of the tests. */
	setenv("DOVECOT_TEST_USERS",
	       "t01 t02 t03 t04 t05 t06 t07 t08 t09 t10 t11 t12 t13 t14 t15 "
	       "t16 t17 t18 t19 t20 t21 t22 t23 t24 t25 t26 t27 t28 t29 t30",
	       1);
	/* The replica rejects t15's messages above 20 KB (NO [LIMIT]). */
	setenv("DOVECOT_TEST_SIZE_LIMIT", "t15:20k", 1);
	dovecot = tu_dovecot_start();
}

static void
stop_dovecot(void)
{
	tu_dovecot_stop(&dovecot);
}

static void
env_write_config(struct env *e, const char *extra)
{
	char *pw = xasprintf("%s/admin.pw", e->dir);
	char *text, *error = NULL, port[32] = "";

	tu_write_file(pw, dovecot->admin_password,
		      strlen(dovecot->admin_password), 0600);

	/* extra may set its own imap_port; the file must not name it twice. */
	if (extra == NULL || strstr(extra, "imap_port") == NULL)
		snprintf(port, sizeof(port), "imap_port = %u\n",
			 dovecot->imap_port);
	text = xasprintf("[general]\nmode = master\nstate_dir = %s/state\n"
			 "log_file = %s/mailrepl.log\n"
			 "[maildir]\nroot = %s/mail\n"
			 "[master]\nreplica_host = 127.0.0.1\n"
			 "%simap_tls = starttls\n"
			 "tls_ca_file = %s\nadmin_user = %s\n"
			 "admin_password_file = %s\nworkers = 2\n"
			 "control_port = 0\n"
			 "batch_messages = 7\n%s",
			 e->dir, e->dir, e->dir, port, dovecot->ca_file, dovecot->admin, pw,
			 extra != NULL ? extra : "");
	tu_write_file(e->conf, text, strlen(text), 0600);
	config_free(&e->cfg);
	ck_assert_msg(config_load(e->conf, &e->cfg, &error) == 0,
		      "config: %s", error);
	free(text);
	free(pw);
}

static struct env *
env_new(const char *user)
{
	struct env *e = xcalloc(1, sizeof(*e));

	e->dir = tu_tempdir("sync");
	e->user = xstrdup(user);
	e->maildir = xasprintf("%s/mail/%s/Maildir", e->dir, user);
	e->conf = xasprintf("%s/mailrepl.conf", e->dir);
	tu_run("mkdir -p '%s/cur' '%s/new' '%s/tmp'", e->maildir, e->maildir,
	       e->maildir);
	env_write_config(e, NULL);
	return e;
}

static void
env_free(struct env *e)
{
	config_free(&e->cfg);
	tu_rmrf(e->dir);
	free(e->dir);
	free(e->user);
	free(e->maildir);
	free(e->conf);
	free(e);
}

/* Write a message file into folder ("" for INBOX) and sub ("cur" or
 * "new"), with a given mtime; returns its path (caller frees). */
static char *
put_file(struct env *e, const char *folder, const char *sub,
	 const char *name, const char *body, size_t len, time_t mtime)
{
	char *path = xasprintf("%s/%s%s%s/%s/%s", e->maildir,
			       *folder ? "." : "", folder, *folder ? "" : "",
			       sub, name);
	struct utimbuf times = {.actime = mtime, .modtime = mtime};

	tu_write_file(path, body, len, 0644);
	ck_assert_int_eq(utime(path, &times), 0);
	return path;
}

static char *
put_message(struct env *e, const char *folder, const char *flags,
	    const char *subject)
{
	char name[128], body[512];
	time_t mtime = 1500000000 + (time_t)(e->seq * 3600);

	e->seq++;
	snprintf(name, sizeof(name), "%ld.M%uP1.test%s%s", (long)mtime,
		 e->seq, flags != NULL ? ":2," : "",
		 flags != NULL ? flags : "");
	snprintf(body, sizeof(body),
		 "From: a@example.org\nTo: b@example.org\n"
		 "Subject: %s\nMessage-ID: <%u.%s@example.org>\n\n"
		 "Body of message %u.\n",
		 subject, e->seq, e->user, e->seq);
	return put_file(e, folder, flags != NULL ? "cur" : "new", name, body,
			strlen(body), mtime);
}

static void
make_folder(struct env *e, const char *folder)
{
	tu_run("mkdir -p '%s/.%s/cur' '%s/.%s/new' '%s/.%s/tmp'", e->maildir,
	       folder, e->maildir, folder, e->maildir, folder);
}

static int
run_init(struct env *e, bool reset, struct sync_counts *counts,
	 char **error_r)
{
	char *users[] = {e->user};
	struct sync_options opt = {
		.cfg = e->cfg,
		.password = e->cfg->admin_password,
		.users = users,
		.nusers = 1,
		.reset_replica = reset,
	};

	return sync_init(&opt, counts, error_r);
}

static int
run_init_ok(struct env *e, struct sync_counts *counts)
{
	char *error = NULL;
	int code = run_init(e, false, counts, &error);

	ck_assert_msg(code == SYNC_EXIT_OK, "init exit %d: %s", code,
		      error != NULL ? error : "");
	free(error);
	return code;
}

/* Run verify for the user; returns the number of differences and puts
 * the report in *report_r (caller frees). */
static unsigned long long
run_verify(struct env *e, char **report_r)
{
	char *users[] = {e->user};
	struct verify_options opt = {
		.cfg = e->cfg,
		.password = e->cfg->admin_password,
		.users = users,
		.nusers = 1,
	};
	struct verify_counts counts;
	char *buf = NULL, *error = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&buf, &len);
	int r = verify_run(&opt, out, &counts, &error);

	fclose(out);
	ck_assert_msg(r >= 0, "verify failed: %s", error);
	ck_assert_int_eq(r, counts.differences > 0 ? 1 : 0);
	if (report_r != NULL)
		*report_r = buf;
	else
		free(buf);
	return counts.differences;
}

static void
assert_identical(struct env *e)
{
	char *report = NULL;
	unsigned long long diffs = run_verify(e, &report);

	ck_assert_msg(diffs == 0, "verify found %llu differences:\n%s", diffs,
		      report);
	free(report);
}

/* A connection to the replica acting for the test's user. */
static struct imapc *
replica(struct env *e)
{
	struct imapc_params p = {
		.host = "127.0.0.1",
		.port = dovecot->imap_port,
		.tls = CFG_TLS_STARTTLS,
		.ca_file = dovecot->ca_file,
		.admin_user = dovecot->admin,
		.password = dovecot->admin_password,
		.timeout = 30,
	};
	struct mrerr err;
	struct imapc *c = imapc_connect(&p, e->user, &err);

	ck_assert_msg(c != NULL, "connect: %s", err.text);
	return c;
}

static size_t
replica_count(struct env *e, const char *mailbox)
{
	struct imapc *c = replica(e);
	struct imapc_status st;
	struct mrerr err;

	ck_assert_msg(imapc_select(c, mailbox, &st, &err) == 0, "select %s: %s",
		      mailbox, err.text);
	imapc_free(&c);
	return st.exists;
}

START_TEST(tree_replicated_exactly)
{
	struct env *e = env_new("t01");
	struct sync_counts counts;
	char *subs;

	put_message(e, "", NULL, "in new, not seen");
	put_message(e, "", "S", "seen");
	put_message(e, "", "FRS", "flagged answered");
	make_folder(e, "Archive");
	make_folder(e, "Archive.2018");
	make_folder(e, "Entw&APw-rfe");
	make_folder(e, "R&-D");
	put_message(e, "Archive", "S", "archive parent");
	put_message(e, "Archive.2018", "DS", "archive child");
	put_message(e, "Entw&APw-rfe", "D", "draft");
	put_message(e, "R&-D", "T", "deleted flag");
	subs = xasprintf("%s/subscriptions", e->maildir);
	tu_write_file(subs, "Archive\nEntw&APw-rfe\n", 21, 0644);

	run_init_ok(e, &counts);
	ck_assert_uint_eq(counts.messages, 7);
	ck_assert_uint_eq(counts.uploaded, 7);
	ck_assert_uint_eq(counts.folders, 5);
	ck_assert_uint_eq(replica_count(e, "Archive.2018"), 1);
	ck_assert_uint_eq(replica_count(e, "Entw&APw-rfe"), 1);
	ck_assert_uint_eq(replica_count(e, "INBOX"), 3);
	assert_identical(e);
	free(subs);
	env_free(e);
}
END_TEST

START_TEST(rerun_uploads_nothing)
{
	struct env *e = env_new("t02");
	struct sync_counts counts;

	for (int i = 0; i < 20; i++)
		put_message(e, "", i % 2 ? "S" : NULL, "batch");
	run_init_ok(e, &counts);
	ck_assert_uint_eq(counts.uploaded, 20);
	run_init_ok(e, &counts);
	ck_assert_uint_eq(counts.uploaded, 0);
	ck_assert_uint_eq(counts.adopted, 0);
	ck_assert_uint_eq(counts.expunged, 0);
	ck_assert_uint_eq(counts.flag_updates, 0);
	ck_assert_uint_eq(replica_count(e, "INBOX"), 20);
	env_free(e);
}
END_TEST

START_TEST(rerun_fixes_flags_and_deletions)
{
	struct env *e = env_new("t03");
	struct sync_counts counts;
	struct imapc *c;
	struct imapc_status st;
	struct imapc_msg *msgs;
	struct flagset none;
	struct mrerr err;
	size_t n;
	char *a = put_message(e, "", "S", "flag me");
	char *b = put_message(e, "", "S", "delete me");
	char *flagged;

	put_message(e, "", "S", "replica user flags me");
	run_init_ok(e, &counts);

	/* The master's user flags one message and deletes another. */
	flagged = xasprintf("%.*sFS", (int)(strlen(a) - 1), a);
	ck_assert_int_eq(rename(a, flagged), 0);
	ck_assert_int_eq(unlink(b), 0);
	/* Someone changes a flag on the replica, which must not stick. */
	c = replica(e);
	ck_assert(imapc_select(c, "INBOX", &st, &err) == 0);
	ck_assert(imapc_fetch_all(c, 1, &msgs, &n, &err) == 0);
	ck_assert_uint_eq(n, 3);
	flagset_init(&none);
	ck_assert(imapc_store_flags(c, msgs[2].uid, &none, &err) == 0);
	imapc_msgs_free(&msgs, n);
	imapc_free(&c);

	run_init_ok(e, &counts);
	ck_assert_uint_eq(counts.uploaded, 0);
	ck_assert_uint_eq(counts.expunged, 1);
	ck_assert_uint_eq(counts.flag_updates, 2);
	assert_identical(e);
	free(a);
	free(b);
	free(flagged);
	env_free(e);
}
END_TEST

START_TEST(extra_replica_message_expunged)
{
	struct env *e = env_new("t04");
	struct sync_counts counts;
	struct imapc *c;
	struct imapc_append app = {0};
	struct flagset fs;
	struct mrerr err;
	uint32_t uidvalidity;
	char *extra;

	put_message(e, "", "S", "kept");
	run_init_ok(e, &counts);

	/* Mail delivered to the replica directly is not the master's. */
	extra = xasprintf("%s/extra.eml", e->dir);
	tu_write_file(extra, "Subject: extra\n\nx\n", 18, 0644);
	flagset_init(&fs);
	app.path = extra;
	app.flags = &fs;
	app.internaldate = 1600000000;
	c = replica(e);
	ck_assert(imapc_append_batch(c, "INBOX", &app, 1, &uidvalidity,
				     &err) == 0);
	imapc_free(&c);
	ck_assert_uint_eq(replica_count(e, "INBOX"), 2);

	run_init_ok(e, &counts);
	ck_assert_uint_eq(counts.expunged, 1);
	ck_assert_uint_eq(replica_count(e, "INBOX"), 1);
	assert_identical(e);
	free(extra);
	env_free(e);
}
END_TEST

START_TEST(foreign_mail_refused_then_reset)
{
	struct env *e = env_new("t05");
	struct sync_counts counts;
	struct imapc_append app = {0};
	struct flagset fs;
	struct imapc *c;
	struct mrerr err;
	uint32_t uidvalidity;
	char *foreign = xasprintf("%s/foreign.eml", e->dir), *error = NULL;
	int code;

	put_message(e, "", "S", "master mail");
	tu_write_file(foreign, "Subject: not ours\n\nx\n", 21, 0644);
	flagset_init(&fs);
	app.path = foreign;
	app.flags = &fs;
	app.internaldate = 1600000000;
	c = replica(e);
	ck_assert(imapc_append_batch(c, "INBOX", &app, 1, &uidvalidity,
				     &err) == 0);
	imapc_free(&c);

	code = run_init(e, false, &counts, &error);
	ck_assert_int_eq(code, SYNC_EXIT_FAILED);
	ck_assert_ptr_nonnull(error);
	ck_assert_msg(strstr(error, "--reset-replica") != NULL, "error: %s",
		      error);
	ck_assert_msg(strstr(error, "t05") != NULL, "error: %s", error);
	ck_assert_uint_eq(counts.uploaded, 0);
	ck_assert_uint_eq(replica_count(e, "INBOX"), 1);
	free(error);
	error = NULL;

	code = run_init(e, true, &counts, &error);
	ck_assert_msg(code == SYNC_EXIT_OK, "reset run: %d %s", code, error);
	ck_assert_uint_eq(counts.uploaded, 1);
	assert_identical(e);
	free(foreign);
	env_free(e);
}
END_TEST

START_TEST(state_lost_rematched)
{
	struct env *e = env_new("t06");
	struct sync_counts counts;

	make_folder(e, "Sent");
	for (int i = 0; i < 12; i++)
		put_message(e, i % 3 ? "" : "Sent", "S", "same subject");
	run_init_ok(e, &counts);
	ck_assert_uint_eq(counts.uploaded, 12);

	tu_run("rm -rf '%s/state'", e->dir);
	run_init_ok(e, &counts);
	ck_assert_uint_eq(counts.uploaded, 0);
	ck_assert_uint_eq(counts.adopted, 12);
	ck_assert_uint_eq(replica_count(e, "INBOX"), 8);
	assert_identical(e);
	env_free(e);
}
END_TEST

START_TEST(uidvalidity_change_rematched)
{
	struct env *e = env_new("t07");
	struct sync_counts counts;
	int rc;

	for (int i = 0; i < 9; i++)
		put_message(e, "", "S", "uidvalidity");
	run_init_ok(e, &counts);

	rc = tu_run("doveadm -c '%s' mailbox update -u t07 --uid-validity "
		    "777 INBOX", dovecot->conf);
	ck_assert_int_eq(rc, 0);
	run_init_ok(e, &counts);
	ck_assert_uint_eq(counts.uploaded, 0);
	ck_assert_uint_eq(counts.adopted, 9);
	ck_assert_uint_eq(replica_count(e, "INBOX"), 9);
	assert_identical(e);
	env_free(e);
}
END_TEST

START_TEST(dry_run_changes_nothing)
{
	struct env *e = env_new("t08");
	struct sync_counts counts;
	char *error = NULL;
	char *users[] = {e->user};
	struct sync_options opt = {
		.cfg = e->cfg,
		.password = e->cfg->admin_password,
		.users = users,
		.nusers = 1,
		.dry_run = true,
	};

	make_folder(e, "Drafts");
	put_message(e, "", "S", "one");
	put_message(e, "Drafts", "D", "two");
	ck_assert_int_eq(sync_init(&opt, &counts, &error), SYNC_EXIT_OK);
	ck_assert_uint_eq(counts.uploaded, 2);
	ck_assert_uint_eq(counts.folders_created, 1);
	ck_assert_uint_eq(replica_count(e, "INBOX"), 0);
	ck_assert_uint_gt(run_verify(e, NULL), 0);
	env_free(e);
}
END_TEST

START_TEST(second_run_locked_out)
{
	struct env *e = env_new("t09");
	struct sync_counts counts;
	char *state = xasprintf("%s/state", e->dir), *error = NULL;
	int fd = sync_lock(state, &error);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(run_init(e, false, &counts, &error), SYNC_EXIT_LOCKED);
	ck_assert_ptr_nonnull(strstr(error, "lock"));
	close(fd);
	free(error);
	free(state);
	env_free(e);
}
END_TEST

START_TEST(edge_case_content)
{
	struct env *e = env_new("t10");
	struct sync_counts counts;
	char big[20100], nul[] = "Subject: nul\n\nbefore\0after\n";
	const char *same = "From: a@example.org\nSubject: same\n\nsame\n";
	const char *other = "From: a@example.org\nSubject: same\n\nother\n";
	char *error = NULL;
	int code;

	/* Skipped with a reason: an extra colon, a zero-byte file, and a
	 * leftover in tmp/ that is not mail at all. */
	put_file(e, "", "cur", "1700000000.123_1.host,U=7:2:2,RS", "x\n", 2,
		 1700000000);
	put_file(e, "", "cur", "1700000004.M4P9.host:2,S", "", 0, 1700000004);
	put_file(e, "", "tmp", "1700000003.M3P9.host", "Subject: t\n\nx\n",
		 14, 1700000003);
	/* Copied: no info part, an unmapped keyword letter, two identical
	 * files, two without Message-ID that share From and Subject, CRLF and bare CR line ends, a NUL byte,
	 * Latin-1 header bytes, a 20,000-character line, and an mtime that
	 * is not plausible. */
	put_file(e, "", "cur", "1700000001.M1P1.host", "Subject: a\n\nx\n", 14,
		 1700000001);
	put_file(e, "", "cur", "1700000002.M2P1.host,S=10:2,Sa",
		 "Subject: b\n\nx\n", 14, 1700000002);
	put_file(e, "", "cur", "1700000005.M5P1.host:2,S", same, strlen(same),
		 1700000005);
	put_file(e, "", "cur", "1700000006.M6P1.host:2,S", same, strlen(same),
		 1700000006);
	/* Same From and Subject, no Message-ID, other body: another message. */
	put_file(e, "", "cur", "1700000013.M13P1.host:2,S", other,
		 strlen(other), 1700000013);
	put_file(e, "", "cur", "1700000007.M7P1.host:2,",
		 "Subject: crlf\r\n\r\nx\r\n", 20, 1700000007);
	put_file(e, "", "cur", "1700000008.M8P1.host:2,",
		 "Subject: cr\r\rx\r", 15, 1700000008);
	put_file(e, "", "cur", "1700000009.M9P1.host:2,", nul,
		 sizeof(nul) - 1, 1700000009);
	put_file(e, "", "cur", "1700000010.M10P1.host:2,",
		 "Subject: Gr\xfc\xdf" "e\n\nx\n", 18, 1700000010);
	memcpy(big, "Subject: long\n\n", 15);
	memset(big + 15, 'x', 20000);
	big[20015] = '\n';
	put_file(e, "", "cur", "1700000011.M11P1.host:2,", big, 20016,
		 1700000011);
	put_file(e, "", "cur", "1700000012.M12P1.host:2,S",
		 "Subject: epoch\n\nx\n", 18, 0);

	code = run_init(e, false, &counts, &error);
	ck_assert_msg(code == SYNC_EXIT_PARTIAL, "exit %d: %s", code, error);
	ck_assert_uint_eq(counts.skipped, 2);
	ck_assert_uint_eq(counts.uploaded, 11);
	ck_assert_uint_eq(counts.rejected, 0);
	ck_assert_uint_eq(replica_count(e, "INBOX"), 11);
	assert_identical(e);
	free(error);
	env_free(e);
}
END_TEST

START_TEST(forwarded_flag_is_one_keyword)
{
	struct env *e = env_new("t11");
	struct sync_counts counts;
	struct imapc *c;
	struct imapc_status st;
	struct imapc_msg *msgs;
	struct mrerr err;
	char *kw;
	size_t n;

	make_folder(e, "K");
	kw = xasprintf("%s/.K/dovecot-keywords", e->maildir);
	tu_write_file(kw, "0 $Forwarded\n1 Work\n", 20, 0644);
	put_message(e, "K", "PSa", "P and a");
	put_message(e, "K", "b", "work");
	run_init_ok(e, &counts);

	c = replica(e);
	ck_assert(imapc_select(c, "K", &st, &err) == 0);
	ck_assert(imapc_fetch_all(c, 1, &msgs, &n, &err) == 0);
	ck_assert_uint_eq(n, 2);
	ck_assert_uint_eq(msgs[0].flags.nkeywords, 1);
	ck_assert_str_eq(msgs[0].flags.keywords[0], "$Forwarded");
	ck_assert_uint_eq(msgs[0].flags.sys, FLAG_SEEN);
	ck_assert_uint_eq(msgs[1].flags.nkeywords, 1);
	ck_assert_str_eq(msgs[1].flags.keywords[0], "Work");
	imapc_msgs_free(&msgs, n);
	imapc_free(&c);
	assert_identical(e);
	free(kw);
	env_free(e);
}
END_TEST

START_TEST(wrong_password_fails_cleanly)
{
	struct env *e = env_new("t12");
	struct sync_counts counts;
	char *pw = xasprintf("%s/admin.pw", e->dir), *error = NULL;
	char *logpath = xasprintf("%s/mailrepl.log", e->dir), *log;
	int code;

	put_message(e, "", "S", "never sent");
	tu_write_file(pw, "Wr0ngSecret\n", 12, 0600);
	config_free(&e->cfg);
	ck_assert(config_load(e->conf, &e->cfg, &error) == 0);
	ck_assert_int_eq(log_open(logpath, false, "test", &error), 0);

	code = run_init(e, false, &counts, &error);
	log_close();
	ck_assert_int_eq(code, SYNC_EXIT_FAILED);
	ck_assert_msg(strstr(error, "admin_user") != NULL ||
			      strstr(error, "password") != NULL,
		      "error: %s", error);
	ck_assert_ptr_null(strstr(error, "Wr0ngSecret"));
	log = tu_read_file(logpath, NULL);
	ck_assert_ptr_nonnull(log);
	ck_assert_ptr_null(strstr(log, "Wr0ngSecret"));
	ck_assert_uint_eq(counts.uploaded, 0);
	free(log);
	free(logpath);
	free(error);
	free(pw);
	env_free(e);
}
END_TEST

START_TEST(unverified_certificate_fails)
{
	struct env *e = env_new("t13");
	struct sync_counts counts;
	char *error = NULL;
	int code;

	put_message(e, "", "S", "never sent");
	env_write_config(e, "tls_fingerprint = sha256:"
			    "00000000000000000000000000000000"
			    "00000000000000000000000000000000\n");
	code = run_init(e, false, &counts, &error);
	ck_assert_int_eq(code, SYNC_EXIT_FAILED);
	ck_assert_msg(strstr(error, "fingerprint") != NULL, "error: %s",
		      error);
	ck_assert_uint_eq(counts.uploaded, 0);
	free(error);
	env_free(e);
}
END_TEST

START_TEST(missing_parent_folder)
{
	struct env *e = env_new("t14");
	struct sync_counts counts;

	make_folder(e, "Lists.dovecot");
	put_message(e, "Lists.dovecot", "S", "child without parent");
	run_init_ok(e, &counts);
	ck_assert_uint_eq(replica_count(e, "Lists.dovecot"), 1);
	assert_identical(e);
	env_free(e);
}
END_TEST

START_TEST(rejected_message_isolated)
{
	struct env *e = env_new("t15");
	struct sync_counts counts;
	char big[30000], *error = NULL, *report = NULL;
	int code;

	for (int i = 0; i < 5; i++)
		put_message(e, "", "S", "before");
	memcpy(big, "Subject: too big\n\n", 18);
	memset(big + 18, 'y', sizeof(big) - 19);
	big[sizeof(big) - 1] = '\n';
	put_file(e, "", "cur", "1500090000.M99P1.test:2,S", big, sizeof(big),
		 1500090000);
	for (int i = 0; i < 5; i++)
		put_message(e, "", "S", "after");

	/* batch_messages = 7: the rejected message sits inside a batch. */
	code = run_init(e, false, &counts, &error);
	ck_assert_msg(code == SYNC_EXIT_PARTIAL, "exit %d: %s", code, error);
	ck_assert_uint_eq(counts.rejected, 1);
	ck_assert_uint_eq(counts.uploaded, 10);
	ck_assert_uint_eq(replica_count(e, "INBOX"), 10);
	ck_assert_uint_eq(run_verify(e, &report), 1);
	ck_assert_msg(strstr(report, "1500090000.M99P1.test") != NULL,
		      "report: %s", report);
	free(report);
	free(error);
	env_free(e);
}
END_TEST

START_TEST(refused_folder_fails_alone)
{
	struct env *e = env_new("t16");
	struct sync_counts counts;
	char *error = NULL;
	int code;

	/* Raw UTF-8 on disk, as another tool may have written it: Dovecot
	 * accepts only modified UTF-7 names. */
	make_folder(e, "Entw\xc3\xbcrfe");
	put_message(e, "Entw\xc3\xbcrfe", "S", "in a refused folder");
	make_folder(e, "Good");
	put_message(e, "Good", "S", "in a good folder");
	put_message(e, "", "S", "in INBOX");

	code = run_init(e, false, &counts, &error);
	ck_assert_int_eq(code, SYNC_EXIT_FAILED);
	ck_assert_uint_eq(counts.folder_errors, 1);
	ck_assert_uint_eq(counts.user_errors, 0);
	ck_assert_uint_eq(counts.uploaded, 2);
	ck_assert_uint_eq(replica_count(e, "Good"), 1);
	ck_assert_uint_eq(replica_count(e, "INBOX"), 1);
	free(error);
	env_free(e);
}
END_TEST

START_TEST(oversized_message_skipped)
{
	struct env *e = env_new("t17");
	struct sync_counts counts;
	char big[20000], *error = NULL;
	int code;

	env_write_config(e, "max_message_size = 10K\n");
	memset(big, 'z', sizeof(big));
	memcpy(big, "Subject: big\n\n", 14);
	put_file(e, "", "cur", "1500000001.M1P1.big:2,S", big, sizeof(big),
		 1500000001);
	put_message(e, "", "S", "small");

	code = run_init(e, false, &counts, &error);
	ck_assert_msg(code == SYNC_EXIT_PARTIAL, "exit %d: %s", code, error);
	ck_assert_uint_eq(counts.skipped, 1);
	ck_assert_uint_eq(counts.uploaded, 1);
	ck_assert_uint_eq(replica_count(e, "INBOX"), 1);
	free(error);
	env_free(e);
}
END_TEST

START_TEST(moved_message_uses_uid_move)
{
	struct env *e = env_new("t18");
	struct sync_counts counts;
	const char *body = "Subject: archive me\n\nmoved\n";
	char *src, *dst;

	make_folder(e, "Work");
	make_folder(e, "Archive");
	/* ",U=12" is Dovecot's own token inside the unique name: it means
	 * nothing to mailrepl and stays the same across the move. */
	src = put_file(e, "Work", "cur", "1500000100.M77P1.host,U=12:2,S",
		       body, strlen(body), 1500000100);
	put_message(e, "Work", "S", "stays");
	run_init_ok(e, &counts);

	dst = xasprintf("%s/.Archive/cur/1500000100.M77P1.host,U=12:2,SF",
			e->maildir);
	ck_assert_int_eq(rename(src, dst), 0);

	run_init_ok(e, &counts);
	ck_assert_uint_eq(counts.moved, 1);
	ck_assert_uint_eq(counts.uploaded, 0);
	ck_assert_uint_eq(counts.expunged, 0);
	ck_assert_uint_eq(counts.flag_updates, 1);
	ck_assert_uint_eq(replica_count(e, "Work"), 1);
	ck_assert_uint_eq(replica_count(e, "Archive"), 1);
	assert_identical(e);
	free(src);
	free(dst);
	env_free(e);
}
END_TEST

/* A folder renamed with its child is one RENAME on the replica: the
 * messages keep their UIDs, and nothing is uploaded or moved again. */
START_TEST(renamed_folder_uses_rename)
{
	struct env *e = env_new("t21");
	struct sync_counts counts;
	struct imapc_status before, after;
	struct imapc *c;
	struct mrerr err;
	char *from, *to;

	make_folder(e, "Projects");
	make_folder(e, "Projects.2026");
	put_message(e, "Projects", "S", "plan");
	put_message(e, "Projects", "", "budget");
	put_message(e, "Projects.2026", "F", "q1");
	run_init_ok(e, &counts);
	c = replica(e);
	ck_assert_int_eq(imapc_select(c, "Projects", &before, &err), 0);
	imapc_free(&c);

	from = xasprintf("%s/.Projects", e->maildir);
	to = xasprintf("%s/.Done", e->maildir);
	ck_assert_int_eq(rename(from, to), 0);
	free(from);
	free(to);
	from = xasprintf("%s/.Projects.2026", e->maildir);
	to = xasprintf("%s/.Done.2026", e->maildir);
	ck_assert_int_eq(rename(from, to), 0);

	run_init_ok(e, &counts);
	ck_assert_uint_eq(counts.uploaded, 0);
	ck_assert_uint_eq(counts.moved, 0);
	ck_assert_uint_eq(counts.expunged, 0);
	ck_assert_uint_eq(replica_count(e, "Done"), 2);
	ck_assert_uint_eq(replica_count(e, "Done.2026"), 1);
	c = replica(e);
	ck_assert_int_eq(imapc_select(c, "Done", &after, &err), 0);
	ck_assert_int_eq(imapc_select(c, "Projects", &before, &err), -1);
	imapc_free(&c);
	ck_assert_uint_eq(after.uidnext, 3);
	assert_identical(e);
	free(from);
	free(to);
	env_free(e);
}
END_TEST

START_TEST(missing_replica_user_fails_alone)
{
	struct env *e = env_new("t19");
	struct sync_counts counts;
	struct sync_options opt = {
		.cfg = e->cfg,
		.password = e->cfg->admin_password,
	};
	char *ghost = xasprintf("%s/mail/ghost/Maildir", e->dir);
	char *error = NULL;
	int code;

	/* "ghost" has mail on the master but no account on the replica. */
	tu_run("mkdir -p '%s/cur' '%s/new' '%s/tmp'", ghost, ghost, ghost);
	tu_write_file(xasprintf("%s/cur/1500000000.M1P1.g:2,S", ghost),
		      "Subject: g\n\nx\n", 14, 0644);
	put_message(e, "", "S", "replicated anyway");

	code = sync_init(&opt, &counts, &error);
	ck_assert_int_eq(code, SYNC_EXIT_FAILED);
	ck_assert_uint_eq(counts.user_errors, 1);
	ck_assert_uint_eq(counts.uploaded, 1);
	ck_assert_msg(strstr(error, "ghost") != NULL, "error: %s", error);
	ck_assert_uint_eq(replica_count(e, "INBOX"), 1);
	free(error);
	free(ghost);
	env_free(e);
}
END_TEST

START_TEST(unreachable_replica_fails_at_once)
{
	struct env *e = env_new("t20");
	struct sync_counts counts;
	char *logpath = xasprintf("%s/mailrepl.log", e->dir), *log;
	char *error = NULL;
	int code;

	put_message(e, "", "S", "never sent");
	/* Nothing listens on port 1 of 127.0.0.1. */
	env_write_config(e, "imap_port = 1\n");
	ck_assert_int_eq(log_open(logpath, false, "test", &error), 0);
	code = run_init(e, false, &counts, &error);
	log_close();
	ck_assert_int_eq(code, SYNC_EXIT_FAILED);
	ck_assert_msg(strstr(error, "127.0.0.1") != NULL, "error: %s", error);
	log = tu_read_file(logpath, NULL);
	ck_assert_ptr_nonnull(log);
	ck_assert_msg(strstr(log, "event=retry") == NULL,
		      "retried a replica that never answered:\n%s", log);
	free(log);
	free(logpath);
	free(error);
	env_free(e);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("sync");
	TCase *tc = tcase_create("dovecot");
	SRunner *sr;
	int failed;

	tcase_add_unchecked_fixture(tc, start_dovecot, stop_dovecot);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, tree_replicated_exactly);
	tcase_add_test(tc, rerun_uploads_nothing);
	tcase_add_test(tc, rerun_fixes_flags_and_deletions);
	tcase_add_test(tc, extra_replica_message_expunged);
	tcase_add_test(tc, foreign_mail_refused_then_reset);
	tcase_add_test(tc, state_lost_rematched);
	tcase_add_test(tc, uidvalidity_change_rematched);
	tcase_add_test(tc, dry_run_changes_nothing);
	tcase_add_test(tc, second_run_locked_out);
	tcase_add_test(tc, edge_case_content);
	tcase_add_test(tc, forwarded_flag_is_one_keyword);
	tcase_add_test(tc, wrong_password_fails_cleanly);
	tcase_add_test(tc, unverified_certificate_fails);
	tcase_add_test(tc, missing_parent_folder);
	tcase_add_test(tc, rejected_message_isolated);
	tcase_add_test(tc, refused_folder_fails_alone);
	tcase_add_test(tc, oversized_message_skipped);
	tcase_add_test(tc, moved_message_uses_uid_move);
	tcase_add_test(tc, renamed_folder_uses_rename);
	tcase_add_test(tc, missing_replica_user_fails_alone);
	tcase_add_test(tc, unreachable_replica_fails_at_once);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
