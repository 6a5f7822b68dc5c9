/* Tests of imapc_append_batch against a private Dovecot and against a
 * scripted fake IMAP server for replies Dovecot never sends.
 *
 * imapc_connect lives in another source file, so the tests log in with
 * libetpan directly and fill struct imapc by hand. */
#include <config.h>
#include "imapc_private.h"
#include "flags.h"
#include "mrerr.h"
#include "testutil.h"
#include "util.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TEST_USER "alice"
#define CHUNK (64 * 1024)

static struct tu_dovecot *dovecot;
static char *workdir; /* message files of every test */

static void
dovecot_setup(void)
{
	signal(SIGPIPE, SIG_IGN);
	dovecot = tu_dovecot_start();
	workdir = tu_tempdir("append");
}

static void
dovecot_teardown(void)
{
	tu_dovecot_stop(&dovecot);
	tu_rmrf(workdir);
	free(workdir);
	workdir = NULL;
}

/* The fake server needs only the work directory for its transcripts. */
static void
workdir_setup(void)
{
	signal(SIGPIPE, SIG_IGN);
	workdir = tu_tempdir("append-fake");
}

static void
workdir_teardown(void)
{
	tu_rmrf(workdir);
	free(workdir);
	workdir = NULL;
}

/* ---- sessions ---------------------------------------------------------- */

static bool
capability_has(struct mailimap_capability_data *caps, const char *name)
{
	for (clistiter *cur = clist_begin(caps->cap_list); cur != NULL;
	     cur = clist_next(cur)) {
		struct mailimap_capability *cap = clist_content(cur);

		if (cap->cap_type == MAILIMAP_CAPABILITY_NAME &&
		    strcasecmp(cap->cap_data.cap_name, name) == 0)
			return true;
	}
	return false;
}

static uint64_t
capability_appendlimit(struct mailimap_capability_data *caps)
{
	for (clistiter *cur = clist_begin(caps->cap_list); cur != NULL;
	     cur = clist_next(cur)) {
		struct mailimap_capability *cap = clist_content(cur);

		if (cap->cap_type == MAILIMAP_CAPABILITY_NAME &&
		    strncasecmp(cap->cap_data.cap_name, "APPENDLIMIT=", 12) ==
			    0)
			return strtoull(cap->cap_data.cap_name + 12, NULL, 10);
	}
	return 0;
}

static struct imapc *
session_connect(unsigned port)
{
	struct imapc *c = xcalloc(1, sizeof(*c));
	int r;

	c->imap = mailimap_new(0, NULL);
	mailimap_set_timeout(c->imap, 60);
	r = mailimap_socket_connect(c->imap, "127.0.0.1", (uint16_t)port);
	ck_assert_msg(r == MAILIMAP_NO_ERROR ||
			      r == MAILIMAP_NO_ERROR_AUTHENTICATED ||
			      r == MAILIMAP_NO_ERROR_NON_AUTHENTICATED,
		      "connecting to 127.0.0.1:%u failed: libetpan error %d",
		      port, r);
	c->host = xstrdup("127.0.0.1");
	c->user = xstrdup(TEST_USER);
	c->separator = '.';
	return c;
}

/* Log in to the test Dovecot as the administrator on behalf of
 * TEST_USER and take the append capabilities from CAPABILITY. */
static struct imapc *
session_open(void)
{
	struct imapc *c = session_connect(dovecot->imap_port);
	struct mailimap_capability_data *caps = NULL;
	char *login = xasprintf("%s*%s", TEST_USER, dovecot->admin);
	int r;

	r = mailimap_login(c->imap, login, dovecot->admin_password);
	ck_assert_msg(r == MAILIMAP_NO_ERROR, "LOGIN %s failed: %d", login, r);
	r = mailimap_capability(c->imap, &caps);
	ck_assert_msg(r == MAILIMAP_NO_ERROR, "CAPABILITY failed: %d", r);
	ck_assert_msg(capability_has(caps, "UIDPLUS"), "no UIDPLUS");

	c->literal_plus = capability_has(caps, "LITERAL+");
	c->literal_minus = capability_has(caps, "LITERAL-");
	c->multiappend = capability_has(caps, "MULTIAPPEND");
	c->appendlimit = capability_appendlimit(caps);
	mailimap_capability_data_free(caps);
	free(login);
	return c;
}

static void
session_close(struct imapc **session)
{
	struct imapc *c = *session;

	/* mailimap_free sends LOGOUT only while the stream is open. */
	mailimap_free(c->imap);
	free(c->host);
	free(c->user);
	free(c->selected);
	free(c);
	*session = NULL;
}

static void
mailbox_create(struct imapc *c, const char *name)
{
	int r = mailimap_create(c->imap, name);

	ck_assert_msg(r == MAILIMAP_NO_ERROR, "CREATE %s failed: %d (%s)", name,
		      r, c->imap->imap_response);
}

/* SELECT name; returns its message count and UIDVALIDITY. */
static uint32_t
mailbox_select(struct imapc *c, const char *name, uint32_t *uidvalidity_r)
{
	int r = mailimap_select(c->imap, name);

	ck_assert_msg(r == MAILIMAP_NO_ERROR, "SELECT %s failed: %d", name, r);
	if (uidvalidity_r != NULL)
		*uidvalidity_r = c->imap->imap_selection_info->sel_uidvalidity;
	return c->imap->imap_selection_info->sel_exists;
}

/* ---- messages on disk -------------------------------------------------- */

/* A batch of messages written to files, with the bytes of each file. */
struct batch {
	size_t count;
	struct imapc_append *msgs;
	struct flagset *flags;
	char **data;
	size_t *len;
};

