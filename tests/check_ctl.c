/* Tests of the control protocol parser, the address checks, and the
 * control server on loopback with a real Dovecot checking passwords. */
#include <config.h>
#include "cfg.h"
#include "ctl_net.h"
#include "ctl_peer.h"
#include "ctl_private.h"
#include "ctl_proto.h"
#include "ctl_server.h"
#include "log.h"
#include "testutil.h"
#include "util.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- parser ---- */

struct parse_case {
	const char *line;
	size_t len; /* 0: strlen(line) */
	int ret;
	enum ctl_cmd cmd;
	size_t argc;
	const char *args[4];
	const char *error; /* substring of the BAD text */
};

static const struct parse_case parse_cases[] = {
	{"CAPA", 0, 0, CTL_CMD_CAPA, 0, {NULL}, NULL},
	{"capa", 0, 0, CTL_CMD_CAPA, 0, {NULL}, NULL},
	{"StartTLS", 0, 0, CTL_CMD_STARTTLS, 0, {NULL}, NULL},
	{"BIND m1", 0, 0, CTL_CMD_BIND, 1, {"m1"}, NULL},
	{"BIND  m1   TAKEOVER ",
	 0,
	 0,
	 CTL_CMD_BIND,
	 2,
	 {"m1", "TAKEOVER"},
	 NULL},
	{"AUTH PLAIN AHJlcGxhZG1pbgBhZG1pbnB3",
	 0,
	 0,
	 CTL_CMD_AUTH,
	 2,
	 {"PLAIN", "AHJlcGxhZG1pbgBhZG1pbnB3"},
	 NULL},
	{"AUTH PLAIN dGVzdA==",
	 0,
	 0,
	 CTL_CMD_AUTH,
	 2,
	 {"PLAIN", "dGVzdA=="},
	 NULL},
	{"STATUS last_error=\"disk full\" pending=3",
	 0,
	 0,
	 CTL_CMD_STATUS,
	 2,
	 {"last_error=disk full", "pending=3"},
	 NULL},
	{"STATUS last_error=\"a \\\"q\\\" \\\\ b\"",
	 0,
	 0,
	 CTL_CMD_STATUS,
	 1,
	 {"last_error=a \"q\" \\ b"},
	 NULL},
	{"STATUS \"\"", 0, 0, CTL_CMD_STATUS, 1, {""}, NULL},
	{"STATUS \"caf\xc3\xa9\"",
	 0,
	 0,
	 CTL_CMD_STATUS,
	 1,
	 {"caf\xc3\xa9"},
	 NULL},
	{"FROB x", 0, 0, CTL_CMD_UNKNOWN, 1, {"x"}, NULL},
	{"", 0, -1, 0, 0, {NULL}, "empty command"},
	{" CAPA", 0, -1, 0, 0, {NULL}, "empty command"},
	{"CA1PA", 0, -1, 0, 0, {NULL}, "invalid command word"},
	{"STATUS \"open", 0, -1, 0, 0, {NULL}, "unterminated"},
	{"STATUS \"bad \\n escape\"", 0, -1, 0, 0, {NULL}, "invalid escape"},
	{"STATUS \"trailing\\", 0, -1, 0, 0, {NULL}, "invalid escape"},
	{"STATUS ab\"c\"", 0, -1, 0, 0, {NULL}, "quote inside an atom"},
	{"STATUS \"a\"b", 0, -1, 0, 0, {NULL}, "missing space"},
	{"STATUS a\\b", 0, -1, 0, 0, {NULL}, "backslash"},
	{"STATUS a\tb", 0, -1, 0, 0, {NULL}, "control character"},
	{"BIND a\0b", 8, -1, 0, 0, {NULL}, "NUL byte"},
	{"\0", 1, -1, 0, 0, {NULL}, "NUL byte"},
	{"STATUS \xff", 0, -1, 0, 0, {NULL}, "invalid UTF-8"},
	{"STATUS \xc3", 0, -1, 0, 0, {NULL}, "invalid UTF-8"},
	{"STATUS \xc0\xaf", 0, -1, 0, 0, {NULL}, "invalid UTF-8"},
	{"STATUS \xed\xa0\x80", 0, -1, 0, 0, {NULL}, "invalid UTF-8"},
	{"STATUS 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17",
	 0,
	 -1,
	 0,
	 0,
	 {NULL},
	 "too many arguments"},
};

START_TEST(parse_table)
{
	const struct parse_case *c = &parse_cases[_i];
	size_t len = c->len != 0 ? c->len : strlen(c->line);
	struct ctl_request req;
	const char *error = NULL;
	int ret = ctl_proto_parse(c->line, len, &req, &error);

	ck_assert_msg(ret == c->ret, "case %d: returned %d", _i, ret);
	if (ret < 0) {
		ck_assert_ptr_nonnull(error);
		ck_assert_msg(strstr(error, c->error) != NULL,
			      "case %d: error \"%s\"", _i, error);
		ck_assert_ptr_null(req.word);
		return;
	}
	ck_assert_int_eq(req.cmd, c->cmd);
	ck_assert_uint_eq(req.argc, c->argc);
	for (size_t i = 0; i < c->argc; i++)
		ck_assert_str_eq(req.argv[i], c->args[i]);
	ctl_request_clear(&req);
}
END_TEST

START_TEST(find_line_cases)
{
	char big[CTL_LINE_MAX + 10];
	size_t line_len = 0, consumed = 0;

	ck_assert_int_eq(ctl_proto_find_line("CAPA", 4, &line_len, &consumed),
			 0);
	ck_assert_int_eq(
		ctl_proto_find_line("CAPA\r\nX", 7, &line_len, &consumed), 1);
	ck_assert_uint_eq(line_len, 4);
	ck_assert_uint_eq(consumed, 6);
	ck_assert_int_eq(
		ctl_proto_find_line("MODE\nX", 6, &line_len, &consumed), 1);
	ck_assert_uint_eq(line_len, 4);
	ck_assert_uint_eq(consumed, 5);

	/* 4094 bytes plus CRLF is exactly the maximum. */
	memset(big, 'A', sizeof(big));
	big[CTL_LINE_MAX - 2] = '\r';
	big[CTL_LINE_MAX - 1] = '\n';
	ck_assert_int_eq(
		ctl_proto_find_line(big, CTL_LINE_MAX, &line_len, &consumed),
		1);
	ck_assert_uint_eq(line_len, CTL_LINE_MAX - 2);
	big[CTL_LINE_MAX - 1] = 'A';
	big[CTL_LINE_MAX] = '\n';
	ck_assert_int_eq(ctl_proto_find_line(big, CTL_LINE_MAX + 1, &line_len,
					     &consumed),
			 -1);
	ck_assert_int_eq(ctl_proto_find_line(big, CTL_LINE_MAX - 1, &line_len,
					     &consumed),
			 0);
}
END_TEST

struct plain_case {
	const char *base64;
	int ret;
	const char *authzid, *authcid, *password;
};

static const struct plain_case plain_cases[] = {
	/* "\0repladmin\0adminpw" */
	{"AHJlcGxhZG1pbgBhZG1pbnB3", 0, "", "repladmin", "adminpw"},
	/* "repladmin\0repladmin\0adminpw" */
	{"cmVwbGFkbWluAHJlcGxhZG1pbgBhZG1pbnB3", 0, "repladmin", "repladmin",
	 "adminpw"},
	{"", -1, NULL, NULL, NULL},
	{"!!!!", -1, NULL, NULL, NULL},
	{"AHJlcGxhZG1pbgBhZG1pbnB", -1, NULL, NULL, NULL}, /* length */
	{"AHJl cGxh", -1, NULL, NULL, NULL},
	{"dGVzdA==", -1, NULL, NULL, NULL}, /* "test": no NUL */
	{"AHVzZXI=", -1, NULL, NULL, NULL}, /* "\0user": one NUL */
	{"AAA=", -1, NULL, NULL, NULL},     /* "\0\0": empty */
	{"AHUAcAB4", -1, NULL, NULL, NULL}, /* "\0u\0p\0x": three NULs */
	{"=AAA", -1, NULL, NULL, NULL},
};

START_TEST(plain_table)
{
	const struct plain_case *c = &plain_cases[_i];
	char *z = NULL, *u = NULL, *p = NULL;
	const char *error = NULL;
	int ret = ctl_proto_decode_plain(c->base64, &z, &u, &p, &error);

	ck_assert_msg(ret == c->ret, "case %d returned %d", _i, ret);
	if (ret < 0) {
		ck_assert_ptr_nonnull(error);
		ck_assert_ptr_null(p);
		return;
	}
	ck_assert_str_eq(z, c->authzid);
	ck_assert_str_eq(u, c->authcid);
	ck_assert_str_eq(p, c->password);
	free(z);
	free(u);
	free(p);
}
END_TEST

