/* Tests of the configuration loader: defaults, every key's invalid values,
 * the INI syntax checks that iniparser lacks, and secret handling. */
#include <config.h>
#include <check.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cfg.h"
#include "testutil.h"
#include "util.h"

static char *dir;

static void
setup(void)
{
	dir = tu_tempdir("cfg");
}

static void
teardown(void)
{
	tu_rmrf(dir);
	xfree(&dir);
}

/* Copy text with every "@DIR@" replaced by the test's directory. */
static char *
expand(const char *text)
{
	const char *mark;
	char *out = xstrdup(""), *next;

	while ((mark = strstr(text, "@DIR@")) != NULL) {
		next = xasprintf("%s%.*s%s", out, (int)(mark - text), text,
				 dir);
		free(out);
		out = next;
		text = mark + 5;
	}
	next = xasprintf("%s%s", out, text);
	free(out);
	return next;
}

/* Write text, after expand, to DIR/name with mode. Returns the path. */
static char *
write_in_dir(const char *name, const char *text, mode_t mode)
{
	char *path = xasprintf("%s/%s", dir, name);
	char *data = expand(text);

	tu_write_file(path, data, strlen(data), mode);
	free(data);
	return path;
}

static char *
conf_path(void)
{
	return xasprintf("%s/mailrepl.conf", dir);
}

/* Load text as DIR/mailrepl.conf written with mode. */
static int
load_mode(const char *text, mode_t mode, struct config **cfg_r, char **error_r)
{
	char *path = write_in_dir("mailrepl.conf", text, mode);
	int rc;

	*error_r = NULL;
	rc = config_load(path, cfg_r, error_r);
	free(path);
	return rc;
}

static int
load(const char *text, struct config **cfg_r, char **error_r)
{
	return load_mode(text, 0600, cfg_r, error_r);
}

/* Load text and fail the test unless it loads. */
static struct config *
load_ok(const char *text)
{
	struct config *cfg = NULL;
	char *error = NULL;

	if (load(text, &cfg, &error) != 0)
		ck_abort_msg("config rejected: %s\n--- config ---\n%s", error,
			     text);
	ck_assert_ptr_null(error);
	ck_assert_ptr_nonnull(cfg);
	return cfg;
}

/* Load text and return the error, failing the test if it loads. */
static char *
load_error_mode(const char *text, mode_t mode)
{
	struct config *cfg = NULL;
	char *error = NULL;
	int rc = load_mode(text, mode, &cfg, &error);

	ck_assert_msg(rc == -1, "config accepted:\n%s", text);
	ck_assert_ptr_null(cfg);
	ck_assert_ptr_nonnull(error);
	return error;
}

static char *
load_error(const char *text)
{
	return load_error_mode(text, 0600);
}

#define MASTER_MINIMAL                                                         \
	"[general]\n"                                                          \
	"mode = master\n"                                                      \
	"[master]\n"                                                           \
	"replica_host = replica.example.org\n"                                 \
	"admin_user = mailrepl\n"                                              \
	"admin_password_file = @DIR@/admin.pw\n"

START_TEST(minimal_master_defaults)
{
	struct config *cfg;
	char *path = conf_path();

	free(write_in_dir("admin.pw", "s3cret\n", 0600));
	cfg = load_ok(MASTER_MINIMAL);

	ck_assert_str_eq(cfg->path, path);
	ck_assert_int_eq(cfg->mode, CFG_MODE_MASTER);
	ck_assert_str_eq(cfg->state_dir, "/var/lib/mailrepl");
	ck_assert_str_eq(cfg->log_file, "/var/log/mailrepl/mailrepl.log");
	ck_assert_str_eq(cfg->control_socket, "/run/mailrepl/control.sock");
	ck_assert_uint_eq(cfg->out_of_sync_after, 60);
	ck_assert_ptr_null(cfg->metrics_file);

	ck_assert_str_eq(cfg->maildir_root, "/var/vmail");
	ck_assert_str_eq(cfg->user_path, "%u/Maildir");
	ck_assert_int_eq(cfg->layout, CFG_LAYOUT_MAILDIRPP);

	ck_assert_str_eq(cfg->replica_host, "replica.example.org");
	ck_assert_uint_eq(cfg->imap_port, 143);
	ck_assert_int_eq(cfg->imap_tls, CFG_TLS_STARTTLS);
	ck_assert_uint_eq(cfg->control_port, 2005);
	ck_assert_str_eq(cfg->admin_user, "mailrepl");
	ck_assert_str_eq(cfg->admin_password, "s3cret");
	ck_assert_ptr_null(cfg->tls_ca_file);
	ck_assert_ptr_null(cfg->tls_fingerprint);
	ck_assert_uint_eq(cfg->workers, 4);
	ck_assert_uint_eq(cfg->batch_messages, 50);
	ck_assert_uint_eq(cfg->batch_bytes, 8ULL * 1024 * 1024);
	ck_assert_uint_eq(cfg->max_message_size, 0);
	ck_assert_uint_eq(cfg->imap_timeout, 120);
	ck_assert_uint_eq(cfg->reconcile_interval, 3600);

	ck_assert_str_eq(cfg->listen, "[::]:2005");
	ck_assert_str_eq(cfg->trusted_networks,
			 "127.0.0.0/8, ::1/128, 10.0.0.0/8, 172.16.0.0/12, "
			 "192.168.0.0/16, fc00::/7");
	ck_assert_ptr_null(cfg->replica_admin_user);
	ck_assert_str_eq(cfg->replica_imap_host, "127.0.0.1");
	ck_assert_uint_eq(cfg->replica_imap_port, 143);
	ck_assert_ptr_null(cfg->tls_cert_file);
	ck_assert_ptr_null(cfg->tls_key_file);

	ck_assert_ptr_null(cfg->alert_url);
	ck_assert_ptr_null(cfg->alert_mail_to);
	ck_assert_uint_eq(cfg->alert_after, 300);

	config_free(&cfg);
	ck_assert_ptr_null(cfg);
	free(path);
}
END_TEST

