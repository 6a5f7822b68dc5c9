/* APPEND and MULTIAPPEND (RFC 3502) with LITERAL+ / LITERAL- (RFC 7888).
 *
 * libetpan 1.9.4 sends one message per APPEND with a synchronising
 * literal from a buffer in memory. This file writes the command itself
 * on libetpan's stream and reads the reply with libetpan's line reader
 * and response parser, which stores the APPENDUID response code
 * (RFC 4315) in imap_response_info. Message files are streamed in 64 KiB
 * chunks and converted to CRLF on the way, so each literal length is
 * counted in a first pass over the file. */
#include <config.h>
#include "imapc_private.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define APPEND_CHUNK (64 * 1024)
/* LITERAL- allows non-synchronising literals of at most 4096 bytes. */
#define LITERAL_MINUS_MAX 4096

/* One message of the batch, ready to be sent. The file stays open from
 * the counting pass to the last send, so a flag change that renames it
 * in the Maildir does not lose it. */
struct append_item {
	struct imapc_append *msg;
	int fd;
	uint64_t size;         /* literal length: the file's CRLF size */
	char *flags;           /* "(\Seen $Label1)", or "" for none */
	char *system_flags;    /* the same without keywords */
	bool without_keywords; /* the replica rejected the keywords */
	char date[40];         /* quoted INTERNALDATE, or "" */
};

/* State of one imapc_append_batch call. */
struct append_batch {
	struct imapc *c;
	const char *mailbox;
	char *chunk; /* APPEND_CHUNK bytes read from a file */
	char *wire;  /* the chunk in CRLF form: 2 * APPEND_CHUNK + 2 bytes */
	bool write_failed;
	bool nonsync_sent; /* this command sent a non-synchronising literal */
	uint64_t bytes;    /* literal bytes sent */
	uint32_t uidvalidity;
	size_t rejected;
};

enum append_status {
	APPEND_REPLY_OK,
	APPEND_REPLY_NO,
	APPEND_REPLY_BAD,
};

/* The tagged reply to one APPEND command. */
struct append_reply {
	enum append_status status;
	char text[256]; /* the tagged line without tag and CRLF */
};

/* Line ends converted to CRLF across chunk boundaries: a CR at the end of
 * a chunk is held back until the next byte shows whether a LF follows. */
struct crlf_state {
	bool cr_pending;
};

static const char *const month_names[] = {
	"Jan", "Feb", "Mar", "Apr", "May", "Jun",
	"Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
};

static const struct {
	unsigned bit;
	const char *name;
} system_flags[] = {
	{FLAG_SEEN, "\\Seen"},       {FLAG_ANSWERED, "\\Answered"},
	{FLAG_FLAGGED, "\\Flagged"}, {FLAG_DELETED, "\\Deleted"},
	{FLAG_DRAFT, "\\Draft"},
};

/* Convert len bytes to CRLF form into out, which must have room for
 * 2 * len + 1 bytes. Bare LF and bare CR become CRLF, CRLF stays.
 * Returns the number of bytes written. */
static size_t
crlf_convert(struct crlf_state *state, const char *in, size_t len, char *out)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		char ch = in[i];

		if (state->cr_pending) {
			out[n++] = '\r';
			out[n++] = '\n';
			state->cr_pending = false;
			if (ch == '\n')
				continue;
		}
		if (ch == '\r') {
			state->cr_pending = true;
		} else if (ch == '\n') {
			out[n++] = '\r';
			out[n++] = '\n';
		} else {
			out[n++] = ch;
		}
	}
	return n;
}

/* End the conversion: a CR held back at the end of the file is bare. */
static size_t
crlf_finish(struct crlf_state *state, char *out)
{
	if (!state->cr_pending)
		return 0;
	state->cr_pending = false;
	out[0] = '\r';
	out[1] = '\n';
	return 2;
}

static ssize_t
read_chunk(int fd, char *buf)
{
	ssize_t n;

	do {
		n = read(fd, buf, APPEND_CHUNK);
	} while (n < 0 && errno == EINTR);
	return n;
}