static struct batch *
batch_new(const char *tag, size_t count)
{
	struct batch *b = xcalloc(1, sizeof(*b));

	b->count = count;
	b->msgs = xcalloc(count, sizeof(*b->msgs));
	b->flags = xcalloc(count, sizeof(*b->flags));
	b->data = xcalloc(count, sizeof(*b->data));
	b->len = xcalloc(count, sizeof(*b->len));
	for (size_t i = 0; i < count; i++) {
		flagset_init(&b->flags[i]);
		b->msgs[i].path = xasprintf("%s/%s/%zu", workdir, tag, i);
		b->msgs[i].flags = &b->flags[i];
		b->msgs[i].internaldate = 1700000000 + (time_t)i * 3607;
	}
	return b;
}

/* Write message i of the batch with data. */
static void
batch_set(struct batch *b, size_t i, const void *data, size_t len)
{
	free(b->data[i]);
	b->data[i] = xmalloc(len + 1);
	memcpy(b->data[i], data, len);
	b->len[i] = len;
	tu_write_file(b->msgs[i].path, data, len, 0644);
}

/* A plain message of about size bytes with LF line ends. */
static void
batch_set_text(struct batch *b, size_t i, size_t size)
{
	char *text = xmalloc(size + 200);
	int n = snprintf(text, 200,
			 "From: sender@example.org\nTo: alice@example.org\n"
			 "Subject: message %zu\nMessage-ID: <%zu@test>\n\n",
			 i, i);
	size_t len = (size_t)n;

	while (len < size) {
		len += (size_t)sprintf(text + len,
				       "line %zu of message %zu, "
				       "some words to fill it\n",
				       len, i);
	}
	batch_set(b, i, text, len);
	free(text);
}

static void
batch_free(struct batch **batch)
{
	struct batch *b = *batch;

	for (size_t i = 0; i < b->count; i++) {
		free((char *)b->msgs[i].path);
		flagset_clear(&b->flags[i]);
		free(b->data[i]);
	}
	free(b->msgs);
	free(b->flags);
	free(b->data);
	free(b->len);
	free(b);
	*batch = NULL;
}

/* Reference conversion to CRLF, written independently of the one under
 * test: bare LF and bare CR become CRLF. */
static char *
to_crlf(const char *data, size_t len, size_t *len_r)
{
	char *out = xmalloc(2 * len + 1);
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		if (data[i] == '\r' || data[i] == '\n') {
			out[n++] = '\r';
			out[n++] = '\n';
			if (data[i] == '\r' && i + 1 < len &&
			    data[i + 1] == '\n')
				i++;
		} else {
			out[n++] = data[i];
		}
	}
	*len_r = n;
	return out;
}

/* ---- fetching back ----------------------------------------------------- */

struct fetched {
	char *body;
	size_t len;
	uint32_t size; /* RFC822.SIZE */
	struct flagset flags;
	time_t internaldate;
	bool found;
};

static void
fetched_add_flags(struct fetched *f, struct mailimap_msg_att_dynamic *dyn)
{
	static const char *const names[] = {
		[MAILIMAP_FLAG_ANSWERED] = "\\Answered",
		[MAILIMAP_FLAG_FLAGGED] = "\\Flagged",
		[MAILIMAP_FLAG_DELETED] = "\\Deleted",
		[MAILIMAP_FLAG_SEEN] = "\\Seen",
		[MAILIMAP_FLAG_DRAFT] = "\\Draft",
	};

	if (dyn->att_list == NULL) /* FLAGS () */
		return;
	for (clistiter *cur = clist_begin(dyn->att_list); cur != NULL;
	     cur = clist_next(cur)) {
		struct mailimap_flag_fetch *ff = clist_content(cur);
		struct mailimap_flag *flag = ff->fl_flag;

		if (ff->fl_type == MAILIMAP_FLAG_FETCH_RECENT)
			continue;
		if (flag->fl_type == MAILIMAP_FLAG_KEYWORD)
			flagset_add_keyword(&f->flags,
					    flag->fl_data.fl_keyword);
		else if (flag->fl_type <= MAILIMAP_FLAG_DRAFT)
			flagset_add_imap(&f->flags, names[flag->fl_type]);
	}
}

static time_t
date_time_to_utc(const struct mailimap_date_time *dt)
{
	struct tm tm = {0};
	int zone = dt->dt_zone < 0 ? -dt->dt_zone : dt->dt_zone;
	int offset = (zone / 100) * 3600 + (zone % 100) * 60;

	tm.tm_year = dt->dt_year - 1900;
	tm.tm_mon = dt->dt_month - 1;
	tm.tm_mday = dt->dt_day;
	tm.tm_hour = dt->dt_hour;
	tm.tm_min = dt->dt_min;
	tm.tm_sec = dt->dt_sec;
	return timegm(&tm) - (dt->dt_zone < 0 ? -offset : offset);
}

static void
fetched_add_static(struct fetched *f, struct mailimap_msg_att_static *st)
{
	switch (st->att_type) {
	case MAILIMAP_MSG_ATT_BODY_SECTION:
		f->len = st->att_data.att_body_section->sec_length;
		f->body = xmalloc(f->len + 1);
		memcpy(f->body, st->att_data.att_body_section->sec_body_part,
		       f->len);
		break;
	case MAILIMAP_MSG_ATT_RFC822_SIZE:
		f->size = st->att_data.att_rfc822_size;
		break;
	case MAILIMAP_MSG_ATT_INTERNALDATE:
		f->internaldate =
			date_time_to_utc(st->att_data.att_internal_date);
		break;
	default:
		break;
	}
}

/* UID FETCH uid (BODY.PEEK[] RFC822.SIZE FLAGS INTERNALDATE) in the
 * selected mailbox. */