START_TEST(empty_file_is_standalone)
{
	struct config *cfg = load_ok("# nothing set\n");

	ck_assert_int_eq(cfg->mode, CFG_MODE_STANDALONE);
	ck_assert_ptr_null(cfg->replica_host);
	ck_assert_ptr_null(cfg->admin_password);
	config_free(&cfg);
}
END_TEST

START_TEST(every_key_set)
{
	struct config *cfg;

	free(write_in_dir("pw", "pw-from-file\n", 0600));
	cfg = load_ok("[general]\n"
		      "mode = master\n"
		      "state_dir = /srv/state\n"
		      "log_file = /srv/log/repl.log\n"
		      "control_socket = /srv/run/ctl.sock\n"
		      "out_of_sync_after = 90\n"
		      "metrics_file = /srv/metrics.prom\n"
		      "[maildir]\n"
		      "root = /srv/mail\n"
		      "user_path = %d/%n/%%Maildir\n"
		      "layout = maildir++\n"
		      "[master]\n"
		      "replica_host = 192.0.2.7\n"
		      "imap_port = 1143\n"
		      "imap_tls = imaps\n"
		      "control_port = 3005\n"
		      "admin_user = repladmin\n"
		      "admin_password_file = @DIR@/pw\n"
		      "admin_password = inline\n"
		      "tls_ca_file = /srv/ca.pem\n"
		      "tls_fingerprint = sha256:"
		      "00112233445566778899aabbccddeeff"
		      "00112233445566778899aabbccddeeff\n"
		      "workers = 8\n"
		      "batch_messages = 100\n"
		      "batch_bytes = 16M\n"
		      "max_message_size = 50M\n"
		      "imap_timeout = 30s\n"
		      "reconcile_interval = 600\n"
		      "[replica]\n"
		      "listen = 0.0.0.0:2006\n"
		      "trusted_networks = 192.0.2.0/24, 2001:db8::/32\n"
		      "admin_user = replica-admin\n"
		      "imap_host = ::1\n"
		      "imap_port = 10143\n"
		      "tls_cert_file = /srv/cert.pem\n"
		      "tls_key_file = /srv/key.pem\n"
		      "[alert]\n"
		      "url = smtps://mail.example.org:465\n"
		      "mail_to = ops@example.org, oncall@example.org\n"
		      "after = 120\n");

	ck_assert_int_eq(cfg->mode, CFG_MODE_MASTER);
	ck_assert_str_eq(cfg->state_dir, "/srv/state");
	ck_assert_str_eq(cfg->log_file, "/srv/log/repl.log");
	ck_assert_str_eq(cfg->control_socket, "/srv/run/ctl.sock");
	ck_assert_uint_eq(cfg->out_of_sync_after, 90);
	ck_assert_str_eq(cfg->metrics_file, "/srv/metrics.prom");
	ck_assert_str_eq(cfg->maildir_root, "/srv/mail");
	ck_assert_str_eq(cfg->user_path, "%d/%n/%%Maildir");
	ck_assert_str_eq(cfg->replica_host, "192.0.2.7");
	ck_assert_uint_eq(cfg->imap_port, 1143);
	ck_assert_int_eq(cfg->imap_tls, CFG_TLS_IMAPS);
	ck_assert_uint_eq(cfg->control_port, 3005);
	ck_assert_str_eq(cfg->admin_user, "repladmin");
	/* The password file overrides the inline password. */
	ck_assert_str_eq(cfg->admin_password, "pw-from-file");
	ck_assert_str_eq(cfg->tls_ca_file, "/srv/ca.pem");
	ck_assert_str_eq(cfg->tls_fingerprint,
			 "sha256:00112233445566778899aabbccddeeff"
			 "00112233445566778899aabbccddeeff");
	ck_assert_uint_eq(cfg->workers, 8);
	ck_assert_uint_eq(cfg->batch_messages, 100);
	ck_assert_uint_eq(cfg->batch_bytes, 16ULL << 20);
	ck_assert_uint_eq(cfg->max_message_size, 50ULL << 20);
	ck_assert_uint_eq(cfg->imap_timeout, 30);
	ck_assert_uint_eq(cfg->reconcile_interval, 600);
	ck_assert_str_eq(cfg->listen, "0.0.0.0:2006");
	ck_assert_str_eq(cfg->trusted_networks, "192.0.2.0/24, 2001:db8::/32");
	ck_assert_str_eq(cfg->replica_admin_user, "replica-admin");
	ck_assert_str_eq(cfg->replica_imap_host, "::1");
	ck_assert_uint_eq(cfg->replica_imap_port, 10143);
	ck_assert_str_eq(cfg->tls_cert_file, "/srv/cert.pem");
	ck_assert_str_eq(cfg->tls_key_file, "/srv/key.pem");
	ck_assert_str_eq(cfg->alert_url, "smtps://mail.example.org:465");
	ck_assert_str_eq(cfg->alert_mail_to,
			 "ops@example.org, oncall@example.org");
	ck_assert_uint_eq(cfg->alert_after, 120);
	config_free(&cfg);
}
END_TEST

