/* Failure classes shared by every module. */
#include <config.h>
#include "mrerr.h"

#include <stdarg.h>
#include <stdio.h>

int
mrerr_set(struct mrerr *err, enum mrerr_scope scope, enum mrerr_retry retry,
	  const char *fmt, ...)
{
	va_list ap;

	if (err == NULL)
		return -1;
	err->scope = scope;
	err->retry = retry;
	va_start(ap, fmt);
	vsnprintf(err->text, sizeof(err->text), fmt, ap);
	va_end(ap);
	return -1;
}

void
mrerr_clear(struct mrerr *err)
{
	err->scope = MRERR_NONE;
	err->retry = MRERR_RETRY_NEVER;
	err->text[0] = '\0';
}

const char *
mrerr_scope_name(enum mrerr_scope scope)
{
	static const char *const names[] = {
		[MRERR_NONE] = "none",
		[MRERR_MESSAGE] = "message",
		[MRERR_FOLDER] = "folder",
		[MRERR_USER] = "user",
		[MRERR_CONNECTION] = "connection",
		[MRERR_CONFIG] = "config",
	};

	return names[scope];
}