static void
fetch_message(struct imapc *c, uint32_t uid, struct fetched *f)
{
	struct mailimap_fetch_type *type =
		mailimap_fetch_type_new_fetch_att_list_empty();
	struct mailimap_set *set = mailimap_set_new_single(uid);
	clist *result = NULL;
	int r;

	memset(f, 0, sizeof(*f));
	flagset_init(&f->flags);
	mailimap_fetch_type_new_fetch_att_list_add(
		type, mailimap_fetch_att_new_body_peek_section(
			      mailimap_section_new(NULL)));
	mailimap_fetch_type_new_fetch_att_list_add(
		type, mailimap_fetch_att_new_rfc822_size());
	mailimap_fetch_type_new_fetch_att_list_add(
		type, mailimap_fetch_att_new_flags());
	mailimap_fetch_type_new_fetch_att_list_add(
		type, mailimap_fetch_att_new_internaldate());
	r = mailimap_uid_fetch(c->imap, set, type, &result);
	ck_assert_msg(r == MAILIMAP_NO_ERROR, "UID FETCH %u failed: %d", uid,
		      r);

	for (clistiter *m = clist_begin(result); m != NULL; m = clist_next(m)) {
		struct mailimap_msg_att *att = clist_content(m);

		f->found = true;
		for (clistiter *cur = clist_begin(att->att_list); cur != NULL;
		     cur = clist_next(cur)) {
			struct mailimap_msg_att_item *item = clist_content(cur);

			if (item->att_type == MAILIMAP_MSG_ATT_ITEM_DYNAMIC)
				fetched_add_flags(f, item->att_data.att_dyn);
			else if (item->att_type == MAILIMAP_MSG_ATT_ITEM_STATIC)
				fetched_add_static(f,
						   item->att_data.att_static);
		}
	}
	mailimap_fetch_list_free(result);
	mailimap_set_free(set);
	mailimap_fetch_type_free(type);
}

static void
fetched_clear(struct fetched *f)
{
	free(f->body);
	flagset_clear(&f->flags);
}

/* Check that message i of the batch is stored with its bytes in CRLF
 * form, its flags and its INTERNALDATE. The mailbox must be selected. */
static void
check_stored(struct imapc *c, const struct batch *b, size_t i,
	     const struct flagset *flags)
{
	struct fetched f;
	size_t expected_len;
	char *expected = to_crlf(b->data[i], b->len[i], &expected_len);
	char *want = flagset_format(flags), *got;

	ck_assert_msg(b->msgs[i].uid != 0, "message %zu has no UID: %s", i,
		      b->msgs[i].error.text);
	fetch_message(c, b->msgs[i].uid, &f);
	got = flagset_format(&f.flags);
	ck_assert_msg(f.found, "UID %u of message %zu not found",
		      b->msgs[i].uid, i);
	ck_assert_uint_eq(f.len, expected_len);
	ck_assert_uint_eq(f.size, expected_len);
	ck_assert_msg(memcmp(f.body, expected, expected_len) == 0,
		      "message %zu: stored bytes differ", i);
	ck_assert_str_eq(got, want);
	ck_assert_int_eq((long long)f.internaldate,
			 (long long)b->msgs[i].internaldate);
	fetched_clear(&f);
	free(expected);
	free(want);
	free(got);
}

static void
check_uids_ascending(const struct batch *b)
{
	uint32_t last = 0;

	for (size_t i = 0; i < b->count; i++) {
		if (b->msgs[i].uid == 0)
			continue;
		ck_assert_msg(b->msgs[i].uid > last,
			      "UID %u of message %zu not above %u",
			      b->msgs[i].uid, i, last);
		last = b->msgs[i].uid;
	}
}

static size_t
count_stored(const struct batch *b)
{
	size_t n = 0;

	for (size_t i = 0; i < b->count; i++) {
		if (b->msgs[i].uid != 0)
			n++;
	}
	return n;
}

/* Append b to a new mailbox and check that every message got a UID. */
static uint32_t
append_all(struct imapc *c, const char *mailbox, struct batch *b)
{
	struct mrerr err;
	uint32_t uidvalidity = 0;
	int r;

	r = imapc_append_batch(c, mailbox, b->msgs, b->count, &uidvalidity,
			       &err);
	ck_assert_msg(r == 0, "append to %s failed: %s", mailbox, err.text);
	ck_assert_uint_ne(uidvalidity, 0);
	for (size_t i = 0; i < b->count; i++)
		ck_assert_msg(b->msgs[i].uid != 0, "message %zu: %s", i,
			      b->msgs[i].error.text);
	check_uids_ascending(b);
	return uidvalidity;
}

/* ---- tests against Dovecot --------------------------------------------- */

START_TEST(batch_of_50_lands)
{
	struct imapc *c = session_open();
	struct batch *b = batch_new("batch50", 50);
	uint32_t uidvalidity, selected_uidvalidity;

	ck_assert(c->multiappend);
	ck_assert(c->literal_plus);
	for (size_t i = 0; i < b->count; i++) {
		batch_set_text(b, i, 500 + i * 97);
		b->flags[i].sys = (unsigned)i & 0x1f;
		if (i % 3 == 0)
			flagset_add_keyword(&b->flags[i], "$Forwarded");
		if (i % 4 == 0)
			flagset_add_keyword(&b->flags[i], "Project_X");
	}
	mailbox_create(c, "Batch50");
	uidvalidity = append_all(c, "Batch50", b);

	ck_assert_uint_eq(mailbox_select(c, "Batch50", &selected_uidvalidity),
			  50);
	ck_assert_uint_eq(uidvalidity, selected_uidvalidity);
	for (size_t i = 0; i < b->count; i++)
		check_stored(c, b, i, &b->flags[i]);
	batch_free(&b);
	session_close(&c);
}
END_TEST

/* Line-end cases, including a CRLF and a bare CR split across the 64 KiB
 * read chunks. */
static const struct {
	const char *name;
	const char *head;
	size_t fill; /* bytes of 'x' after head */
	const char *tail;
} line_end_cases[] = {
	{"bare LF", "Subject: lf\n\nline one\nline two\n", 0, ""},
	{"CRLF kept", "Subject: crlf\r\n\r\nline\r\n", 0, ""},
	{"bare CR", "Subject: cr\r\rline\r", 0, ""},
	{"mixed", "Subject: mix\n\r\nA\rB\r\nC\nD\r\r\nE\n\r", 0, ""},
	{"no final newline", "Subject: end\n\nlast", 0, ""},
	{"CRLF across chunks", "Subject: split\n\n", CHUNK - 16 - 1,
	 "\r\ntail\n"},
	{"CR at chunk end", "Subject: split\n\n", CHUNK - 16 - 1, "\rY\n"},
	{"LF at chunk start", "Subject: split\n\n", CHUNK - 16, "\nZ\n"},
};