struct bad_case {
	const char *text;
	const char *expect;
	const char *expect2; /* a second substring, or NULL */
};

static const struct bad_case bad_cases[] = {
	/* [general] */
	{"[general]\nmode = slave\n",
	 "[general] mode = \"slave\": invalid; allowed: standalone, master, "
	 "replica",
	 "mailrepl.conf:2: "},
	{"[general]\nmode = Master\n", "allowed: standalone, master", NULL},
	{"[general]\nstate_dir = var/lib/mailrepl\n",
	 "[general] state_dir = \"var/lib/mailrepl\": not an absolute path",
	 NULL},
	{"[general]\nstate_dir =\n",
	 "[general] state_dir = \"\": empty; set a value or remove the line",
	 NULL},
	{"[general]\nlog_file = mailrepl.log\n", "[general] log_file",
	 "absolute"},
	{"[general]\ncontrol_socket = ./ctl\n", "[general] control_socket",
	 "absolute"},
	{"[general]\nmetrics_file = m.prom\n", "[general] metrics_file",
	 "absolute"},
	{"[general]\nout_of_sync_after = 0\n",
	 "[general] out_of_sync_after = \"0\": out of range; expected a "
	 "number of seconds with an optional s suffix from 1 to 86400",
	 NULL},
	{"[general]\nout_of_sync_after = 10m\n",
	 "out_of_sync_after = \"10m\": "
	 "invalid; expected a number of seconds",
	 NULL},
	{"[general]\nout_of_sync_after = -5\n", "\"-5\": invalid", NULL},
	{"[general]\nout_of_sync_after = 99999999999999999999999\n",
	 "out of range", NULL},
	{"[general]\nout_of_sync_after = 1 0\n", "\"1 0\": invalid", NULL},
	{"[general]\nout_of_sync_after = 10ss\n", "\"10ss\": invalid", NULL},

	/* [maildir] */
	{"[maildir]\nroot = vmail\n", "[maildir] root = \"vmail\"", "absolute"},
	{"[maildir]\nuser_path = /home/%u/Maildir\n",
	 "[maildir] user_path = \"/home/%u/Maildir\": must be relative to "
	 "[maildir] root",
	 NULL},
	{"[maildir]\nuser_path = Maildir\n", "must contain %u or %n", NULL},
	{"[maildir]\nuser_path = %d/Maildir\n", "must contain %u or %n", NULL},
	{"[maildir]\nuser_path = %h/Maildir\n",
	 "invalid % sequence; allowed: %u (user), %n (local part), %d "
	 "(domain), %% (a % sign)",
	 NULL},
	{"[maildir]\nuser_path = %u/100%\n", "invalid % sequence", NULL},
	{"[maildir]\nuser_path = ../%u\n", "must not contain a .. component",
	 NULL},
	{"[maildir]\nuser_path = %u/../x\n", ".. component", NULL},
	{"[maildir]\nlayout = mbox\n",
	 "[maildir] layout = \"mbox\": invalid; allowed: maildir++, fs", NULL},
	{"[maildir]\nlayout = fs\n",
	 "[maildir] layout = \"fs\": layout fs is not supported yet", NULL},

	/* [master] */
	{"[master]\nreplica_host = mail example\n",
	 "[master] replica_host = \"mail example\": invalid; expected a host "
	 "name or an IP address",
	 NULL},
	{"[master]\nreplica_host = [::1]\n",
	 "replica_host = \"[::1]\": invalid", NULL},
	{"[master]\nreplica_host = host:143\n", "\"host:143\": invalid", NULL},
	{"[master]\nreplica_host = -host\n", "\"-host\": invalid", NULL},
	{"[master]\nimap_port = 0\n",
	 "[master] imap_port = \"0\": out of range; expected a whole number "
	 "from 1 to 65535",
	 NULL},
	{"[master]\nimap_port = 65536\n", "\"65536\": out of range", NULL},
	{"[master]\nimap_port = 0x8f\n", "\"0x8f\": invalid", NULL},
	{"[master]\nimap_port = +143\n", "\"+143\": invalid", NULL},
	{"[master]\nimap_tls = tls\n",
	 "[master] imap_tls = \"tls\": invalid; allowed: starttls, imaps, none",
	 NULL},
	{"[master]\ncontrol_port = 70000\n", "[master] control_port",
	 "out of "
	 "range"},
	{"[master]\nadmin_user = repl admin\n",
	 "[master] admin_user = \"repl admin\": invalid; a user name has no "
	 "spaces",
	 NULL},
	{"[master]\nadmin_password_file = admin.pw\n",
	 "[master] admin_password_file = \"admin.pw\": not an absolute path",
	 NULL},
	{"[master]\nadmin_password_file = @DIR@/missing.pw\n",
	 "cannot read the password file: No such file or directory", NULL},
	{"[master]\nadmin_password_file = @DIR@\n", "not a regular file", NULL},
	{"[master]\nadmin_password =\n",
	 "[master] admin_password = \"(not shown)\": empty", NULL},
	{"[master]\ntls_ca_file = ca.pem\n", "[master] tls_ca_file",
	 "absolute"},
	{"[master]\ntls_fingerprint = md5:00\n",
	 "[master] tls_fingerprint = \"md5:00\": invalid; expected sha256: "
	 "followed by 64 hex digits",
	 NULL},
	{"[master]\ntls_fingerprint = sha256:"
	 "00112233445566778899aabbccddeeff00112233445566778899aabbccddeef\n",
	 "tls_fingerprint", "expected sha256:"},
	{"[master]\ntls_fingerprint = sha256:"
	 "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff0\n",
	 "tls_fingerprint", "expected sha256:"},
	{"[master]\ntls_fingerprint = sha256:"
	 "g0112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
	 "tls_fingerprint", "expected sha256:"},
	{"[master]\ntls_fingerprint = sha256:001:12233445566778899aabbccddeeff"
	 "00112233445566778899aabbccddeeff\n",
	 "tls_fingerprint", "expected sha256:"},
	{"[master]\ntls_fingerprint = sha256:"
	 "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:"
	 "00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:\n",
	 "tls_fingerprint", "expected sha256:"},
	{"[master]\nworkers = 0\n",
	 "[master] workers = \"0\": out of range; expected a whole number from "
	 "1 to 64",
	 NULL},
	{"[master]\nworkers = 65\n", "\"65\": out of range", NULL},
	{"[master]\nworkers = 4 workers\n", "\"4 workers\": invalid", NULL},
	{"[master]\nbatch_messages = 0\n", "[master] batch_messages",
	 "from 1 to 1000"},
	{"[master]\nbatch_messages = 1001\n", "\"1001\": out of range", NULL},
	{"[master]\nbatch_bytes = 0\n",
	 "[master] batch_bytes = \"0\": out of range; expected a number of "
	 "bytes with an optional K, M or G suffix (1K = 1024) from 1 to "
	 "1073741824",
	 NULL},
	{"[master]\nbatch_bytes = 2G\n", "\"2G\": out of range", NULL},
	{"[master]\nbatch_bytes = 8MB\n", "\"8MB\": invalid", NULL},
	{"[master]\nbatch_bytes = 8T\n", "\"8T\": invalid", NULL},
	{"[master]\nbatch_bytes = -1\n", "\"-1\": invalid", NULL},
	{"[master]\nmax_message_size = 18446744073709551616\n",
	 "[master] max_message_size",
	 "out of range; expected a number of "
	 "bytes with an optional K, M or G suffix (1K = 1024), 0 or more (0 "
	 "means no limit)"},
	{"[master]\nmax_message_size = 20000000000G\n", "out of range", NULL},
	{"[master]\nimap_timeout = 0\n", "[master] imap_timeout",
	 "from 1 to 3600"},
	{"[master]\nimap_timeout = 3601\n", "\"3601\": out of range", NULL},
	{"[master]\nimap_timeout = 2m\n", "\"2m\": invalid", NULL},
	{"[master]\nreconcile_interval = 59\n", "[master] reconcile_interval",
	 "from 60 to 604800"},

	/* [replica] */
	{"[replica]\nlisten = 2005\n",
	 "[replica] listen = \"2005\": invalid; expected ADDRESS:PORT", NULL},
	{"[replica]\nlisten = [::]\n", "\"[::]\": invalid", NULL},
	{"[replica]\nlisten = :::2005\n", "\":::2005\": invalid", NULL},
	{"[replica]\nlisten = [::]:0\n", "\"[::]:0\": invalid", NULL},
	{"[replica]\nlisten = 0.0.0.0:99999\n", "invalid", NULL},
	{"[replica]\nlisten = [nonsense]:2005\n", "invalid", NULL},
	{"[replica]\ntrusted_networks = 10.0.0.0\n",
	 "[replica] trusted_networks = \"10.0.0.0\": item \"10.0.0.0\" is not "
	 "a network in CIDR form",
	 NULL},
	{"[replica]\ntrusted_networks = 127.0.0.0/8, 10.0.0.0/33\n",
	 "item \"10.0.0.0/33\"", NULL},
	{"[replica]\ntrusted_networks = ::1/129\n", "item \"::1/129\"", NULL},
	{"[replica]\ntrusted_networks = 10.0.0.0/8,,::1/128\n", "item \"\"",
	 NULL},
	{"[replica]\ntrusted_networks = bogus/8\n", "item \"bogus/8\"", NULL},
	{"[replica]\ntrusted_networks = 10.0.0.0/-1\n", "item \"10.0.0.0/-1\"",
	 NULL},
	{"[replica]\nadmin_user = a\tb\n", "[replica] admin_user", "no spaces"},
	{"[replica]\nimap_host = bad host\n", "[replica] imap_host",
	 "host name"},
	{"[replica]\nimap_port = 0\n", "[replica] imap_port", "out of range"},
	{"[replica]\ntls_cert_file = cert.pem\n", "[replica] tls_cert_file",
	 "absolute"},
	{"[replica]\ntls_key_file = key.pem\n", "[replica] tls_key_file",
	 "absolute"},
	{"[replica]\ntls_cert_file = /etc/cert.pem\n",
	 "[replica] tls_cert_file and tls_key_file must be set together", NULL},

	/* [alert] */
	{"[alert]\nurl = ftp://mail.example.org\n",
	 "[alert] url = \"ftp://mail.example.org\": unsupported; the URL must "
	 "start with smtp://, smtps:// or https://",
	 NULL},
	{"[alert]\nurl = smtp://\nmail_to = a@example.org\n",
	 "[alert] url = \"smtp://\": invalid; expected a URL with a host",
	 NULL},
	{"[alert]\nurl = https://user@/hook\n", "with a host", NULL},
	{"[alert]\nurl = https://example.org/a b\n", "no spaces", NULL},
	{"[alert]\nurl = http://hooks.example.org/x\n",
	 "[alert] url = \"http://hooks.example.org/x\": unsupported; http:// "
	 "is accepted only for 127.0.0.0/8 and [::1]; use https://",
	 NULL},
	{"[alert]\nurl = smtp://mail.example.org\n",
	 "[alert] url sends mail, so [alert] mail_to must name the "
	 "recipients",
	 NULL},
	{"[alert]\nmail_to = ops\n",
	 "[alert] mail_to = \"ops\": \"ops\" is not a mail address", NULL},
	{"[alert]\nmail_to = ops@example.org, @example.org\n",
	 "\"@example.org\" is not a mail address", NULL},
	{"[alert]\nafter = 0\n", "[alert] after", "from 1 to 604800"},

	/* what master mode needs */
	{"[general]\nmode = master\n[master]\nadmin_user = a\n"
	 "admin_password = x\n",
	 "mode = master needs [master] replica_host", NULL},
	{"[general]\nmode = master\n[master]\nreplica_host = r\n"
	 "admin_password = x\n",
	 "mode = master needs [master] admin_user", NULL},
	{"[general]\nmode = master\n[master]\nreplica_host = r\n"
	 "admin_user = a\n",
	 "mode = master needs the administrator's password: set [master] "
	 "admin_password_file",
	 NULL},

	/* syntax */
	{"[master]\nreplica_hots = r\n",
	 "mailrepl.conf:2: unknown key [master] replica_hots; known keys: "
	 "replica_host, imap_port",
	 NULL},
	{"[general]\n[mastr]\nworkers = 4\n",
	 "mailrepl.conf:2: unknown section [mastr]; known sections: "
	 "[general], [maildir], [master], [replica], [alert]",
	 NULL},
	{"[]\n", "unknown section []", NULL},
	{"mode = master\n",
	 "mailrepl.conf:1: key mode comes before any section", NULL},
	{"[master]\nworkers = 4\n\nworkers = 5\n",
	 "mailrepl.conf:4: duplicate key [master] workers, first set on line 2",
	 NULL},
	{"[general]\n\nworkers 4\n",
	 "mailrepl.conf:3: malformed line \"workers 4\"; expected [section], "
	 "key = value, or a comment",
	 NULL},
	{"[master] # comment\n", "mailrepl.conf:1: malformed line", NULL},
	{"[general]\n= x\n", "mailrepl.conf:2: malformed line \"= x\"", NULL},
	{"[general]\nmode = master \\\n",
	 "mailrepl.conf:2: the last line ends "
	 "with a backslash",
	 NULL},
};