START_TEST(plain_encode_roundtrip)
{
	char *text = ctl_proto_encode_plain("", "repladmin", "adminpw");
	char *z, *u, *p;
	const char *error;

	ck_assert_str_eq(text, "AHJlcGxhZG1pbgBhZG1pbnB3");
	ck_assert_int_eq(ctl_proto_decode_plain(text, &z, &u, &p, &error), 0);
	ck_assert_str_eq(p, "adminpw");
	free(text);
	free(z);
	free(u);
	free(p);
}
END_TEST

START_TEST(quote_cases)
{
	static const char *const in[] = {"abc", "", "two words", "q\"b\\",
					 "tab\there"};
	static const char *const out[] = {"abc", "\"\"", "\"two words\"",
					  "\"q\\\"b\\\\\"", "\"tab?here\""};

	for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		char *q = ctl_proto_quote(in[i]);
		char *line = xasprintf("STATUS %s", q);
		struct ctl_request req;
		const char *error;

		ck_assert_str_eq(q, out[i]);
		ck_assert_int_eq(
			ctl_proto_parse(line, strlen(line), &req, &error), 0);
		ck_assert_uint_eq(req.argc, 1);
		if (i < 4)
			ck_assert_str_eq(req.argv[0], in[i]);
		ctl_request_clear(&req);
		free(line);
		free(q);
	}
}
END_TEST

START_TEST(kv_and_master_id)
{
	const char *value;
	size_t key_len;

	ck_assert(ctl_proto_split_kv("pending=3", &key_len, &value));
	ck_assert_uint_eq(key_len, 7);
	ck_assert_str_eq(value, "3");
	ck_assert(ctl_proto_split_kv("last_error=", &key_len, &value));
	ck_assert_str_eq(value, "");
	ck_assert(!ctl_proto_split_kv("=3", &key_len, &value));
	ck_assert(!ctl_proto_split_kv("Pending=3", &key_len, &value));
	ck_assert(!ctl_proto_split_kv("pending", &key_len, &value));

	ck_assert(ctl_proto_master_id_valid("mail1.example.org:2005"));
	ck_assert(!ctl_proto_master_id_valid(""));
	ck_assert(!ctl_proto_master_id_valid("a b"));
	ck_assert(
		!ctl_proto_master_id_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
					   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
}
END_TEST

struct response_case {
	const char *line;
	int ret;
	enum ctl_resp_kind kind;
	const char *code, *text, *name;
	size_t argc;
	const char *args[3];
};

static const struct response_case response_cases[] = {
	{"OK MAILREPL 1 replica",
	 0,
	 CTL_RESP_OK,
	 NULL,
	 "MAILREPL 1 replica",
	 NULL,
	 0,
	 {NULL}},
	{"OK", 0, CTL_RESP_OK, NULL, "", NULL, 0, {NULL}},
	{"NO [VERSION 1] version 2 is not supported",
	 0,
	 CTL_RESP_NO,
	 "VERSION 1",
	 "version 2 is not supported",
	 NULL,
	 0,
	 {NULL}},
	{"NO [AUTH]", 0, CTL_RESP_NO, "AUTH", "", NULL, 0, {NULL}},
	{"BAD line too long",
	 0,
	 CTL_RESP_BAD,
	 NULL,
	 "line too long",
	 NULL,
	 0,
	 {NULL}},
	{"* HOLDS-MAIL unknown",
	 0,
	 CTL_RESP_DATA,
	 NULL,
	 NULL,
	 "HOLDS-MAIL",
	 1,
	 {"unknown"}},
	{"* MASTER-STATUS pending=3 last_error=\"disk full\"",
	 0,
	 CTL_RESP_DATA,
	 NULL,
	 NULL,
	 "MASTER-STATUS",
	 2,
	 {"pending=3", "last_error=disk full"}},
	{"* MODE", 0, CTL_RESP_DATA, NULL, NULL, "MODE", 0, {NULL}},
	{"*", -1, 0, NULL, NULL, NULL, 0, {NULL}},
	{"* ", -1, 0, NULL, NULL, NULL, 0, {NULL}},
	{"* A_B x", -1, 0, NULL, NULL, NULL, 0, {NULL}},
	{"OKAY", -1, 0, NULL, NULL, NULL, 0, {NULL}},
	{"ok fine", -1, 0, NULL, NULL, NULL, 0, {NULL}},
	{"NO [AUTH needs", -1, 0, NULL, NULL, NULL, 0, {NULL}},
	{"NO [] x", -1, 0, NULL, NULL, NULL, 0, {NULL}},
	{"* STATUS \"open", -1, 0, NULL, NULL, NULL, 0, {NULL}},
	{"OK \x01", -1, 0, NULL, NULL, NULL, 0, {NULL}},
};

START_TEST(response_table)
{
	const struct response_case *c = &response_cases[_i];
	struct ctl_response resp;
	const char *error = NULL;
	int ret = ctl_proto_parse_response(c->line, strlen(c->line), &resp,
					   &error);

	ck_assert_msg(ret == c->ret, "case %d returned %d", _i, ret);
	if (ret < 0) {
		ck_assert_ptr_nonnull(error);
		return;
	}
	ck_assert_int_eq(resp.kind, c->kind);
	if (c->code != NULL)
		ck_assert_str_eq(resp.code, c->code);
	else
		ck_assert_ptr_null(resp.code);
	if (c->text != NULL)
		ck_assert_str_eq(resp.text, c->text);
	if (c->name != NULL)
		ck_assert_str_eq(resp.name, c->name);
	ck_assert_uint_eq(resp.argc, c->argc);
	for (size_t i = 0; i < c->argc; i++)
		ck_assert_str_eq(resp.argv[i], c->args[i]);
	ctl_response_clear(&resp);
}
END_TEST

/* ---- addresses ---- */

static void
make_addr(const char *text, struct sockaddr_storage *ss)
{
	struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
		v4->sin_family = AF_INET;
		return;
	}
	ck_assert_msg(inet_pton(AF_INET6, text, &v6->sin6_addr) == 1, "%s",
		      text);
	v6->sin6_family = AF_INET6;
}

struct addr_case {
	const char *addr;
	bool loopback;
	bool in_private; /* inside the list used below */
};

static const struct addr_case addr_cases[] = {
	{"127.0.0.1", true, true},
	{"127.255.0.9", true, true},
	{"::1", true, true},
	{"::ffff:127.0.0.1", true, true},
	{"::ffff:10.1.2.3", false, true},
	{"10.1.2.3", false, true},
	{"192.168.1.1", false, false},
	{"172.31.255.255", false, true},
	{"172.32.0.0", false, false},
	{"128.0.0.1", false, false},
	{"::2", false, false},
	{"fd00::1", false, true},
	{"2001:db8::1", false, false},
	{"::", false, false},
};

START_TEST(addr_table)
{
	const struct addr_case *c = &addr_cases[_i];
	struct ctl_network *nets;
	struct sockaddr_storage ss;
	size_t count;
	char *error = NULL;

	ck_assert_int_eq(ctl_net_parse_networks("127.0.0.0/8,::1/128 , "
						"10.0.0.0/8, 172.16.0.0/12, "
						"fc00::/7",
						&nets, &count, &error),
			 0);
	ck_assert_uint_eq(count, 5);
	make_addr(c->addr, &ss);
	ck_assert_msg(ctl_net_is_loopback((struct sockaddr *)&ss) ==
			      c->loopback,
		      "%s loopback", c->addr);
	ck_assert_msg(ctl_net_in_networks((struct sockaddr *)&ss, nets,
					  count) == c->in_private,
		      "%s in networks", c->addr);
	free(nets);
}
END_TEST

START_TEST(networks_invalid)
{
	static const char *const bad[] = {
		"10.0.0.0", "10.0.0.0/33", "::1/129",    "10.0.0.0/8,",
		"x/8",      "10.0.0.0/-1", "10.0.0.0/8x"};
	struct ctl_network *nets;
	size_t count;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *error = NULL;

		ck_assert_msg(ctl_net_parse_networks(bad[i], &nets, &count,
						     &error) == -1,
			      "%s accepted", bad[i]);
		ck_assert_ptr_nonnull(error);
		free(error);
	}
}
END_TEST