START_TEST(line_ends_converted)
{
	struct imapc *c = session_open();
	size_t n = sizeof(line_end_cases) / sizeof(*line_end_cases);
	struct batch *b = batch_new("lineends", n);

	for (size_t i = 0; i < n; i++) {
		size_t head = strlen(line_end_cases[i].head);
		size_t fill = line_end_cases[i].fill;
		size_t tail = strlen(line_end_cases[i].tail);
		char *data = xmalloc(head + fill + tail);

		memcpy(data, line_end_cases[i].head, head);
		memset(data + head, 'x', fill);
		memcpy(data + head + fill, line_end_cases[i].tail, tail);
		batch_set(b, i, data, head + fill + tail);
		free(data);
	}
	mailbox_create(c, "LineEnds");
	append_all(c, "LineEnds", b);
	mailbox_select(c, "LineEnds", NULL);
	for (size_t i = 0; i < n; i++)
		check_stored(c, b, i, &b->flags[i]);
	batch_free(&b);
	session_close(&c);
}
END_TEST

/* Dovecot stores a NUL but returns it as 0x80 in BODY[]. */
START_TEST(nul_byte_stored)
{
	static const char data[] = "Subject: nul\n\nbefore\0after\n";
	struct imapc *c = session_open();
	struct batch *b = batch_new("nul", 1);
	struct fetched f;
	size_t len;
	char *expected;

	batch_set(b, 0, data, sizeof(data) - 1);
	mailbox_create(c, "Nul");
	append_all(c, "Nul", b);
	mailbox_select(c, "Nul", NULL);
	fetch_message(c, b->msgs[0].uid, &f);

	expected = to_crlf(data, sizeof(data) - 1, &len);
	expected[strlen("Subject: nul\r\n\r\nbefore")] = (char)0x80;
	ck_assert_uint_eq(f.size, len);
	ck_assert_uint_eq(f.len, len);
	ck_assert_msg(memcmp(f.body, expected, len) == 0, "bytes differ");
	fetched_clear(&f);
	free(expected);
	batch_free(&b);
	session_close(&c);
}
END_TEST

START_TEST(long_line_and_8bit_header_stored)
{
	struct imapc *c = session_open();
	struct batch *b = batch_new("odd", 2);
	static const char latin1[] = "Subject: Gr\xfc\xdf"
				     "e aus K\xf6ln\nFrom: a@example.org\n\n"
				     "Body \xe4\xf6\xfc\n";
	size_t line = 20000;
	char *data = xmalloc(line + 64);
	int head = sprintf(data, "Subject: long line\n\n");

	memset(data + head, 'L', line);
	memcpy(data + head + line, "\nend\n", 5);
	batch_set(b, 0, data, (size_t)head + line + 5);
	batch_set(b, 1, latin1, sizeof(latin1) - 1);
	free(data);

	mailbox_create(c, "Odd");
	append_all(c, "Odd", b);
	mailbox_select(c, "Odd", NULL);
	check_stored(c, b, 0, &b->flags[0]);
	check_stored(c, b, 1, &b->flags[1]);
	batch_free(&b);
	session_close(&c);
}
END_TEST

/* Append a batch of 50 with an empty file at index 25 and check that only
 * that message is rejected, with Dovecot's text. */
static void
check_zero_byte_isolated(struct imapc *c, const char *mailbox)
{
	struct batch *b = batch_new(mailbox, 50);
	struct mrerr err;
	uint32_t uidvalidity = 0;

	for (size_t i = 0; i < b->count; i++)
		batch_set_text(b, i, 300 + i);
	batch_set(b, 25, "", 0);
	mailbox_create(c, mailbox);

	ck_assert_int_eq(imapc_append_batch(c, mailbox, b->msgs, b->count,
					    &uidvalidity, &err),
			 0);
	ck_assert_int_eq(err.scope, MRERR_NONE);
	ck_assert_uint_ne(uidvalidity, 0);
	ck_assert_uint_eq(b->msgs[25].uid, 0);
	ck_assert_int_eq(b->msgs[25].error.scope, MRERR_MESSAGE);
	ck_assert_ptr_nonnull(strstr(b->msgs[25].error.text, "zero byte"));
	ck_assert_uint_eq(count_stored(b), 49);
	check_uids_ascending(b);
	ck_assert_uint_eq(mailbox_select(c, mailbox, NULL), 49);
	check_stored(c, b, 24, &b->flags[24]);
	check_stored(c, b, 26, &b->flags[26]);
	batch_free(&b);
}

START_TEST(zero_byte_message_isolated)
{
	struct imapc *c = session_open();

	check_zero_byte_isolated(c, "ZeroByte");
	session_close(&c);
}
END_TEST

static void
check_missing_mailbox(struct imapc *c, const char *mailbox)
{
	struct batch *b = batch_new(mailbox, 3);
	struct mrerr err;
	uint32_t uidvalidity = 0;

	for (size_t i = 0; i < b->count; i++)
		batch_set_text(b, i, 400);
	ck_assert_int_eq(imapc_append_batch(c, mailbox, b->msgs, b->count,
					    &uidvalidity, &err),
			 -1);
	ck_assert_int_eq(err.scope, MRERR_FOLDER);
	ck_assert_ptr_nonnull(strstr(err.text, "TRYCREATE"));
	ck_assert_ptr_nonnull(strstr(err.text, mailbox));
	ck_assert_uint_eq(count_stored(b), 0);
	ck_assert(!c->dead);
	batch_free(&b);
}

START_TEST(missing_mailbox_is_folder_error)
{
	struct imapc *c = session_open();

	check_missing_mailbox(c, "NoSuchBox");
	session_close(&c);
}
END_TEST

