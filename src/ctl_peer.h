/* The replica's record of its master in <state_dir>/peer.json: the bound
 * master id, the last INIT BEGIN and INIT END, the last STATUS figures
 * received, and whether the local admin asked for a new initial
 * replication. Callers serialise access (the control server holds one
 * lock around load, change and save). */
#ifndef MAILREPL_CTL_PEER_H
#define MAILREPL_CTL_PEER_H

#include <json-c/json.h>

#define CTL_PEER_FILE "peer.json"

/* Load <state_dir>/peer.json. A missing file gives an empty object.
 * Returns 0 with *obj_r (free with json_object_put), or -1 with *error_r
 * (caller frees) naming the file and the cause. */
int ctl_peer_load(const char *state_dir, struct json_object **obj_r,
		  char **error_r);
/* Write obj to <state_dir>/peer.json atomically, creating state_dir
 * (mode 0700) when missing. Returns 0, or -1 with *error_r. */
int ctl_peer_save(const char *state_dir, struct json_object *obj,
		  char **error_r);

/* Read helpers: the string or integer at key, or NULL / 0 when missing
 * or of another type. */
const char *ctl_peer_get_str(struct json_object *obj, const char *key);
long long ctl_peer_get_int(struct json_object *obj, const char *key);

#endif
