/* Changing one key of the configuration file in place: every other byte
 * (comments, order, spacing, line endings) stays as it was. */
#ifndef MAILREPL_CFG_EDIT_H
#define MAILREPL_CFG_EDIT_H

#include <stddef.h>

#include "cfg.h"

/* Return in *out_r (caller frees, NUL-terminated, length *out_len_r) a
 * copy of the len bytes of text in which the value of [general] mode is
 * mode_name. Only the value changes: its quotes, the key's spelling and
 * spacing, and an inline comment stay. Without a mode key, "mode = X" is
 * inserted after the first [general] header; without [general], a
 * [general] section is added at the top. Returns 0, or -1 with *error_r
 * (caller frees) when the mode line cannot be edited safely. */
int cfg_edit_set_mode(const char *text, size_t len, const char *mode_name,
		      char **out_r, size_t *out_len_r, char **error_r);

/* Set [general] mode in the file path to mode_name, atomically: the
 * edited copy is written to a temporary file beside it with the same
 * permissions and owner, checked with config_load(), and renamed over
 * path only when valid. A symbolic link is followed, so the file it
 * names is replaced. Returns 0 and, when cfg_r is not NULL, the loaded
 * new configuration in *cfg_r (free with config_free); or -1 with
 * *error_r (caller frees) naming the file and the cause, leaving path
 * unchanged. */
int cfg_edit_write_mode(const char *path, const char *mode_name,
			struct config **cfg_r, char **error_r);

#endif