START_TEST(vanished_file_skipped)
{
	struct imapc *c = session_open();
	struct batch *b = batch_new("vanished", 5);
	struct mrerr err;
	uint32_t uidvalidity;

	for (size_t i = 0; i < b->count; i++)
		batch_set_text(b, i, 700);
	unlink(b->msgs[2].path);
	mailbox_create(c, "Vanished");

	ck_assert_int_eq(imapc_append_batch(c, "Vanished", b->msgs, b->count,
					    &uidvalidity, &err),
			 0);
	ck_assert_uint_eq(b->msgs[2].uid, 0);
	ck_assert_int_eq(b->msgs[2].error.scope, MRERR_MESSAGE);
	ck_assert_ptr_nonnull(strstr(b->msgs[2].error.text, "vanished"));
	ck_assert_ptr_nonnull(strstr(b->msgs[2].error.text, b->msgs[2].path));
	ck_assert_uint_eq(count_stored(b), 4);
	ck_assert_uint_eq(mailbox_select(c, "Vanished", NULL), 4);
	check_stored(c, b, 3, &b->flags[3]);
	batch_free(&b);
	session_close(&c);
}
END_TEST

/* The limit applies to the CRLF size: 990 bytes in 33 LF lines are 1023
 * bytes on the wire. */
START_TEST(appendlimit_exceeded_skipped)
{
	struct imapc *c = session_open();
	struct batch *b = batch_new("limit", 4);
	char lines[990];
	struct mrerr err;
	uint32_t uidvalidity;

	for (size_t i = 0; i < sizeof(lines); i++)
		lines[i] = i % 30 == 29 ? '\n' : 'a';
	batch_set_text(b, 0, 500);
	batch_set(b, 1, lines, sizeof(lines));
	batch_set_text(b, 2, 5000);
	batch_set_text(b, 3, 900);
	c->appendlimit = 1000;
	mailbox_create(c, "Limit");

	ck_assert_int_eq(imapc_append_batch(c, "Limit", b->msgs, b->count,
					    &uidvalidity, &err),
			 0);
	ck_assert_uint_eq(b->msgs[1].uid, 0);
	ck_assert_int_eq(b->msgs[1].error.scope, MRERR_MESSAGE);
	ck_assert_str_eq(b->msgs[1].error.text,
			 "message of 1023 bytes exceeds the replica's "
			 "APPENDLIMIT of 1000 bytes");
	ck_assert_uint_eq(b->msgs[2].uid, 0);
	ck_assert_int_eq(b->msgs[2].error.scope, MRERR_MESSAGE);
	ck_assert_uint_ne(b->msgs[0].uid, 0);
	ck_assert_uint_ne(b->msgs[3].uid, 0);
	ck_assert_uint_eq(mailbox_select(c, "Limit", NULL), 2);
	batch_free(&b);
	session_close(&c);
}
END_TEST

/* Without LITERAL+ every literal waits for the continuation request, and
 * a rejection arrives instead of it. */
START_TEST(synchronising_literals_work)
{
	struct imapc *c = session_open();
	struct batch *b = batch_new("sync", 6);

	c->literal_plus = false;
	c->literal_minus = false;
	for (size_t i = 0; i < b->count; i++)
		batch_set_text(b, i, i == 3 ? 300000 : 800 + i);
	b->flags[1].sys = FLAG_SEEN | FLAG_FLAGGED;
	mailbox_create(c, "Sync");
	append_all(c, "Sync", b);
	ck_assert_uint_eq(mailbox_select(c, "Sync", NULL), 6);
	for (size_t i = 0; i < b->count; i++)
		check_stored(c, b, i, &b->flags[i]);
	check_zero_byte_isolated(c, "SyncZero");
	check_missing_mailbox(c, "SyncMissing");
	batch_free(&b);
	session_close(&c);
}
END_TEST

START_TEST(literal_minus_mixes_literals)
{
	struct imapc *c = session_open();
	struct batch *b = batch_new("minus", 6);

	c->literal_plus = false;
	c->literal_minus = true;
	for (size_t i = 0; i < b->count; i++)
		batch_set_text(b, i, i % 2 == 0 ? 1000 : 9000);
	mailbox_create(c, "Minus");
	append_all(c, "Minus", b);
	mailbox_select(c, "Minus", NULL);
	for (size_t i = 0; i < b->count; i++)
		check_stored(c, b, i, &b->flags[i]);
	check_zero_byte_isolated(c, "MinusZero");
	batch_free(&b);
	session_close(&c);
}
END_TEST

START_TEST(without_multiappend_one_per_message)
{
	struct imapc *c = session_open();
	struct batch *b = batch_new("single", 10);
	struct mrerr err;
	uint32_t uidvalidity, selected_uidvalidity;
	int tag_before;

	c->multiappend = false;
	for (size_t i = 0; i < b->count; i++)
		batch_set_text(b, i, 1200);
	batch_set(b, 4, "", 0);
	mailbox_create(c, "Single");
	tag_before = c->imap->imap_tag;

	ck_assert_int_eq(imapc_append_batch(c, "Single", b->msgs, b->count,
					    &uidvalidity, &err),
			 0);
	ck_assert_int_eq(c->imap->imap_tag - tag_before, 10);
	ck_assert_uint_eq(count_stored(b), 9);
	ck_assert_int_eq(b->msgs[4].error.scope, MRERR_MESSAGE);
	check_uids_ascending(b);
	ck_assert_uint_eq(mailbox_select(c, "Single", &selected_uidvalidity),
			  9);
	ck_assert_uint_eq(uidvalidity, selected_uidvalidity);
	check_stored(c, b, 9, &b->flags[9]);
	batch_free(&b);
	session_close(&c);
}
END_TEST

/* Dovecot rejects keywords longer than 50 characters with NO [CANNOT]:
 * the message is stored with its system flags. */
