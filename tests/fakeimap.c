/* A scripted IMAP server in a forked child, for tests of imapc. */
#include <config.h>
#include "fakeimap.h"
#include "testutil.h"
#include "util.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* The child exits by itself after this long, so that a test that fails
 * before fakeimap_stop() leaves no process behind. */
#define CHILD_LIFETIME_S 120
#define LINE_MAX_LEN 65536

struct fakeimap {
	pid_t pid;
	unsigned port;
	char *dir;
	char *transcript;
};

struct session {
	int fd;
	FILE *transcript;
	const struct fakeimap_rule *rules;
	bool trace; /* FAKEIMAP_TRACE is set: copy lines to stderr */
};

static void
send_text(int fd, const char *text)
{
	size_t len = strlen(text);

	while (len > 0) {
		ssize_t n = write(fd, text, len);

		if (n <= 0)
			_exit(0);
		text += n;
		len -= (size_t)n;
	}
}

/* Read one line without its CRLF into buf. Returns 0, or -1 at the end
 * of the connection. One byte at a time: the traffic is tiny. */
static int
read_line(struct session *s, char *buf, size_t size)
{
	size_t n = 0;
	char ch;

	for (;;) {
		if (read(s->fd, &ch, 1) != 1)
			return -1;
		if (ch == '\n')
			break;
		if (n + 1 < size)
			buf[n++] = ch;
	}
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	fprintf(s->transcript, "%s\n", buf);
	fflush(s->transcript);
	if (s->trace)
		fprintf(stderr, "fakeimap: C: %s\n", buf);
	return 0;
}

/* Send reply for the command with tag, expanding '$' at line starts and
 * acting on "!close" and "!hang" lines. */
static void
send_reply(struct session *s, const char *tag, const char *reply)
{
	const char *line = reply;

	while (*line != '\0') {
		size_t len = strcspn(line, "\n");
		char *out;

		if (strncmp(line, "!close", len) == 0 && len == 6) {
			close(s->fd);
			_exit(0);
		}
		while (strncmp(line, "!hang", len) == 0 && len == 5)
			pause();
		if (line[0] == '$')
			out = xasprintf("%s%.*s\r\n", tag, (int)len - 1,
					line + 1);
		else
			out = xasprintf("%.*s\r\n", (int)len, line);
		send_text(s->fd, out);
		free(out);
		line += len;
		if (*line == '\n')
			line++;
	}
}

static const char *
find_reply(const struct fakeimap_rule *rules, const char *command)
{
	for (size_t i = 0; rules[i].command != NULL; i++)
		if (strncasecmp(command, rules[i].command,
				strlen(rules[i].command)) == 0)
			return rules[i].reply;
	if (strncasecmp(command, "LOGOUT", 6) == 0)
		return "* BYE fake server logging out\n$ OK Logout completed";
	return "$ BAD command not in the fake server's script";
}

static void
serve(struct session *s)
{
	char *line = xmalloc(LINE_MAX_LEN);

	while (read_line(s, line, LINE_MAX_LEN) == 0) {
		char *space = strchr(line, ' ');
		const char *reply;

		if (space == NULL) {
			send_text(s->fd, "* BAD missing tag\r\n");
			continue;
		}
		*space = '\0';
		reply = find_reply(s->rules, space + 1);
		if (strncasecmp(space + 1, "AUTHENTICATE", 12) == 0) {
			char *response = xmalloc(LINE_MAX_LEN);

			send_text(s->fd, "+ \r\n");
			if (read_line(s, response, LINE_MAX_LEN) < 0)
				break;
			free(response);
		}
		send_reply(s, line, reply);
		if (strncasecmp(space + 1, "LOGOUT", 6) == 0)
			break;
	}
	free(line);
}

static void
child_main(int listener, const char *greeting,
	   const struct fakeimap_rule *rules, const char *transcript)
{
	struct session s = {
		.rules = rules,
		.trace = getenv("FAKEIMAP_TRACE") != NULL,
	};
	char *hello;

	alarm(CHILD_LIFETIME_S);
	s.transcript = fopen(transcript, "w");
	s.fd = accept(listener, NULL, NULL);
	if (s.transcript == NULL || s.fd < 0)
		_exit(1);
	close(listener);

	hello = xasprintf("%s\r\n", greeting != NULL
					    ? greeting
					    : "* OK fake IMAP server ready");
	send_text(s.fd, hello);
	free(hello);
	serve(&s);
	close(s.fd);
	fclose(s.transcript);
	_exit(0);
}

static int
listen_loopback(unsigned *port_r)
{
	struct sockaddr_in addr;
	socklen_t len = sizeof(addr);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
	memset(&addr, 0, sizeof(addr));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = 0; /* the kernel picks a free port */
	ck_assert_msg(bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0,
		      "bind 127.0.0.1: %s", strerror(errno));
	ck_assert_msg(listen(fd, 4) == 0, "listen: %s", strerror(errno));
	ck_assert(getsockname(fd, (struct sockaddr *)&addr, &len) == 0);
	*port_r = ntohs(addr.sin_port);
	return fd;
}

struct fakeimap *
fakeimap_start(const char *greeting, const struct fakeimap_rule *rules)
{
	struct fakeimap *f = xcalloc(1, sizeof(*f));
	int listener = listen_loopback(&f->port);

	f->dir = tu_tempdir("fakeimap");
	f->transcript = xasprintf("%s/transcript", f->dir);
	f->pid = fork();
	ck_assert_msg(f->pid >= 0, "fork: %s", strerror(errno));
	if (f->pid == 0)
		child_main(listener, greeting, rules, f->transcript);
	close(listener);
	return f;
}

unsigned
fakeimap_port(const struct fakeimap *server)
{
	return server->port;
}

char *
fakeimap_stop(struct fakeimap **server)
{
	struct fakeimap *f = *server;
	char *text;

	kill(f->pid, SIGKILL);
	waitpid(f->pid, NULL, 0);
	text = tu_read_file(f->transcript, NULL);
	if (text == NULL)
		text = xstrdup("");
	tu_rmrf(f->dir);
	free(f->dir);
	free(f->transcript);
	free(f);
	*server = NULL;
	return text;
}