START_TEST(host_loopback_and_text)
{
	struct sockaddr_storage ss;
	char text[64];

	ck_assert(ctl_net_host_is_loopback("127.0.0.1"));
	ck_assert(ctl_net_host_is_loopback("localhost"));
	ck_assert(ctl_net_host_is_loopback("::1"));
	ck_assert(!ctl_net_host_is_loopback("192.0.2.1"));
	ck_assert(!ctl_net_host_is_loopback("mail.example.org"));
	make_addr("::ffff:192.0.2.7", &ss);
	ctl_net_addr_text((struct sockaddr *)&ss, text, sizeof(text));
	ck_assert_str_eq(text, "192.0.2.7");
	make_addr("2001:db8::1", &ss);
	ctl_net_addr_text((struct sockaddr *)&ss, text, sizeof(text));
	ck_assert_str_eq(text, "2001:db8::1");
}
END_TEST

START_TEST(split_listen_cases)
{
	static const char *const good[][3] = {
		{"[::]:2005", "::", "2005"},
		{"0.0.0.0:2005", "0.0.0.0", "2005"},
		{"replica.example.org:12", "replica.example.org", "12"},
		{"[fe80::1]:1", "fe80::1", "1"},
	};
	static const char *const bad[] = {"2005",     ":2005", "[::]2005",
					  "::1:2005", "host:", "host:x1",
					  "[]:1"};
	char *host, *port, *error;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		ck_assert_int_eq(
			ctl_net_split_listen(good[i][0], &host, &port, &error),
			0);
		ck_assert_str_eq(host, good[i][1]);
		ck_assert_str_eq(port, good[i][2]);
		free(host);
		free(port);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		error = NULL;
		ck_assert_msg(ctl_net_split_listen(bad[i], &host, &port,
						   &error) == -1,
			      "%s accepted", bad[i]);
		free(error);
	}
}
END_TEST

START_TEST(ratelimit_window)
{
	static struct ctl_ratelimit rl;
	time_t t = 1700000000;

	memset(&rl, 0, sizeof(rl));
	for (int i = 0; i < CTL_RATE_FAILURES - 1; i++)
		ctl_ratelimit_fail(&rl, "192.0.2.1", t + i);
	ck_assert_uint_eq(ctl_ratelimit_wait(&rl, "192.0.2.1", t + 4), 0);
	ctl_ratelimit_fail(&rl, "192.0.2.1", t + 4);
	ck_assert_uint_eq(ctl_ratelimit_wait(&rl, "192.0.2.1", t + 4),
			  CTL_RATE_WINDOW_S - 4);
	ck_assert_uint_eq(ctl_ratelimit_wait(&rl, "192.0.2.2", t + 4), 0);
	ck_assert_uint_eq(
		ctl_ratelimit_wait(&rl, "192.0.2.1", t + CTL_RATE_WINDOW_S), 0);
	ctl_ratelimit_clear(&rl, "192.0.2.1");
	ck_assert_uint_eq(ctl_ratelimit_wait(&rl, "192.0.2.1", t + 5), 0);
}
END_TEST

START_TEST(ratelimit_table_full)
{
	static struct ctl_ratelimit rl;
	char addr[32];

	memset(&rl, 0, sizeof(rl));
	for (int i = 0; i < CTL_RATE_ENTRIES + 10; i++) {
		snprintf(addr, sizeof(addr), "10.0.%d.%d", i / 256, i % 256);
		ctl_ratelimit_fail(&rl, addr, 1700000000 + i);
	}
	for (int i = 0; i < 5; i++)
		ctl_ratelimit_fail(&rl, "192.0.2.9", 1700001000);
	ck_assert_uint_gt(ctl_ratelimit_wait(&rl, "192.0.2.9", 1700001000), 0);
}
END_TEST

/* ---- peer.json ---- */