START_TEST(rejected_keyword_retried_without)
{
	struct imapc *c = session_open();
	struct batch *b = batch_new("kwlong", 3);
	struct flagset system_only;
	char keyword[61];

	memset(keyword, 'k', sizeof(keyword) - 1);
	keyword[sizeof(keyword) - 1] = '\0';
	for (size_t i = 0; i < b->count; i++) {
		batch_set_text(b, i, 600);
		b->flags[i].sys = FLAG_SEEN;
		flagset_add_keyword(&b->flags[i], "Short");
	}
	flagset_add_keyword(&b->flags[1], keyword);
	flagset_init(&system_only);
	system_only.sys = FLAG_SEEN;
	mailbox_create(c, "KwLong");

	append_all(c, "KwLong", b);
	ck_assert_int_eq(b->msgs[1].error.scope, MRERR_NONE);
	mailbox_select(c, "KwLong", NULL);
	check_stored(c, b, 0, &b->flags[0]);
	check_stored(c, b, 1, &system_only);
	check_stored(c, b, 2, &b->flags[2]);
	batch_free(&b);
	session_close(&c);
}
END_TEST

START_TEST(invalid_keywords_dropped)
{
	struct imapc *c = session_open();
	struct batch *b = batch_new("kwbad", 1);
	struct flagset kept;

	batch_set_text(b, 0, 600);
	b->flags[0].sys = FLAG_ANSWERED | FLAG_DRAFT;
	flagset_add_keyword(&b->flags[0], "good_one");
	flagset_add_keyword(&b->flags[0], "two words");
	flagset_add_keyword(&b->flags[0], "paren(");
	flagset_add_keyword(&b->flags[0], "quote\"");
	flagset_add_keyword(&b->flags[0], "umlaut\xc3\xa4");
	flagset_add_keyword(&b->flags[0], "\\Recent");
	flagset_init(&kept);
	kept.sys = FLAG_ANSWERED | FLAG_DRAFT;
	flagset_add_keyword(&kept, "good_one");
	mailbox_create(c, "KwBad");

	append_all(c, "KwBad", b);
	mailbox_select(c, "KwBad", NULL);
	check_stored(c, b, 0, &kept);
	flagset_clear(&kept);
	batch_free(&b);
	session_close(&c);
}
END_TEST

/* A wrong announced size stands for a file that changed between the
 * count and the send: the connection is dropped mid-literal and the
 * replica keeps nothing of the batch. */
static const struct {
	const char *name;
	int delta;
} size_change_cases[] = {
	{"file grew", -7},
	{"file shrank", +7},
};

START_TEST(changed_size_aborts_connection)
{
	struct imapc *c = session_open();
	struct batch *b = batch_new("resize", 3);
	char mailbox[32];
	struct mrerr err;
	uint32_t uidvalidity;
	size_t len;

	snprintf(mailbox, sizeof(mailbox), "Resize%d", _i);
	for (size_t i = 0; i < b->count; i++)
		batch_set_text(b, i, 3000);
	free(to_crlf(b->data[1], b->len[1], &len));
	b->msgs[1].crlf_size = len + (size_t)size_change_cases[_i].delta;
	mailbox_create(c, mailbox);

	ck_assert_int_eq(imapc_append_batch(c, mailbox, b->msgs, b->count,
					    &uidvalidity, &err),
			 -1);
	ck_assert_int_eq(err.scope, MRERR_CONNECTION);
	ck_assert_int_eq(err.retry, MRERR_RETRY_NOW);
	ck_assert_ptr_nonnull(strstr(err.text, "changed size"));
	ck_assert(c->dead);
	ck_assert_ptr_null(c->imap->imap_stream);
	ck_assert_uint_eq(count_stored(b), 0);

	/* A dead connection is rejected at once. */
	ck_assert_int_eq(imapc_append_batch(c, mailbox, b->msgs, b->count,
					    &uidvalidity, &err),
			 -1);
	ck_assert_int_eq(err.scope, MRERR_CONNECTION);
	session_close(&c);

	c = session_open();
	ck_assert_uint_eq(mailbox_select(c, mailbox, NULL), 0);
	b->msgs[1].crlf_size = len;
	append_all(c, mailbox, b);
	mailbox_select(c, mailbox, NULL);
	check_stored(c, b, 1, &b->flags[1]);
	batch_free(&b);
	session_close(&c);
}
END_TEST

/* Measured, not asserted: batches of 50 against one APPEND per message,
 * both on one connection with LITERAL+. */
static double
measure_rate(struct imapc *c, const char *mailbox, struct batch *b,
	     size_t per_call)
{
	struct mrerr err;
	uint32_t uidvalidity;
	long long started;
	long long ms;

	mailbox_create(c, mailbox);
	started = monotonic_ms();
	for (size_t i = 0; i < b->count; i += per_call) {
		size_t n = b->count - i < per_call ? b->count - i : per_call;

		ck_assert_msg(imapc_append_batch(c, mailbox, b->msgs + i, n,
						 &uidvalidity, &err) == 0,
			      "append failed: %s", err.text);
	}
	ms = monotonic_ms() - started;
	ck_assert_uint_eq(count_stored(b), b->count);
	return (double)b->count * 1000.0 / (double)(ms > 0 ? ms : 1);
}

START_TEST(throughput_batches_vs_single)
{
	struct imapc *c = session_open();
	struct batch *b = batch_new("perf", 2000);
	double batched, single;

	for (size_t i = 0; i < b->count; i++)
		batch_set_text(b, i, 4000 + (i * 37) % 2500);
	batched = measure_rate(c, "PerfBatch", b, 50);
	c->multiappend = false;
	single = measure_rate(c, "PerfSingle", b, 50);
	fprintf(stderr,
		"throughput: %zu messages of 4-6.5 KB, one connection: "
		"MULTIAPPEND of 50: %.0f msgs/s, one APPEND per message: "
		"%.0f msgs/s\n",
		b->count, batched, single);
	batch_free(&b);
	session_close(&c);
}
END_TEST

/* ---- scripted fake server ------------------------------------------------ */

