/* Mailbox commands of the IMAP client: LIST, LSUB, CREATE, DELETE,
 * SUBSCRIBE and SELECT. */
#include <config.h>
#include "imapc.h"
#include "imapc_private.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool
is_noselect(const struct mailimap_mbx_list_flags *flags)
{
	clistiter *it;

	if (flags == NULL)
		return false;
	if (flags->mbf_type == MAILIMAP_MBX_LIST_FLAGS_SFLAG &&
	    flags->mbf_sflag == MAILIMAP_MBX_LIST_SFLAG_NOSELECT)
		return true;
	for (it = clist_begin(flags->mbf_oflags); it != NULL;
	     it = clist_next(it)) {
		const struct mailimap_mbx_list_oflag *of = clist_content(it);
		const char *ext = of->of_flag_ext;

		if (of->of_type != MAILIMAP_MBX_LIST_OFLAG_FLAG_EXT ||
		    ext == NULL)
			continue;
		if (ext[0] == '\\')
			ext++;
		/* \NonExistent (RFC 5258) implies \Noselect. */
		if (strcasecmp(ext, "Noselect") == 0 ||
		    strcasecmp(ext, "NonExistent") == 0)
			return true;
	}
	return false;
}

int
imapc_list(struct imapc *c, bool subscribed_only,
	   struct imapc_mailbox **list_r, size_t *count_r, struct mrerr *err)
{
	const char *command = subscribed_only ? "LSUB \"\" *" : "LIST \"\" *";
	struct imapc_mailbox *list;
	clist *result = NULL;
	clistiter *it;
	size_t n = 0;
	int r;

	*list_r = NULL;
	*count_r = 0;
	if (imapc_check_alive(c, command, err) < 0)
		return -1;
	if (subscribed_only)
		r = mailimap_lsub(c->imap, "", "*", &result);
	else
		r = mailimap_list(c->imap, "", "*", &result);
	if (r != MAILIMAP_NO_ERROR) {
		if (result != NULL)
			mailimap_list_result_free(result);
		return imapc_fail(c, r, command, err);
	}

	list = xcalloc(clist_count(result), sizeof(*list));
	for (it = clist_begin(result); it != NULL; it = clist_next(it)) {
		struct mailimap_mailbox_list *mb = clist_content(it);

		list[n].name = xstrdup(mb->mb_name);
		list[n].noselect = is_noselect(mb->mb_flag);
		n++;
	}
	mailimap_list_result_free(result);
	*list_r = list;
	*count_r = n;
	return 0;
}

void
imapc_mailboxes_free(struct imapc_mailbox **list, size_t count)
{
	if (*list == NULL)
		return;
	for (size_t i = 0; i < count; i++)
		free((*list)[i].name);
	xfree(list);
}

/* Whether LIST shows name as a selectable mailbox: 1 yes, 0 no, -1 with
 * *err when the LIST failed. */
static int
mailbox_listed(struct imapc *c, const char *name, struct mrerr *err)
{
	clist *result = NULL;
	int r, found = 0;

	r = mailimap_list(c->imap, "", name, &result);
	if (r != MAILIMAP_NO_ERROR) {
		if (result != NULL)
			mailimap_list_result_free(result);
		return imapc_fail(c, r, "LIST", err);
	}
	for (clistiter *it = clist_begin(result); it != NULL;
	     it = clist_next(it)) {
		struct mailimap_mailbox_list *mb = clist_content(it);

		if (strcmp(mb->mb_name, name) == 0 && !is_noselect(mb->mb_flag))
			found = 1;
	}
	mailimap_list_result_free(result);
	return found;
}

int
imapc_create(struct imapc *c, const char *name, struct mrerr *err)
{
	char *command = xasprintf("CREATE %s", name);
	char text[IMAPC_RESPONSE_TEXT_MAX], code[32];
	struct mrerr first;
	int r, listed, ret = -1;

	if (imapc_check_alive(c, command, err) < 0)
		goto out;
	r = mailimap_create(c->imap, name);
	if (r == MAILIMAP_NO_ERROR) {
		ret = 0;
		goto out;
	}

	imapc_last_response(c, text, sizeof(text));
	imapc_response_code(text, code, sizeof(code));
	imapc_fail(c, r, command, &first);
	if (first.scope != MRERR_FOLDER || strncmp(text, "NO", 2) != 0) {
		if (err != NULL)
			*err = first;
		goto out;
	}
	if (strcasecmp(code, "ALREADYEXISTS") == 0) {
		ret = 0;
		goto out;
	}

	/* A server without RFC 5530 codes reports an existing mailbox in
	 * the text only, so a LIST settles it. */
	listed = mailbox_listed(c, name, err);
	if (listed == 0 && err != NULL)
		*err = first;
	else if (listed == 1)
		ret = 0;
out:
	free(command);
	return ret;
}

/* Leave the selected state before the selected mailbox is deleted,
 * because Dovecot 2.3 responds to such a DELETE with BYE and closes the
 * connection. */
