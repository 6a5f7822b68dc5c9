/* A scripted IMAP server for the failure paths that a real Dovecot does
 * not produce on demand: a missing capability, a dropped connection, a
 * server that stops responding, BAD and NO with chosen texts.
 *
 * It runs in a forked child, listens on a free port on 127.0.0.1 only,
 * serves one connection and appends every line it receives to a
 * transcript, which the test reads after fakeimap_stop(). With
 * FAKEIMAP_TRACE set in the environment it also prints those lines to
 * stderr. */
#ifndef MAILREPL_FAKEIMAP_H
#define MAILREPL_FAKEIMAP_H

/* One reply rule. A command line "TAG rest" matches the first rule whose
 * command is a case-insensitive prefix of rest. */
struct fakeimap_rule {
	const char *command; /* NULL ends the table */
	/* Lines separated by '\n'. A '$' at the start of a line is replaced
	 * by the command's tag. "!close" closes the connection at once and
	 * "!hang" stops responding. AUTHENTICATE gets a "+ " continuation
	 * and one more line is read before this reply is sent. */
	const char *reply;
};

struct fakeimap;

/* Start a server that sends greeting (one line without CRLF, or NULL for
 * a plain "* OK" greeting) and replies by rules, which must stay valid
 * until fakeimap_stop(). A command no rule matches gets "BAD", except
 * LOGOUT, which gets BYE and OK. Aborts the test on failure. */
struct fakeimap *fakeimap_start(const char *greeting,
				const struct fakeimap_rule *rules);
unsigned fakeimap_port(const struct fakeimap *server);
/* Stop the server (killing it if it still runs) and return everything
 * the client sent, one line per command line, without CRLF. Caller
 * frees; sets *server to NULL. */
char *fakeimap_stop(struct fakeimap **server);

#endif
