/* Tests of imapc: certificate checks against certificates made with
 * openssl, the client against a private Dovecot (scripts/dovecot-test.sh),
 * and failure paths against the scripted server in fakeimap.c. */
#include <config.h>
#include "fakeimap.h"
#include "imapc.h"
#include "imapc_private.h"
#include "testutil.h"
#include "util.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Seconds per test for those that start servers or wait for timeouts. */
#define SLOW_TEST_TIMEOUT 60

static struct tu_dovecot *dovecot;
/* ca1.pem, ca2.pem (unrelated), server.der and client.der signed by
 * ca1 for IP 127.0.0.1 and DNS localhost, server.sha256 (hex). */
static char *certdir;

/* ------------------------------------------------------------------ */
/* Fixtures and helpers                                                */

static const char cert_script[] =
	"set -e\n"
	"ca() {\n"
	"  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
	"-nodes -keyout $1.key -out $1.pem -days 30 -subj /CN=$1 "
	"-addext basicConstraints=critical,CA:TRUE "
	"-addext keyUsage=critical,keyCertSign,cRLSign\n"
	"}\n"
	"leaf() {\n"
	"  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n"
	"extendedKeyUsage=%s\\n' $2 >$1.ext\n"
	"  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
	"-nodes -keyout $1.key -out $1.csr -subj /CN=localhost\n"
	"  openssl x509 -req -in $1.csr -CA ca1.pem -CAkey ca1.key "
	"-CAcreateserial -days 30 -extfile $1.ext -out $1.pem\n"
	"  openssl x509 -in $1.pem -outform DER -out $1.der\n"
	"}\n"
	"ca ca1\n"
	"ca ca2\n"
	"leaf server serverAuth\n"
	"leaf client clientAuth\n"
	"sha256sum server.der | cut -c1-64 >server.sha256\n";

static void
certs_setup(void)
{
	char *script;
	int rc;

	if (certdir != NULL)
		return;
	certdir = tu_tempdir("imapc-certs");
	script = xasprintf("%s/make-certs.sh", certdir);
	tu_write_file(script, cert_script, strlen(cert_script), 0644);
	rc = tu_run("cd '%s' && sh make-certs.sh >openssl.log 2>&1", certdir);
	ck_assert_msg(rc == 0, "making test certificates with openssl failed "
			       "(exit %d); see %s/openssl.log",
		      rc, certdir);
	free(script);
}

static char *
cert_path(const char *name)
{
	return xasprintf("%s/%s", certdir, name);
}

static void
dovecot_setup(void)
{
	certs_setup();
	dovecot = tu_dovecot_start();
}

static void
dovecot_teardown(void)
{
	tu_dovecot_stop(&dovecot);
}

static struct imapc_params
dovecot_params(enum cfg_tls tls)
{
	struct imapc_params p = {
		.host = "127.0.0.1",
		.port = tls == CFG_TLS_IMAPS ? dovecot->imaps_port
					     : dovecot->imap_port,
		.tls = tls,
		.ca_file = dovecot->ca_file,
		.admin_user = dovecot->admin,
		.password = dovecot->admin_password,
		.timeout = 10,
	};

	return p;
}

static struct imapc *
connect_as(const char *user)
{
	struct imapc_params p = dovecot_params(CFG_TLS_STARTTLS);
	struct mrerr err;
	struct imapc *c = imapc_connect(&p, user, &err);

	ck_assert_msg(c != NULL, "connect as %s: %s", user, err.text);
	return c;
}

/* Append a message with libetpan directly (imapc_append_batch is another
 * module's job) and return its UID. */
static uint32_t
append_raw(struct imapc *c, const char *mailbox, const char *data,
	   struct mailimap_date_time *date)
{
	uint32_t uidvalidity = 0, uid = 0;
	int r = mailimap_uidplus_append(c->imap, mailbox, NULL, date, data,
					strlen(data), &uidvalidity, &uid);

	ck_assert_msg(r == MAILIMAP_NO_ERROR, "APPEND to %s: libetpan %d",
		      mailbox, r);
	ck_assert_uint_ne(uid, 0);
	return uid;
}

static void
create_ok(struct imapc *c, const char *name)
{
	struct mrerr err;

	ck_assert_msg(imapc_create(c, name, &err) == 0, "CREATE %s: %s", name,
		      err.text);
}

static struct imapc_status
select_ok(struct imapc *c, const char *name)
{
	struct imapc_status st;
	struct mrerr err;

	ck_assert_msg(imapc_select(c, name, &st, &err) == 0, "SELECT %s: %s",
		      name, err.text);
	return st;
}

/* The index of name in list, or -1. */
static int
find_mailbox(const struct imapc_mailbox *list, size_t count,
	     const char *name)
{
	for (size_t i = 0; i < count; i++)
		if (strcmp(list[i].name, name) == 0)
			return (int)i;
	return -1;
}

static char *
dovecot_log(size_t *len_r)
{
	char *path = xasprintf("%s/dovecot.log", dovecot->dir);
	char *text = tu_read_file(path, len_r);

	ck_assert_msg(text != NULL, "cannot read %s", path);
	free(path);
	return text;
}

/* Wait until the Dovecot log has grown past offset by a line that
 * contains needle; return what was added (caller frees). */
static char *
wait_for_log(size_t offset, const char *needle)
{
	for (int i = 0; i < 50; i++) {
		size_t len;
		char *text = dovecot_log(&len);
		char *added = xstrdup(len > offset ? text + offset : "");

		free(text);
		if (strstr(added, needle) != NULL)
			return added;
		free(added);
		usleep(100 * 1000);
	}
	ck_abort_msg("Dovecot did not log '%s' within 5 s", needle);
	return NULL;
}

/* Whether a command line in transcript starts with prefix after its
 * tag. */
static bool
sent_command(const char *transcript, const char *prefix)
{
	for (const char *line = transcript; *line;) {
		const char *space = strchr(line, ' ');
		const char *end = strchr(line, '\n');

		if (end == NULL)
			end = line + strlen(line);
		if (space != NULL && space < end &&
		    strncmp(space + 1, prefix, strlen(prefix)) == 0)
			return true;
		line = *end ? end + 1 : end;
	}
	return false;
}

static int
count_commands(const char *transcript, const char *prefix)
{
	int n = 0;

	for (const char *line = transcript; *line;) {
		const char *space = strchr(line, ' ');
		const char *end = strchr(line, '\n');

		if (end == NULL)
			end = line + strlen(line);
		if (space != NULL && space < end &&
		    strncmp(space + 1, prefix, strlen(prefix)) == 0)
			n++;
		line = *end ? end + 1 : end;
	}
	return n;
}

/* ------------------------------------------------------------------ */
/* Certificate checks                                                  */

static const struct {
	const char *name;
	const char *leaf; /* server.der or client.der */
	const char *host;
	const char *ca;	 /* a file in certdir, "missing", or NULL */
	const char *pin; /* "good", "colons", "wrong", "malformed" or NULL */
	const char *expect; /* NULL: accepted; else part of the message */
} verify_cases[] = {
	{"CA and IP SAN", "server.der", "127.0.0.1", "ca1.pem", NULL, NULL},
	{"CA and DNS SAN", "server.der", "localhost", "ca1.pem", NULL, NULL},
	{"unrelated CA", "server.der", "127.0.0.1", "ca2.pem", NULL,
	 "certificate signed by an unknown authority"},
	{"system store lacks test CA", "server.der", "127.0.0.1", NULL, NULL,
	 "certificate signed by an unknown authority"},
	{"host not in SANs", "server.der", "10.1.2.3", "ca1.pem", NULL,
	 "host name mismatch"},
	{"client-only certificate", "client.der", "127.0.0.1", "ca1.pem",
	 NULL, "not valid for a TLS server"},
	{"missing CA file", "server.der", "127.0.0.1", "missing", NULL,
	 "cannot load [master] tls_ca_file"},
	{"pin alone decides", "server.der", "10.1.2.3", NULL, "good", NULL},
	{"pin with colons", "server.der", "127.0.0.1", NULL, "colons", NULL},
	{"wrong pin", "server.der", "127.0.0.1", NULL, "wrong",
	 "does not match the pin sha256:0000"},
	{"malformed pin", "server.der", "127.0.0.1", NULL, "malformed",
	 "tls_fingerprint 'md5:1234' is invalid"},
	{"pin and unrelated CA", "server.der", "127.0.0.1", "ca2.pem", "good",
	 "unknown authority"},
};

