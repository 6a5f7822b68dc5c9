/* The control channel's line protocol: framing, parsing, formatting. */
#include <config.h>
#include "ctl_proto.h"
#include "util.h"

#include <gnutls/gnutls.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* RFC 4616 limits each of the three PLAIN fields to 255 octets. */
#define PLAIN_FIELD_MAX 255

static const char *const cmd_names[] = {
	[CTL_CMD_UNKNOWN] = "",          [CTL_CMD_CAPA] = "CAPA",
	[CTL_CMD_STARTTLS] = "STARTTLS", [CTL_CMD_AUTH] = "AUTH",
	[CTL_CMD_VERSION] = "VERSION",   [CTL_CMD_MODE] = "MODE",
	[CTL_CMD_BIND] = "BIND",         [CTL_CMD_INIT] = "INIT",
	[CTL_CMD_STATUS] = "STATUS",     [CTL_CMD_QUIT] = "QUIT",
};

const char *
ctl_cmd_name(enum ctl_cmd cmd)
{
	if ((size_t)cmd >= sizeof(cmd_names) / sizeof(cmd_names[0]))
		return "";
	return cmd_names[cmd];
}

int
ctl_proto_find_line(const char *buf, size_t len, size_t *line_len_r,
		    size_t *consumed_r)
{
	size_t scan = len < CTL_LINE_MAX ? len : CTL_LINE_MAX;
	const char *lf = memchr(buf, '\n', scan);
	size_t line_len;

	if (lf == NULL)
		return len >= CTL_LINE_MAX ? -1 : 0;
	line_len = lf - buf;
	*consumed_r = line_len + 1;
	if (line_len > 0 && buf[line_len - 1] == '\r')
		line_len--;
	*line_len_r = line_len;
	return 1;
}

/* Length of the UTF-8 sequence at s (at most len bytes), 0 when it is not
 * a valid, shortest-form encoding of a scalar value. */