/* Count the CRLF size of the file with the same conversion that sends it,
 * so the announced literal length and the bytes sent cannot disagree
 * unless the file changes. Returns 0, or -1 with errno set. */
static int
crlf_count(struct append_batch *b, int fd, uint64_t *size_r)
{
	struct crlf_state state = {false};
	uint64_t size = 0;
	ssize_t n;

	while ((n = read_chunk(fd, b->chunk)) > 0)
		size += crlf_convert(&state, b->chunk, (size_t)n, b->wire);
	if (n < 0)
		return -1;
	*size_r = size + crlf_finish(&state, b->wire);
	return 0;
}

/* Close the stream after a failure that leaves the protocol state
 * unknown, such as a literal that cannot be completed or a reply that
 * cannot be read. Closing is also what makes the replica drop the
 * unfinished command, so it stores nothing of it. Returns -1. */
static int append_abort(struct append_batch *b, enum mrerr_retry retry,
			struct mrerr *err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int
append_abort(struct append_batch *b, enum mrerr_retry retry, struct mrerr *err,
	     const char *fmt, ...)
{
	mailimap *imap = b->c->imap;
	char text[sizeof(err->text)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);

	if (imap->imap_stream != NULL) {
		mailstream_close(imap->imap_stream);
		imap->imap_stream = NULL;
	}
	imap->imap_state = MAILIMAP_STATE_DISCONNECTED;
	b->c->dead = true;
	return mrerr_set(err, MRERR_CONNECTION, retry, "%s", text);
}

/* Classify a libetpan failure during APPEND. Each one leaves the stream
 * out of step with the server, so the connection is closed.
 * TODO: use imapc_fail from imapc.c once both files are merged. */
static int
append_fail(struct append_batch *b, int r, struct mrerr *err)
{
	const char *cause;

	switch (r) {
	case MAILIMAP_ERROR_STREAM:
		cause = "the connection failed or timed out";
		break;
	case MAILIMAP_ERROR_PARSE:
		cause = "the reply could not be parsed";
		break;
	default:
		cause = "the reply does not match the command";
		break;
	}
	return append_abort(b, MRERR_RETRY_NOW, err,
			    "APPEND to %s on %s failed: %s (libetpan error "
			    "%d); reconnect and retry",
			    b->mailbox, b->c->host, cause, r);
}

static void
wire_write(struct append_batch *b, const void *data, size_t len)
{
	if (b->write_failed || len == 0)
		return;
	if (mailstream_write(b->c->imap->imap_stream, data, len) !=
	    (ssize_t)len)
		b->write_failed = true;
}

static void
wire_puts(struct append_batch *b, const char *text)
{
	wire_write(b, text, strlen(text));
}

static int
wire_flush(struct append_batch *b)
{
	if (!b->write_failed && mailstream_flush(b->c->imap->imap_stream) < 0)
		b->write_failed = true;
	return b->write_failed ? -1 : 0;
}

/* Mark msg as not appended with the reason, and log it with its file. */
static int append_reject(struct append_batch *b, struct imapc_append *msg,
			 enum mrerr_retry retry, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int
append_reject(struct append_batch *b, struct imapc_append *msg,
	      enum mrerr_retry retry, const char *fmt, ...)
{
	struct logline *line;
	va_list ap;

	va_start(ap, fmt);
	msg->error.scope = MRERR_MESSAGE;
	msg->error.retry = retry;
	vsnprintf(msg->error.text, sizeof(msg->error.text), fmt, ap);
	va_end(ap);
	b->rejected++;

	line = log_begin(LOG_LVL_INFO, "reject");
	log_str(line, "user", b->c->user);
	log_str(line, "folder", b->mailbox);
	log_str(line, "file", msg->path);
	log_str(line, "reason", msg->error.text);
	log_end(line);
	return -1;
}

static int
append_reject_errno(struct append_batch *b, struct imapc_append *msg,
		    const char *call, int error)
{
	if (error == ENOENT)
		return append_reject(b, msg, MRERR_RETRY_NEVER,
				     "message file %s vanished before it "
				     "could be appended",
				     msg->path);
	return append_reject(b, msg, MRERR_RETRY_LATER,
			     "cannot %s message file %s: %s; check its "
			     "permissions",
			     call, msg->path, strerror(error));
}

/* A keyword must be an atom (RFC 3501): printable ASCII without atom
 * specials. The replica rejects the whole command with BAD otherwise. */
static bool
keyword_is_atom(const char *keyword)
{
	if (keyword[0] == '\0')
		return false;
	for (const char *p = keyword; *p != '\0'; p++) {
		unsigned char ch = (unsigned char)*p;

		if (ch <= 0x20 || ch >= 0x7f || strchr("(){%*\"\\]", ch))
			return false;
	}
	return true;
}

/* Add word to a parenthesised flag list. The closing parenthesis is
 * written past len, so the next word overwrites it with a space. */
static void
flag_list_add(char **text, size_t *len, size_t *capacity, const char *word)
{
	size_t n = strlen(word);

	*text = xgrow(*text, capacity, *len + n + 3, 1);
	(*text)[*len] = *len == 0 ? '(' : ' ';
	memcpy(*text + *len + 1, word, n);
	*len += n + 1;
	(*text)[*len] = ')';
	(*text)[*len + 1] = '\0';
}

static void
log_keyword_skipped(struct append_batch *b, const struct imapc_append *msg,
		    const char *keyword)
{
	struct logline *line = log_begin(LOG_LVL_INFO, "keyword_skipped");

	log_str(line, "user", b->c->user);
	log_str(line, "folder", b->mailbox);
	log_str(line, "file", msg->path);
	log_str(line, "keyword", keyword);
	log_str(line, "reason", "not a valid IMAP atom");
	log_end(line);
}

/* Format the flag list of msg. \Recent is never part of a flagset.
 * Returns a string the caller frees, "" when there are no flags. */
static char *
append_flags_text(struct append_batch *b, const struct imapc_append *msg,
		  bool with_keywords)
{
	const struct flagset *fs = msg->flags;
	size_t len = 0, capacity = 0;
	char *text = NULL;

	if (fs == NULL)
		return xstrdup("");
	for (size_t i = 0; i < sizeof(system_flags) / sizeof(*system_flags);
	     i++) {
		if (fs->sys & system_flags[i].bit)
			flag_list_add(&text, &len, &capacity,
				      system_flags[i].name);
	}
	for (size_t i = 0; with_keywords && i < fs->nkeywords; i++) {
		if (keyword_is_atom(fs->keywords[i]))
			flag_list_add(&text, &len, &capacity, fs->keywords[i]);
		else
			log_keyword_skipped(b, msg, fs->keywords[i]);
	}
	return text != NULL ? text : xstrdup("");
}

/* Format t as a quoted INTERNALDATE in UTC, or "" when t is unset or
 * has no four-digit year. */
static void
append_format_date(time_t t, char *out, size_t size)
{
	struct tm tm;

	out[0] = '\0';
	if (t <= 0 || gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999)
		return;
	snprintf(out, size, "\"%02d-%s-%04d %02d:%02d:%02d +0000\"", tm.tm_mday,
		 month_names[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
		 tm.tm_min, tm.tm_sec);
}

/* Open and measure one message. Returns 0 when it can be sent, or -1
 * when it was rejected (its error is set). */
static int
append_prepare(struct append_batch *b, struct append_item *item)
{
	struct imapc_append *msg = item->msg;
	uint64_t limit = b->c->appendlimit;

	item->fd = open(msg->path, O_RDONLY | O_CLOEXEC);
	if (item->fd < 0)
		return append_reject_errno(b, msg, "open", errno);
	item->size = msg->crlf_size;
	if (item->size == 0 && crlf_count(b, item->fd, &item->size) < 0)
		return append_reject_errno(b, msg, "read", errno);
	if (limit != 0 && item->size > limit)
		return append_reject(b, msg, MRERR_RETRY_NEVER,
				     "message of %" PRIu64 " bytes exceeds "
				     "the replica's APPENDLIMIT of %" PRIu64
				     " bytes",
				     item->size, limit);

	item->flags = append_flags_text(b, msg, true);
	item->system_flags = append_flags_text(b, msg, false);
	append_format_date(msg->internaldate, item->date, sizeof(item->date));
	return 0;
}

/* Copy the last line the parser read, the tagged line, into reply
 * without its tag and line end. Returns whether the tag is the current
 * command's. */
static bool
reply_set_text(struct append_reply *reply, mailimap *imap)
{
	const MMAPString *buffer = imap->imap_stream_buffer;
	const char *end = buffer->str + buffer->len;
	const char *line, *text;
	char tag[16];
	size_t n;

	while (end > buffer->str && (end[-1] == '\n' || end[-1] == '\r'))
		end--;
	line = end;
	while (line > buffer->str && line[-1] != '\n')
		line--;
	text = memchr(line, ' ', (size_t)(end - line));
	text = text != NULL ? text + 1 : end;

	n = (size_t)(end - text);
	if (n >= sizeof(reply->text))
		n = sizeof(reply->text) - 1;
	memcpy(reply->text, text, n);
	reply->text[n] = '\0';
	n = (size_t)snprintf(tag, sizeof(tag), "%d ", imap->imap_tag);
	return (size_t)(end - line) > n && memcmp(line, tag, n) == 0;
}

/* Parse the reply with libetpan, which reads the lines after the first
 * one itself and stores response codes such as APPENDUID in
 * imap_response_info. It reports a tagged BAD as a protocol error. */
static int
append_parse_reply(struct append_batch *b, struct append_reply *reply,
		   struct mrerr *err)
{
	struct mailimap_response *response = NULL;
	bool ours;
	int r, type;

	r = mailimap_parse_response(b->c->imap, &response);
	ours = reply_set_text(reply, b->c->imap);
	if (r == MAILIMAP_ERROR_PROTOCOL && ours &&
	    strncasecmp(reply->text, "BAD", 3) == 0) {
		reply->status = APPEND_REPLY_BAD;
		return 0;
	}
	if (r == MAILIMAP_ERROR_FATAL)
		return append_abort(b, MRERR_RETRY_LATER, err,
				    "%s closed the connection during APPEND "
				    "to %s: %s",
				    b->c->host, b->mailbox, reply->text);
	if (r != MAILIMAP_NO_ERROR)
		return append_fail(b, r, err);

	type = response->rsp_resp_done->rsp_data.rsp_tagged->rsp_cond_state
		       ->rsp_type;
	mailimap_response_free(response);
	reply->status = type == MAILIMAP_RESP_COND_STATE_OK ? APPEND_REPLY_OK
							    : APPEND_REPLY_NO;
	return 0;
}

/* Read the reply to the current command: a continuation request (only
 * when continuation_ok; returns 1) or the final reply (returns 0).
 * libetpan's parser would wait past a continuation request for more
 * lines, so while one may come, lines are looked at one by one first. */
static int
append_read_reply(struct append_batch *b, bool continuation_ok,
		  struct append_reply *reply, struct mrerr *err)
{
	mailimap *imap = b->c->imap;
	const char *line;

	for (;;) {
		line = mailimap_read_line(imap);
		if (line == NULL || line[0] == '\0')
			return append_fail(b, MAILIMAP_ERROR_STREAM, err);
		if (line[0] == '+')
			return continuation_ok
				       ? 1
				       : append_fail(b, MAILIMAP_ERROR_PROTOCOL,
						     err);
		if (!continuation_ok || line[0] != '*' ||
		    strncasecmp(line, "* BYE", 5) == 0)
			break;
		/* NOTE: an untagged line before the continuation request
		 * is skipped unparsed; Dovecot 2.3 sends none there. */
	}
	return append_parse_reply(b, reply, err);
}

/* Send a literal's length. A synchronising literal then waits for the
 * continuation request. Returns 1 to go on with the data, 0 when the
 * server sent its tagged reply instead, -1 on failure. */
static int
append_literal_begin(struct append_batch *b, uint64_t size,
		     struct append_reply *reply, struct mrerr *err)
{
	struct imapc *c = b->c;
	bool sync = !c->literal_plus &&
		    !(c->literal_minus && size <= LITERAL_MINUS_MAX);
	char header[32];

	snprintf(header, sizeof(header), "{%" PRIu64 "%s}\r\n", size,
		 sync ? "" : "+");
	wire_puts(b, header);
	if (!sync) {
		b->nonsync_sent = true;
		return 1;
	}
	if (wire_flush(b) < 0)
		return append_fail(b, MAILIMAP_ERROR_STREAM, err);
	return append_read_reply(b, true, reply, err);
}

/* A quoted string (RFC 3501) carries 7-bit text without CR and LF. */
static bool
mailbox_needs_literal(const char *name)
{
	for (const char *p = name; *p != '\0'; p++) {
		unsigned char ch = (unsigned char)*p;

		if (ch == '\r' || ch == '\n' || ch >= 0x80)
			return true;
	}
	return false;
}

/* Send the mailbox name: quoted, or as a literal when a quoted string
 * cannot carry it. Returns as append_literal_begin. */
static int
append_send_mailbox(struct append_batch *b, struct append_reply *reply,
		    struct mrerr *err)
{
	const char *name = b->mailbox;
	size_t len = strlen(name);
	char *quoted, *q;
	int r;

	if (mailbox_needs_literal(name)) {
		r = append_literal_begin(b, len, reply, err);
		if (r == 1)
			wire_write(b, name, len);
		return r;
	}

	q = quoted = xmalloc(2 * len + 3);
	*q++ = '"';
	for (const char *p = name; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\')
			*q++ = '\\';
		*q++ = *p;
	}
	*q++ = '"';
	wire_write(b, quoted, (size_t)(q - quoted));
	free(quoted);
	return 1;
}

/* Stream the file in CRLF form. The literal length was announced, so a
 * file that changed size since it was counted cannot be sent correctly:
 * the connection is closed before the literal is complete. */
static int
append_send_body(struct append_batch *b, struct append_item *item,
		 struct mrerr *err)
{
	struct crlf_state state = {false};
	bool too_long = false;
	uint64_t sent = 0;
	ssize_t n = 0;
	size_t len;

	if (lseek(item->fd, 0, SEEK_SET) < 0)
		n = -1;
	while (n >= 0) {
		n = read_chunk(item->fd, b->chunk);
		if (n < 0)
			break;
		len = n > 0 ? crlf_convert(&state, b->chunk, (size_t)n, b->wire)
			    : crlf_finish(&state, b->wire);
		if (len > item->size - sent) {
			too_long = true;
			break;
		}
		wire_write(b, b->wire, len);
		sent += len;
		if (n == 0)
			break;
	}

	if (n < 0)
		return append_abort(b, MRERR_RETRY_NOW, err,
				    "reading %s failed while it was sent: "
				    "%s; connection closed so that no partial "
				    "message is stored",
				    item->msg->path, strerror(errno));
	if (too_long || sent != item->size)
		return append_abort(b, MRERR_RETRY_NOW, err,
				    "%s changed size while it was sent (%s "
				    "than the %" PRIu64 " bytes announced); "
				    "connection closed so that the replica "
				    "stores nothing of this APPEND; retry",
				    item->msg->path,
				    too_long ? "longer" : "shorter",
				    item->size);
	if (b->write_failed)
		return append_fail(b, MAILIMAP_ERROR_STREAM, err);
	b->bytes += sent;
	return 0;
}

/* Send one message's part of the command: flags, date, literal.
 * Returns as append_literal_begin. */
static int
append_send_message(struct append_batch *b, struct append_item *item,
		    struct append_reply *reply, struct mrerr *err)
{
	const char *flags =
		item->without_keywords ? item->system_flags : item->flags;
	int r;

	wire_puts(b, " ");
	if (flags[0] != '\0') {
		wire_puts(b, flags);
		wire_puts(b, " ");
	}
	if (item->date[0] != '\0') {
		wire_puts(b, item->date);
		wire_puts(b, " ");
	}
	r = append_literal_begin(b, item->size, reply, err);
	if (r != 1)
		return r;
	return append_send_body(b, item, err) < 0 ? -1 : 1;
}

/* Send one APPEND command with n messages and read its tagged reply.
 * Returns 0 with *reply set, or -1 with *err set. */
static int
append_command(struct append_batch *b, struct append_item **items, size_t n,
	       struct append_reply *reply, struct mrerr *err)
{
	int r;

	b->write_failed = false;
	b->nonsync_sent = false;
	if (mailimap_send_current_tag(b->c->imap) != MAILIMAP_NO_ERROR)
		return append_fail(b, MAILIMAP_ERROR_STREAM, err);
	wire_puts(b, "APPEND ");

	r = append_send_mailbox(b, reply, err);
	for (size_t i = 0; r == 1 && i < n; i++)
		r = append_send_message(b, items[i], reply, err);
	if (r != 1)
		return r; /* 0: the server replied before the end */

	wire_puts(b, "\r\n");
	if (wire_flush(b) < 0)
		return append_fail(b, MAILIMAP_ERROR_STREAM, err);
	return append_read_reply(b, false, reply, err) < 0 ? -1 : 0;
}

static struct mailimap_uidplus_resp_code_apnd *
append_find_appenduid(mailimap *imap)
{
	struct mailimap_response_info *info = imap->imap_response_info;

	if (info == NULL || info->rsp_extension_list == NULL)
		return NULL;
	for (clistiter *cur = clist_begin(info->rsp_extension_list);
	     cur != NULL; cur = clist_next(cur)) {
		struct mailimap_extension_data *ext = clist_content(cur);

		if (ext->ext_extension == &mailimap_extension_uidplus &&
		    ext->ext_type == MAILIMAP_UIDPLUS_RESP_CODE_APND)
			return ext->ext_data;
	}
	return NULL;
}

/* Count the UIDs of a uid-set. Returns UINT64_MAX when it contains a "*"
 * (0 in libetpan's set), which an APPENDUID set must not. */
static uint64_t
uid_set_count(struct mailimap_set *set)
{
	uint64_t total = 0;

	for (clistiter *cur = clist_begin(set->set_list); cur != NULL;
	     cur = clist_next(cur)) {
		struct mailimap_set_item *item = clist_content(cur);
		uint32_t lo = item->set_first, hi = item->set_last;

		if (lo == 0 || hi == 0)
			return UINT64_MAX;
		total += (lo <= hi ? hi - lo : lo - hi) + (uint64_t)1;
	}
	return total;
}

/* Hand out the UIDs in set order. A range counts upwards whichever way
 * it is written, because RFC 3501 treats 9:5 as 5:9. */
static void
uid_set_assign(struct mailimap_set *set, struct append_item **items)
{
	size_t i = 0;

	for (clistiter *cur = clist_begin(set->set_list); cur != NULL;
	     cur = clist_next(cur)) {
		struct mailimap_set_item *item = clist_content(cur);
		uint32_t lo = item->set_first, hi = item->set_last;

		if (lo > hi) {
			uint32_t swap = lo;

			lo = hi;
			hi = swap;
		}
		for (uint64_t uid = lo; uid <= hi; uid++)
			items[i++]->msg->uid = (uint32_t)uid;
	}
}

/* Set the UIDs of the n messages of an accepted command from its
 * APPENDUID response code. */
static int
append_take_uids(struct append_batch *b, struct append_item **items, size_t n,
		 struct mrerr *err)
{
	struct mailimap_uidplus_resp_code_apnd *apnd =
		append_find_appenduid(b->c->imap);
	uint64_t found;

	if (apnd == NULL || apnd->uid_set == NULL)
		return mrerr_set(err, MRERR_CONFIG, MRERR_RETRY_NEVER,
				 "%s stored messages in %s without an "
				 "APPENDUID response code, so their UIDs are "
				 "unknown; the replica's UIDPLUS support is "
				 "broken",
				 b->c->host, b->mailbox);
	found = uid_set_count(apnd->uid_set);
	if (found != n)
		return mrerr_set(err, MRERR_CONNECTION, MRERR_RETRY_NOW,
				 "%s returned an APPENDUID set of %" PRIu64
				 " UIDs for %zu messages appended to %s",
				 b->c->host, found, n, b->mailbox);
	if (b->uidvalidity != 0 && apnd->uid_uidvalidity != b->uidvalidity)
		return mrerr_set(err, MRERR_FOLDER, MRERR_RETRY_NOW,
				 "UIDVALIDITY of %s changed from %" PRIu32
				 " to %" PRIu32 " during the APPEND batch",
				 b->mailbox, b->uidvalidity,
				 apnd->uid_uidvalidity);

	b->uidvalidity = apnd->uid_uidvalidity;
	uid_set_assign(apnd->uid_set, items);
	return 0;
}

/* Copy the response code of a tagged NO or BAD into code ("TRYCREATE"
 * from "NO [TRYCREATE] ..."), or "" when there is none. */
static void
reply_code(const struct append_reply *reply, char *code, size_t size)
{
	const char *open = strchr(reply->text, ' ');
	size_t n;

	code[0] = '\0';
	if (open == NULL || open[1] != '[')
		return;
	n = strcspn(open + 2, " ]");
	if (n < size) {
		memcpy(code, open + 2, n);
		code[n] = '\0';
	}
}

/* Check for a rejection that no single message causes. Returns true with
 * *err set when the whole batch failed. */
static bool
append_failed_whole(struct append_batch *b, const struct append_reply *reply,
		    struct mrerr *err)
{
	char code[32];

	/* After a BAD, Dovecot 2.3 does not read the non-synchronising
	 * literals that follow, so it would take message lines for
	 * commands.
	 * TODO: a BAD caused by one message repeats on every retry; resend
	 * such a batch with synchronising literals to isolate it. */
	if (reply->status == APPEND_REPLY_BAD && b->nonsync_sent) {
		append_abort(b, MRERR_RETRY_LATER, err,
			     "%s replied to APPEND to %s with %s; connection "
			     "closed because the server would read the "
			     "message data that followed as commands",
			     b->c->host, b->mailbox, reply->text);
		return true;
	}
	reply_code(reply, code, sizeof(code));
	if (strcasecmp(code, "TRYCREATE") == 0) {
		mrerr_set(err, MRERR_FOLDER, MRERR_RETRY_NOW,
			  "mailbox %s does not exist on %s (%s); create it, "
			  "then retry",
			  b->mailbox, b->c->host, reply->text);
		return true;
	}
	if (strcasecmp(code, "OVERQUOTA") == 0) {
		mrerr_set(err, MRERR_USER, MRERR_RETRY_LATER,
			  "%s rejected APPEND to %s: %s", b->c->host,
			  b->mailbox, reply->text);
		return true;
	}
	return false;
}

/* After a flag-related rejection of one message, prepare to send it once
 * more with system flags only, because a message is never lost over a
 * keyword. Returns true when a retry is due. */
static bool
append_drop_keywords(struct append_batch *b, struct append_item *item,
		     const struct append_reply *reply)
{
	struct logline *line;

	if (item->without_keywords ||
	    strcmp(item->flags, item->system_flags) == 0)
		return false;
	if (strcasestr(reply->text, "keyword") == NULL &&
	    strcasestr(reply->text, "flag") == NULL)
		return false;

	item->without_keywords = true;
	line = log_begin(LOG_LVL_INFO, "keywords_rejected");
	log_str(line, "user", b->c->user);
	log_str(line, "folder", b->mailbox);
	log_str(line, "file", item->msg->path);
	log_str(line, "reason", reply->text);
	log_str(line, "action", "retry with system flags only");
	log_end(line);
	return true;
}

static int append_each(struct append_batch *b, struct append_item **items,
		       size_t n, struct mrerr *err);

/* Append n messages in one command. A rejected batch is split into one
 * command per message so that a bad message is isolated. */
static int
append_run(struct append_batch *b, struct append_item **items, size_t n,
	   struct mrerr *err)
{
	struct append_reply reply;

	for (;;) {
		if (append_command(b, items, n, &reply, err) < 0)
			return -1;
		if (reply.status == APPEND_REPLY_OK)
			return append_take_uids(b, items, n, err);
		if (append_failed_whole(b, &reply, err))
			return -1;
		if (n > 1)
			return append_each(b, items, n, err);
		if (!append_drop_keywords(b, items[0], &reply))
			break;
	}
	append_reject(b, items[0]->msg, MRERR_RETRY_NEVER,
		      "%s rejected the message: %s", b->c->host, reply.text);
	return 0;
}

static int
append_each(struct append_batch *b, struct append_item **items, size_t n,
	    struct mrerr *err)
{
	for (size_t i = 0; i < n; i++) {
		if (append_run(b, &items[i], 1, err) < 0)
			return -1;
	}
	return 0;
}

static void
append_log_batch(struct append_batch *b, const struct imapc_append *msgs,
		 size_t count, long long started)
{
	struct logline *line = log_begin(LOG_LVL_DEBUG, "append");
	size_t stored = 0;

	for (size_t i = 0; i < count; i++) {
		if (msgs[i].uid != 0)
			stored++;
	}

	log_str(line, "user", b->c->user);
	log_str(line, "folder", b->mailbox);
	log_int(line, "count", (long long)stored);
	log_int(line, "rejected", (long long)b->rejected);
	log_int(line, "bytes", (long long)b->bytes);
	log_int(line, "ms", monotonic_ms() - started);
	log_end(line);
}

int
imapc_append_batch(struct imapc *c, const char *mailbox,
		   struct imapc_append *msgs, size_t count,
		   uint32_t *uidvalidity_r, struct mrerr *err)
{
	struct append_batch b = {.c = c, .mailbox = mailbox};
	struct append_item *items = xcalloc(count + 1, sizeof(*items));
	struct append_item **ready = xcalloc(count + 1, sizeof(*ready));
	long long started = monotonic_ms();
	size_t nready = 0;
	int ret = -1;

	mrerr_clear(err);
	*uidvalidity_r = 0;
	for (size_t i = 0; i < count; i++) {
		msgs[i].uid = 0;
		mrerr_clear(&msgs[i].error);
		items[i].msg = &msgs[i];
		items[i].fd = -1;
	}
	if (c->dead || c->imap == NULL || c->imap->imap_stream == NULL) {
		mrerr_set(err, MRERR_CONNECTION, MRERR_RETRY_NOW,
			  "connection to %s is closed; reconnect before "
			  "appending to %s",
			  c->host, mailbox);
		goto out;
	}

	b.chunk = xmalloc(APPEND_CHUNK);
	b.wire = xmalloc(2 * APPEND_CHUNK + 2);
	for (size_t i = 0; i < count; i++) {
		if (append_prepare(&b, &items[i]) == 0)
			ready[nready++] = &items[i];
	}
	if (nready > 0 && c->multiappend) {
		if (append_run(&b, ready, nready, err) < 0)
			goto out;
	} else if (append_each(&b, ready, nready, err) < 0) {
		goto out;
	}
	*uidvalidity_r = b.uidvalidity;
	ret = 0;

out:
	append_log_batch(&b, msgs, count, started);
	for (size_t i = 0; i < count; i++) {
		if (items[i].fd >= 0)
			close(items[i].fd);
		free(items[i].flags);
		free(items[i].system_flags);
	}
	free(items);
	free(ready);
	free(b.chunk);
	free(b.wire);
	return ret;
}