START_TEST(peer_save_load)
{
	char *dir = tu_tempdir("ctlpeer");
	char *state = xasprintf("%s/state", dir);
	struct json_object *obj, *back;
	char *error = NULL;
	struct stat st;

	ck_assert_int_eq(ctl_peer_load(state, &obj, &error), 0);
	ck_assert_ptr_null(ctl_peer_get_str(obj, "bound_master"));
	json_object_object_add(obj, "bound_master",
			       json_object_new_string("m1"));
	json_object_object_add(obj, "bound_at", json_object_new_int64(42));
	ck_assert_int_eq(ctl_peer_save(state, obj, &error), 0);
	json_object_put(obj);

	ck_assert_int_eq(ctl_peer_load(state, &back, &error), 0);
	ck_assert_str_eq(ctl_peer_get_str(back, "bound_master"), "m1");
	ck_assert_int_eq(ctl_peer_get_int(back, "bound_at"), 42);
	json_object_put(back);
	ck_assert_int_eq(stat(state, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0700);

	tu_write_file(error = xasprintf("%s/peer.json", state), "{oops", 5,
		      0600);
	free(error);
	error = NULL;
	ck_assert_int_eq(ctl_peer_load(state, &back, &error), -1);
	ck_assert_ptr_nonnull(strstr(error, "peer.json"));
	free(error);
	tu_rmrf(dir);
	free(state);
	free(dir);
}
END_TEST

/* ---- dispatcher without a network ---- */

static char captured[16384];
static size_t captured_len;

static int
capture_write(struct ctl_session *s, const char *data, size_t len)
{
	if (captured_len + len < sizeof(captured)) {
		memcpy(captured + captured_len, data, len);
		captured_len += len;
		captured[captured_len] = '\0';
	}
	return 0;
}

static enum ctl_auth_result
fake_check(const struct ctl_settings *settings, const char *password,
	   char **detail_r)
{
	if (strcmp(password, "adminpw") == 0)
		return CTL_AUTH_OK;
	*detail_r = xstrdup("wrong password");
	return CTL_AUTH_REJECTED;
}

static void
ctx_setup(struct ctl_ctx *ctx, const char *state_dir, bool with_tls)
{
	memset(ctx, 0, sizeof(*ctx));
	pthread_mutex_init(&ctx->lock, NULL);
	pthread_cond_init(&ctx->idle, NULL);
	ctx->check_password = fake_check;
	ctx->idle_timeout_s = 5;
	ctx->max_connections = 4;
	ctx->settings = xcalloc(1, sizeof(*ctx->settings));
	ctx->settings->refs = 1;
	ctx->settings->mode = CFG_MODE_REPLICA;
	ctx->settings->state_dir = xstrdup(state_dir);
	ctx->settings->admin_user = xstrdup("repladmin");
	ctx->settings->imap_host = xstrdup("127.0.0.1");
	if (with_tls)
		gnutls_certificate_allocate_credentials(
			&ctx->settings->tls_creds);
}

static void
ctx_teardown(struct ctl_ctx *ctx)
{
	ctl_settings_unref(&ctx->settings);
	pthread_mutex_destroy(&ctx->lock);
	pthread_cond_destroy(&ctx->idle);
}

static const char *
run_line(struct ctl_session *s, const char *line)
{
	captured_len = 0;
	captured[0] = '\0';
	ctl_session_handle_line(s, line, strlen(line));
	return captured;
}

/* A peer that is not on loopback must use STARTTLS before AUTH. */
START_TEST(auth_needs_tls_off_loopback)
{
	char *dir = tu_tempdir("ctldisp");
	struct ctl_ctx ctx;
	struct ctl_session s;

	ctx_setup(&ctx, dir, true);
	ctl_session_init(&s, &ctx, -1, CTL_TRANSPORT_TCP, "192.0.2.1", false);
	s.write_fn = capture_write;
	ck_assert_str_eq(run_line(&s, "AUTH PLAIN AHJlcGxhZG1pbgBhZG1pbnB3"),
			 "NO [STARTTLS] send STARTTLS before AUTH\r\n");
	ck_assert(!s.authenticated);
	ck_assert_str_eq(run_line(&s, "CAPA"),
			 "* MAILREPL 1 replica STARTTLS AUTH=PLAIN\r\n"
			 "OK CAPA completed\r\n");
	ctl_session_deinit(&s);
	ctl_settings_unref(&ctx.settings);

	/* Without a certificate, STARTTLS is not offered at all. */
	ctx_teardown(&ctx);
	ctx_setup(&ctx, dir, false);
	ctl_session_init(&s, &ctx, -1, CTL_TRANSPORT_TCP, "192.0.2.1", false);
	s.write_fn = capture_write;
	ck_assert_str_eq(run_line(&s, "AUTH PLAIN AHJlcGxhZG1pbgBhZG1pbnB3"),
			 "NO [STARTTLS] TLS is not configured on this "
			 "replica\r\n");
	ck_assert_str_eq(run_line(&s, "STARTTLS"),
			 "NO [STARTTLS] TLS is not configured on this "
			 "replica\r\n");
	ctl_session_deinit(&s);
	ctx_teardown(&ctx);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

struct dialog_step {
	const char *request;
	const char *response; /* exact, CRLF-separated */
};

/* The loopback exemption and the pre-AUTH rules, without a network. */
static const struct dialog_step loopback_dialog[] = {
	{"MODE", "NO [AUTH] MODE needs AUTH first\r\n"},
	{"BIND m1", "NO [AUTH] BIND needs AUTH first\r\n"},
	{"VERSION 1", "OK using version 1\r\n"},
	{"VERSION 2", "NO [VERSION 1] version 2 is not supported\r\n"},
	{"VERSION x", "BAD expected VERSION <number>\r\n"},
	{"AUTH PLAIN", "BAD expected AUTH PLAIN <base64>\r\n"},
	{"AUTH CRAM-MD5 abc", "NO [AUTH] mechanism is not supported; use "
			      "PLAIN\r\n"},
	{"AUTH PLAIN ****", "BAD invalid base64\r\n"},
	{"AUTH PLAIN AHJlcGxhZG1pbgB3cm9uZw==",
	 "NO [AUTHENTICATIONFAILED] invalid credentials\r\n"},
	{"AUTH PLAIN AHJlcGxhZG1pbgBhZG1pbnB3", "OK authenticated\r\n"},
	{"AUTH PLAIN AHJlcGxhZG1pbgBhZG1pbnB3",
	 "BAD already authenticated\r\n"},
	{"STARTTLS", "BAD STARTTLS is not allowed after AUTH\r\n"},
	{"CAPA", "* MAILREPL 1 replica\r\nOK CAPA completed\r\n"},
	{"INIT REQUEST", "NO [LOCAL] INIT REQUEST is accepted only on the "
			 "local socket\r\n"},
	{"INIT END result=ok", "NO [BIND] send BIND <master-id> first\r\n"},
	{"STATUS pending=1", "NO [BIND] send BIND <master-id> first\r\n"},
	{"INIT", "BAD expected INIT BEGIN, INIT END or INIT REQUEST\r\n"},
	{"BIND", "BAD expected BIND <master-id> [TAKEOVER]; a master id has 1 "
		 "to 64 of A-Z a-z 0-9 . _ - :\r\n"},
	{"BIND m1 FOO", "BAD expected BIND <master-id> [TAKEOVER]; a master "
			"id has 1 to 64 of A-Z a-z 0-9 . _ - :\r\n"},
	{"BIND m1", "OK bound\r\n"},
	{"INIT BEGIN m2", "BAD INIT BEGIN must name the master bound by "
			  "BIND\r\n"},
	{"INIT END", "BAD INIT END needs result=ok, result=failed or "
		     "result=rejected\r\n"},
	{"INIT END result=ok messages=-1", "BAD a count is not a non-negative "
					   "integer\r\n"},
	{"INIT END result=ok x", "BAD expected key=value arguments\r\n"},
	{"STATUS pending=99999999999999999999", "BAD a count is not a "
						"non-negative integer\r\n"},
	{"FROB", "BAD unknown command\r\n"},
	{"QUIT", "OK bye\r\n"},
};

START_TEST(loopback_dialog_rules)
{
	char *dir = tu_tempdir("ctldisp");
	struct ctl_ctx ctx;
	struct ctl_session s;

	ctx_setup(&ctx, dir, true);
	ctl_session_init(&s, &ctx, -1, CTL_TRANSPORT_TCP, "127.0.0.1", true);
	s.write_fn = capture_write;
	for (size_t i = 0;
	     i < sizeof(loopback_dialog) / sizeof(loopback_dialog[0]); i++)
		ck_assert_msg(strcmp(run_line(&s, loopback_dialog[i].request),
				     loopback_dialog[i].response) == 0,
			      "%s -> %s", loopback_dialog[i].request, captured);
	ck_assert(s.close);
	ctl_session_deinit(&s);
	ctx_teardown(&ctx);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

static int
holds_mail_no(void *context)
{
	return 0;
}

static int
holds_mail_failed(void *context)
{
	return -1;
}

START_TEST(holds_mail_hook_results)
{
	char *dir = tu_tempdir("ctldisp");
	struct ctl_ctx ctx;
	struct ctl_session s;

	ctx_setup(&ctx, dir, false);
	ctl_session_init(&s, &ctx, -1, CTL_TRANSPORT_LOCAL, "local", true);
	s.write_fn = capture_write;
	ck_assert_str_eq(run_line(&s, "BIND m1"), "OK bound\r\n");
	ck_assert_str_eq(run_line(&s, "INIT BEGIN m1"),
			 "* HOLDS-MAIL unknown\r\nOK INIT BEGIN recorded\r\n");
	ctx.holds_mail = holds_mail_no;
	ck_assert_str_eq(run_line(&s, "INIT BEGIN m1"),
			 "* HOLDS-MAIL no\r\nOK INIT BEGIN recorded\r\n");
	ctx.holds_mail = holds_mail_failed;
	ck_assert_str_eq(run_line(&s, "INIT BEGIN m1"),
			 "* HOLDS-MAIL unknown\r\nOK INIT BEGIN recorded\r\n");
	ctl_session_deinit(&s);
	ctx_teardown(&ctx);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

/* A long last_error is stored cut at a character boundary, so that the
 * STATUS response that repeats it fits in one line. */
START_TEST(status_long_error_cut)
{
	char *dir = tu_tempdir("ctldisp");
	char *text = xmalloc(1 + 2 * 2035 + 1);
	struct json_object *peer;
	struct ctl_ctx ctx;
	struct ctl_session s;
	const char *stored, *line;
	char *request, *error = NULL;
	size_t len;

	text[0] = 'a';
	for (size_t i = 0; i < 2035; i++)
		memcpy(text + 1 + 2 * i, "\xc3\xa9", 2);
	text[1 + 2 * 2035] = '\0';
	request = xasprintf("STATUS last_error=\"%s\"", text);
	ck_assert_uint_le(strlen(request) + 2, CTL_LINE_MAX);

	ctx_setup(&ctx, dir, false);
	ctl_session_init(&s, &ctx, -1, CTL_TRANSPORT_LOCAL, "local", true);
	s.write_fn = capture_write;
	ck_assert_str_eq(run_line(&s, "BIND m1"), "OK bound\r\n");
	run_line(&s, request);
	ck_assert_ptr_nonnull(strstr(captured, "OK STATUS completed\r\n"));
	for (line = captured; *line != '\0'; line += len + 2) {
		len = strstr(line, "\r\n") - line;
		ck_assert_uint_le(len + 2, CTL_LINE_MAX);
	}

	ck_assert_int_eq(ctl_peer_load(dir, &peer, &error), 0);
	stored = ctl_peer_get_str(json_object_object_get(peer, "master_status"),
				  "last_error");
	ck_assert_ptr_nonnull(stored);
	ck_assert_uint_eq(strlen(stored), CTL_TEXT_MAX - 1);
	ck_assert_int_eq(memcmp(stored, text, CTL_TEXT_MAX - 1), 0);
	json_object_put(peer);

	ctl_session_deinit(&s);
	ctx_teardown(&ctx);
	tu_rmrf(dir);
	free(dir);
	free(text);
	free(request);
}
END_TEST

/* Text from a hand-edited peer.json still goes out as valid arguments. */
START_TEST(edited_peer_file_quoted)
{
	static const char json[] =
		"{\"bound_master\": \"two words\", "
		"\"init_end\": {\"result\": \"odd \\\"value\\\"\"}}";
	char *dir = tu_tempdir("ctldisp");
	char *path = xasprintf("%s/peer.json", dir);
	struct ctl_ctx ctx;
	struct ctl_session s;

	tu_write_file(path, json, strlen(json), 0600);
	ctx_setup(&ctx, dir, false);
	ctl_session_init(&s, &ctx, -1, CTL_TRANSPORT_LOCAL, "local", true);
	s.write_fn = capture_write;
	ck_assert_str_eq(run_line(&s, "MODE"),
			 "* MODE replica\r\n* BOUND \"two words\"\r\n"
			 "OK MODE completed\r\n");
	ck_assert_str_eq(run_line(&s, "STATUS"),
			 "* STATUS mode=replica bound=\"two words\" "
			 "init_result=\"odd \\\"value\\\"\"\r\n"
			 "* INIT-REQUESTED no\r\nOK STATUS completed\r\n");
	ctl_session_deinit(&s);
	ctx_teardown(&ctx);
	tu_rmrf(dir);
	free(dir);
	free(path);
}
END_TEST

/* The idle timeout ends a session that receives nothing. */
START_TEST(session_idle_timeout)
{
	char *dir = tu_tempdir("ctlidle");
	struct ctl_ctx ctx;
	struct ctl_session s;
	char buf[256];
	ssize_t n;
	int pair[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
	ctx_setup(&ctx, dir, false);
	ctx.idle_timeout_s = 1;
	ctl_session_init(&s, &ctx, pair[0], CTL_TRANSPORT_TCP, "127.0.0.1",
			 true);
	ctl_session_run(&s);
	ctl_session_deinit(&s);
	close(pair[0]);

	n = recv(pair[1], buf, sizeof(buf) - 1, MSG_WAITALL);
	ck_assert_int_gt(n, 0);
	buf[n] = '\0';
	ck_assert_str_eq(buf, "OK MAILREPL 1 replica AUTH=PLAIN\r\n"
			      "NO [TIMEOUT] idle for 1 s, closing\r\n");
	close(pair[1]);
	ctx_teardown(&ctx);
	tu_rmrf(dir);
	free(dir);
}
END_TEST

/* ---- the server on loopback ---- */

static struct tu_dovecot *dovecot;

static void
dovecot_setup(void)
{
	dovecot = tu_dovecot_start();
}

static void
dovecot_teardown(void)
{
	tu_dovecot_stop(&dovecot);
}

static unsigned
free_port(void)
{
	struct sockaddr_in sin = {.sin_family = AF_INET};
	socklen_t len = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	unsigned port;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	port = ntohs(sin.sin_port);
	close(fd);
	return port;
}

struct fixture {
	char *dir;
	char *socket_path;
	unsigned port;
	struct config *cfg;
	struct ctl_server *server;
};

/* Write a replica config and start the server. extra is appended to the
 * [replica] section. */
static void
server_start(struct fixture *f, const char *extra)
{
	char *conf_path, *conf, *error = NULL;
	unsigned imap_port = dovecot != NULL ? dovecot->imap_port : 1;

	f->dir = tu_tempdir("ctlsrv");
	f->socket_path = xasprintf("%s/run/sub/control.sock", f->dir);
	f->port = free_port();
	conf_path = xasprintf("%s/mailrepl.conf", f->dir);
	conf = xasprintf("[general]\nmode = replica\nstate_dir = %s/state\n"
			 "control_socket = %s\nlog_file = %s/log\n"
			 "[replica]\nlisten = 127.0.0.1:%u\n"
			 "admin_user = repladmin\nimap_host = 127.0.0.1\n"
			 "imap_port = %u\n%s",
			 f->dir, f->socket_path, f->dir, f->port, imap_port,
			 extra);
	tu_write_file(conf_path, conf, strlen(conf), 0600);
	ck_assert_msg(config_load(conf_path, &f->cfg, &error) == 0, "%s",
		      error);
	ck_assert_msg(ctl_server_start(f->cfg, &f->server, &error) == 0, "%s",
		      error);
	free(conf);
	free(conf_path);
}

static void
server_stop(struct fixture *f)
{
	ctl_server_stop(&f->server);
	ck_assert_ptr_null(f->server);
	config_free(&f->cfg);
	tu_rmrf(f->dir);
	free(f->dir);
	free(f->socket_path);
}

struct client {
	int fd;
	gnutls_session_t tls;
	gnutls_certificate_credentials_t creds;
	char buf[8192];
	size_t len;
};

static void
client_timeouts(int fd)
{
	struct timeval tv = {.tv_sec = 20};

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

static void
client_tcp(struct client *c, unsigned port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET,
				  .sin_port = htons(port)};

	memset(c, 0, sizeof(*c));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	client_timeouts(c->fd);
	ck_assert_int_eq(connect(c->fd, (struct sockaddr *)&sin, sizeof(sin)),
			 0);
}

static void
client_unix(struct client *c, const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};

	memset(c, 0, sizeof(*c));
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	c->fd = socket(AF_UNIX, SOCK_STREAM, 0);
	client_timeouts(c->fd);
	ck_assert_int_eq(connect(c->fd, (struct sockaddr *)&sun, sizeof(sun)),
			 0);
}

static void
client_close(struct client *c)
{
	if (c->tls != NULL) {
		gnutls_bye(c->tls, GNUTLS_SHUT_WR);
		gnutls_deinit(c->tls);
	}
	if (c->creds != NULL)
		gnutls_certificate_free_credentials(c->creds);
	close(c->fd);
}

static void
client_send_raw(struct client *c, const char *data, size_t len)
{
	ssize_t n = c->tls != NULL ? gnutls_record_send(c->tls, data, len)
				   : send(c->fd, data, len, MSG_NOSIGNAL);

	ck_assert_int_eq(n, (ssize_t)len);
}

static void
client_send(struct client *c, const char *line)
{
	char *text = xasprintf("%s\r\n", line);

	client_send_raw(c, text, strlen(text));
	free(text);
}

/* Every line the server sends must follow the response grammar. */
static void
check_response_grammar(const char *line)
{
	struct ctl_response resp;
	const char *error = NULL;

	ck_assert_msg(ctl_proto_parse_response(line, strlen(line), &resp,
					       &error) == 0,
		      "server sent \"%s\": %s", line, error);
	ctl_response_clear(&resp);
}

/* Read one line without CRLF; NULL at EOF. Caller frees. */
static char *
client_line(struct client *c)
{
	for (;;) {
		char *lf = memchr(c->buf, '\n', c->len);
		ssize_t n;

		if (lf != NULL) {
			size_t len = lf - c->buf;
			char *line = xstrndup(c->buf, len > 0 && lf[-1] == '\r'
							      ? len - 1
							      : len);

			memmove(c->buf, lf + 1, c->len - len - 1);
			c->len -= len + 1;
			check_response_grammar(line);
			return line;
		}
		n = c->tls != NULL ? gnutls_record_recv(c->tls, c->buf + c->len,
							sizeof(c->buf) - c->len)
				   : recv(c->fd, c->buf + c->len,
					  sizeof(c->buf) - c->len, 0);
		if (n <= 0)
			return NULL;
		c->len += n;
	}
}

static void
expect(struct client *c, const char *line)
{
	char *got = client_line(c);

	ck_assert_msg(got != NULL, "EOF, expected \"%s\"", line);
	ck_assert_str_eq(got, line);
	free(got);
}

static void
expect_prefix(struct client *c, const char *prefix)
{
	char *got = client_line(c);

	ck_assert_msg(got != NULL, "EOF, expected \"%s...\"", prefix);
	ck_assert_msg(strncmp(got, prefix, strlen(prefix)) == 0,
		      "got \"%s\", expected \"%s...\"", got, prefix);
	free(got);
}

static void
expect_eof(struct client *c)
{
	char *got = client_line(c);

	ck_assert_msg(got == NULL, "expected EOF, got \"%s\"", got);
}

static void
request(struct client *c, const char *line, const char *response)
{
	client_send(c, line);
	expect(c, response);
}

START_TEST(server_greeting_and_errors)
{
	struct fixture f;
	struct client c;
	char big[CTL_LINE_MAX + 100];

	server_start(&f, "trusted_networks = 127.0.0.0/8\n");
	client_tcp(&c, f.port);
	expect(&c, "OK MAILREPL 1 replica AUTH=PLAIN");
	client_send(&c, "capa");
	expect(&c, "* MAILREPL 1 replica AUTH=PLAIN");
	expect(&c, "OK CAPA completed");
	request(&c, "NOSUCH", "BAD unknown command");
	request(&c, "MODE", "NO [AUTH] MODE needs AUTH first");
	request(&c, "STATUS \"open", "BAD unterminated quoted string");
	client_send_raw(&c, "BIND a\0b\r\n", 10);
	expect(&c, "BAD NUL byte in line");
	client_send_raw(&c, "\r\n", 2);
	expect(&c, "BAD empty command");
	/* A bare LF ends a line too. */
	client_send_raw(&c, "CAPA extra\n", 11);
	expect(&c, "BAD CAPA takes no arguments");

	memset(big, 'A', sizeof(big));
	client_send_raw(&c, big, sizeof(big));
	expect(&c, "BAD line too long");
	expect_eof(&c);
	client_close(&c);

	/* A request cut short by the client's close leaves the server
	 * serving others. */
	client_tcp(&c, f.port);
	expect_prefix(&c, "OK MAILREPL 1 ");
	client_send_raw(&c, "BIND m", 6);
	client_close(&c);
	client_tcp(&c, f.port);
	expect_prefix(&c, "OK MAILREPL 1 ");
	request(&c, "QUIT", "OK bye");
	expect_eof(&c);
	client_close(&c);
	server_stop(&f);
}
END_TEST

START_TEST(server_untrusted_peer)
{
	struct fixture f;
	struct client c;
	char *log_path, *log, *error = NULL;
	char byte;

	server_start(&f, "trusted_networks = 10.0.0.0/8, fc00::/7\n");
	log_path = xasprintf("%s/ctl.log", f.dir);
	ck_assert_msg(log_open(log_path, false, "check_ctl", &error) == 0, "%s",
		      error);
	client_tcp(&c, f.port);
	ck_assert_int_eq(recv(c.fd, &byte, 1, 0), 0);
	client_close(&c);

	ctl_server_stop(&f.server);
	log_close();
	log = tu_read_file(log_path, NULL);
	ck_assert_ptr_nonnull(log);
	ck_assert_ptr_nonnull(strstr(log, "event=ctl_reject peer=127.0.0.1 "
					  "reason=untrusted"));
	ck_assert_ptr_null(strstr(log, "event=ctl_open"));
	free(log);
	free(log_path);
	server_stop(&f);
}
END_TEST

static char *
auth_line(const char *password)
{
	char *b64 = ctl_proto_encode_plain("", "repladmin", password);
	char *line = xasprintf("AUTH PLAIN %s", b64);

	free(b64);
	return line;
}

static void
authenticate(struct client *c)
{
	char *line = auth_line(dovecot->admin_password);

	request(c, line, "OK authenticated");
	free(line);
}

START_TEST(server_auth_against_dovecot)
{
	struct fixture f;
	struct client c;
	char *wrong = auth_line("not-the-password");
	char *log_path, *log, *error = NULL;

	server_start(&f, "trusted_networks = 127.0.0.0/8\n");
	log_path = xasprintf("%s/ctl.log", f.dir);
	ck_assert_msg(log_open(log_path, false, "check_ctl", &error) == 0, "%s",
		      error);
	client_tcp(&c, f.port);
	expect_prefix(&c, "OK MAILREPL 1 replica");
	request(&c, wrong, "NO [AUTHENTICATIONFAILED] invalid credentials");
	authenticate(&c);
	request(&c, "MODE", "* MODE replica");
	expect(&c, "* BOUND -");
	expect(&c, "OK MODE completed");
	client_close(&c);

	/* The log names the failure but never the password. Stopping the
	 * server first ends the session threads that write to the log. */
	ctl_server_stop(&f.server);
	log_close();
	log = tu_read_file(log_path, NULL);
	ck_assert_ptr_nonnull(log);
	ck_assert_ptr_nonnull(strstr(log, "event=ctl_auth"));
	ck_assert_ptr_nonnull(strstr(log, "result=rejected"));
	ck_assert_ptr_nonnull(strstr(log, "result=ok"));
	ck_assert_ptr_null(strstr(log, "not-the-password"));
	ck_assert_ptr_null(strstr(log, dovecot->admin_password));
	server_stop(&f);
	free(log);
	free(log_path);
	free(wrong);
}
END_TEST

START_TEST(server_auth_rate_limit)
{
	struct fixture f;
	struct client c;
	char *plain = ctl_proto_encode_plain("", "mallory", "x");
	char *other = xasprintf("AUTH PLAIN %s", plain);
	char *right = auth_line(dovecot->admin_password);

	server_start(&f, "trusted_networks = 127.0.0.0/8\n");
	client_tcp(&c, f.port);
	expect_prefix(&c, "OK MAILREPL 1 replica");
	for (int i = 0; i < CTL_RATE_FAILURES; i++)
		request(&c, other,
			"NO [AUTHENTICATIONFAILED] invalid credentials");
	client_send(&c, right);
	expect_prefix(&c, "NO [UNAVAILABLE] too many failed logins, try "
			  "again in ");
	client_close(&c);

	/* The limit is per address, not per connection. */
	client_tcp(&c, f.port);
	expect_prefix(&c, "OK MAILREPL 1 replica");
	client_send(&c, right);
	expect_prefix(&c, "NO [UNAVAILABLE] too many failed logins");
	client_close(&c);
	server_stop(&f);
	free(plain);
	free(other);
	free(right);
}
END_TEST

static struct json_object *
read_peer(struct fixture *f)
{
	char *state = xasprintf("%s/state", f->dir);
	struct json_object *peer;
	char *error = NULL;

	ck_assert_msg(ctl_peer_load(state, &peer, &error) == 0, "%s", error);
	free(state);
	return peer;
}

static struct json_object *
member(struct json_object *obj, const char *key)
{
	struct json_object *v = NULL;

	ck_assert_msg(json_object_object_get_ex(obj, key, &v), "no %s", key);
	return v;
}

static int
holds_mail_counted(void *context)
{
	++*(int *)context;
	return 1;
}

START_TEST(server_bind_init_status)
{
	struct fixture f;
	struct client c, d;
	struct json_object *peer, *end, *status;
	int hook_calls = 0;

	server_start(&f, "trusted_networks = 127.0.0.0/8\n");
	client_tcp(&c, f.port);
	expect_prefix(&c, "OK MAILREPL 1 replica");
	authenticate(&c);
	request(&c, "BIND master-a", "OK bound");
	request(&c, "BIND master-a", "OK already bound");
	client_send(&c, "MODE");
	expect(&c, "* MODE replica");
	expect(&c, "* BOUND master-a");
	expect(&c, "OK MODE completed");

	ctl_server_set_holds_mail(f.server, holds_mail_counted, &hook_calls);
	client_send(&c, "INIT BEGIN master-a");
	expect(&c, "* HOLDS-MAIL yes");
	expect(&c, "OK INIT BEGIN recorded");
	ck_assert_int_eq(hook_calls, 1);
	request(&c,
		"INIT END result=rejected messages=120 bytes=4096 "
		"rejected=2 finished=1700000000",
		"OK INIT END recorded");
	client_send(&c, "STATUS pending=7 oldest_age_s=3 "
			"last_applied=1700000100 last_error=\"disk full\"");
	expect(&c, "* STATUS mode=replica bound=master-a init_result=rejected "
		   "init_finished=1700000000");
	expect(&c, "* INIT-REQUESTED no");
	expect_prefix(&c, "* MASTER-STATUS pending=7 oldest_age_s=3 "
			  "last_applied=1700000100 "
			  "last_error=\"disk full\" received=");
	expect(&c, "OK STATUS completed");

	peer = read_peer(&f);
	ck_assert_str_eq(ctl_peer_get_str(peer, "bound_master"), "master-a");
	end = member(peer, "init_end");
	ck_assert_str_eq(ctl_peer_get_str(end, "result"), "rejected");
	ck_assert_int_eq(ctl_peer_get_int(end, "messages"), 120);
	ck_assert_int_eq(ctl_peer_get_int(end, "bytes"), 4096);
	ck_assert_int_eq(ctl_peer_get_int(end, "rejected"), 2);
	ck_assert_int_eq(ctl_peer_get_int(end, "finished"), 1700000000);
	ck_assert_str_eq(ctl_peer_get_str(member(peer, "init_begin"), "master"),
			 "master-a");
	status = member(peer, "master_status");
	ck_assert_int_eq(ctl_peer_get_int(status, "pending"), 7);
	ck_assert_str_eq(ctl_peer_get_str(status, "last_error"), "disk full");
	json_object_put(peer);

	/* A second master is turned away, then takes over. */
	client_tcp(&d, f.port);
	expect_prefix(&d, "OK MAILREPL 1 replica");
	authenticate(&d);
	request(&d, "BIND master-b",
		"NO [BOUND-ELSEWHERE] bound to master master-a; send BIND "
		"master-b TAKEOVER to rebind");
	request(&d, "BIND master-b TAKEOVER", "OK rebound");
	/* The first master's connection now has a stale binding. */
	request(&c, "STATUS pending=1",
		"NO [BOUND-ELSEWHERE] another master took over this replica");
	request(&c, "INIT END result=ok",
		"NO [BOUND-ELSEWHERE] another master took over this replica");
	client_close(&c);
	client_close(&d);

	peer = read_peer(&f);
	ck_assert_str_eq(ctl_peer_get_str(peer, "bound_master"), "master-b");
	json_object_put(peer);
	server_stop(&f);
}
END_TEST

START_TEST(server_local_socket)
{
	struct fixture f;
	struct client c, m;
	struct stat st;

	server_start(&f, "trusted_networks = 127.0.0.0/8\n");
	ck_assert_int_eq(stat(f.socket_path, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	ck_assert_uint_eq(st.st_mode & 0777, 0600);

	client_unix(&c, f.socket_path);
	expect(&c, "OK MAILREPL 1 replica");
	client_send(&c, "MODE");
	expect(&c, "* MODE replica");
	expect(&c, "* BOUND -");
	expect(&c, "OK MODE completed");
	request(&c, "STARTTLS",
		"NO STARTTLS is not available on the local socket");
	request(&c, "INIT REQUEST",
		"OK INIT REQUEST recorded; the master sees it in its next "
		"STATUS");

	/* The master receives the request in its STATUS response, and INIT BEGIN
	 * clears it. */
	client_tcp(&m, f.port);
	expect_prefix(&m, "OK MAILREPL 1 replica");
	authenticate(&m);
	request(&m, "BIND m1", "OK bound");
	client_send(&m, "STATUS pending=0");
	expect(&m, "* STATUS mode=replica bound=m1");
	expect(&m, "* INIT-REQUESTED yes");
	expect_prefix(&m, "* MASTER-STATUS pending=0 received=");
	expect(&m, "OK STATUS completed");
	client_send(&m, "INIT BEGIN m1");
	expect(&m, "* HOLDS-MAIL unknown");
	expect(&m, "OK INIT BEGIN recorded");
	client_close(&m);

	client_send(&c, "STATUS");
	expect(&c, "* STATUS mode=replica bound=m1");
	expect(&c, "* INIT-REQUESTED no");
	expect_prefix(&c, "* MASTER-STATUS pending=0 received=");
	expect(&c, "OK STATUS completed");
	client_close(&c);
	server_stop(&f);
	ck_assert_int_eq(access(f.socket_path, F_OK), -1);
}
END_TEST

START_TEST(server_stale_socket_and_reload)
{
	struct fixture f;
	struct client c;
	struct config *cfg2;
	char *conf, *path, *error = NULL;
	unsigned port2;

	server_start(&f, "trusted_networks = 127.0.0.0/8\n");

	/* A reload that fails keeps the old listener and settings. */
	path = xasprintf("%s/broken.conf", f.dir);
	conf = xasprintf("[general]\nmode = replica\nstate_dir = %s/state\n"
			 "control_socket = %s\n[replica]\n"
			 "listen = 127.0.0.1:%u\n"
			 "tls_cert_file = %s/none.pem\n"
			 "tls_key_file = %s/none.pem\n",
			 f.dir, f.socket_path, free_port(), f.dir, f.dir);
	tu_write_file(path, conf, strlen(conf), 0600);
	ck_assert_msg(config_load(path, &cfg2, &error) == 0, "%s", error);
	ck_assert_int_eq(ctl_server_reload(f.server, cfg2, &error), -1);
	ck_assert_ptr_nonnull(strstr(error, "tls_cert_file"));
	free(error);
	error = NULL;
	client_tcp(&c, f.port);
	expect(&c, "OK MAILREPL 1 replica AUTH=PLAIN");
	client_close(&c);
	config_free(&cfg2);
	free(conf);
	free(path);

	/* Reload with trusted networks that exclude loopback and a new
	 * port: new connections follow the new settings. */
	port2 = free_port();
	path = xasprintf("%s/second.conf", f.dir);
	conf = xasprintf("[general]\nmode = replica\nstate_dir = %s/state\n"
			 "control_socket = %s\n[replica]\n"
			 "listen = 127.0.0.1:%u\n"
			 "trusted_networks = 10.0.0.0/8\n",
			 f.dir, f.socket_path, port2);
	tu_write_file(path, conf, strlen(conf), 0600);
	ck_assert_msg(config_load(path, &cfg2, &error) == 0, "%s", error);
	ck_assert_msg(ctl_server_reload(f.server, cfg2, &error) == 0, "%s",
		      error);
	client_tcp(&c, port2);
	ck_assert_ptr_null(client_line(&c));
	client_close(&c);
	config_free(&cfg2);
	free(conf);
	free(path);
	server_stop(&f);

	/* A socket file left behind by a dead agent is replaced. */
	server_start(&f, "trusted_networks = 127.0.0.0/8\n");
	ctl_server_stop(&f.server);
	{
		int fd = socket(AF_UNIX, SOCK_STREAM, 0);
		struct sockaddr_un sun = {.sun_family = AF_UNIX};

		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s",
			 f.socket_path);
		ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)),
				 0);
		close(fd);
	}
	ck_assert_msg(ctl_server_start(f.cfg, &f.server, &error) == 0, "%s",
		      error);
	client_unix(&c, f.socket_path);
	expect(&c, "OK MAILREPL 1 replica");
	client_close(&c);
	server_stop(&f);
}
END_TEST

/* Past the connection limit a trusted peer gets one NO line, and
 * stopping the server ends the connections that are open. */
START_TEST(server_connection_limit)
{
	struct fixture f;
	struct client clients[CTL_MAX_CONNECTIONS], extra;

	server_start(&f, "trusted_networks = 127.0.0.0/8\n");
	for (size_t i = 0; i < CTL_MAX_CONNECTIONS; i++) {
		client_tcp(&clients[i], f.port);
		expect_prefix(&clients[i], "OK MAILREPL 1 replica");
	}
	client_tcp(&extra, f.port);
	expect(&extra, "NO [UNAVAILABLE] too many connections, try again "
		       "later");
	expect_eof(&extra);
	client_close(&extra);

	/* The local socket has its own limit. */
	client_unix(&extra, f.socket_path);
	expect(&extra, "OK MAILREPL 1 replica");
	client_close(&extra);

	server_stop(&f);
	for (size_t i = 0; i < CTL_MAX_CONNECTIONS; i++) {
		expect_eof(&clients[i]);
		client_close(&clients[i]);
	}
}
END_TEST

/* A second agent with the same socket or port fails to start and
 * leaves the first one serving. */
START_TEST(server_second_start_fails)
{
	struct fixture f;
	struct ctl_server *second = NULL;
	struct client c;
	char *error = NULL;
	char *other_socket;

	server_start(&f, "trusted_networks = 127.0.0.0/8\n");
	ck_assert_int_eq(ctl_server_start(f.cfg, &second, &error), -1);
	ck_assert_ptr_null(second);
	ck_assert_msg(strstr(error, "in use by a running agent") != NULL, "%s",
		      error);
	free(error);
	error = NULL;

	other_socket = xasprintf("%s/other.sock", f.dir);
	free(f.cfg->control_socket);
	f.cfg->control_socket = other_socket;
	ck_assert_int_eq(ctl_server_start(f.cfg, &second, &error), -1);
	ck_assert_msg(strstr(error, "127.0.0.1:") != NULL, "%s", error);
	ck_assert_int_eq(access(other_socket, F_OK), -1);
	free(error);

	client_unix(&c, f.socket_path);
	expect(&c, "OK MAILREPL 1 replica");
	client_close(&c);
	server_stop(&f);
}
END_TEST

/* Outside replica mode only the local socket listens. */
START_TEST(server_standalone_local_only)
{
	char *dir = tu_tempdir("ctlstd");
	char *conf_path = xasprintf("%s/c.conf", dir);
	char *sock = xasprintf("%s/s.sock", dir);
	unsigned port = free_port();
	char *conf = xasprintf("[general]\nmode = standalone\n"
			       "state_dir = %s\ncontrol_socket = %s\n"
			       "[replica]\nlisten = 127.0.0.1:%u\n",
			       dir, sock, port);
	struct sockaddr_in sin = {.sin_family = AF_INET,
				  .sin_port = htons(port)};
	struct ctl_server *server = NULL;
	struct config *cfg;
	struct client c;
	char *error = NULL;
	int fd;

	tu_write_file(conf_path, conf, strlen(conf), 0600);
	ck_assert_msg(config_load(conf_path, &cfg, &error) == 0, "%s", error);
	ck_assert_msg(ctl_server_start(cfg, &server, &error) == 0, "%s", error);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), -1);
	ck_assert_int_eq(errno, ECONNREFUSED);
	close(fd);

	client_unix(&c, sock);
	expect(&c, "OK MAILREPL 1 standalone");
	client_send(&c, "MODE");
	expect(&c, "* MODE standalone");
	expect(&c, "OK MODE completed");
	request(&c, "BIND m1",
		"NO [MODE] BIND needs replica mode; this agent is in "
		"standalone mode");
	client_send(&c, "STATUS");
	expect(&c, "* STATUS mode=standalone");
	expect(&c, "OK STATUS completed");
	request(&c, "STATUS pending=1",
		"NO [MODE] STATUS needs replica mode; this agent is in "
		"standalone mode");
	client_close(&c);

	ctl_server_stop(&server);
	config_free(&cfg);
	tu_rmrf(dir);
	free(dir);
	free(conf);
	free(conf_path);
	free(sock);
}
END_TEST

