/* The control channel's line protocol (doc/protocol.md): framing, request
 * parsing and response formatting. Every function here is pure (no I/O,
 * no global state), so that the parser can be fuzzed on its own. */
#ifndef MAILREPL_CTL_PROTO_H
#define MAILREPL_CTL_PROTO_H

#include <stdbool.h>
#include <stddef.h>

#define CTL_PROTO_VERSION 1
/* Maximum line length in bytes, including the CRLF or LF line end. */
#define CTL_LINE_MAX 4096
/* Maximum number of arguments after the command word. */
#define CTL_ARGS_MAX 16
/* Maximum length in bytes of a free-text value that the server stores
 * (last_error); longer text is cut. */
#define CTL_TEXT_MAX 1024
/* Maximum length of a master id. */
#define CTL_MASTER_ID_MAX 64

enum ctl_cmd {
	CTL_CMD_UNKNOWN = 0,
	CTL_CMD_CAPA,
	CTL_CMD_STARTTLS,
	CTL_CMD_AUTH,
	CTL_CMD_VERSION,
	CTL_CMD_MODE,
	CTL_CMD_BIND,
	CTL_CMD_INIT,
	CTL_CMD_STATUS,
	CTL_CMD_QUIT,
};

/* One parsed request. Arguments are decoded (quotes and escapes
 * removed) and owned by the struct; free them with ctl_request_clear. */
struct ctl_request {
	enum ctl_cmd cmd;
	char *word; /* the command word in upper case */
	size_t argc;
	char *argv[CTL_ARGS_MAX];
};

/* Find the first line in buf[0..len). Returns 1 when a line end (LF) is
 * there, with *line_len_r the line's length without CR and LF, and
 * *consumed_r the bytes up to and including the LF. Returns 0 when more
 * input is needed. Returns -1 when the line with its line end is longer
 * than CTL_LINE_MAX. */
int ctl_proto_find_line(const char *buf, size_t len, size_t *line_len_r,
			size_t *consumed_r);

/* Parse one line without its line end; line need not be NUL-terminated
 * and may contain any byte. Returns 0 with *req_r filled (a command word
 * that is not known gives CTL_CMD_UNKNOWN), or -1 with *error_r set to a
 * static text for a BAD response, and *req_r cleared. */
int ctl_proto_parse(const char *line, size_t len, struct ctl_request *req_r,
		    const char **error_r);
void ctl_request_clear(struct ctl_request *req);

/* Maximum number of arguments of a data line that a client accepts;
 * larger than CTL_ARGS_MAX so that a newer server may add fields. */
#define CTL_RESP_ARGS_MAX 32

enum ctl_resp_kind { CTL_RESP_DATA, CTL_RESP_OK, CTL_RESP_NO, CTL_RESP_BAD };

/* One parsed response line, for clients. Strings are owned by the
 * struct; free them with ctl_response_clear. */
struct ctl_response {
	enum ctl_resp_kind kind;
	/* Final lines (OK, NO, BAD): */
	char *code; /* inside the brackets, e.g. "VERSION 1"; NULL if none */
	char *text; /* after the code; "" when there is none */
	/* Data lines ("* NAME args"): */
	char *name;
	size_t argc;
	char *argv[CTL_RESP_ARGS_MAX]; /* decoded as request arguments */
};

/* Parse one response line without its line end; like ctl_proto_parse,
 * it accepts any bytes. Returns 0 with *resp_r filled, or -1 with
 * *error_r a static text and *resp_r cleared. */
int ctl_proto_parse_response(const char *line, size_t len,
			     struct ctl_response *resp_r, const char **error_r);
void ctl_response_clear(struct ctl_response *resp);

/* The name of cmd as sent on the wire ("CAPA"), "" for unknown. */
const char *ctl_cmd_name(enum ctl_cmd cmd);

/* Split a "key=value" argument: returns true with *key_len_r the length
 * of the key and *value_r pointing after the '='. The key must be one or
 * more of a-z, 0-9 and '_'. */
bool ctl_proto_split_kv(const char *arg, size_t *key_len_r,
			const char **value_r);

/* Whether s is a valid master id: 1 to CTL_MASTER_ID_MAX characters of
 * A-Z a-z 0-9 . _ - : */
bool ctl_proto_master_id_valid(const char *s);

/* Decode the base64 argument of AUTH PLAIN (RFC 4616: authzid NUL authcid
 * NUL password). Returns 0 with the three parts (caller frees *password_r
 * with secret_free, the others with free), or -1 with *error_r a static
 * text. */
int ctl_proto_decode_plain(const char *base64, char **authzid_r,
			   char **authcid_r, char **password_r,
			   const char **error_r);
/* Encode AUTH PLAIN's argument for a client. Caller frees. */
char *ctl_proto_encode_plain(const char *authzid, const char *authcid,
			     const char *password);

/* Format s as a protocol argument: as it is when it is a non-empty atom,
 * else as a quoted string. Control characters become '?',
 * because the grammar has no escape for them. Caller frees. */
char *ctl_proto_quote(const char *s);

#endif