static int
unselect(struct imapc *c, struct mrerr *err)
{
	int r;

	if (imapc_has_capability(c, "UNSELECT")) {
		r = mailimap_custom_command(c->imap, "UNSELECT");
		if (r != MAILIMAP_NO_ERROR)
			return imapc_fail(c, r, "UNSELECT", err);
	} else {
		/* CLOSE expunges \Deleted messages unless the mailbox was
		 * opened read-only, so EXAMINE it first. */
		r = mailimap_examine(c->imap, c->selected);
		if (r == MAILIMAP_NO_ERROR)
			r = mailimap_close(c->imap);
		if (r != MAILIMAP_NO_ERROR)
			return imapc_fail(c, r, "EXAMINE and CLOSE", err);
	}
	xfree(&c->selected);
	return 0;
}

int
imapc_delete(struct imapc *c, const char *name, struct mrerr *err)
{
	char *command = xasprintf("DELETE %s", name);
	char text[IMAPC_RESPONSE_TEXT_MAX], code[32];
	int r, ret = -1;

	if (imapc_check_alive(c, command, err) < 0)
		goto out;
	if (c->selected != NULL && strcmp(c->selected, name) == 0 &&
	    unselect(c, err) < 0)
		goto out;

	r = mailimap_delete(c->imap, name);
	if (r != MAILIMAP_NO_ERROR) {
		imapc_last_response(c, text, sizeof(text));
		imapc_response_code(text, code, sizeof(code));
		/* Deleting a mailbox that is already gone is a replay. */
		if (strncmp(text, "NO", 2) == 0 &&
		    strcasecmp(code, "NONEXISTENT") == 0) {
			ret = 0;
			goto out;
		}
		imapc_fail(c, r, command, err);
		goto out;
	}
	ret = 0;
out:
	free(command);
	return ret;
}

int
imapc_rename(struct imapc *c, const char *from, const char *to,
	     struct mrerr *err)
{
	char *command = xasprintf("RENAME %s %s", from, to);
	int r, ret = -1;

	if (imapc_check_alive(c, command, err) < 0)
		goto out;
	/* The selected mailbox may be from or one of its children. */
	if (c->selected != NULL && unselect(c, err) < 0)
		goto out;
	r = mailimap_rename(c->imap, from, to);
	if (r != MAILIMAP_NO_ERROR) {
		imapc_fail(c, r, command, err);
		goto out;
	}
	ret = 0;
out:
	free(command);
	return ret;
}

int
imapc_subscribe(struct imapc *c, const char *name, bool subscribe,
		struct mrerr *err)
{
	char *command = xasprintf("%s %s",
				  subscribe ? "SUBSCRIBE" : "UNSUBSCRIBE",
				  name);
	int r, ret = -1;

	if (imapc_check_alive(c, command, err) < 0)
		goto out;
	if (subscribe)
		r = mailimap_subscribe(c->imap, name);
	else
		r = mailimap_unsubscribe(c->imap, name);
	if (r != MAILIMAP_NO_ERROR) {
		imapc_fail(c, r, command, err);
		goto out;
	}
	ret = 0;
out:
	free(command);
	return ret;
}

/* ------------------------------------------------------------------ */
/* Selected mailbox                                                    */

int
imapc_select(struct imapc *c, const char *name,
	     struct imapc_status *status_r, struct mrerr *err)
{
	char *command = xasprintf("SELECT %s", name);
	struct mailimap_selection_info *sel;
	int r, ret = -1;

	memset(status_r, 0, sizeof(*status_r));
	if (imapc_check_alive(c, command, err) < 0)
		goto out;

	/* SELECT again even when name is selected already: the caller
	 * needs the current UIDNEXT, which the server reports only in
	 * the SELECT response. */
	xfree(&c->selected);
	r = mailimap_select(c->imap, name);
	if (r != MAILIMAP_NO_ERROR) {
		imapc_fail(c, r, command, err);
		goto out;
	}
	c->selected = xstrdup(name);

	sel = c->imap->imap_selection_info;
	status_r->uidvalidity = sel->sel_uidvalidity;
	status_r->uidnext = sel->sel_uidnext;
	status_r->exists = sel->sel_exists;
	status_r->keywords_allowed = imapc_keyword_allowed(c, NULL);
	ret = 0;
out:
	free(command);
	return ret;
}

char *
imapc_replica_name(struct imapc *c, const char *folder)
{
	char sep = imapc_separator(c);
	char *name = xstrdup(folder);

	for (char *p = name; sep != '.' && *p; p++) {
		if (*p == '.')
			*p = sep;
	}
	return name;
}

char *
imapc_master_name(struct imapc *c, const char *name)
{
	char sep = imapc_separator(c);
	char *folder = xstrdup(name);

	for (char *p = folder; sep != '.' && *p; p++) {
		if (*p == sep)
			*p = '.';
	}
	return folder;
}
