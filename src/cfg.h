/* The configuration file: INI, read once with iniparser into a validated
 * struct. Nothing outside cfg.c calls iniparser. */
#ifndef MAILREPL_CFG_H
#define MAILREPL_CFG_H

#include <stdbool.h>

#define CONFIG_DEFAULT_PATH "/etc/mailrepl/mailrepl.conf"

enum cfg_mode { CFG_MODE_STANDALONE, CFG_MODE_MASTER, CFG_MODE_REPLICA };
enum cfg_tls { CFG_TLS_STARTTLS, CFG_TLS_IMAPS, CFG_TLS_NONE };
enum cfg_layout { CFG_LAYOUT_MAILDIRPP, CFG_LAYOUT_FS };

/* Every string is owned by the struct; NULL means "not set" where the
 * key has no default. Durations are in seconds. */
struct config {
	char *path; /* the file this was loaded from */

	/* [general] */
	enum cfg_mode mode;	     /* default standalone */
	char *state_dir;	     /* default /var/lib/mailrepl */
	char *log_file;		     /* default /var/log/mailrepl/mailrepl.log */
	char *control_socket;	     /* default /run/mailrepl/control.sock */
	unsigned out_of_sync_after;  /* default 60 */
	char *metrics_file;	     /* default NULL (no metrics) */

	/* [maildir] */
	char *maildir_root;	     /* default /var/vmail */
	char *user_path;	     /* default "%u/Maildir"; %u %n %d */
	enum cfg_layout layout;	     /* default maildir++ */

	/* [master] */
	char *replica_host;	     /* required in master mode */
	unsigned imap_port;	     /* default 143, or 993 for imaps */
	enum cfg_tls imap_tls;	     /* default starttls */
	unsigned control_port;	     /* default 2005 */
	char *admin_user;	     /* required in master mode */
	char *admin_password_file;   /* one of these two is required */
	char *admin_password;	     /* in master mode; the file wins */
	char *tls_ca_file;	     /* default: the system trust store */
	char *tls_fingerprint;	     /* "sha256:" + 64 lowercase hex digits */
	unsigned workers;	     /* default 4, 1..64 */
	unsigned batch_messages;     /* default 50, 1..1000 */
	unsigned long long batch_bytes; /* default 8 MiB */
	unsigned long long max_message_size; /* default 0: no limit */
	unsigned imap_timeout;	     /* default 120 */
	unsigned reconcile_interval; /* default 3600 */

	/* [replica] */
	char *listen;		     /* default "[::]:2005" */
	char *trusted_networks;	     /* default loopback and private ranges */
	char *replica_admin_user;
	char *replica_imap_host;     /* default 127.0.0.1 */
	unsigned replica_imap_port;  /* default 143 */
	char *tls_cert_file;
	char *tls_key_file;

	/* [alert] */
	char *alert_url;
	char *alert_mail_to;
	unsigned alert_after;	     /* default 300 */
};

/* Load and validate path. On success returns 0 and *cfg_r (free with
 * config_free). On failure returns -1 and *error_r (caller frees), a
 * message that names the file, section, key, value and what is allowed.
 * The password file, if named, is read here, and is rejected like the
 * config itself when group or others can read it. */
int config_load(const char *path, struct config **cfg_r, char **error_r);
void config_free(struct config **cfg);

const char *cfg_mode_name(enum cfg_mode mode);
const char *cfg_tls_name(enum cfg_tls tls);

#endif
