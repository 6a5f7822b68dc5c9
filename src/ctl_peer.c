/* The replica's peer record, a JSON file written atomically. */
#include <config.h>
#include "ctl_peer.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int
ctl_peer_load(const char *state_dir, struct json_object **obj_r, char **error_r)
{
	char *path = xasprintf("%s/%s", state_dir, CTL_PEER_FILE);
	struct json_object *obj = NULL;
	int ret = -1;

	if (access(path, F_OK) < 0 && errno == ENOENT) {
		obj = json_object_new_object();
		ret = 0;
		goto out;
	}
	obj = json_object_from_file(path);
	if (obj == NULL || !json_object_is_type(obj, json_type_object)) {
		*error_r = xasprintf("cannot read %s: %s; fix or remove the "
				     "file",
				     path, json_util_get_last_err());
		json_object_put(obj);
		obj = NULL;
		goto out;
	}
	ret = 0;
out:
	free(path);
	*obj_r = obj;
	return ret;
}

static int
write_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, data, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		data += n;
		len -= n;
	}
	return 0;
}

/* fsync the directory so that the rename itself survives a crash. */
static int
sync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	int ret;

	if (fd < 0)
		return -1;
	ret = fsync(fd);
	close(fd);
	return ret;
}

int
ctl_peer_save(const char *state_dir, struct json_object *obj, char **error_r)
{
	char *path = xasprintf("%s/%s", state_dir, CTL_PEER_FILE);
	char *tmp = xasprintf("%s.tmp", path);
	const char *text = json_object_to_json_string_ext(
		obj, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
	int fd = -1, ret = -1;

	if (mkdir(state_dir, 0700) < 0 && errno != EEXIST)
		goto fail;
	/* The data reaches the disk before the rename makes it visible, so
	 * a crash leaves either the old file or the whole new one. */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write_all(fd, text, strlen(text)) < 0 ||
	    write_all(fd, "\n", 1) < 0 || fsync(fd) < 0)
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0 || sync_dir(state_dir) < 0)
		goto fail;
	ret = 0;
	goto out;
fail:
	*error_r = xasprintf("cannot write %s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	unlink(tmp);
out:
	free(tmp);
	free(path);
	return ret;
}

const char *
ctl_peer_get_str(struct json_object *obj, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(obj, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

long long
ctl_peer_get_int(struct json_object *obj, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(obj, key, &v) ||
	    !json_object_is_type(v, json_type_int))
		return 0;
	return json_object_get_int64(v);
}