START_TEST(invalid_value_rejected)
{
	const struct bad_case *c = &bad_cases[_i];
	char *path = conf_path();
	char *error = load_error(c->text);

	ck_assert_msg(strstr(error, c->expect) != NULL,
		      "case %d: expected \"%s\" in \"%s\"", _i, c->expect,
		      error);
	if (c->expect2 != NULL)
		ck_assert_msg(strstr(error, c->expect2) != NULL,
			      "case %d: expected \"%s\" in \"%s\"", _i,
			      c->expect2, error);
	ck_assert_msg(strncmp(error, path, strlen(path)) == 0,
		      "case %d: error does not start with the file name: %s",
		      _i, error);
	free(error);
	free(path);
}
END_TEST

START_TEST(unknown_key_lists_known)
{
	char *error = load_error("[replica]\nlisten_on = [::]:2005\n");

	ck_assert_ptr_nonnull(strstr(error, "unknown key [replica] listen_on"));
	ck_assert_ptr_nonnull(strstr(error, "known keys: listen, "
					    "trusted_networks, admin_user, "
					    "imap_host, imap_port, "
					    "tls_cert_file, tls_key_file"));
	free(error);
}
END_TEST

START_TEST(duplicate_across_sections)
{
	/* iniparser merges a repeated section, so a key repeated in the
	 * second block is still a duplicate. */
	char *error = load_error("[master]\nworkers = 2\n[general]\n"
				 "mode = master\n[master]\nworkers = 3\n");

	ck_assert_ptr_nonnull(strstr(error, ":6: duplicate key [master] "
					    "workers, first set on line 2"));
	free(error);
}
END_TEST

