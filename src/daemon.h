/* Process helpers of the agent: detaching from the terminal, the pid
 * file, and the signals that the main thread waits for. */
#ifndef MAILREPL_DAEMON_H
#define MAILREPL_DAEMON_H

#include <signal.h>
#include <sys/types.h>

#include "cfg.h"

/* Detach from the terminal: fork, setsid, fork again, chdir /, umask 027,
 * stdin, stdout and stderr to /dev/null. Returns 0 in the daemon, with
 * *ready_fd_r to pass to daemon_ready(). The original process does not
 * return: it waits until the daemon calls daemon_ready() and exits 0, or
 * prints the daemon's error on stderr and exits 1. Returns -1 with
 * *error_r (caller frees) when the first fork fails. */
int daemon_detach(int *ready_fd_r, char **error_r);
/* Report to the waiting parent that start-up succeeded (error NULL) or
 * failed (error is printed by the parent), and close ready_fd. A
 * negative ready_fd (foreground) does nothing. */
void daemon_ready(int ready_fd, const char *error);

/* Path of the agent's pid file: the directory of [general]
 * control_socket plus "/mailrepld.pid". Caller frees. */
char *daemon_pidfile_path(const struct config *cfg);
/* Create path containing the caller's pid. A file of a dead process, or of
 * a process that is not mailrepld, is replaced. Returns 0; -2 with
 * *pid_r when it names another live mailrepld; -1 with *error_r (caller
 * frees) naming the file and the cause. */
int daemon_pidfile_write(const char *path, pid_t *pid_r, char **error_r);
/* Returns the pid of the live mailrepld that path names, or 0 when the
 * file is missing, malformed or stale. */
pid_t daemon_pidfile_running(const char *path);
/* Remove path if it still contains the caller's pid. */
void daemon_pidfile_remove(const char *path);

/* Block SIGTERM, SIGINT and SIGHUP in the calling thread and ignore
 * SIGPIPE. Call before any thread starts, so that every thread inherits
 * the mask and only daemon_wait_signal() receives these signals. */
void daemon_block_signals(sigset_t *set_r);
/* Block until one signal of set arrives; returns its number. */
int daemon_wait_signal(const sigset_t *set);

#endif
