/* Allocation wrappers that abort on failure, and small string helpers. */
#ifndef MAILREPL_UTIL_H
#define MAILREPL_UTIL_H

#include <stdarg.h>
#include <stddef.h>

/* Each x* function returns memory the caller owns and frees with free().
 * They print a message and abort() when memory is exhausted, so callers
 * never check for NULL. */
void *xmalloc(size_t size);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *ptr, size_t size);
/* Grow *array to hold at least need elements of size bytes, doubling. */
void *xgrow(void *array, size_t *capacity, size_t need, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
char *xvasprintf(const char *fmt, va_list ap);

/* Free *ptr and set it to NULL. */
void xfree(void *ptr_address);

/* Read the first line of path into *secret_r without its trailing newline
 * (LF or CRLF). Returns 0, or -1 with *error_r (caller frees) naming the
 * file and the cause. */
int read_secret_file(const char *path, char **secret_r, char **error_r);

/* Overwrite and free a secret. */
void secret_free(char **secret);

/* Write n with thousands separators into buf: 6046 -> "6,046". */
void util_format_count(unsigned long long n, char *buf, size_t size);

/* Monotonic clock in milliseconds. */
long long monotonic_ms(void);

#endif