/* A server in a child process that replies to each command with the next
 * reply of its script ("%s" there stands for the tag; a reply that
 * starts with "*" is sent as it is and the connection closed) and writes
 * every byte it receives to a transcript file. */
struct fake_server {
	pid_t pid;
	unsigned port;
	char *transcript;
};

/* Read one command with its literals into out; sends "+ OK" for each
 * synchronising literal. Returns the command's tag, or NULL at EOF. */
static char *
fake_read_command(FILE *in, int fd, FILE *out)
{
	char *line = NULL, *tag = NULL, *brace;
	size_t cap = 0;
	ssize_t n;

	while ((n = getline(&line, &cap, in)) > 0) {
		unsigned long long size;
		char *end;

		fwrite(line, 1, (size_t)n, out);
		if (tag == NULL)
			tag = xstrndup(line, strcspn(line, " "));
		brace = strrchr(line, '{');
		if (brace == NULL || n < 3 ||
		    strcmp(line + n - 3, "}\r\n") != 0)
			break;
		size = strtoull(brace + 1, &end, 10);
		if (*end != '+' && write(fd, "+ OK\r\n", 6) != 6)
			break;
		for (; size > 0; size--)
			fputc(fgetc(in), out);
	}
	fflush(out);
	free(line);
	return tag;
}

static void
fake_serve(int listener, const char *const *replies, const char *path)
{
	int fd = accept(listener, NULL, NULL);
	FILE *in = fdopen(fd, "r");
	FILE *out = fopen(path, "w");
	char *tag, *reply;

	alarm(60);
	if (write(fd, "* OK fake\r\n", 11) != 11)
		_exit(1);
	for (size_t i = 0; replies[i] != NULL; i++) {
		tag = fake_read_command(in, fd, out);
		if (tag == NULL)
			_exit(1);
		if (replies[i][0] == '*') {
			reply = xasprintf("%s\r\n", replies[i]);
		} else {
			reply = xasprintf(replies[i], tag);
			reply = xrealloc(reply, strlen(reply) + 3);
			strcat(reply, "\r\n");
		}
		if (write(fd, reply, strlen(reply)) < 0)
			_exit(1);
		if (replies[i][0] == '*')
			_exit(0);
		free(reply);
		free(tag);
	}
	while (fgetc(in) != EOF)
		;
	fclose(out);
	_exit(0);
}

static void
fake_start(struct fake_server *fs, const char *const *replies)
{
	struct sockaddr_in addr = {.sin_family = AF_INET};
	socklen_t len = sizeof(addr);
	int listener = socket(AF_INET, SOCK_STREAM, 0);

	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_ge(listener, 0);
	ck_assert_int_eq(bind(listener, (struct sockaddr *)&addr, len), 0);
	ck_assert_int_eq(listen(listener, 1), 0);
	ck_assert_int_eq(getsockname(listener, (struct sockaddr *)&addr, &len),
			 0);
	fs->port = ntohs(addr.sin_port);
	fs->transcript = xasprintf("%s/fake-%u", workdir, fs->port);
	fs->pid = fork();
	ck_assert_int_ge(fs->pid, 0);
	if (fs->pid == 0)
		fake_serve(listener, replies, fs->transcript);
	close(listener);
}

/* Wait for the server to exit and return what it received. */
static char *
fake_finish(struct fake_server *fs)
{
	int status;
	char *text;

	ck_assert_int_eq(waitpid(fs->pid, &status, 0), fs->pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "fake server failed (status %d)", status);
	text = tu_read_file(fs->transcript, NULL);
	ck_assert_ptr_nonnull(text);
	free(fs->transcript);
	return text;
}

/* Close a fake session without LOGOUT, because the script has no reply
 * for it. */
static void
fake_session_close(struct imapc **session)
{
	mailimap *imap = (*session)->imap;

	if (imap->imap_stream != NULL) {
		mailstream_close(imap->imap_stream);
		imap->imap_stream = NULL;
	}
	session_close(session);
}

/* A session with the fake server; no login, it accepts any command. */
static struct imapc *
fake_session(struct fake_server *fs, const char *const *replies)
{
	struct imapc *c;

	fake_start(fs, replies);
	c = session_connect(fs->port);
	c->literal_plus = true;
	c->multiappend = true;
	return c;
}

START_TEST(wire_format_of_batch)
{
	static const char *const replies[] = {
		"%s OK [APPENDUID 9 20:22] done",
		NULL,
	};
	struct fake_server fs;
	struct imapc *c = fake_session(&fs, replies);
	struct batch *b = batch_new("wire", 3);
	struct mrerr err;
	uint32_t uidvalidity;
	char *text;

	batch_set(b, 0, "A\nB", 3);
	batch_set(b, 1, "C", 1);
	batch_set(b, 2, "D\r\n", 3);
	b->flags[0].sys = FLAG_SEEN | FLAG_DELETED;
	flagset_add_keyword(&b->flags[0], "$Forwarded");
	flagset_add_keyword(&b->flags[0], "bad word");
	b->msgs[0].internaldate = 1709632800; /* 2024-03-05 10:00:00 UTC */
	b->msgs[1].internaldate = 0;
	b->msgs[2].internaldate = 946684799; /* 1999-12-31 23:59:59 UTC */

	ck_assert_int_eq(imapc_append_batch(c, "we\"ird\\name", b->msgs, 3,
					    &uidvalidity, &err),
			 0);
	fake_session_close(&c);
	text = fake_finish(&fs);
	ck_assert_str_eq(text,
			 "1 APPEND \"we\\\"ird\\\\name\" "
			 "(\\Seen \\Deleted $Forwarded) "
			 "\"05-Mar-2024 10:00:00 +0000\" {4+}\r\nA\r\nB "
			 "{1+}\r\nC "
			 "\"31-Dec-1999 23:59:59 +0000\" {3+}\r\nD\r\n\r\n");
	ck_assert_uint_eq(uidvalidity, 9);
	ck_assert_uint_eq(b->msgs[0].uid, 20);
	ck_assert_uint_eq(b->msgs[1].uid, 21);
	ck_assert_uint_eq(b->msgs[2].uid, 22);
	free(text);
	batch_free(&b);
}
END_TEST

