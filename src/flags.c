/* IMAP flag sets with a canonical text form for the state store. */
#include <config.h>
#include "flags.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The order of the canonical text, which is also the order in which
 * flagset_parse() accepts system flags. */
static const struct {
	unsigned bit;
	const char *name;
} system_flags[] = {
	{FLAG_SEEN, "\\Seen"},	     {FLAG_ANSWERED, "\\Answered"},
	{FLAG_FLAGGED, "\\Flagged"}, {FLAG_DELETED, "\\Deleted"},
	{FLAG_DRAFT, "\\Draft"},
};
#define N_SYSTEM_FLAGS (sizeof(system_flags) / sizeof(*system_flags))

void
flagset_init(struct flagset *fs)
{
	fs->sys = 0;
	fs->keywords = NULL;
	fs->nkeywords = 0;
}

void
flagset_clear(struct flagset *fs)
{
	for (size_t i = 0; i < fs->nkeywords; i++)
		free(fs->keywords[i]);
	free(fs->keywords);
	flagset_init(fs);
}

void
flagset_copy(struct flagset *dst, const struct flagset *src)
{
	flagset_init(dst);
	dst->sys = src->sys;
	for (size_t i = 0; i < src->nkeywords; i++)
		flagset_add_keyword(dst, src->keywords[i]);
}

void
flagset_add_keyword(struct flagset *fs, const char *keyword)
{
	size_t pos = 0;
	int cmp = 1;

	/* Keep the list sorted for flagset_equal; lists are short. */
	while (pos < fs->nkeywords &&
	       (cmp = strcasecmp(fs->keywords[pos], keyword)) < 0)
		pos++;
	if (pos < fs->nkeywords && cmp == 0)
		return;

	fs->keywords = xrealloc(fs->keywords,
				(fs->nkeywords + 1) * sizeof(char *));
	memmove(fs->keywords + pos + 1, fs->keywords + pos,
		(fs->nkeywords - pos) * sizeof(char *));
	fs->keywords[pos] = xstrdup(keyword);
	fs->nkeywords++;
}

void
flagset_add_imap(struct flagset *fs, const char *flag)
{
	if (flag[0] != '\\') {
		flagset_add_keyword(fs, flag);
		return;
	}
	for (size_t i = 0; i < N_SYSTEM_FLAGS; i++) {
		if (strcasecmp(flag, system_flags[i].name) == 0) {
			fs->sys |= system_flags[i].bit;
			return;
		}
	}
	/* \Recent and unknown backslash flags are not ours to copy. */
}

bool
flagset_equal(const struct flagset *a, const struct flagset *b)
{
	if (a->sys != b->sys || a->nkeywords != b->nkeywords)
		return false;
	for (size_t i = 0; i < a->nkeywords; i++) {
		if (strcasecmp(a->keywords[i], b->keywords[i]) != 0)
			return false;
	}
	return true;
}

char *
flagset_format(const struct flagset *fs)
{
	size_t len = 1, pos = 0;
	char *text;

	for (size_t i = 0; i < N_SYSTEM_FLAGS; i++)
		len += strlen(system_flags[i].name) + 1;
	for (size_t i = 0; i < fs->nkeywords; i++)
		len += strlen(fs->keywords[i]) + 1;
	text = xmalloc(len);
	text[0] = '\0';

	for (size_t i = 0; i < N_SYSTEM_FLAGS; i++) {
		if ((fs->sys & system_flags[i].bit) == 0)
			continue;
		pos += (size_t)sprintf(text + pos, "%s%s", pos ? " " : "",
				       system_flags[i].name);
	}
	for (size_t i = 0; i < fs->nkeywords; i++)
		pos += (size_t)sprintf(text + pos, "%s%s", pos ? " " : "",
				       fs->keywords[i]);
	return text;
}

int
flagset_parse(struct flagset *fs, const char *text)
{
	char *copy = xstrdup(text), *save = NULL, *tok;
	int ret = 0;

	flagset_init(fs);
	for (tok = strtok_r(copy, " ", &save); tok != NULL;
	     tok = strtok_r(NULL, " ", &save)) {
		unsigned before = fs->sys;

		if (tok[0] == '\\') {
			flagset_add_imap(fs, tok);
			if (fs->sys == before) {
				ret = -1;
				break;
			}
		} else {
			flagset_add_keyword(fs, tok);
		}
	}
	free(copy);
	if (ret < 0)
		flagset_clear(fs);
	return ret;
}