static size_t
utf8_seq_len(const unsigned char *s, size_t len)
{
	size_t n;
	unsigned cp;

	if (s[0] < 0x80)
		return 1;
	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2, cp = s[0] & 0x1f;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3, cp = s[0] & 0x0f;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (n > len)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (cp >= 0xd800 && cp <= 0xdfff) ||
	    (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return n;
}

/* Check that line is UTF-8 without control characters (NUL included). */
static const char *
check_line_bytes(const char *line, size_t len)
{
	const unsigned char *s = (const unsigned char *)line;
	size_t i = 0, n;

	while (i < len) {
		if (s[i] < 0x20 || s[i] == 0x7f)
			return s[i] == 0 ? "NUL byte in line"
					 : "control character in line";
		n = utf8_seq_len(s + i, len - i);
		if (n == 0)
			return "invalid UTF-8 in line";
		i += n;
	}
	return NULL;
}

static bool
is_atom_char(unsigned char c)
{
	return c > 0x20 && c != '"' && c != '\\' && c != 0x7f;
}

/* Append the quoted string at line[*pos] (which is '"') to out, decoded.
 * Returns NULL or the BAD text. */
static const char *
read_quoted(const char *line, size_t len, size_t *pos, char *out,
	    size_t *out_len)
{
	size_t i = *pos + 1;

	for (; i < len && line[i] != '"'; i++) {
		if (line[i] == '\\') {
			i++;
			if (i == len || (line[i] != '\\' && line[i] != '"'))
				return "invalid escape in quoted string";
		}
		out[(*out_len)++] = line[i];
	}
	if (i == len)
		return "unterminated quoted string";
	*pos = i + 1;
	return NULL;
}

/* Read one argument at line[*pos]: an atom, a quoted string, or an atom
 * ending in '=' followed directly by a quoted string (key="value"). The
 * decoded text is never longer than its encoding, so out has room. */
static const char *
read_arg(const char *line, size_t len, size_t *pos, char **arg_r)
{
	char *out = xmalloc(len - *pos + 1);
	size_t out_len = 0, i = *pos;
	const char *error = NULL;

	while (i < len && is_atom_char(line[i]))
		out[out_len++] = line[i++];
	if (i < len && line[i] == '"') {
		if (out_len == 0 || out[out_len - 1] == '=')
			error = read_quoted(line, len, &i, out, &out_len);
		else
			error = "quote inside an atom";
	} else if (i < len && line[i] == '\\') {
		error = "backslash outside a quoted string";
	}
	if (error == NULL && i < len && line[i] != ' ')
		error = "missing space after argument";
	out[out_len] = '\0';
	*pos = i;
	if (error != NULL)
		xfree(&out);
	*arg_r = out;
	return error;
}

static enum ctl_cmd
lookup_cmd(const char *word)
{
	for (size_t i = 1; i < sizeof(cmd_names) / sizeof(cmd_names[0]); i++)
		if (strcmp(word, cmd_names[i]) == 0)
			return (enum ctl_cmd)i;
	return CTL_CMD_UNKNOWN;
}

/* Read the command word: letters only, upper-cased. */
static const char *
read_word(const char *line, size_t len, size_t *pos, struct ctl_request *req)
{
	size_t i = 0;

	while (i < len && line[i] != ' ') {
		char c = line[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')))
			return "invalid command word";
		i++;
	}
	if (i == 0)
		return "empty command";
	req->word = xstrndup(line, i);
	for (char *p = req->word; *p; p++)
		if (*p >= 'a' && *p <= 'z')
			*p -= 'a' - 'A';
	req->cmd = lookup_cmd(req->word);
	*pos = i;
	return NULL;
}

/* Read the arguments from line[pos] to the end into argv (at most max).
 * Returns NULL or the BAD text. */
static const char *
read_args(const char *line, size_t len, size_t pos, char **argv, size_t max,
	  size_t *argc)
{
	const char *error = NULL;

	while (error == NULL && pos < len) {
		/* Runs of spaces separate arguments as one space does. */
		while (pos < len && line[pos] == ' ')
			pos++;
		if (pos == len)
			break;
		if (*argc == max)
			return "too many arguments";
		error = read_arg(line, len, &pos, &argv[*argc]);
		if (error == NULL)
			(*argc)++;
	}
	return error;
}

int
ctl_proto_parse(const char *line, size_t len, struct ctl_request *req_r,
		const char **error_r)
{
	const char *error;
	size_t pos = 0;

	memset(req_r, 0, sizeof(*req_r));
	error = check_line_bytes(line, len);
	if (error == NULL)
		error = read_word(line, len, &pos, req_r);
	if (error == NULL)
		error = read_args(line, len, pos, req_r->argv, CTL_ARGS_MAX,
				  &req_r->argc);
	if (error != NULL) {
		ctl_request_clear(req_r);
		*error_r = error;
		return -1;
	}
	return 0;
}

void
ctl_request_clear(struct ctl_request *req)
{
	xfree(&req->word);
	for (size_t i = 0; i < req->argc; i++)
		xfree(&req->argv[i]);
	memset(req, 0, sizeof(*req));
}

static const struct {
	const char *word;
	enum ctl_resp_kind kind;
} final_words[] = {
	{"OK", CTL_RESP_OK},
	{"NO", CTL_RESP_NO},
	{"BAD", CTL_RESP_BAD},
};

/* Parse "[CODE args] text" after a final word; rest may be empty. */
static const char *
read_final(const char *rest, size_t len, struct ctl_response *resp)
{
	const char *close;

	if (len > 0 && rest[0] == '[') {
		close = memchr(rest, ']', len);
		if (close == NULL || close == rest + 1)
			return "invalid response code";
		resp->code = xstrndup(rest + 1, close - rest - 1);
		len -= close + 1 - rest;
		rest = close + 1;
		if (len > 0 && rest[0] == ' ') {
			rest++;
			len--;
		}
	}
	resp->text = xstrndup(rest, len);
	return NULL;
}

static bool
is_name_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '-';
}

/* Parse "* NAME args" from line[2]. */
static const char *
read_data(const char *line, size_t len, struct ctl_response *resp)
{
	size_t name_len = 0;

	/* line is not NUL-terminated, so strspn() cannot be used. */
	while (2 + name_len < len && is_name_char(line[2 + name_len]))
		name_len++;
	if (name_len == 0 || (2 + name_len < len && line[2 + name_len] != ' '))
		return "invalid data line name";
	resp->kind = CTL_RESP_DATA;
	resp->name = xstrndup(line + 2, name_len);
	return read_args(line, len, 2 + name_len, resp->argv, CTL_RESP_ARGS_MAX,
			 &resp->argc);
}

/* Parse a final line: its word, then a space or the end of the line. */
static const char *
read_final_line(const char *line, size_t len, struct ctl_response *resp)
{
	for (size_t i = 0; i < sizeof(final_words) / sizeof(final_words[0]);
	     i++) {
		size_t n = strlen(final_words[i].word);

		if (len < n || memcmp(line, final_words[i].word, n) != 0 ||
		    (len > n && line[n] != ' '))
			continue;
		resp->kind = final_words[i].kind;
		if (len > n)
			n++;
		return read_final(line + n, len - n, resp);
	}
	return "a response line starts with \"* \", OK, NO or BAD";
}

int
ctl_proto_parse_response(const char *line, size_t len,
			 struct ctl_response *resp_r, const char **error_r)
{
	const char *error;

	memset(resp_r, 0, sizeof(*resp_r));
	error = check_line_bytes(line, len);
	if (error == NULL && len >= 2 && line[0] == '*' && line[1] == ' ')
		error = read_data(line, len, resp_r);
	else if (error == NULL)
		error = read_final_line(line, len, resp_r);
	if (error != NULL) {
		ctl_response_clear(resp_r);
		*error_r = error;
		return -1;
	}
	return 0;
}

void
ctl_response_clear(struct ctl_response *resp)
{
	xfree(&resp->code);
	xfree(&resp->text);
	xfree(&resp->name);
	for (size_t i = 0; i < resp->argc; i++)
		xfree(&resp->argv[i]);
	memset(resp, 0, sizeof(*resp));
}

bool
ctl_proto_split_kv(const char *arg, size_t *key_len_r, const char **value_r)
{
	size_t i = 0;

	while ((arg[i] >= 'a' && arg[i] <= 'z') ||
	       (arg[i] >= '0' && arg[i] <= '9') || arg[i] == '_')
		i++;
	if (i == 0 || arg[i] != '=')
		return false;
	*key_len_r = i;
	*value_r = arg + i + 1;
	return true;
}

bool
ctl_proto_master_id_valid(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > CTL_MASTER_ID_MAX)
		return false;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			 "0123456789._-:") == len;
}