/* Another user's connection to the local socket is closed without a
 * greeting. The socket is opened up to that user here only to reach
 * the SO_PEERCRED check behind the file mode. */
START_TEST(server_local_socket_other_uid)
{
	struct fixture f;
	pid_t pid;
	int status;

	ck_assert_msg(getuid() == 0, "this test needs root to switch to "
				     "user nobody");
	server_start(&f, "trusted_networks = 127.0.0.0/8\n");
	ck_assert_int_eq(chmod(f.socket_path, 0666), 0);
	ck_assert_int_eq(chmod(f.dir, 0755), 0);
	tu_run("chmod 0755 '%s/run' '%s/run/sub'", f.dir, f.dir);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct sockaddr_un sun = {.sun_family = AF_UNIX};
		char byte;
		int fd;

		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(2);
		snprintf(sun.sun_path, sizeof(sun.sun_path), "%s",
			 f.socket_path);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
			_exit(3);
		_exit(recv(fd, &byte, 1, 0) == 0 ? 0 : 4);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	server_stop(&f);
}
END_TEST

/* ---- STARTTLS ---- */

static void
make_cert(const char *dir)
{
	ck_assert_int_eq(
		tu_run("openssl req -x509 -newkey rsa:2048 -nodes -days 2 "
		       "-subj /CN=127.0.0.1 -addext "
		       "subjectAltName=IP:127.0.0.1 "
		       "-keyout %s/key.pem -out %s/cert.pem 2>/dev/null",
		       dir, dir),
		0);
}

