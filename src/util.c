/* Allocation wrappers and small helpers shared by every module. */
#include <config.h>
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void
oom(size_t size)
{
	fprintf(stderr, "mailrepl: out of memory allocating %zu bytes\n",
		size);
	abort();
}

void *
xmalloc(size_t size)
{
	void *p = malloc(size ? size : 1);

	if (p == NULL)
		oom(size);
	return p;
}

void *
xcalloc(size_t count, size_t size)
{
	void *p = calloc(count ? count : 1, size ? size : 1);

	if (p == NULL)
		oom(count * size);
	return p;
}

void *
xrealloc(void *ptr, size_t size)
{
	void *p = realloc(ptr, size ? size : 1);

	if (p == NULL)
		oom(size);
	return p;
}

void *
xgrow(void *array, size_t *capacity, size_t need, size_t size)
{
	size_t cap = *capacity;

	if (need <= cap)
		return array;
	if (cap < 16)
		cap = 16;
	while (cap < need)
		cap *= 2;
	*capacity = cap;
	return xrealloc(array, cap * size);
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *
xvasprintf(const char *fmt, va_list ap)
{
	char *s;

	if (vasprintf(&s, fmt, ap) < 0)
		oom(strlen(fmt));
	return s;
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = xvasprintf(fmt, ap);
	va_end(ap);
	return s;
}

void
xfree(void *ptr_address)
{
	void **p = ptr_address;

	free(*p);
	*p = NULL;
}

int
read_secret_file(const char *path, char **secret_r, char **error_r)
{
	char buf[1024];
	FILE *f;
	size_t len;

	f = fopen(path, "re");
	if (f == NULL) {
		*error_r = xasprintf("cannot read password file %s: %s", path,
				     strerror(errno));
		return -1;
	}
	if (fgets(buf, sizeof(buf), f) == NULL) {
		fclose(f);
		*error_r = xasprintf("password file %s is empty; put the "
				     "password on its first line", path);
		return -1;
	}
	fclose(f);

	len = strcspn(buf, "\r\n");
	buf[len] = '\0';
	if (len == 0) {
		*error_r = xasprintf("password file %s has an empty first "
				     "line; put the password there", path);
		return -1;
	}
	*secret_r = xstrdup(buf);
	explicit_bzero(buf, sizeof(buf));
	return 0;
}

void
secret_free(char **secret)
{
	if (*secret == NULL)
		return;
	explicit_bzero(*secret, strlen(*secret));
	xfree(secret);
}

long long
monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void
util_format_count(unsigned long long n, char *buf, size_t size)
{
	char digits[32];
	size_t len, out = 0;

	snprintf(digits, sizeof(digits), "%llu", n);
	len = strlen(digits);
	for (size_t i = 0; i < len && out + 2 < size; i++) {
		if (i > 0 && (len - i) % 3 == 0)
			buf[out++] = ',';
		buf[out++] = digits[i];
	}
	buf[out] = '\0';
}