/* The pin for a verify case. Caller frees. */
static char *
pin_for(const char *kind)
{
	char *path = cert_path("server.sha256");
	char *hex = tu_read_file(path, NULL);
	char *pin = NULL;

	ck_assert_msg(hex != NULL && strlen(hex) >= 64, "no %s", path);
	hex[64] = '\0';
	if (strcmp(kind, "good") == 0) {
		pin = xasprintf("sha256:%s", hex);
	} else if (strcmp(kind, "colons") == 0) {
		/* "SHA256:AB:CD:..." as openssl x509 -fingerprint prints */
		pin = xcalloc(1, 7 + 64 + 32 + 1);
		strcpy(pin, "SHA256:");
		for (int i = 0; i < 64; i += 2)
			sprintf(pin + strlen(pin), "%s%c%c", i ? ":" : "",
				hex[i] >= 'a' ? hex[i] - 32 : hex[i],
				hex[i + 1] >= 'a' ? hex[i + 1] - 32
						  : hex[i + 1]);
	} else if (strcmp(kind, "wrong") == 0) {
		pin = xasprintf("sha256:%064d", 0);
	} else {
		pin = xstrdup("md5:1234");
	}
	free(hex);
	free(path);
	return pin;
}

START_TEST(verify_certificate_cases)
{
	char *der_path = cert_path(verify_cases[_i].leaf);
	char *ca = NULL, *pin = NULL, *der;
	size_t len;
	struct mrerr err;
	int r;

	der = tu_read_file(der_path, &len);
	ck_assert_msg(der != NULL, "no %s", der_path);
	if (verify_cases[_i].ca != NULL)
		ca = cert_path(verify_cases[_i].ca);
	if (verify_cases[_i].pin != NULL)
		pin = pin_for(verify_cases[_i].pin);

	mrerr_clear(&err);
	r = imapc_verify_certificate((unsigned char *)der, len,
				     verify_cases[_i].host, ca, pin, &err);
	if (verify_cases[_i].expect == NULL) {
		ck_assert_msg(r == 0, "%s: rejected: %s", verify_cases[_i].name,
			      err.text);
	} else {
		ck_assert_msg(r == -1, "%s: accepted", verify_cases[_i].name);
		ck_assert_int_eq(err.scope, MRERR_CONFIG);
		ck_assert_int_eq(err.retry, MRERR_RETRY_NEVER);
		ck_assert_msg(strstr(err.text, verify_cases[_i].expect),
			      "%s: '%s' lacks '%s'", verify_cases[_i].name,
			      err.text, verify_cases[_i].expect);
	}
	free(der);
	free(der_path);
	free(ca);
	free(pin);
}
END_TEST