static void
client_starttls(struct client *c, const char *ca_file)
{
	unsigned status = 0;
	int r;

	gnutls_certificate_allocate_credentials(&c->creds);
	ck_assert_int_ge(gnutls_certificate_set_x509_trust_file(
				 c->creds, ca_file, GNUTLS_X509_FMT_PEM),
			 1);
	ck_assert_int_eq(gnutls_init(&c->tls, GNUTLS_CLIENT), 0);
	gnutls_set_default_priority(c->tls);
	gnutls_credentials_set(c->tls, GNUTLS_CRD_CERTIFICATE, c->creds);
	gnutls_transport_set_int(c->tls, c->fd);
	do
		r = gnutls_handshake(c->tls);
	while (r < 0 && !gnutls_error_is_fatal(r));
	ck_assert_msg(r == 0, "handshake: %s", gnutls_strerror(r));
	ck_assert_int_eq(
		gnutls_certificate_verify_peers3(c->tls, "127.0.0.1", &status),
		0);
	ck_assert_msg(status == 0, "certificate status %u", status);
}

START_TEST(server_starttls)
{
	struct fixture f;
	struct client c;
	char *dir = tu_tempdir("ctlcert");
	char *extra, *ca;

	make_cert(dir);
	extra = xasprintf("trusted_networks = 127.0.0.0/8\n"
			  "tls_cert_file = %s/cert.pem\n"
			  "tls_key_file = %s/key.pem\n",
			  dir, dir);
	ca = xasprintf("%s/cert.pem", dir);
	server_start(&f, extra);
	client_tcp(&c, f.port);
	expect(&c, "OK MAILREPL 1 replica STARTTLS AUTH=PLAIN");
	/* A line pipelined after STARTTLS in clear text is dropped. */
	client_send_raw(&c, "STARTTLS\r\nMODE\r\n", 16);
	expect(&c, "OK begin TLS negotiation");
	client_starttls(&c, ca);
	client_send(&c, "CAPA");
	expect(&c, "* MAILREPL 1 replica AUTH=PLAIN");
	expect(&c, "OK CAPA completed");
	request(&c, "STARTTLS", "BAD TLS is already active");
	authenticate(&c);
	request(&c, "BIND tls-master", "OK bound");
	request(&c, "QUIT", "OK bye");
	client_close(&c);
	server_stop(&f);
	tu_rmrf(dir);
	free(dir);
	free(extra);
	free(ca);
}
END_TEST