START_TEST(same_key_other_section)
{
	struct config *cfg = load_ok("[master]\nadmin_user = a\n"
				     "imap_port = 1143\n"
				     "[replica]\nadmin_user = b\n"
				     "imap_port = 2143\n");

	ck_assert_str_eq(cfg->admin_user, "a");
	ck_assert_str_eq(cfg->replica_admin_user, "b");
	ck_assert_uint_eq(cfg->imap_port, 1143);
	ck_assert_uint_eq(cfg->replica_imap_port, 2143);
	config_free(&cfg);
}
END_TEST

START_TEST(malformed_secret_not_shown)
{
	char *error = load_error("[master]\nadmin_password hunter2\n");

	ck_assert_ptr_nonnull(strstr(error, "mailrepl.conf:2: malformed line"));
	ck_assert_ptr_null(strstr(error, "hunter2"));
	free(error);
}
END_TEST

START_TEST(line_numbers_after_continuation)
{
	char *error = load_error("[replica]\n"
				 "trusted_networks = 10.0.0.0/8, \\\n"
				 "    192.168.0.0/16\n"
				 "listen = nowhere\n");

	ck_assert_ptr_nonnull(strstr(error, "mailrepl.conf:4: [replica] "
					    "listen = \"nowhere\""));
	free(error);
}
END_TEST