/* Strict base64: the standard alphabet, padded, no spaces. GnuTLS's
 * decoder is more lenient, so the form is checked here first. */
static bool
base64_form_valid(const char *s)
{
	size_t len = strlen(s);
	size_t body = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				"abcdefghijklmnopqrstuvwxyz0123456789+/");
	size_t pad = len - body;

	if (len == 0 || len % 4 != 0 || pad > 2)
		return false;
	return strspn(s + body, "=") == pad;
}

/* Split decoded PLAIN data into its fields. */
static const char *
split_plain(const unsigned char *data, size_t len, char **authzid_r,
	    char **authcid_r, char **password_r)
{
	const unsigned char *nul1 = memchr(data, '\0', len), *nul2;
	const unsigned char *end = data + len;

	if (nul1 == NULL)
		return "PLAIN data has no NUL separator";
	nul2 = memchr(nul1 + 1, '\0', end - nul1 - 1);
	if (nul2 == NULL || memchr(nul2 + 1, '\0', end - nul2 - 1) != NULL)
		return "PLAIN data needs exactly two NUL separators";
	if (nul2 == nul1 + 1 || nul2 + 1 == end)
		return "PLAIN user name or password is empty";
	if (nul1 - data > PLAIN_FIELD_MAX ||
	    nul2 - nul1 - 1 > PLAIN_FIELD_MAX ||
	    end - nul2 - 1 > PLAIN_FIELD_MAX)
		return "PLAIN field longer than 255 bytes";
	*authzid_r = xstrndup((const char *)data, nul1 - data);
	*authcid_r = xstrndup((const char *)nul1 + 1, nul2 - nul1 - 1);
	*password_r = xstrndup((const char *)nul2 + 1, end - nul2 - 1);
	return NULL;
}

int
ctl_proto_decode_plain(const char *base64, char **authzid_r, char **authcid_r,
		       char **password_r, const char **error_r)
{
	gnutls_datum_t in, out = {NULL, 0};
	const char *error = NULL;

	*authzid_r = *authcid_r = *password_r = NULL;
	if (!base64_form_valid(base64)) {
		error = "invalid base64";
		goto out;
	}
	in.data = (unsigned char *)base64;
	in.size = strlen(base64);
	if (gnutls_base64_decode2(&in, &out) < 0) {
		error = "invalid base64";
		goto out;
	}
	error = split_plain(out.data, out.size, authzid_r, authcid_r,
			    password_r);
out:
	if (out.data != NULL) {
		memset(out.data, 0, out.size);
		gnutls_free(out.data);
	}
	*error_r = error;
	return error == NULL ? 0 : -1;
}

char *
ctl_proto_encode_plain(const char *authzid, const char *authcid,
		       const char *password)
{
	size_t zlen = strlen(authzid), clen = strlen(authcid);
	size_t plen = strlen(password), len = zlen + clen + plen + 2;
	unsigned char *raw = xmalloc(len);
	gnutls_datum_t in = {raw, len}, out = {NULL, 0};
	char *text;

	memcpy(raw, authzid, zlen);
	raw[zlen] = '\0';
	memcpy(raw + zlen + 1, authcid, clen);
	raw[zlen + 1 + clen] = '\0';
	memcpy(raw + zlen + clen + 2, password, plen);
	if (gnutls_base64_encode2(&in, &out) < 0)
		abort();
	text = xstrndup((const char *)out.data, out.size);
	memset(raw, 0, len);
	free(raw);
	gnutls_free(out.data);
	return text;
}

char *
ctl_proto_quote(const char *s)
{
	size_t len = strlen(s), n = 0;
	bool atom = len > 0;
	char *out;

	for (size_t i = 0; i < len && atom; i++)
		atom = is_atom_char(s[i]);
	if (atom)
		return xstrdup(s);

	out = xmalloc(2 * len + 3);
	out[n++] = '"';
	for (size_t i = 0; i < len; i++) {
		unsigned char c = s[i];

		if (c == '"' || c == '\\')
			out[n++] = '\\';
		out[n++] = c < 0x20 || c == 0x7f ? '?' : c;
	}
	out[n++] = '"';
	out[n] = '\0';
	return out;
}