START_TEST(server_bad_cert_fails_start)
{
	char *dir = tu_tempdir("ctlcert");
	char *conf_path = xasprintf("%s/c.conf", dir);
	char *conf = xasprintf("[general]\nmode = replica\nstate_dir = %s\n"
			       "control_socket = %s/s.sock\n[replica]\n"
			       "listen = 127.0.0.1:%u\n"
			       "tls_cert_file = %s/none.pem\n"
			       "tls_key_file = %s/none.pem\n",
			       dir, dir, free_port(), dir, dir);
	struct config *cfg;
	struct ctl_server *server = NULL;
	char *error = NULL;

	tu_write_file(conf_path, conf, strlen(conf), 0600);
	ck_assert_msg(config_load(conf_path, &cfg, &error) == 0, "%s", error);
	ck_assert_int_eq(ctl_server_start(cfg, &server, &error), -1);
	ck_assert_ptr_null(server);
	ck_assert_ptr_nonnull(strstr(error, "tls_cert_file"));
	free(error);
	config_free(&cfg);
	tu_rmrf(dir);
	free(dir);
	free(conf);
	free(conf_path);
}
END_TEST

static Suite *
ctl_suite(void)
{
	Suite *s = suite_create("ctl");
	TCase *proto = tcase_create("proto");
	TCase *net = tcase_create("net");
	TCase *local = tcase_create("server");
	TCase *auth = tcase_create("auth");

	tcase_add_loop_test(proto, parse_table, 0,
			    sizeof(parse_cases) / sizeof(parse_cases[0]));
	tcase_add_test(proto, find_line_cases);
	tcase_add_loop_test(proto, response_table, 0,
			    sizeof(response_cases) / sizeof(response_cases[0]));
	tcase_add_loop_test(proto, plain_table, 0,
			    sizeof(plain_cases) / sizeof(plain_cases[0]));
	tcase_add_test(proto, plain_encode_roundtrip);
	tcase_add_test(proto, quote_cases);
	tcase_add_test(proto, kv_and_master_id);
	tcase_add_test(proto, auth_needs_tls_off_loopback);
	tcase_add_test(proto, loopback_dialog_rules);
	tcase_add_test(proto, session_idle_timeout);
	tcase_add_test(proto, holds_mail_hook_results);
	tcase_add_test(proto, status_long_error_cut);
	tcase_add_test(proto, edited_peer_file_quoted);
	suite_add_tcase(s, proto);

	tcase_add_loop_test(net, addr_table, 0,
			    sizeof(addr_cases) / sizeof(addr_cases[0]));
	tcase_add_test(net, networks_invalid);
	tcase_add_test(net, host_loopback_and_text);
	tcase_add_test(net, split_listen_cases);
	tcase_add_test(net, ratelimit_window);
	tcase_add_test(net, ratelimit_table_full);
	tcase_add_test(net, peer_save_load);
	suite_add_tcase(s, net);

	tcase_set_timeout(local, 60);
	tcase_add_test(local, server_greeting_and_errors);
	tcase_add_test(local, server_untrusted_peer);
	tcase_add_test(local, server_stale_socket_and_reload);
	tcase_add_test(local, server_bad_cert_fails_start);
	tcase_add_test(local, server_connection_limit);
	tcase_add_test(local, server_standalone_local_only);
	tcase_add_test(local, server_second_start_fails);
	tcase_add_test(local, server_local_socket_other_uid);
	suite_add_tcase(s, local);

	tcase_set_timeout(auth, 120);
	tcase_add_unchecked_fixture(auth, dovecot_setup, dovecot_teardown);
	tcase_add_test(auth, server_auth_against_dovecot);
	tcase_add_test(auth, server_auth_rate_limit);
	tcase_add_test(auth, server_bind_init_status);
	tcase_add_test(auth, server_local_socket);
	tcase_add_test(auth, server_starttls);
	suite_add_tcase(s, auth);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(ctl_suite());
	int failed;

	signal(SIGPIPE, SIG_IGN);
	log_set_stderr(false);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