START_TEST(continuation_joins_lines)
{
	struct config *cfg = load_ok("[replica]\n"
				     "trusted_networks = 10.0.0.0/8, \\\n"
				     "192.168.0.0/16\n");

	ck_assert_str_eq(cfg->trusted_networks, "10.0.0.0/8, 192.168.0.0/16");
	config_free(&cfg);
}
END_TEST

/* A line of exactly len bytes, not counting its newline. */
static char *
line_of_length(size_t len)
{
	const char *prefix = "[general]\nmetrics_file = /";
	size_t used = strlen("metrics_file = /");
	char *text = xmalloc(strlen(prefix) + len + 2);

	strcpy(text, prefix);
	memset(text + strlen(prefix), 'm', len - used);
	strcpy(text + strlen(prefix) + len - used, "\n");
	return text;
}

START_TEST(line_length_limit)
{
	char *fits = line_of_length(1022);
	char *too_long = line_of_length(1023);
	struct config *cfg = load_ok(fits);
	char *error;

	ck_assert_uint_eq(strlen(cfg->metrics_file), 1022 - 15);
	config_free(&cfg);

	error = load_error(too_long);
	ck_assert_ptr_nonnull(strstr(error, "mailrepl.conf:2: line is longer "
					    "than 1022 bytes"));
	free(error);
	free(fits);
	free(too_long);
}
END_TEST

START_TEST(numbers_are_decimal)
{
	struct config *cfg = load_ok("[master]\nworkers = 010\n"
				     "batch_messages = 0100\n"
				     "batch_bytes = 512K\n"
				     "max_message_size = 1g\n"
				     "imap_timeout = 045s\n"
				     "[alert]\nafter = 3600s\n");

	ck_assert_uint_eq(cfg->workers, 10);
	ck_assert_uint_eq(cfg->batch_messages, 100);
	ck_assert_uint_eq(cfg->batch_bytes, 512 * 1024);
	ck_assert_uint_eq(cfg->max_message_size, 1ULL << 30);
	ck_assert_uint_eq(cfg->imap_timeout, 45);
	ck_assert_uint_eq(cfg->alert_after, 3600);
	config_free(&cfg);
}
END_TEST

START_TEST(quotes_comments_and_case)
{
	struct config *cfg = load_ok("[General]\r\n"
				     "STATE_DIR = \"/srv/state dir\"  \r\n"
				     "; a comment\r\n"
				     "[MAILDIR]\r\n"
				     "user_path = \"%u/Mail;box#1\"\r\n"
				     "[master]\r\n"
				     "workers = 8 # inline comment\r\n"
				     "admin_user = 'quoted'\r\n");

	ck_assert_str_eq(cfg->state_dir, "/srv/state dir");
	ck_assert_str_eq(cfg->user_path, "%u/Mail;box#1");
	ck_assert_uint_eq(cfg->workers, 8);
	ck_assert_str_eq(cfg->admin_user, "quoted");
	config_free(&cfg);
}
END_TEST

START_TEST(relative_config_path)
{
	char cwd[PATH_MAX];
	struct config *cfg = NULL;
	char *error = NULL;
	int rc;

	free(write_in_dir("rel.conf", "[master]\nworkers = 2\n", 0600));
	ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
	ck_assert_int_eq(chdir(dir), 0);
	rc = config_load("rel.conf", &cfg, &error);
	ck_assert_int_eq(chdir(cwd), 0);

	ck_assert_msg(rc == 0, "rejected: %s", error);
	ck_assert_str_eq(cfg->path, "rel.conf");
	ck_assert_uint_eq(cfg->workers, 2);
	config_free(&cfg);
}
END_TEST

START_TEST(missing_config_file)
{
	struct config *cfg = NULL;
	char *error = NULL;
	char *path = xasprintf("%s/absent.conf", dir);

	ck_assert_int_eq(config_load(path, &cfg, &error), -1);
	ck_assert_ptr_null(cfg);
	ck_assert_ptr_nonnull(strstr(error,
				     "absent.conf: cannot open the "
				     "configuration file: No such file"));
	free(error);
	free(path);
}
END_TEST

START_TEST(inline_password_mode)
{
	const char *text = "[general]\nmode = master\n[master]\n"
			   "replica_host = r.example.org\nadmin_user = a\n"
			   "admin_password = hunter2\n";
	char *path = conf_path();
	char *expect = xasprintf("%s holds a secret ([master] admin_password) "
				 "and is readable by group or others (mode "
				 "0644); run: chmod 600 %s",
				 path, path);
	char *error = load_error_mode(text, 0644);
	struct config *cfg;

	ck_assert_str_eq(error, expect);
	ck_assert_ptr_null(strstr(error, "hunter2"));
	free(error);

	error = load_error_mode(text, 0604);
	ck_assert_ptr_nonnull(strstr(error, "(mode 0604)"));
	free(error);

	cfg = load_ok(text);
	ck_assert_str_eq(cfg->admin_password, "hunter2");
	config_free(&cfg);
	free(expect);
	free(path);
}
END_TEST

