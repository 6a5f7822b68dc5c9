/* Process helpers of the agent: detach, pid file, signals. */
#include <config.h>
#include "daemon.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* Start-up report on the pipe to the parent: one byte, followed by the
 * message for an error. */
#define READY_OK 'K'
#define READY_ERROR 'E'

/* Wait in the original process for the daemon's start-up report, and
 * exit with its result. An EOF without a report means the daemon died. */
static void
wait_ready(int fd, pid_t child)
{
	char buf[1024];
	size_t len = 0;
	ssize_t n;

	waitpid(child, NULL, 0);
	while (len < sizeof(buf) - 1 &&
	       (n = read(fd, buf + len, sizeof(buf) - 1 - len)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	if (len > 0 && buf[0] == READY_OK)
		_exit(0);
	if (len > 1 && buf[0] == READY_ERROR)
		fprintf(stderr, "mailrepld: %s\n", buf + 1);
	else
		fprintf(stderr,
			"mailrepld: the agent exited during start-up "
			"without a message; run it with -f to see why\n");
	_exit(1);
}

static void
redirect_stdio(void)
{
	int fd = open("/dev/null", O_RDWR);

	if (fd < 0)
		return;
	dup2(fd, STDIN_FILENO);
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	if (fd > STDERR_FILENO)
		close(fd);
}

int
daemon_detach(int *ready_fd_r, char **error_r)
{
	int fds[2];
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0 || (pid = fork()) < 0) {
		*error_r = xasprintf("cannot start the agent in the "
				     "background: %s",
				     strerror(errno));
		return -1;
	}
	if (pid > 0) {
		close(fds[1]);
		wait_ready(fds[0], pid);
	}

	/* The second fork leaves a process that is not a session leader,
	 * so opening a terminal later can never make it the controlling
	 * one. */
	close(fds[0]);
	setsid();
	pid = fork();
	if (pid < 0) {
		daemon_ready(fds[1], "cannot fork the agent process");
		_exit(1);
	}
	if (pid > 0)
		_exit(0);

	if (chdir("/") < 0)
		_exit(1);
	umask(027);
	redirect_stdio();
	*ready_fd_r = fds[1];
	return 0;
}

void
daemon_ready(int ready_fd, const char *error)
{
	char *msg;

	if (ready_fd < 0)
		return;
	if (error == NULL)
		msg = xasprintf("%c", READY_OK);
	else
		msg = xasprintf("%c%s", READY_ERROR, error);
	if (write(ready_fd, msg, strlen(msg)) < 0) {
		/* The parent exited, so no process reads the report. */
	}
	free(msg);
	close(ready_fd);
}

char *
daemon_pidfile_path(const struct config *cfg)
{
	char *copy = xstrdup(cfg->control_socket);
	char *path = xasprintf("%s/mailrepld.pid", dirname(copy));

	free(copy);
	return path;
}

/* Returns the pid in path, or 0 when it is missing or malformed. */
static pid_t
read_pid(const char *path)
{
	char buf[32], *end;
	ssize_t n;
	long pid;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	errno = 0;
	pid = strtol(buf, &end, 10);
	if (errno != 0 || end == buf || (*end != '\n' && *end != '\0') ||
	    pid <= 0 || (pid_t)pid != pid)
		return 0;
	return (pid_t)pid;
}

/* A pid is only ours to respect when it is alive and runs mailrepld:
 * after a reboot the old number often belongs to another program. When
 * /proc cannot tell, the process counts as an agent, so that two agents
 * never run at once. */
static bool
is_agent(pid_t pid)
{
	char path[64], comm[32] = "";
	ssize_t n;
	int fd;

	if (kill(pid, 0) < 0 && errno != EPERM)
		return false;
	snprintf(path, sizeof(path), "/proc/%ld/comm", (long)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno != ENOENT;
	n = read(fd, comm, sizeof(comm) - 1);
	close(fd);
	if (n <= 0)
		return true;
	comm[n] = '\0';
	comm[strcspn(comm, "\n")] = '\0';
	return strcmp(comm, "mailrepld") == 0;
}

pid_t
daemon_pidfile_running(const char *path)
{
	pid_t pid = read_pid(path);

	if (pid <= 0 || !is_agent(pid))
		return 0;
	return pid;
}

/* Write our pid to a new temporary file beside path, so that path itself
 * only ever appears complete. Returns the temporary's name. */
static char *
write_temp(const char *path, char **error_r)
{
	char *tmp = xasprintf("%s.XXXXXX", path), *text;
	int fd = mkstemp(tmp);
	bool ok;

	if (fd < 0) {
		*error_r = xasprintf("cannot create the pid file %s: %s", tmp,
				     strerror(errno));
		free(tmp);
		return NULL;
	}
	text = xasprintf("%ld\n", (long)getpid());
	ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text) &&
	     fchmod(fd, 0644) == 0;
	if (!ok)
		*error_r = xasprintf("cannot write the pid file %s: %s", tmp,
				     strerror(errno));
	free(text);
	close(fd);
	if (!ok) {
		unlink(tmp);
		xfree(&tmp);
	}
	return tmp;
}

int
daemon_pidfile_write(const char *path, pid_t *pid_r, char **error_r)
{
	char *tmp = NULL, *dir = xstrdup(path);
	pid_t other;
	int ret = -1;

	/* Only the last level is created, as systemd's RuntimeDirectory=
	 * would; a missing /run itself is a broken system. */
	if (mkdir(dirname(dir), 0755) < 0 && errno != EEXIST) {
		*error_r = xasprintf("cannot create the directory %s of the "
				     "pid file: %s",
				     dir, strerror(errno));
		goto out;
	}
	tmp = write_temp(path, error_r);
	if (tmp == NULL)
		goto out;

	/* link() fails when path exists, which is the O_EXCL check, and
	 * unlike O_EXCL it publishes a file that already contains the pid. */
	if (link(tmp, path) == 0) {
		ret = 0;
		goto out;
	}
	if (errno != EEXIST) {
		*error_r = xasprintf("cannot create the pid file %s: %s", path,
				     strerror(errno));
		goto out;
	}
	other = daemon_pidfile_running(path);
	if (other > 0 && other != getpid()) {
		*pid_r = other;
		ret = -2;
		goto out;
	}
	/* NOTE: two agents that start at the same moment over a stale file
	 * can both get here, and the later rename wins. */
	if (rename(tmp, path) < 0) {
		*error_r = xasprintf("cannot replace the stale pid file %s: %s",
				     path, strerror(errno));
		goto out;
	}
	ret = 0;
out:
	if (tmp != NULL)
		unlink(tmp);
	free(tmp);
	free(dir);
	return ret;
}

void
daemon_pidfile_remove(const char *path)
{
	if (read_pid(path) == getpid())
		unlink(path);
}

void
daemon_block_signals(sigset_t *set_r)
{
	sigemptyset(set_r);
	sigaddset(set_r, SIGTERM);
	sigaddset(set_r, SIGINT);
	sigaddset(set_r, SIGHUP);
	pthread_sigmask(SIG_BLOCK, set_r, NULL);
	signal(SIGPIPE, SIG_IGN);
}

int
daemon_wait_signal(const sigset_t *set)
{
	int sig = 0;

	/* sigwait fails only for an invalid set, and this set is fixed. */
	if (sigwait(set, &sig) != 0)
		abort();
	return sig;
}