START_TEST(verify_failure_names_fix)
{
	char *der_path = cert_path("server.der");
	char *ca = cert_path("ca2.pem");
	size_t len;
	char *der = tu_read_file(der_path, &len);
	struct mrerr err;

	ck_assert_int_eq(imapc_verify_certificate((unsigned char *)der, len,
						  "127.0.0.1", ca, NULL, &err),
			 -1);
	ck_assert_msg(strstr(err.text, "127.0.0.1"), "%s", err.text);
	ck_assert_msg(strstr(err.text, "tls_ca_file"), "%s", err.text);
	ck_assert_msg(strstr(err.text, "tls_fingerprint"), "%s", err.text);
	/* The actual fingerprint is shown so that it can be pinned. */
	ck_assert_msg(strstr(err.text, "(sha256:"), "%s", err.text);
	free(der);
	free(der_path);
	free(ca);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Against Dovecot: connecting                                         */

static const struct {
	const char *name;
	const char *host;
	enum cfg_tls tls;
	bool use_ca;
	bool use_pin;
} tls_modes[] = {
	{"starttls with CA", "127.0.0.1", CFG_TLS_STARTTLS, true, false},
	{"starttls with CA by name", "localhost", CFG_TLS_STARTTLS, true,
	 false},
	{"imaps with CA", "127.0.0.1", CFG_TLS_IMAPS, true, false},
	{"imaps with pin only", "127.0.0.1", CFG_TLS_IMAPS, false, true},
	{"none on loopback", "127.0.0.1", CFG_TLS_NONE, false, false},
};

START_TEST(connect_each_tls_mode)
{
	struct imapc_params p = dovecot_params(tls_modes[_i].tls);
	struct imapc *c;
	struct mrerr err;
	char *added;
	size_t offset;

	free(dovecot_log(&offset));
	p.host = tls_modes[_i].host;
	p.ca_file = tls_modes[_i].use_ca ? dovecot->ca_file : NULL;
	p.fingerprint = tls_modes[_i].use_pin ? dovecot->fingerprint : NULL;
	c = imapc_connect(&p, "alice", &err);
	ck_assert_msg(c != NULL, "%s: %s", tls_modes[_i].name, err.text);

	ck_assert(imapc_has_capability(c, "UIDPLUS"));
	ck_assert(imapc_has_capability(c, "uidplus"));
	ck_assert(!imapc_has_capability(c, "NO-SUCH-CAPABILITY"));
	ck_assert_int_eq(imapc_separator(c), '.');
	ck_assert(c->literal_plus);
	ck_assert(c->multiappend);
	ck_assert_uint_eq(imapc_appendlimit(c), 0);
	ck_assert(!c->dead);
	imapc_free(&c);
	ck_assert_ptr_null(c);

	/* Dovecot offers AUTH=PLAIN, so the SASL path ran: the master user
	 * logged in for alice. */
	added = wait_for_log(offset, "Login: user=<alice>, method=PLAIN");
	ck_assert_msg(strstr(added, "Master user logging in as alice"), "%s",
		      added);
	free(added);
}
END_TEST

START_TEST(plain_connect_to_imaps_port)
{
	struct imapc_params p = dovecot_params(CFG_TLS_NONE);
	struct mrerr err;

	p.port = dovecot->imaps_port;
	p.timeout = 1;
	ck_assert_ptr_null(imapc_connect(&p, "alice", &err));
	ck_assert_int_eq(err.scope, MRERR_CONNECTION);
	ck_assert_msg(strstr(err.text, "sent no IMAP greeting within 1 s; "
				       "check that [master] imap_port is the "
				       "port for imap_tls = none"),
		      "%s", err.text);
}
END_TEST

static const enum cfg_tls wrong_ca_modes[] = {CFG_TLS_STARTTLS,
					      CFG_TLS_IMAPS};

START_TEST(wrong_ca_fails_before_login)
{
	struct imapc_params p = dovecot_params(wrong_ca_modes[_i]);
	char *ca2 = cert_path("ca2.pem");
	char *log_text, *added;
	struct imapc *c;
	struct mrerr err;
	size_t offset;

	log_text = dovecot_log(&offset);
	free(log_text);
	p.ca_file = ca2;
	c = imapc_connect(&p, "alice", &err);
	ck_assert_ptr_null(c);
	ck_assert_int_eq(err.scope, MRERR_CONFIG);
	ck_assert_int_eq(err.retry, MRERR_RETRY_NEVER);
	ck_assert_msg(strstr(err.text, "unknown authority"), "%s", err.text);
	ck_assert_msg(strstr(err.text, "tls_ca_file"), "%s", err.text);

	/* Dovecot logs every connection that ends without a login attempt,
	 * and an attempt would show as "Login:" or "auth failed". */
	added = wait_for_log(offset, "no auth attempts");
	ck_assert_msg(strstr(added, "Login:") == NULL, "%s", added);
	ck_assert_msg(strstr(added, "auth failed") == NULL, "%s", added);
	ck_assert_msg(strstr(added, "alice") == NULL, "%s", added);
	free(added);
	free(ca2);
}
END_TEST

START_TEST(wrong_fingerprint_fails)
{
	struct imapc_params p = dovecot_params(CFG_TLS_IMAPS);
	struct imapc *c;
	struct mrerr err;

	p.ca_file = NULL;
	p.fingerprint = "sha256:"
			"00000000000000000000000000000000"
			"00000000000000000000000000000000";
	c = imapc_connect(&p, "alice", &err);
	ck_assert_ptr_null(c);
	ck_assert_int_eq(err.scope, MRERR_CONFIG);
	ck_assert_int_eq(err.retry, MRERR_RETRY_NEVER);
	ck_assert_msg(strstr(err.text, "does not match the pin"), "%s",
		      err.text);
	ck_assert_msg(strstr(err.text, dovecot->fingerprint), "%s", err.text);
}
END_TEST

START_TEST(wrong_password_is_config_error)
{
	struct imapc_params p = dovecot_params(CFG_TLS_STARTTLS);
	struct imapc *c;
	struct mrerr err;

	p.password = "wrong-secret-4711";
	c = imapc_connect(&p, "alice", &err);
	ck_assert_ptr_null(c);
	ck_assert_int_eq(err.scope, MRERR_CONFIG);
	ck_assert_int_eq(err.retry, MRERR_RETRY_NEVER);
	ck_assert_msg(strstr(err.text, "login as alice*repladmin on 127.0.0.1 "
				       "was rejected ([AUTHENTICATIONFAILED]"),
		      "%s", err.text);
	ck_assert_msg(strstr(err.text, "[master] admin_user"), "%s", err.text);
	ck_assert_msg(strstr(err.text, "wrong-secret-4711") == NULL, "%s",
		      err.text);
}
END_TEST

START_TEST(unknown_user_is_rejected)
{
	struct imapc_params p = dovecot_params(CFG_TLS_NONE);
	struct imapc *c;
	struct mrerr err;

	c = imapc_connect(&p, "nosuchuser", &err);
	ck_assert_ptr_null(c);
	/* Only this user fails: the credentials themselves were good. */
	ck_assert_int_eq(err.scope, MRERR_USER);
	ck_assert_msg(strstr(err.text, "[AUTHORIZATIONFAILED]"), "%s",
		      err.text);
	ck_assert_msg(strstr(err.text, "user nosuchuser does not exist on "
				       "the replica"),
		      "%s", err.text);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Against Dovecot: mailboxes                                          */

START_TEST(create_and_list_mailboxes)
{
	struct imapc *c = connect_as("alice");
	const char *names[] = {"A", "A.B", "Entw&APw-rfe"};
	struct imapc_mailbox *list;
	size_t count;
	struct mrerr err;
	int i;

	for (size_t k = 0; k < 3; k++)
		create_ok(c, names[k]);
	/* Creating again succeeds because Dovecot returns [ALREADYEXISTS]. */
	create_ok(c, "A");
	/* A child without its parent leaves the parent \Noselect. */
	create_ok(c, "P.Q");

	ck_assert_int_eq(imapc_list(c, false, &list, &count, &err), 0);
	for (size_t k = 0; k < 3; k++) {
		i = find_mailbox(list, count, names[k]);
		ck_assert_msg(i >= 0, "LIST lacks %s", names[k]);
		ck_assert(!list[i].noselect);
	}
	ck_assert_int_ge(find_mailbox(list, count, "INBOX"), 0);
	ck_assert_int_ge(find_mailbox(list, count, "P.Q"), 0);
	i = find_mailbox(list, count, "P");
	ck_assert_msg(i >= 0, "LIST lacks P");
	ck_assert(list[i].noselect);
	imapc_mailboxes_free(&list, count);
	ck_assert_ptr_null(list);
	imapc_free(&c);
}
END_TEST

START_TEST(delete_mailboxes)
{
	struct imapc *c = connect_as("bob");
	struct imapc_mailbox *list;
	size_t count;
	struct mrerr err;

	create_ok(c, "Old");
	create_ok(c, "Open");
	ck_assert_int_eq(imapc_delete(c, "Old", &err), 0);
	/* A replayed DELETE finds the mailbox gone and succeeds. */
	ck_assert_msg(imapc_delete(c, "Old", &err) == 0, "%s", err.text);

	/* Deleting the selected mailbox must not cost the connection. */
	select_ok(c, "Open");
	ck_assert_msg(imapc_delete(c, "Open", &err) == 0, "%s", err.text);
	ck_assert(!c->dead);
	ck_assert_ptr_null(c->selected);

	ck_assert_int_eq(imapc_list(c, false, &list, &count, &err), 0);
	ck_assert_int_eq(find_mailbox(list, count, "Old"), -1);
	ck_assert_int_eq(find_mailbox(list, count, "Open"), -1);
	imapc_mailboxes_free(&list, count);
	imapc_free(&c);
}
END_TEST

START_TEST(subscribe_and_lsub)
{
	struct imapc *c = connect_as("bob");
	struct imapc_mailbox *list;
	size_t count;
	struct mrerr err;

	create_ok(c, "Sub");
	create_ok(c, "Other");
	ck_assert_int_eq(imapc_subscribe(c, "Sub", true, &err), 0);

	ck_assert_int_eq(imapc_list(c, true, &list, &count, &err), 0);
	ck_assert_int_ge(find_mailbox(list, count, "Sub"), 0);
	ck_assert_int_eq(find_mailbox(list, count, "Other"), -1);
	imapc_mailboxes_free(&list, count);

	ck_assert_int_eq(imapc_subscribe(c, "Sub", false, &err), 0);
	ck_assert_int_eq(imapc_list(c, true, &list, &count, &err), 0);
	ck_assert_int_eq(find_mailbox(list, count, "Sub"), -1);
	imapc_mailboxes_free(&list, count);
	imapc_free(&c);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Against Dovecot: messages                                           */

static const char msg_text[] = "From: a@example.org\r\n"
			       "Subject: test\r\n"
			       "\r\n"
			       "body line\r\n";

START_TEST(select_reports_status)
{
	struct imapc *c = connect_as("carol");
	struct imapc_status st, again;
	struct mrerr err;

	create_ok(c, "S");
	st = select_ok(c, "S");
	ck_assert_uint_eq(st.exists, 0);
	ck_assert_uint_eq(st.uidnext, 1);
	ck_assert_uint_ne(st.uidvalidity, 0);
	ck_assert(st.keywords_allowed);
	ck_assert_str_eq(c->selected, "S");

	append_raw(c, "S", msg_text, NULL);
	append_raw(c, "S", msg_text, NULL);
	again = select_ok(c, "S");
	ck_assert_uint_eq(again.exists, 2);
	ck_assert_uint_eq(again.uidnext, 3);
	ck_assert_uint_eq(again.uidvalidity, st.uidvalidity);

	ck_assert_int_eq(imapc_select(c, "Missing", &st, &err), -1);
	ck_assert_int_eq(err.scope, MRERR_FOLDER);
	/* Dovecot 2.3 sends no response code here, so the NO counts as
	 * temporary. */
	ck_assert_int_eq(err.retry, MRERR_RETRY_LATER);
	ck_assert_msg(strstr(err.text, "SELECT Missing on 127.0.0.1 failed: "
				       "Mailbox doesn't exist: Missing"),
		      "%s", err.text);
	ck_assert_ptr_null(c->selected);
	imapc_free(&c);
}
END_TEST

START_TEST(fetch_all_empty_mailbox)
{
	struct imapc *c = connect_as("carol");
	struct imapc_msg *msgs;
	size_t count = 99;
	struct mrerr err;

	create_ok(c, "Empty");
	select_ok(c, "Empty");
	ck_assert_msg(imapc_fetch_all(c, 1, &msgs, &count, &err) == 0, "%s",
		      err.text);
	ck_assert_uint_eq(count, 0);
	imapc_msgs_free(&msgs, count);
	ck_assert_ptr_null(msgs);
	imapc_free(&c);
}
END_TEST

START_TEST(fetch_all_fields_and_filter)
{
	struct imapc *c = connect_as("dave");
	/* 12:34:56 at +0200 is 10:34:56 UTC */
	struct mailimap_date_time *date =
		mailimap_date_time_new(5, 6, 2024, 12, 34, 56, 200);
	struct mailimap_date_time *west =
		mailimap_date_time_new(31, 12, 2023, 18, 29, 0, -530);
	struct imapc_msg *msgs;
	size_t count;
	struct mrerr err;

	create_ok(c, "F");
	append_raw(c, "F", msg_text, date);
	append_raw(c, "F", msg_text, west);
	append_raw(c, "F", "Subject: x\n\nbare LF\n", NULL);
	mailimap_date_time_free(date);
	mailimap_date_time_free(west);
	select_ok(c, "F");

	ck_assert_int_eq(imapc_fetch_all(c, 1, &msgs, &count, &err), 0);
	ck_assert_uint_eq(count, 3);
	ck_assert_uint_eq(msgs[0].uid, 1);
	ck_assert_uint_eq(msgs[1].uid, 2);
	ck_assert_uint_eq(msgs[2].uid, 3);
	ck_assert_int_eq(msgs[0].internaldate, 1717583696);
	/* 18:29 at -0530 is 23:59 UTC */
	ck_assert_int_eq(msgs[1].internaldate, 1704067140);
	ck_assert_uint_eq(msgs[0].size, strlen(msg_text));
	/* libetpan sends bare LF as CRLF; the size is the CRLF size. */
	ck_assert_uint_eq(msgs[2].size, strlen("Subject: x\n\nbare LF\n") + 3);
	ck_assert_uint_eq(msgs[0].flags.sys, 0);
	imapc_msgs_free(&msgs, count);

	ck_assert_int_eq(imapc_fetch_all(c, 2, &msgs, &count, &err), 0);
	ck_assert_uint_eq(count, 2);
	ck_assert_uint_eq(msgs[0].uid, 2);
	imapc_msgs_free(&msgs, count);

	/* "10:*" makes the server return UID 3; it must be filtered. */
	ck_assert_int_eq(imapc_fetch_all(c, 10, &msgs, &count, &err), 0);
	ck_assert_uint_eq(count, 0);
	imapc_msgs_free(&msgs, count);
	imapc_free(&c);
}
END_TEST

START_TEST(store_flags_and_keywords)
{
	struct imapc *c = connect_as("dave");
	struct flagset fs, fewer;
	struct imapc_msg *msgs;
	size_t count;
	struct mrerr err;
	uint32_t uid;

	create_ok(c, "Flags");
	uid = append_raw(c, "Flags", msg_text, NULL);
	select_ok(c, "Flags");

	flagset_init(&fs);
	fs.sys = FLAG_SEEN | FLAG_FLAGGED;
	flagset_add_keyword(&fs, "$Forwarded");
	flagset_add_keyword(&fs, "Project_X");
	ck_assert_msg(imapc_store_flags(c, uid, &fs, &err) == 0, "%s",
		      err.text);
	ck_assert_int_eq(imapc_fetch_all(c, 1, &msgs, &count, &err), 0);
	ck_assert_uint_eq(count, 1);
	ck_assert_msg(flagset_equal(&msgs[0].flags, &fs), "got %s",
		      flagset_format(&msgs[0].flags));
	imapc_msgs_free(&msgs, count);

	/* FLAGS replaces: what is not in the new set goes away. */
	flagset_init(&fewer);
	fewer.sys = FLAG_ANSWERED;
	ck_assert_int_eq(imapc_store_flags(c, uid, &fewer, &err), 0);
	ck_assert_int_eq(imapc_fetch_all(c, 1, &msgs, &count, &err), 0);
	ck_assert_uint_eq(msgs[0].flags.sys, FLAG_ANSWERED);
	ck_assert_uint_eq(msgs[0].flags.nkeywords, 0);
	imapc_msgs_free(&msgs, count);
	flagset_clear(&fs);
	flagset_clear(&fewer);
	imapc_free(&c);
}
END_TEST

START_TEST(expunge_uids_exactly)
{
	struct imapc *c = connect_as("erin");
	struct flagset deleted;
	struct imapc_msg *msgs;
	size_t count;
	struct mrerr err;
	uint32_t uids[4], gone[2];

	create_ok(c, "X");
	for (int i = 0; i < 4; i++)
		uids[i] = append_raw(c, "X", msg_text, NULL);
	select_ok(c, "X");

	/* Another message marked \Deleted must survive. */
	flagset_init(&deleted);
	deleted.sys = FLAG_DELETED;
	ck_assert_int_eq(imapc_store_flags(c, uids[1], &deleted, &err), 0);

	gone[0] = uids[2];
	gone[1] = uids[0];
	ck_assert_msg(imapc_expunge_uids(c, gone, 2, &err) == 0, "%s",
		      err.text);
	ck_assert_int_eq(imapc_fetch_all(c, 1, &msgs, &count, &err), 0);
	ck_assert_uint_eq(count, 2);
	ck_assert_uint_eq(msgs[0].uid, uids[1]);
	ck_assert_uint_eq(msgs[0].flags.sys, FLAG_DELETED);
	ck_assert_uint_eq(msgs[1].uid, uids[3]);
	imapc_msgs_free(&msgs, count);

	ck_assert_int_eq(imapc_expunge_uids(c, gone, 0, &err), 0);
	imapc_free(&c);
}
END_TEST

START_TEST(fetch_body_exact_bytes)
{
	struct imapc *c = connect_as("erin");
	static const char body[] = "From: b@example.org\r\n"
				   "Subject: bytes\r\n"
				   "\r\n"
				   "line one\r\n"
				   "\tindented \xc3\xa4 line\r\n"
				   "\r\n";
	struct mrerr err;
	char *data;
	size_t len;
	uint32_t uid;

	create_ok(c, "Body");
	uid = append_raw(c, "Body", body, NULL);
	select_ok(c, "Body");
	ck_assert_msg(imapc_fetch_body(c, uid, &data, &len, &err) == 0, "%s",
		      err.text);
	ck_assert_uint_eq(len, strlen(body));
	ck_assert(memcmp(data, body, len) == 0);
	free(data);

	ck_assert_int_eq(imapc_fetch_body(c, uid + 100, &data, &len, &err),
			 -1);
	ck_assert_int_eq(err.scope, MRERR_MESSAGE);
	ck_assert_ptr_null(data);
	ck_assert(!c->dead);
	imapc_free(&c);
}
END_TEST

START_TEST(commands_need_selected_mailbox)
{
	struct imapc *c = connect_as("erin");
	struct imapc_msg *msgs;
	size_t count;
	struct mrerr err;

	ck_assert_int_eq(imapc_fetch_all(c, 1, &msgs, &count, &err), -1);
	ck_assert_int_eq(err.scope, MRERR_FOLDER);
	ck_assert_msg(strstr(err.text, "imapc_select"), "%s", err.text);
	imapc_free(&c);
}
END_TEST

/* ------------------------------------------------------------------ */
/* Against the scripted server                                         */

#define FAKE_CAPS "IMAP4rev1 UIDPLUS LITERAL+ MULTIAPPEND APPENDLIMIT=1000 " \
		  "UNSELECT"
#define FAKE_GREETING "* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] fake ready"
#define FAKE_LOGIN_OK "$ OK [CAPABILITY " FAKE_CAPS "] Logged in"
#define FAKE_LIST_SEPARATOR "* LIST (\\Noselect) \"/\" \"\"\n$ OK List done"
#define FAKE_SELECT                                                    \
	"* FLAGS (\\Seen \\Deleted)\n"                                 \
	"* OK [PERMANENTFLAGS (\\Seen \\Deleted \\*)] Flags allowed\n" \
	"* 3 EXISTS\n"                                                 \
	"* OK [UIDVALIDITY 42] UIDs valid\n"                           \
	"* OK [UIDNEXT 10] Predicted next UID\n"                       \
	"$ OK [READ-WRITE] Select completed"

static struct imapc_params
fake_params(struct fakeimap *server)
{
	struct imapc_params p = {
		.host = "127.0.0.1",
		.port = fakeimap_port(server),
		.tls = CFG_TLS_NONE,
		.admin_user = "repladmin",
		.password = "secret",
		.timeout = 5,
	};

	return p;
}

static struct imapc *
fake_connect(struct fakeimap *server)
{
	struct imapc_params p = fake_params(server);
	struct mrerr err;
	struct imapc *c = imapc_connect(&p, "alice", &err);

	ck_assert_msg(c != NULL, "connect to the fake server: %s", err.text);
	return c;
}

START_TEST(fake_session_capabilities)
{
	static const struct fakeimap_rule rules[] = {
		{"AUTHENTICATE PLAIN", FAKE_LOGIN_OK},
		{"LIST \"\" \"\"", FAKE_LIST_SEPARATOR},
		{NULL, NULL},
	};
	struct fakeimap *server = fakeimap_start(FAKE_GREETING, rules);
	struct imapc *c = fake_connect(server);
	char *transcript;

	ck_assert_int_eq(imapc_separator(c), '/');
	ck_assert_uint_eq(imapc_appendlimit(c), 1000);
	ck_assert(c->literal_plus);
	ck_assert(!c->literal_minus);
	ck_assert(c->multiappend);
	ck_assert(imapc_has_capability(c, "UNSELECT"));
	/* Capabilities from before the login are gone. */
	ck_assert(!imapc_has_capability(c, "AUTH=PLAIN"));
	imapc_free(&c);

	transcript = fakeimap_stop(&server);
	/* SASL PLAIN: authzid alice, authcid repladmin, password secret */
	ck_assert_msg(strstr(transcript,
			     "\nYWxpY2UAcmVwbGFkbWluAHNlY3JldA==\n"),
		      "%s", transcript);
	ck_assert(!sent_command(transcript, "LOGIN "));
	ck_assert(sent_command(transcript, "LOGOUT"));
	free(transcript);
}
END_TEST

START_TEST(fake_login_without_auth_plain)
{
	static const struct fakeimap_rule rules[] = {
		{"LOGIN \"alice*repladmin\" secret", FAKE_LOGIN_OK},
		{"LIST \"\" \"\"", FAKE_LIST_SEPARATOR},
		{NULL, NULL},
	};
	struct fakeimap *server =
		fakeimap_start("* OK [CAPABILITY IMAP4rev1] ready", rules);
	struct imapc *c = fake_connect(server);
	char *transcript;

	imapc_free(&c);
	transcript = fakeimap_stop(&server);
	ck_assert(!sent_command(transcript, "AUTHENTICATE"));
	ck_assert_msg(sent_command(transcript, "LOGIN \"alice*repladmin\""),
		      "%s", transcript);
	free(transcript);
}
END_TEST

START_TEST(fake_login_rejected)
{
	static const struct fakeimap_rule rules[] = {
		{"AUTHENTICATE", "$ NO [AUTHENTICATIONFAILED] Authentication "
				 "failed."},
		{NULL, NULL},
	};
	struct fakeimap *server = fakeimap_start(FAKE_GREETING, rules);
	struct imapc_params p = fake_params(server);
	struct mrerr err;
	char *transcript;

	ck_assert_ptr_null(imapc_connect(&p, "alice", &err));
	ck_assert_int_eq(err.scope, MRERR_CONFIG);
	ck_assert_int_eq(err.retry, MRERR_RETRY_NEVER);
	ck_assert_str_eq(err.text,
			 "login as alice*repladmin on 127.0.0.1 was rejected "
			 "([AUTHENTICATIONFAILED] Authentication failed.); "
			 "check [master] admin_user and the password file, "
			 "and that user alice exists on the replica");
	transcript = fakeimap_stop(&server);
	/* A failed set-up closes without LOGOUT. */
	ck_assert(!sent_command(transcript, "LOGOUT"));
	free(transcript);
}
END_TEST

START_TEST(fake_login_unavailable_is_temporary)
{
	static const struct fakeimap_rule rules[] = {
		{"AUTHENTICATE", "$ NO [UNAVAILABLE] Backend is down"},
		{NULL, NULL},
	};
	struct fakeimap *server = fakeimap_start(FAKE_GREETING, rules);
	struct imapc_params p = fake_params(server);
	struct mrerr err;

	ck_assert_ptr_null(imapc_connect(&p, "alice", &err));
	ck_assert_int_eq(err.scope, MRERR_CONNECTION);
	ck_assert_int_eq(err.retry, MRERR_RETRY_LATER);
	ck_assert_msg(strstr(err.text, "Backend is down"), "%s", err.text);
	free(fakeimap_stop(&server));
}
END_TEST

START_TEST(fake_no_uidplus)
{
	static const struct fakeimap_rule rules[] = {
		{"AUTHENTICATE", "$ OK [CAPABILITY IMAP4rev1 LITERAL+] Hi"},
		{NULL, NULL},
	};
	struct fakeimap *server = fakeimap_start(FAKE_GREETING, rules);
	struct imapc_params p = fake_params(server);
	struct mrerr err;

	ck_assert_ptr_null(imapc_connect(&p, "alice", &err));
	ck_assert_int_eq(err.scope, MRERR_CONFIG);
	ck_assert_int_eq(err.retry, MRERR_RETRY_NEVER);
	ck_assert_msg(strstr(err.text, "does not offer UIDPLUS (RFC 4315), "
				       "which mailrepl needs to map messages"),
		      "%s", err.text);
	free(fakeimap_stop(&server));
}
END_TEST

START_TEST(fake_no_starttls)
{
	/* No capabilities in the greeting: imapc must ask. */
	static const struct fakeimap_rule rules[] = {
		{"CAPABILITY", "* CAPABILITY IMAP4rev1 AUTH=PLAIN\n$ OK done"},
		{NULL, NULL},
	};
	struct fakeimap *server = fakeimap_start(NULL, rules);
	struct imapc_params p = fake_params(server);
	struct mrerr err;
	char *transcript, *expect;

	p.tls = CFG_TLS_STARTTLS;
	ck_assert_ptr_null(imapc_connect(&p, "alice", &err));
	ck_assert_int_eq(err.scope, MRERR_CONFIG);
	expect = xasprintf("replica 127.0.0.1:%u does not offer STARTTLS; set "
			   "[master] imap_tls = imaps, or none for a loopback "
			   "replica",
			   p.port);
	ck_assert_str_eq(err.text, expect);
	transcript = fakeimap_stop(&server);
	ck_assert(sent_command(transcript, "CAPABILITY"));
	ck_assert(!sent_command(transcript, "AUTHENTICATE"));
	ck_assert(!sent_command(transcript, "LOGIN"));
	free(transcript);
	free(expect);
}
END_TEST

START_TEST(fake_login_disabled)
{
	static const struct fakeimap_rule rules[] = {{NULL, NULL}};
	struct fakeimap *server = fakeimap_start(
		"* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] ready", rules);
	struct imapc_params p = fake_params(server);
	struct mrerr err;
	char *transcript;

	ck_assert_ptr_null(imapc_connect(&p, "alice", &err));
	ck_assert_int_eq(err.scope, MRERR_CONFIG);
	ck_assert_msg(strstr(err.text, "(LOGINDISABLED)"), "%s", err.text);
	transcript = fakeimap_stop(&server);
	ck_assert(!sent_command(transcript, "LOGIN"));
	free(transcript);
}
END_TEST

START_TEST(fake_connection_refused)
{
	struct sockaddr_in addr = {.sin_family = AF_INET};
	socklen_t len = sizeof(addr);
	struct imapc_params p = {
		.host = "127.0.0.1",
		.tls = CFG_TLS_NONE,
		.admin_user = "repladmin",
		.password = "secret",
		.timeout = 5,
	};
	struct mrerr err;
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	/* A port that was free a moment ago and has no listener now. */
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
	p.port = ntohs(addr.sin_port);
	close(fd);

	ck_assert_ptr_null(imapc_connect(&p, "alice", &err));
	ck_assert_int_eq(err.scope, MRERR_CONNECTION);
	ck_assert_int_eq(err.retry, MRERR_RETRY_LATER);
	ck_assert_msg(strstr(err.text, "cannot connect to replica 127.0.0.1:"),
		      "%s", err.text);
}
END_TEST

/* Replies to SELECT and the failure class each must give. */
static const struct {
	const char *reply;
	enum mrerr_scope scope;
	enum mrerr_retry retry;
	const char *expect;
} select_failures[] = {
	{"$ NO [NONEXISTENT] Mailbox doesn't exist: INBOX", MRERR_FOLDER,
	 MRERR_RETRY_NEVER,
	 "SELECT INBOX on 127.0.0.1 failed: [NONEXISTENT] Mailbox doesn't "
	 "exist: INBOX"},
	{"$ NO [INUSE] Mailbox is locked", MRERR_FOLDER, MRERR_RETRY_LATER,
	 "[INUSE] Mailbox is locked"},
	{"$ NO Something unusual", MRERR_FOLDER, MRERR_RETRY_LATER,
	 "failed: Something unusual"},
	{"$ BAD Error in IMAP command SELECT: Invalid arguments.",
	 MRERR_FOLDER, MRERR_RETRY_NEVER,
	 "SELECT INBOX on 127.0.0.1 was rejected as invalid: BAD Error in IMAP "
	 "command SELECT: Invalid arguments."},
	{"* BYE Server shutting down\n!close", MRERR_CONNECTION,
	 MRERR_RETRY_LATER, "during SELECT INBOX"},
	{"* 1 EXISTS\n!close", MRERR_CONNECTION, MRERR_RETRY_LATER,
	 "during SELECT INBOX"},
	{"$ MAYBE Select completed", MRERR_CONNECTION, MRERR_RETRY_LATER,
	 "could not be parsed"},
};

START_TEST(fake_select_failure_classes)
{
	const struct fakeimap_rule rules[] = {
		{"AUTHENTICATE", FAKE_LOGIN_OK},
		/* The text the BAD case must not report. */
		{"LIST \"\" \"\"",
		 "* LIST () \"/\" \"\"\n$ OK previous-command-text"},
		{"SELECT", select_failures[_i].reply},
		{"LIST \"\" \"*\"", "* LIST () \"/\" INBOX\n$ OK List done"},
		{NULL, NULL},
	};
	struct fakeimap *server = fakeimap_start(FAKE_GREETING, rules);
	struct imapc *c = fake_connect(server);
	struct imapc_mailbox *list;
	struct imapc_status st;
	size_t count;
	struct mrerr err;
	bool connection = select_failures[_i].scope == MRERR_CONNECTION;

	ck_assert_int_eq(imapc_select(c, "INBOX", &st, &err), -1);
	ck_assert_int_eq(err.scope, select_failures[_i].scope);
	ck_assert_int_eq(err.retry, select_failures[_i].retry);
	ck_assert_msg(strstr(err.text, select_failures[_i].expect),
		      "'%s' lacks '%s'", err.text, select_failures[_i].expect);
	ck_assert_msg(strstr(err.text, "previous-command-text") == NULL, "%s",
		      err.text);
	ck_assert(c->dead == connection);
	ck_assert_ptr_null(c->selected);

	/* After a NO or BAD the session goes on; after a connection
	 * failure every command fails at once. */
	if (connection) {
		ck_assert_int_eq(imapc_list(c, false, &list, &count, &err), -1);
		ck_assert_int_eq(err.scope, MRERR_CONNECTION);
		ck_assert_int_eq(err.retry, MRERR_RETRY_NOW);
	} else {
		ck_assert_int_eq(imapc_list(c, false, &list, &count, &err), 0);
		ck_assert_uint_eq(count, 1);
		imapc_mailboxes_free(&list, count);
	}
	imapc_free(&c);
	free(fakeimap_stop(&server));
}
END_TEST

START_TEST(fake_drop_then_free_is_quick)
{
	static const struct fakeimap_rule rules[] = {
		{"AUTHENTICATE", FAKE_LOGIN_OK},
		{"LIST \"\" \"\"", FAKE_LIST_SEPARATOR},
		{"SELECT", "!close"},
		{NULL, NULL},
	};
	struct fakeimap *server = fakeimap_start(FAKE_GREETING, rules);
	struct imapc *c = fake_connect(server);
	struct imapc_status st;
	struct mrerr err;
	long long start;

	ck_assert_int_eq(imapc_select(c, "INBOX", &st, &err), -1);
	ck_assert_int_eq(err.scope, MRERR_CONNECTION);
	ck_assert_int_eq(err.retry, MRERR_RETRY_LATER);
	ck_assert(c->dead);
	ck_assert_ptr_null(c->imap->imap_stream);

	start = monotonic_ms();
	imapc_free(&c);
	ck_assert_int_lt(monotonic_ms() - start, 1000);
	free(fakeimap_stop(&server));
}
END_TEST

START_TEST(fake_timeout_is_connection_failure)
{
	static const struct fakeimap_rule rules[] = {
		{"AUTHENTICATE", FAKE_LOGIN_OK},
		{"LIST \"\" \"\"", FAKE_LIST_SEPARATOR},
		{"SELECT", "!hang"},
		{NULL, NULL},
	};
	struct fakeimap *server = fakeimap_start(FAKE_GREETING, rules);
	struct imapc_params p = fake_params(server);
	struct imapc_status st;
	struct mrerr err;
	struct imapc *c;
	long long start;

	p.timeout = 1;
	c = imapc_connect(&p, "alice", &err);
	ck_assert_msg(c != NULL, "%s", err.text);
	start = monotonic_ms();
	ck_assert_int_eq(imapc_select(c, "INBOX", &st, &err), -1);
	ck_assert_int_ge(monotonic_ms() - start, 900);
	ck_assert_int_lt(monotonic_ms() - start, 10000);
	ck_assert_int_eq(err.scope, MRERR_CONNECTION);
	ck_assert_msg(strstr(err.text, "timeout 1 s"), "%s", err.text);

	/* The peer is still connected but silent: no LOGOUT may wait. */
	start = monotonic_ms();
	imapc_free(&c);
	ck_assert_int_lt(monotonic_ms() - start, 500);
	free(fakeimap_stop(&server));
}
END_TEST

START_TEST(fake_select_status)
{
	static const struct fakeimap_rule rules[] = {
		{"AUTHENTICATE", FAKE_LOGIN_OK},
		{"LIST \"\" \"\"", FAKE_LIST_SEPARATOR},
		{"SELECT", FAKE_SELECT},
		{NULL, NULL},
	};
	struct fakeimap *server = fakeimap_start(FAKE_GREETING, rules);
	struct imapc *c = fake_connect(server);
	struct imapc_status st = select_ok(c, "INBOX");

	ck_assert_uint_eq(st.uidvalidity, 42);
	ck_assert_uint_eq(st.uidnext, 10);
	ck_assert_uint_eq(st.exists, 3);
	ck_assert(st.keywords_allowed);
	imapc_free(&c);
	free(fakeimap_stop(&server));
}
END_TEST

START_TEST(fake_keywords_not_permanent)
{
	static const struct fakeimap_rule rules[] = {
		{"AUTHENTICATE", FAKE_LOGIN_OK},
		{"LIST \"\" \"\"", FAKE_LIST_SEPARATOR},
		{"SELECT", "* 1 EXISTS\n"
			   "* OK [PERMANENTFLAGS (\\Seen \\Deleted Known)] "
			   "Limited\n"
			   "$ OK [READ-WRITE] Select completed"},
		{"UID STORE", "$ OK Store completed"},
		{NULL, NULL},
	};
	struct fakeimap *server = fakeimap_start(FAKE_GREETING, rules);
	struct imapc *c = fake_connect(server);
	struct imapc_status st = select_ok(c, "INBOX");
	struct flagset fs;
	struct mrerr err;
	char *transcript;

	ck_assert(!st.keywords_allowed);
	flagset_init(&fs);
	fs.sys = FLAG_SEEN;
	flagset_add_keyword(&fs, "$Forwarded");
	flagset_add_keyword(&fs, "Known");
	ck_assert_int_eq(imapc_store_flags(c, 5, &fs, &err), 0);
	imapc_free(&c);
	flagset_clear(&fs);

	transcript = fakeimap_stop(&server);
	ck_assert_msg(sent_command(transcript,
				   "UID STORE 5 FLAGS.SILENT (\\Seen Known)\n"),
		      "%s", transcript);
	ck_assert_msg(strstr(transcript, "$Forwarded") == NULL, "%s",
		      transcript);
	free(transcript);
}
END_TEST

START_TEST(fake_keyword_refused_retries)
{
	static const struct fakeimap_rule rules[] = {
		{"AUTHENTICATE", FAKE_LOGIN_OK},
		{"LIST \"\" \"\"", FAKE_LIST_SEPARATOR},
		{"SELECT", FAKE_SELECT},
		{"UID STORE 7 FLAGS.SILENT (\\Seen \\Flagged $",
		 "$ NO [CANNOT] Too many keywords"},
		{"UID STORE", "$ OK Store completed"},
		{NULL, NULL},
	};
	struct fakeimap *server = fakeimap_start(FAKE_GREETING, rules);
	struct imapc *c = fake_connect(server);
	struct flagset fs;
	struct mrerr err;
	char *transcript;

	select_ok(c, "INBOX");
	flagset_init(&fs);
	fs.sys = FLAG_SEEN | FLAG_FLAGGED;
	flagset_add_keyword(&fs, "$Forwarded");
	ck_assert_msg(imapc_store_flags(c, 7, &fs, &err) == 0, "%s", err.text);
	ck_assert(!c->dead);
	imapc_free(&c);
	flagset_clear(&fs);

	transcript = fakeimap_stop(&server);
	ck_assert_int_eq(count_commands(transcript, "UID STORE 7"), 2);
	ck_assert_msg(sent_command(transcript, "UID STORE 7 FLAGS.SILENT "
					       "(\\Seen \\Flagged)\n"),
		      "%s", transcript);
	free(transcript);
}
END_TEST

START_TEST(fake_expunge_sends_compact_sets)
{
	static const struct fakeimap_rule rules[] = {
		{"AUTHENTICATE", FAKE_LOGIN_OK},
		{"LIST \"\" \"\"", FAKE_LIST_SEPARATOR},
		{"SELECT", FAKE_SELECT},
		{"UID STORE", "$ OK Store completed"},
		{"UID EXPUNGE", "$ OK Expunge completed"},
		{NULL, NULL},
	};
	struct fakeimap *server = fakeimap_start(FAKE_GREETING, rules);
	struct imapc *c = fake_connect(server);
	const uint32_t uids[] = {9, 3, 4, 5, 1, 3, 0};
	uint32_t *many = xcalloc(2001, sizeof(*many));
	struct mrerr err;
	char *transcript;

	select_ok(c, "INBOX");
	ck_assert_int_eq(imapc_expunge_uids(c, uids, 7, &err), 0);
	/* 2001 separate UIDs take three commands of up to 1000 ranges. */
	for (uint32_t i = 0; i < 2001; i++)
		many[i] = 100 + 2 * i;
	ck_assert_int_eq(imapc_expunge_uids(c, many, 2001, &err), 0);
	imapc_free(&c);
	free(many);

	transcript = fakeimap_stop(&server);
	ck_assert_msg(sent_command(transcript, "UID STORE 1,3:5,9 "
					       "+FLAGS.SILENT (\\Deleted)\n"),
		      "%s", transcript);
	ck_assert(sent_command(transcript, "UID EXPUNGE 1,3:5,9\n"));
	ck_assert(!sent_command(transcript, "EXPUNGE"));
	ck_assert_int_eq(count_commands(transcript, "UID EXPUNGE"), 4);
	ck_assert(sent_command(transcript, "UID EXPUNGE 2100,2102"));
	free(transcript);
}
END_TEST

START_TEST(fake_create_exists_without_code)
{
	static const struct fakeimap_rule rules[] = {
		{"AUTHENTICATE", FAKE_LOGIN_OK},
		{"LIST \"\" \"\"", FAKE_LIST_SEPARATOR},
		{"CREATE X", "$ NO Mailbox exists already"},
		{"LIST \"\" \"X\"", "* LIST () \"/\" X\n$ OK List done"},
		{"CREATE Y", "$ NO Permission denied"},
		{"LIST \"\" \"Y\"", "$ OK List done"},
		{NULL, NULL},
	};
	struct fakeimap *server = fakeimap_start(FAKE_GREETING, rules);
	struct imapc *c = fake_connect(server);
	struct mrerr err;

	ck_assert_msg(imapc_create(c, "X", &err) == 0, "%s", err.text);
	ck_assert_int_eq(imapc_create(c, "Y", &err), -1);
	ck_assert_int_eq(err.scope, MRERR_FOLDER);
	ck_assert_msg(strstr(err.text, "CREATE Y on 127.0.0.1 failed: "
				       "Permission denied"),
		      "%s", err.text);
	imapc_free(&c);
	free(fakeimap_stop(&server));
}
END_TEST

START_TEST(fake_fetch_responses)
{
	static const struct fakeimap_rule rules[] = {
		{"AUTHENTICATE", FAKE_LOGIN_OK},
		{"LIST \"\" \"\"", FAKE_LIST_SEPARATOR},
		{"SELECT", FAKE_SELECT},
		{"UID FETCH 1:*",
		 "* 1 FETCH (UID 4 FLAGS (\\Seen) RFC822.SIZE 10 "
		 "INTERNALDATE \"01-Jan-2024 00:00:00 +0000\")\n"
		 /* an unsolicited flag change of another message */
		 "* 2 FETCH (FLAGS (\\Deleted))\n"
		 "* 3 FETCH (UID 2 FLAGS (\\Recent $Junk) RFC822.SIZE 20 "
		 "INTERNALDATE \"02-Jan-2024 10:00:00 -0100\")\n"
		 "$ OK Fetch completed"},
		{"UID FETCH 9 ", "$ NO [SERVERBUG] Internal error"},
		{NULL, NULL},
	};
	struct fakeimap *server = fakeimap_start(FAKE_GREETING, rules);
	struct imapc *c = fake_connect(server);
	struct imapc_msg *msgs;
	size_t count, len;
	struct mrerr err;
	char *data;

	select_ok(c, "INBOX");
	ck_assert_msg(imapc_fetch_all(c, 1, &msgs, &count, &err) == 0, "%s",
		      err.text);
	ck_assert_uint_eq(count, 2);
	ck_assert_uint_eq(msgs[0].uid, 2);
	ck_assert_uint_eq(msgs[0].size, 20);
	ck_assert_int_eq(msgs[0].internaldate, 1704193200);
	ck_assert_uint_eq(msgs[0].flags.sys, 0);
	ck_assert_uint_eq(msgs[0].flags.nkeywords, 1);
	ck_assert_str_eq(msgs[0].flags.keywords[0], "$Junk");
	ck_assert_uint_eq(msgs[1].uid, 4);
	ck_assert_uint_eq(msgs[1].flags.sys, FLAG_SEEN);
	ck_assert_int_eq(msgs[1].internaldate, 1704067200);
	imapc_msgs_free(&msgs, count);

	ck_assert_int_eq(imapc_fetch_body(c, 9, &data, &len, &err), -1);
	ck_assert_int_eq(err.scope, MRERR_MESSAGE);
	ck_assert_int_eq(err.retry, MRERR_RETRY_LATER);
	ck_assert_msg(strstr(err.text, "[SERVERBUG] Internal error"), "%s",
		      err.text);
	imapc_free(&c);
	free(fakeimap_stop(&server));
}
END_TEST

START_TEST(fake_delete_selected_without_unselect)
{
	static const struct fakeimap_rule rules[] = {
		{"AUTHENTICATE", "$ OK [CAPABILITY IMAP4rev1 UIDPLUS] Hi"},
		{"LIST \"\" \"\"", FAKE_LIST_SEPARATOR},
		{"SELECT", FAKE_SELECT},
		{"EXAMINE", "$ OK [READ-ONLY] Examine completed"},
		{"CLOSE", "$ OK Close completed"},
		{"DELETE", "$ OK Delete completed"},
		{NULL, NULL},
	};
	struct fakeimap *server = fakeimap_start(FAKE_GREETING, rules);
	struct imapc *c = fake_connect(server);
	struct mrerr err;
	char *transcript;

	select_ok(c, "Box");
	ck_assert_msg(imapc_delete(c, "Box", &err) == 0, "%s", err.text);
	ck_assert_ptr_null(c->selected);
	imapc_free(&c);

	/* CLOSE after EXAMINE expunges nothing (the mailbox is read-only). */
	transcript = fakeimap_stop(&server);
	ck_assert_msg(strstr(transcript,
			     "4 EXAMINE Box\n5 CLOSE\n6 DELETE Box\n"),
		      "%s", transcript);
	ck_assert(!sent_command(transcript, "UNSELECT"));
	free(transcript);
}
END_TEST

/* ------------------------------------------------------------------ */

static Suite *
imapc_suite(void)
{
	Suite *s = suite_create("imapc");
	TCase *tls = tcase_create("certificates");
	TCase *dove = tcase_create("dovecot");
	TCase *fake = tcase_create("fake");
	size_t n;

	tcase_add_unchecked_fixture(tls, certs_setup, NULL);
	n = sizeof(verify_cases) / sizeof(*verify_cases);
	tcase_add_loop_test(tls, verify_certificate_cases, 0, (int)n);
	tcase_add_test(tls, verify_failure_names_fix);
	suite_add_tcase(s, tls);

	tcase_add_unchecked_fixture(dove, dovecot_setup, dovecot_teardown);
	tcase_set_timeout(dove, SLOW_TEST_TIMEOUT);
	n = sizeof(tls_modes) / sizeof(*tls_modes);
	tcase_add_loop_test(dove, connect_each_tls_mode, 0, (int)n);
	tcase_add_test(dove, plain_connect_to_imaps_port);
	tcase_add_loop_test(dove, wrong_ca_fails_before_login, 0, 2);
	tcase_add_test(dove, wrong_fingerprint_fails);
	tcase_add_test(dove, wrong_password_is_config_error);
	tcase_add_test(dove, unknown_user_is_rejected);
	tcase_add_test(dove, create_and_list_mailboxes);
	tcase_add_test(dove, delete_mailboxes);
	tcase_add_test(dove, subscribe_and_lsub);
	tcase_add_test(dove, select_reports_status);
	tcase_add_test(dove, fetch_all_empty_mailbox);
	tcase_add_test(dove, fetch_all_fields_and_filter);
	tcase_add_test(dove, store_flags_and_keywords);
	tcase_add_test(dove, expunge_uids_exactly);
	tcase_add_test(dove, fetch_body_exact_bytes);
	tcase_add_test(dove, commands_need_selected_mailbox);
	suite_add_tcase(s, dove);

	tcase_set_timeout(fake, SLOW_TEST_TIMEOUT);
	tcase_add_test(fake, fake_session_capabilities);
	tcase_add_test(fake, fake_login_without_auth_plain);
	tcase_add_test(fake, fake_login_rejected);
	tcase_add_test(fake, fake_login_unavailable_is_temporary);
	tcase_add_test(fake, fake_no_uidplus);
	tcase_add_test(fake, fake_no_starttls);
	tcase_add_test(fake, fake_login_disabled);
	tcase_add_test(fake, fake_connection_refused);
	n = sizeof(select_failures) / sizeof(*select_failures);
	tcase_add_loop_test(fake, fake_select_failure_classes, 0, (int)n);
	tcase_add_test(fake, fake_drop_then_free_is_quick);
	tcase_add_test(fake, fake_timeout_is_connection_failure);
	tcase_add_test(fake, fake_select_status);
	tcase_add_test(fake, fake_keywords_not_permanent);
	tcase_add_test(fake, fake_keyword_refused_retries);
	tcase_add_test(fake, fake_expunge_sends_compact_sets);
	tcase_add_test(fake, fake_create_exists_without_code);
	tcase_add_test(fake, fake_fetch_responses);
	tcase_add_test(fake, fake_delete_selected_without_unselect);
	suite_add_tcase(s, fake);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(imapc_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	if (certdir != NULL)
		tu_rmrf(certdir);
	free(certdir);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
