/* The master agent's replication thread. It keeps one control connection
 * to the replica's agent and reconnects with a capped backoff. It runs the
 * initial replication when none has succeeded yet or when the replica's
 * administrator requests one, and it exchanges status with the replica. */
#ifndef MAILREPL_MASTER_H
#define MAILREPL_MASTER_H

#include "cfg.h"

struct master;

/* Start the thread for cfg (master mode). The thread reads its own copy
 * of the configuration from cfg->path. Returns 0, or -1 with *error_r. */
int master_start(const struct config *cfg, struct master **master_r,
		 char **error_r);
/* Stop the thread and free; sets *master to NULL. A running initial
 * replication gets SIGTERM, and the next run resumes it. */
void master_stop(struct master **master);

#endif