/* A webhook receiver on this host may take plain HTTP. */
START_TEST(alert_url_http_loopback)
{
	struct config *cfg = load_ok("[alert]\nurl = http://127.0.0.1:8080/a\n");

	ck_assert_str_eq(cfg->alert_url, "http://127.0.0.1:8080/a");
	config_free(&cfg);
	cfg = load_ok("[alert]\nurl = http://[::1]/a\n");
	ck_assert_str_eq(cfg->alert_url, "http://[::1]/a");
	config_free(&cfg);
}
END_TEST

START_TEST(alert_url_password_mode)
{
	const char *text =
		"[alert]\nurl = smtp://alerts:hunter2@mx.example.org\n"
		"mail_to = ops@example.org\n";
	char *error = load_error_mode(text, 0640);
	struct config *cfg;

	ck_assert_ptr_nonnull(strstr(error, "holds a secret ([alert] url)"));
	ck_assert_ptr_nonnull(strstr(error, "chmod 600"));
	ck_assert_ptr_null(strstr(error, "hunter2"));
	free(error);

	cfg = load_ok(text);
	ck_assert_str_eq(cfg->alert_url,
			 "smtp://alerts:hunter2@mx.example.org");
	config_free(&cfg);

	/* A user name alone is no secret. */
	cfg = NULL;
	ck_assert_int_eq(
		load_mode("[alert]\nurl = https://hook@example.org/x\n", 0644,
			  &cfg, &error),
		0);
	config_free(&cfg);
}
END_TEST

START_TEST(bad_url_hides_password)
{
	char *error =
		load_error("[alert]\nurl = ftp://u:hunter2@example.org/\n");

	ck_assert_ptr_nonnull(strstr(error, "[alert] url = \"ftp://u:(password "
					    "not shown)@example.org/\""));
	ck_assert_ptr_null(strstr(error, "hunter2"));
	free(error);
}
END_TEST

START_TEST(password_file_mode)
{
	char *pwfile = write_in_dir("admin.pw", "hunter2\n", 0640);
	char *expect = xasprintf("the password file is readable by group or "
				 "others (mode 0640); run: chmod 600 %s",
				 pwfile);
	char *error = load_error(MASTER_MINIMAL);
	struct config *cfg;

	ck_assert_msg(strstr(error, expect) != NULL, "got: %s", error);
	ck_assert_ptr_nonnull(strstr(error, "[master] admin_password_file"));
	ck_assert_ptr_null(strstr(error, "hunter2"));
	free(error);

	ck_assert_int_eq(chmod(pwfile, 0600), 0);
	cfg = load_ok(MASTER_MINIMAL);
	ck_assert_str_eq(cfg->admin_password, "hunter2");
	config_free(&cfg);
	free(expect);
	free(pwfile);
}
END_TEST

static const struct {
	const char *content;
	const char *password;
} pw_cases[] = {
	{"hunter2\n", "hunter2"},
	{"hunter2\r\n", "hunter2"},
	{"hunter2", "hunter2"},
	{"hunter2\nsecond line\n", "hunter2"},
	{" with spaces \n", " with spaces "},
};

START_TEST(password_file_first_line)
{
	struct config *cfg;

	free(write_in_dir("admin.pw", pw_cases[_i].content, 0600));
	cfg = load_ok(MASTER_MINIMAL);
	ck_assert_str_eq(cfg->admin_password, pw_cases[_i].password);
	config_free(&cfg);
}
END_TEST

START_TEST(password_file_empty)
{
	char *error;

	free(write_in_dir("admin.pw", "", 0600));
	error = load_error(MASTER_MINIMAL);
	ck_assert_ptr_nonnull(strstr(error, "[master] admin_password_file"));
	ck_assert_ptr_nonnull(strstr(error, "admin.pw is empty"));
	free(error);

	free(write_in_dir("admin.pw", "\n", 0600));
	error = load_error(MASTER_MINIMAL);
	ck_assert_ptr_nonnull(
		strstr(error, "admin.pw has an empty first line"));
	free(error);
}
END_TEST

static const struct {
	const char *input;
	const char *normal;
} fp_cases[] = {
	{"sha256:00112233445566778899aabbccddeeff"
	 "00112233445566778899aabbccddeeff",
	 "sha256:00112233445566778899aabbccddeeff"
	 "00112233445566778899aabbccddeeff"},
	{"SHA256:00112233445566778899AABBCCDDEEFF"
	 "00112233445566778899AaBbCcDdEeFf",
	 "sha256:00112233445566778899aabbccddeeff"
	 "00112233445566778899aabbccddeeff"},
	{"sha256:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:"
	 "00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff",
	 "sha256:00112233445566778899aabbccddeeff"
	 "00112233445566778899aabbccddeeff"},
};

START_TEST(fingerprint_normalised)
{
	char *text = xasprintf("[master]\ntls_ca_file = /etc/ssl/ca.pem\n"
			       "tls_fingerprint = %s\n",
			       fp_cases[_i].input);
	struct config *cfg = load_ok(text);

	ck_assert_str_eq(cfg->tls_fingerprint, fp_cases[_i].normal);
	ck_assert_str_eq(cfg->tls_ca_file, "/etc/ssl/ca.pem");
	config_free(&cfg);
	free(text);
}
END_TEST

static const struct {
	const char *host;
	bool loopback;
} tls_none_cases[] = {
	{"127.0.0.1", true},
	{"127.8.9.10", true},
	{"::1", true},
	{"localhost", true},
	{"LocalHost", true},
	{"::ffff:127.0.0.1", true},
	{"10.0.0.1", false},
	{"128.0.0.1", false},
	{"::2", false},
	{"replica.example.org", false},
	{"localhost.example.org", false},
};

