/* Helpers shared by the Check test programs. */
#include <config.h>
#include "testutil.h"
#include "util.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

char *
tu_tempdir(const char *tag)
{
	const char *base = getenv("TMPDIR");
	char *path = xasprintf("%s/mailrepl-%s-XXXXXX",
			       base != NULL ? base : "/tmp", tag);

	if (mkdtemp(path) == NULL)
		ck_abort_msg("mkdtemp %s: %s", path, strerror(errno));
	return path;
}

int
tu_run(const char *fmt, ...)
{
	va_list ap;
	char *cmd;
	int status;

	va_start(ap, fmt);
	cmd = xvasprintf(fmt, ap);
	va_end(ap);
	status = system(cmd);
	free(cmd);
	if (status == -1 || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

void
tu_rmrf(const char *path)
{
	if (path != NULL && path[0] == '/')
		tu_run("rm -rf '%s'", path);
}

static void
mkdir_parents(const char *path)
{
	char *copy = xstrdup(path);

	for (char *p = copy + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(copy, 0755) < 0 && errno != EEXIST)
			ck_abort_msg("mkdir %s: %s", copy, strerror(errno));
		*p = '/';
	}
	free(copy);
}

void
tu_write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd;

	mkdir_parents(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
	ck_assert_msg(write(fd, data, len) == (ssize_t)len, "write %s", path);
	close(fd);
	chmod(path, mode);
}

char *
tu_read_file(const char *path, size_t *len_r)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, len = 0, n;

	if (f == NULL)
		return NULL;
	do {
		buf = xgrow(buf, &cap, len + 4096 + 1, 1);
		n = fread(buf + len, 1, 4096, f);
		len += n;
	} while (n > 0);
	fclose(f);
	buf[len] = '\0';
	if (len_r != NULL)
		*len_r = len;
	return buf;
}

char *
tu_srcpath(const char *relative)
{
	const char *top = getenv("MAILREPL_SRCDIR");

	return xasprintf("%s/%s", top != NULL ? top : ".", relative);
}

static char *
env_value(const char *env, const char *key)
{
	size_t klen = strlen(key);

	for (const char *p = env; p != NULL && *p; p = strchr(p, '\n')) {
		if (*p == '\n')
			p++;
		if (strncmp(p, key, klen) == 0 && p[klen] == '=') {
			const char *v = p + klen + 1;
			size_t n = strcspn(v, "\n");

			if (n >= 2 && (v[0] == '\'' || v[0] == '"')) {
				v++;
				n -= 2;
			}
			return xstrndup(v, n);
		}
	}
	ck_abort_msg("dovecot-test.sh did not print %s", key);
	return NULL;
}

struct tu_dovecot *
tu_dovecot_start(void)
{
	struct tu_dovecot *d = xcalloc(1, sizeof(*d));
	char *script = tu_srcpath("scripts/dovecot-test.sh");
	char *envpath, *env, *port;
	int rc;

	d->dir = tu_tempdir("dovecot");
	rc = tu_run("bash '%s' start '%s' >'%s/start.out' 2>&1", script,
		    d->dir, d->dir);
	if (rc != 0) {
		char *out = xasprintf("%s/start.out", d->dir);
		char *text = tu_read_file(out, NULL);

		ck_abort_msg("starting the test Dovecot failed (exit %d): %s",
			     rc, text != NULL ? text : "(no output)");
	}
	envpath = xasprintf("%s/env", d->dir);
	env = tu_read_file(envpath, NULL);
	ck_assert_msg(env != NULL, "%s missing", envpath);

	d->conf = env_value(env, "DOVECOT_CONF");
	port = env_value(env, "IMAP_PORT");
	d->imap_port = (unsigned)atoi(port);
	free(port);
	port = env_value(env, "IMAPS_PORT");
	d->imaps_port = (unsigned)atoi(port);
	free(port);
	d->ca_file = env_value(env, "DOVECOT_CA");
	d->fingerprint = env_value(env, "DOVECOT_FINGERPRINT");
	d->admin = env_value(env, "DOVECOT_ADMIN");
	d->admin_password = env_value(env, "DOVECOT_ADMIN_PASSWORD");
	d->mail = env_value(env, "DOVECOT_MAIL");
	free(env);
	free(envpath);
	free(script);
	return d;
}

void
tu_dovecot_stop(struct tu_dovecot **dovecot)
{
	struct tu_dovecot *d = *dovecot;
	char *script;

	if (d == NULL)
		return;
	script = tu_srcpath("scripts/dovecot-test.sh");
	tu_run("bash '%s' stop '%s' >/dev/null 2>&1", script, d->dir);
	tu_rmrf(d->dir);
	free(script);
	free(d->dir);
	free(d->conf);
	free(d->ca_file);
	free(d->fingerprint);
	free(d->admin);
	free(d->admin_password);
	free(d->mail);
	free(d);
	*dovecot = NULL;
}
