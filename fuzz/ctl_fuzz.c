/* libFuzzer target for the control protocol. The input is split into
 * lines as the server splits them. Each line goes through the parser,
 * with a quoting round trip checked on every argument, and then through
 * the request dispatcher of an in-memory session with no network. The
 * first input byte picks the kind of session. */
#include <config.h>
#include "ctl_private.h"
#include "ctl_proto.h"
#include "log.h"
#include "util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct ctl_ctx ctx;

static int
discard(struct ctl_session *s, const char *text, size_t len)
{
	struct ctl_response resp;
	const char *error;

	/* Every response line fits the line limit, ends in CRLF, has no
	 * other line end, and follows the response grammar. */
	if (len < 2 || len > CTL_LINE_MAX || text[len - 2] != '\r' ||
	    text[len - 1] != '\n' || memchr(text, '\n', len - 1) != NULL)
		abort();
	if (ctl_proto_parse_response(text, len - 2, &resp, &error) < 0)
		abort();
	ctl_response_clear(&resp);
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
setup(void)
{
	static char dir[] = "/dev/shm/ctl-fuzz-XXXXXX";

	if (ctx.settings != NULL)
		return;
	if (mkdtemp(dir) == NULL)
		abort();
	log_set_stderr(false);
	pthread_mutex_init(&ctx.lock, NULL);
	pthread_cond_init(&ctx.idle, NULL);
	ctx.check_password = fake_check;
	ctx.idle_timeout_s = 1;
	ctx.max_connections = 1;
	ctx.settings = xcalloc(1, sizeof(*ctx.settings));
	ctx.settings->refs = 1;
	ctx.settings->mode = CFG_MODE_REPLICA;
	ctx.settings->state_dir = xstrdup(dir);
	ctx.settings->admin_user = xstrdup("repladmin");
	ctx.settings->imap_host = xstrdup("127.0.0.1");
}

/* Quoting an argument and parsing it back gives the argument. */
static void
check_roundtrip(const char *arg)
{
	char *quoted = ctl_proto_quote(arg);
	char *line = xasprintf("X %s", quoted);
	struct ctl_request req;
	const char *error;

	if (ctl_proto_parse(line, strlen(line), &req, &error) < 0 ||
	    req.argc != 1 || strcmp(req.argv[0], arg) != 0)
		abort();
	ctl_request_clear(&req);
	free(line);
	free(quoted);
}

static void
parse_only(const char *line, size_t len)
{
	struct ctl_request req;
	const char *error;
	char *z, *u, *p;

	struct ctl_response resp;

	if (ctl_proto_parse_response(line, len, &resp, &error) == 0)
		ctl_response_clear(&resp);
	if (ctl_proto_parse(line, len, &req, &error) < 0)
		return;
	for (size_t i = 0; i < req.argc; i++) {
		check_roundtrip(req.argv[i]);
		if (ctl_proto_decode_plain(req.argv[i], &z, &u, &p, &error) ==
		    0) {
			free(z);
			free(u);
			secret_free(&p);
		}
	}
	ctl_request_clear(&req);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	size_t line_len, consumed;
	struct ctl_session s;
	int kind;

	setup();
	if (size == 0)
		return 0;
	kind = data[0] % 3;
	buf++;
	size--;
	ctl_session_init(&s, &ctx, -1,
			 kind == 2 ? CTL_TRANSPORT_LOCAL : CTL_TRANSPORT_TCP,
			 kind == 1 ? "192.0.2.1" : "127.0.0.1", kind != 1);
	s.write_fn = discard;
	while (!s.close &&
	       ctl_proto_find_line(buf, size, &line_len, &consumed) == 1) {
		parse_only(buf, line_len);
		ctl_session_handle_line(&s, buf, line_len);
		buf += consumed;
		size -= consumed;
	}
	ctl_session_deinit(&s);
	return 0;
}