START_TEST(tls_none_needs_loopback)
{
	char *text = xasprintf("[general]\nmode = master\n[master]\n"
			       "replica_host = %s\nadmin_user = a\n"
			       "admin_password_file = @DIR@/pw\n"
			       "imap_tls = none\n",
			       tls_none_cases[_i].host);
	struct config *cfg = NULL;
	char *error = NULL;
	char *expect;
	int rc;

	free(write_in_dir("pw", "x\n", 0600));
	rc = load(text, &cfg, &error);
	if (tls_none_cases[_i].loopback) {
		ck_assert_msg(rc == 0, "%s rejected: %s",
			      tls_none_cases[_i].host, error);
		ck_assert_int_eq(cfg->imap_tls, CFG_TLS_NONE);
		ck_assert_uint_eq(cfg->imap_port, 143);
	} else {
		expect = xasprintf(
			"mailrepl.conf:7: [master] imap_tls = \"none\": "
			"imap_tls = none sends the administrator "
			"password in clear text; only allowed for a "
			"loopback replica_host (%s is not)",
			tls_none_cases[_i].host);
		ck_assert_int_eq(rc, -1);
		ck_assert_msg(strstr(error, expect) != NULL, "got: %s", error);
		free(expect);
	}
	config_free(&cfg);
	free(error);
	free(text);
}
END_TEST

START_TEST(imaps_default_port)
{
	struct config *cfg = load_ok("[master]\nimap_tls = imaps\n");

	ck_assert_int_eq(cfg->imap_tls, CFG_TLS_IMAPS);
	ck_assert_uint_eq(cfg->imap_port, 993);
	config_free(&cfg);

	cfg = load_ok("[master]\nimap_port = 1993\nimap_tls = imaps\n");
	ck_assert_uint_eq(cfg->imap_port, 1993);
	config_free(&cfg);

	cfg = load_ok("[master]\nimap_tls = starttls\n");
	ck_assert_uint_eq(cfg->imap_port, 143);
	config_free(&cfg);
}
END_TEST

START_TEST(replica_mode_optional_keys)
{
	struct config *cfg = load_ok("[general]\nmode = replica\n");

	ck_assert_int_eq(cfg->mode, CFG_MODE_REPLICA);
	ck_assert_ptr_null(cfg->replica_host);
	ck_assert_ptr_null(cfg->admin_user);
	config_free(&cfg);
}
END_TEST

START_TEST(mode_and_tls_names)
{
	ck_assert_str_eq(cfg_mode_name(CFG_MODE_STANDALONE), "standalone");
	ck_assert_str_eq(cfg_mode_name(CFG_MODE_MASTER), "master");
	ck_assert_str_eq(cfg_mode_name(CFG_MODE_REPLICA), "replica");
	ck_assert_str_eq(cfg_mode_name((enum cfg_mode)42), "invalid");
	ck_assert_str_eq(cfg_tls_name(CFG_TLS_STARTTLS), "starttls");
	ck_assert_str_eq(cfg_tls_name(CFG_TLS_IMAPS), "imaps");
	ck_assert_str_eq(cfg_tls_name(CFG_TLS_NONE), "none");
	ck_assert_str_eq(cfg_tls_name((enum cfg_tls)42), "invalid");
}
END_TEST

START_TEST(config_free_null)
{
	struct config *cfg = NULL;

	config_free(&cfg);
	ck_assert_ptr_null(cfg);
}
END_TEST

#define N_ELEMS(a) ((int)(sizeof(a) / sizeof((a)[0])))

int
main(void)
{
	Suite *s = suite_create("cfg");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, minimal_master_defaults);
	tcase_add_test(tc, empty_file_is_standalone);
	tcase_add_test(tc, every_key_set);
	tcase_add_loop_test(tc, invalid_value_rejected, 0, N_ELEMS(bad_cases));
	tcase_add_test(tc, unknown_key_lists_known);
	tcase_add_test(tc, duplicate_across_sections);
	tcase_add_test(tc, same_key_other_section);
	tcase_add_test(tc, malformed_secret_not_shown);
	tcase_add_test(tc, line_numbers_after_continuation);
	tcase_add_test(tc, continuation_joins_lines);
	tcase_add_test(tc, line_length_limit);
	tcase_add_test(tc, numbers_are_decimal);
	tcase_add_test(tc, quotes_comments_and_case);
	tcase_add_test(tc, relative_config_path);
	tcase_add_test(tc, missing_config_file);
	tcase_add_test(tc, inline_password_mode);
	tcase_add_test(tc, alert_url_password_mode);
	tcase_add_test(tc, alert_url_http_loopback);
	tcase_add_test(tc, bad_url_hides_password);
	tcase_add_test(tc, password_file_mode);
	tcase_add_loop_test(tc, password_file_first_line, 0, N_ELEMS(pw_cases));
	tcase_add_test(tc, password_file_empty);
	tcase_add_loop_test(tc, fingerprint_normalised, 0, N_ELEMS(fp_cases));
	tcase_add_loop_test(tc, tls_none_needs_loopback, 0,
			    N_ELEMS(tls_none_cases));
	tcase_add_test(tc, imaps_default_port);
	tcase_add_test(tc, replica_mode_optional_keys);
	tcase_add_test(tc, mode_and_tls_names);
	tcase_add_test(tc, config_free_null);
	suite_add_tcase(s, tc);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