START_TEST(wire_format_literal_minus)
{
	static const char *const replies[] = {
		"%s OK [APPENDUID 9 1:2] done",
		NULL,
	};
	struct fake_server fs;
	struct imapc *c = fake_session(&fs, replies);
	struct batch *b = batch_new("wireminus", 2);
	char big[5000];
	struct mrerr err;
	uint32_t uidvalidity;
	char *text, *expected;

	c->literal_plus = false;
	c->literal_minus = true;
	memset(big, 'y', sizeof(big));
	batch_set(b, 0, "small", 5);
	batch_set(b, 1, big, sizeof(big));
	b->msgs[0].internaldate = 0;
	b->msgs[1].internaldate = 0;

	ck_assert_int_eq(imapc_append_batch(c, "Entw\xc3\xbcrfe", b->msgs, 2,
					    &uidvalidity, &err),
			 0);
	fake_session_close(&c);
	text = fake_finish(&fs);
	expected = xasprintf("1 APPEND {9+}\r\nEntw\xc3\xbcrfe {5+}\r\nsmall "
			     "{5000}\r\n%.5000s\r\n",
			     big);
	ck_assert_str_eq(text, expected);
	free(expected);
	free(text);
	batch_free(&b);
}
END_TEST

/* Replies Dovecot does not send, and how each one is classified. */
static const struct {
	const char *name;
	const char *reply;
	int ret;
	enum mrerr_scope scope;
	bool dead;
} fake_reply_cases[] = {
	{"OK without APPENDUID", "%s OK done", -1, MRERR_CONFIG, false},
	{"too few UIDs", "%s OK [APPENDUID 7 5:6] done", -1, MRERR_CONNECTION,
	 false},
	{"too many UIDs", "%s OK [APPENDUID 7 5:8,10] done", -1,
	 MRERR_CONNECTION, false},
	{"BYE", "* BYE shutting down", -1, MRERR_CONNECTION, true},
	{"BAD after LITERAL+", "%s BAD Invalid arguments", -1, MRERR_CONNECTION,
	 true},
	{"OVERQUOTA", "%s NO [OVERQUOTA] Quota exceeded", -1, MRERR_USER,
	 false},
	{"UID set in pieces", "%s OK [APPENDUID 7 5,7,10:9] done", 0,
	 MRERR_NONE, false},
};

START_TEST(fake_replies_classified)
{
	const char *replies[] = {fake_reply_cases[_i].reply, NULL};
	struct fake_server fs;
	struct imapc *c = fake_session(&fs, replies);
	struct batch *b = batch_new("fake", 4);
	struct mrerr err;
	uint32_t uidvalidity;
	int r;

	for (size_t i = 0; i < b->count; i++)
		batch_set_text(b, i, 100);
	r = imapc_append_batch(c, "INBOX", b->msgs, b->count, &uidvalidity,
			       &err);
	ck_assert_msg(r == fake_reply_cases[_i].ret, "%s: returned %d (%s)",
		      fake_reply_cases[_i].name, r, err.text);
	ck_assert_int_eq(err.scope, fake_reply_cases[_i].scope);
	ck_assert_int_eq(c->dead, fake_reply_cases[_i].dead);
	if (r == 0) {
		ck_assert_uint_eq(uidvalidity, 7);
		ck_assert_uint_eq(b->msgs[0].uid, 5);
		ck_assert_uint_eq(b->msgs[1].uid, 7);
		ck_assert_uint_eq(b->msgs[2].uid, 9);
		ck_assert_uint_eq(b->msgs[3].uid, 10);
	}
	fake_session_close(&c);
	free(fake_finish(&fs));
	batch_free(&b);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("append");
	TCase *dovecot_tc = tcase_create("dovecot");
	TCase *fake_tc = tcase_create("fake server");
	SRunner *sr;
	int failed;

	tcase_add_unchecked_fixture(dovecot_tc, dovecot_setup,
				    dovecot_teardown);
	tcase_set_timeout(dovecot_tc, 120);
	tcase_add_test(dovecot_tc, batch_of_50_lands);
	tcase_add_test(dovecot_tc, line_ends_converted);
	tcase_add_test(dovecot_tc, nul_byte_stored);
	tcase_add_test(dovecot_tc, long_line_and_8bit_header_stored);
	tcase_add_test(dovecot_tc, zero_byte_message_isolated);
	tcase_add_test(dovecot_tc, missing_mailbox_is_folder_error);
	tcase_add_test(dovecot_tc, vanished_file_skipped);
	tcase_add_test(dovecot_tc, appendlimit_exceeded_skipped);
	tcase_add_test(dovecot_tc, synchronising_literals_work);
	tcase_add_test(dovecot_tc, literal_minus_mixes_literals);
	tcase_add_test(dovecot_tc, without_multiappend_one_per_message);
	tcase_add_test(dovecot_tc, rejected_keyword_retried_without);
	tcase_add_test(dovecot_tc, invalid_keywords_dropped);
	tcase_add_loop_test(dovecot_tc, changed_size_aborts_connection, 0,
			    sizeof(size_change_cases) /
				    sizeof(*size_change_cases));
	tcase_add_test(dovecot_tc, throughput_batches_vs_single);
	suite_add_tcase(s, dovecot_tc);

	tcase_add_unchecked_fixture(fake_tc, workdir_setup, workdir_teardown);
	tcase_set_timeout(fake_tc, 30);
	tcase_add_test(fake_tc, wire_format_of_batch);
	tcase_add_test(fake_tc, wire_format_literal_minus);
	tcase_add_loop_test(fake_tc, fake_replies_classified, 0,
			    sizeof(fake_reply_cases) /
				    sizeof(*fake_reply_cases));
	suite_add_tcase(s, fake_tc);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
