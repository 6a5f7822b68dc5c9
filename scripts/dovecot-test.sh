#!/bin/bash
# Run a private Dovecot 2.3 IMAP server for tests, with everything it uses
# (configuration, sockets, state, log, certificates, mail) under one directory.
#
#   dovecot-test.sh start DIR   create DIR if needed, start Dovecot, print its env
#   dovecot-test.sh env DIR     print the env of the instance in DIR
#   dovecot-test.sh check DIR   log in and exercise the running instance
#   dovecot-test.sh stop DIR    stop the instance and wait until it has exited
#
# The server listens only on 127.0.0.1, on two free ports picked at the first
# start and reused by later starts of the same DIR:
# IMAP with STARTTLS, and IMAP over TLS. Users log in with plain passwords.
# "repladmin" is a master user: "alice*repladmin" with repladmin's password
# logs in to alice's mailbox. Run as root; mail belongs to the system user vmail.
set -euo pipefail

readonly ADMIN_USER=repladmin
readonly ADMIN_PASSWORD=adminpw
readonly USER_PASSWORD=userpw
readonly DEFAULT_USERS="alice bob carol dave erin"
readonly MAIL_USER=vmail
readonly START_TIMEOUT=20
readonly STOP_TIMEOUT=20

usage() {
	cat <<EOF
Usage: $0 start|stop|env|check DIR

  start DIR   start a private Dovecot whose files all live under DIR, and
              print shell variable assignments (also saved to DIR/env)
  stop DIR    stop it and wait until its processes have exited
  env DIR     print DIR/env again
  check DIR   log in as a user, as the master user and over TLS, and fail
              if anything does not work

Environment:
  DOVECOT_TEST_SIZE_LIMIT  "user:size" (e.g. "small:20k"): the replica rejects
                      that user's messages above size with NO [LIMIT]
  DOVECOT_TEST_USERS  space-separated user names with password "$USER_PASSWORD"
                      (default: "$DEFAULT_USERS"); the users "$ADMIN_USER"
                      (password "$ADMIN_PASSWORD") and "fresh" always exist
EOF
}

die() {
	echo "dovecot-test.sh: $*" >&2
	exit 1
}

log() {
	echo "dovecot-test.sh: $*" >&2
}

# Install Debian packages with apt-get. A temporary policy-rc.d keeps a newly
# installed dovecot-core from starting the system Dovecot on *:143 and *:993.
# An existing policy-rc.d is left as it is.
apt_install() {
	log "installing $*"
	local policy=/usr/sbin/policy-rc.d made_policy=no status=0
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		made_policy=yes
	fi
	{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"; } >&2 || status=$?
	if [[ $made_policy == yes ]]; then
		rm -f "$policy"
	fi
	((status == 0)) || die "apt-get install $* failed (exit status $status)"
}

have() {
	command -v "$1" >/dev/null 2>&1
}

require_tools() {
	local missing=()
	have dovecot || missing+=(dovecot-core)
	[[ -x /usr/lib/dovecot/imap ]] || missing+=(dovecot-imapd)
	have openssl || missing+=(openssl)
	have python3 || missing+=(python3)
	have runuser || missing+=(util-linux)
	((${#missing[@]} == 0)) || apt_install "${missing[@]}"
}

# Set the paths of the instance in DIR, an existing directory.
set_paths() {
	[[ -d $1 ]] || die "directory not found: $1"
	DIR=$(cd -- "$1" && pwd -P)
	# The path goes unquoted into dovecot.conf, where a space splits a value.
	[[ $DIR =~ ^[A-Za-z0-9_./+-]+$ ]] ||
		die "invalid directory '$DIR': use only letters, digits and . _ / + -"
	CONF=$DIR/dovecot.conf
	BASE_DIR=$DIR/run
	STATE_DIR=$DIR/state
	LOG=$DIR/dovecot.log
	MAIL=$DIR/mail
	ENV_FILE=$DIR/env
	PORTS_FILE=$DIR/ports
	PID_FILE=$BASE_DIR/master.pid
}

# Print the PID of the running master process of DIR, or fail.
running_pid() {
	local pid
	[[ -r $PID_FILE ]] || return 1
	pid=$(<"$PID_FILE")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	echo "$pid"
}

# Print N distinct TCP ports that are free on 127.0.0.1 right now. The kernel
# picks them; another process could still take one before Dovecot binds it.
free_ports() {
	python3 - "$1" <<'EOF'
import socket
import sys

sockets = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    sockets.append(s)
print(" ".join(str(s.getsockname()[1]) for s in sockets))
for s in sockets:
    s.close()
EOF
}

ensure_mail_user() {
	if ! id -u "$MAIL_USER" >/dev/null 2>&1; then
		log "creating system user $MAIL_USER"
		# A start running in parallel may have created the user meanwhile.
		useradd --system --user-group --home-dir /nonexistent --no-create-home \
			--shell /usr/sbin/nologin "$MAIL_USER" || id -u "$MAIL_USER" >/dev/null ||
			die "could not create system user $MAIL_USER"
	fi
}

# Create a small CA (DIR/ca.pem) and a server certificate signed by it for
# 127.0.0.1 and localhost. Existing files are kept, so the fingerprint stays
# the same when an instance is stopped and started again.
make_certificates() {
	if [[ -s $DIR/server.pem && -s $DIR/server.key && -s $DIR/ca.pem ]]; then
		return
	fi
	log "creating test CA and server certificate in $DIR"
	local tmp
	tmp=$(mktemp -d "$DIR/.certs.XXXXXX")
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$tmp/ca.key" -out "$tmp/ca.pem" -days 3650 \
		-subj "/CN=mailrepl test CA" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$tmp/server.key" -out "$tmp/server.csr" \
		-subj "/CN=localhost" 2>/dev/null
	cat >"$tmp/server.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
EOF
	openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" \
		-CAcreateserial -days 825 -extfile "$tmp/server.ext" \
		-out "$tmp/server.pem" 2>/dev/null
	chmod 600 "$tmp/ca.key" "$tmp/server.key"
	mv "$tmp/ca.key" "$tmp/ca.pem" "$tmp/server.key" "$tmp/server.pem" "$DIR/"
	rm -rf -- "$tmp"
}

# Write DIR/fingerprint as "sha256:" and the lowercase hex SHA-256 of the
# server certificate in DER form.
write_fingerprint() {
	local hex
	hex=$(openssl x509 -in "$DIR/server.pem" -outform DER | sha256sum)
	hex=${hex%% *}
	echo "sha256:$hex" >"$DIR/fingerprint"
}

# Write the master-user file and the user file (passwd-file format,
# "name:{PLAIN}password" plus the empty uid..extra fields).
write_passwd_files() {
	local users=$1 user
	printf '%s:{PLAIN}%s::::::\n' "$ADMIN_USER" "$ADMIN_PASSWORD" >"$DIR/passwd.masters"
	{
		printf '%s:{PLAIN}%s::::::\n' "$ADMIN_USER" "$ADMIN_PASSWORD"
		for user in $users; do
			printf '%s:{PLAIN}%s::::::%s\n' "$user" "$USER_PASSWORD" \
				"$(size_limit_field "$user")"
		done
	} >"$DIR/passwd.users"
	chmod 644 "$DIR/passwd.masters" "$DIR/passwd.users"
}

# The passwd-file extra field that limits the message size of user, when
# DOVECOT_TEST_SIZE_LIMIT is "user:size" for that user.
size_limit_field() {
	local limit=${DOVECOT_TEST_SIZE_LIMIT:-}
	[[ -n $limit && ${limit%%:*} == "$1" ]] || return 0
	printf 'userdb_quota_max_mail_size=%s' "${limit#*:}"
}

# Print the user names from DOVECOT_TEST_USERS plus "fresh", without duplicates.
test_users() {
	local user list=" "
	for user in ${DOVECOT_TEST_USERS-$DEFAULT_USERS} fresh; do
		[[ $user =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] ||
			die "invalid user name '$user' in DOVECOT_TEST_USERS: use letters, digits, '.', '_' and '-'"
		[[ $user != "$ADMIN_USER" ]] ||
			die "DOVECOT_TEST_USERS must not contain $ADMIN_USER; it always exists"
		[[ $list == *" $user "* ]] || list+="$user "
	done
	list=${list# }
	echo "${list% }"
}

# With DOVECOT_TEST_SIZE_LIMIT, the quota plugin rejects larger messages of
# that one user with "NO [LIMIT]", and announces no APPENDLIMIT, so the
# client sees a real rejection by the server.
quota_config() {
	[[ -n ${DOVECOT_TEST_SIZE_LIMIT:-} ]] || return 0
	cat <<EOF
mail_plugins = \$mail_plugins quota
plugin {
  quota = count:User quota
  quota_vsizes = yes
}
EOF
}

write_config() {
	local imap_port=$1 imaps_port=$2 uid gid instance
	uid=$(id -u "$MAIL_USER")
	gid=$(id -g "$MAIL_USER")
	instance=mailrepl-test-$(printf '%s' "$DIR" | sha256sum | cut -c1-12)
	cat >"$CONF" <<EOF
# Written by dovecot-test.sh start, which rewrites it at every start.
instance_name = $instance
base_dir = $BASE_DIR
state_dir = $STATE_DIR
log_path = $LOG
auth_verbose = yes

listen = 127.0.0.1
protocols = imap

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $imap_port
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $imaps_port
    ssl = yes
  }
}
# protocols = imap already keeps these from starting; port 0 also removes
# their listeners in case a later edit adds a protocol.
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
  inet_listener pop3s {
    port = 0
  }
}
service submission-login {
  inet_listener submission {
    port = 0
  }
}

ssl = yes
ssl_cert = <$DIR/server.pem
ssl_key = <$DIR/server.key
ssl_min_protocol = TLSv1.2

disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 1 secs
# Turn off the authentication penalty. With it, each failed login from
# 127.0.0.1 also delays the following logins from that address by 2 s,
# doubling up to 15 s (login_trusted_networks does not prevent that in
# 2.3.19). NOTE: auth then logs "Error: net_connect_unix(anvil-auth-penalty)
# failed" once after each start; that line is expected.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
auth_master_user_separator = *

# Master users. result_success = continue sends a successful master login on
# to the next passdb, so "name*$ADMIN_USER" works only when "name" exists there.
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DIR/passwd.masters
  master = yes
  result_success = continue
}
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DIR/passwd.users
}
userdb {
  driver = static
  args = uid=$uid gid=$gid home=$MAIL/%u
}
first_valid_uid = $uid
last_valid_uid = $uid
first_valid_gid = $gid
last_valid_gid = $gid

mail_location = maildir:$MAIL/%u/Maildir
namespace inbox {
  inbox = yes
  separator = .
  prefix =
}

$(quota_config)
protocol imap {
  mail_max_userip_connections = 100
  imap_max_line_length = 1M
}
EOF
}

write_env() {
	local imap_port=$1 imaps_port=$2 users=$3
	{
		assign DOVECOT_DIR "$DIR"
		assign DOVECOT_CONF "$CONF"
		assign DOVECOT_LOG "$LOG"
		assign IMAP_PORT "$imap_port"
		assign IMAPS_PORT "$imaps_port"
		assign DOVECOT_CA "$DIR/ca.pem"
		assign DOVECOT_FINGERPRINT "$(<"$DIR/fingerprint")"
		assign DOVECOT_ADMIN "$ADMIN_USER"
		assign DOVECOT_ADMIN_PASSWORD "$ADMIN_PASSWORD"
		assign DOVECOT_USERS "$users"
		assign DOVECOT_USER_PASSWORD "$USER_PASSWORD"
		assign DOVECOT_MAIL "$MAIL"
	} >"$ENV_FILE"
}

# Print NAME=VALUE for a shell, single-quoting VALUE when it needs quotes.
assign() {
	local name=$1 value=$2
	if [[ $value =~ ^[A-Za-z0-9_./:@+=,-]*$ ]]; then
		printf '%s=%s\n' "$name" "$value"
	else
		printf "%s='%s'\n" "$name" "${value//\'/\'\\\'\'}"
	fi
}

# Wait until PORT on 127.0.0.1 sends an IMAP greeting.
wait_for_greeting() {
	local port=$1 deadline=$((SECONDS + START_TIMEOUT)) line
	while ((SECONDS < deadline)); do
		# The braces limit the 2>/dev/null to the connect; exec alone would
		# apply it to the rest of the script.
		if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
			line=
			read -r -t 2 line <&3 || true
			exec 3>&-
			if [[ $line == "* OK"* ]]; then
				return 0
			fi
		fi
		sleep 0.2
	done
	return 1
}

cmd_start() {
	mkdir -p -- "$1"
	set_paths "$1"
	require_tools
	local pid
	if pid=$(running_pid); then
		die "Dovecot is already running for $DIR (pid $pid); run '$0 stop $DIR' first"
	fi

	# Unix socket paths are limited to 108 bytes, and the longest socket path
	# that Dovecot creates under base_dir adds about 30 bytes (an estimate).
	((${#DIR} <= 70)) || die "directory path too long for Unix sockets: $DIR (${#DIR} characters, at most 70)"

	ensure_mail_user
	local users
	users=$(test_users)

	chmod 755 "$DIR"
	mkdir -p "$STATE_DIR" "$MAIL"
	chown "$MAIL_USER:$MAIL_USER" "$MAIL"
	chmod 700 "$MAIL"
	runuser -u "$MAIL_USER" -- test -w "$MAIL" ||
		die "user $MAIL_USER cannot write to $MAIL; a parent directory of $DIR is not searchable by others"

	make_certificates
	write_fingerprint
	write_passwd_files "$users"
	rm -f "$ENV_FILE"
	: >>"$LOG"

	# A restart reuses the ports of the previous start, saved in
	# DIR/ports, so that clients configured with them reconnect. Another
	# process can take a port between free_ports and Dovecot's bind, or
	# hold a saved one by now, so a failed start is retried with new ports.
	local attempt ports imap_port imaps_port
	for attempt in 1 2 3; do
		ports=
		if ((attempt == 1)) && [[ -r $PORTS_FILE ]]; then
			ports=$(<"$PORTS_FILE")
			[[ $ports =~ ^[0-9]+\ [0-9]+$ ]] || ports=
		fi
		[[ -n $ports ]] || ports=$(free_ports 2)
		read -r imap_port imaps_port <<<"$ports"
		write_config "$imap_port" "$imaps_port"
		doveconf -c "$CONF" -n >/dev/null || die "invalid configuration $CONF (see doveconf output above)"
		# The daemon must not keep the caller's stdout open, or a caller that
		# reads it to the end, as in eval "$(dovecot-test.sh start DIR)",
		# waits forever. Dovecot writes its startup errors to log_path too.
		if dovecot -c "$CONF" </dev/null >/dev/null 2>&1; then
			break
		fi
		tail -n 3 "$LOG" >&2 || true
		((attempt < 3)) || die "dovecot failed to start 3 times; see $LOG"
		log "dovecot failed to start (attempt $attempt of 3); retrying with new ports"
	done
	if ! wait_for_greeting "$imap_port"; then
		tail -n 20 "$LOG" >&2 || true
		if pid=$(running_pid); then
			kill "$pid" 2>/dev/null || true
		fi
		die "no IMAP greeting on 127.0.0.1:$imap_port within ${START_TIMEOUT}s; log above is from $LOG"
	fi
	echo "$imap_port $imaps_port" >"$PORTS_FILE"
	write_env "$imap_port" "$imaps_port" "$users"
	cat "$ENV_FILE"
}

cmd_stop() {
	set_paths "$1"
	local pid
	if ! pid=$(running_pid); then
		log "no Dovecot running for $DIR"
		return 0
	fi
	# doveadm stop sends SIGTERM to the master. The master takes about 2.5 s
	# to exit (measured with Dovecot 2.3.19 on a 2-core machine).
	doveadm -c "$CONF" stop 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + STOP_TIMEOUT))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			log "Dovecot (pid $pid) did not exit within ${STOP_TIMEOUT}s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.5
			break
		fi
		sleep 0.1
	done
	! kill -0 "$pid" 2>/dev/null || die "Dovecot (pid $pid) is still running"
	rm -f "$ENV_FILE"
}

cmd_env() {
	set_paths "$1"
	[[ -r $ENV_FILE ]] || die "$ENV_FILE not found; start the instance with '$0 start $DIR'"
	cat "$ENV_FILE"
}

# Exercise the running instance over IMAP. Only the administrator's own
# mailbox is written to. The first user's INBOX is only examined, but that
# login creates the user's empty Maildir.
cmd_check() {
	set_paths "$1"
	if [[ ! -r $ENV_FILE ]] || ! running_pid >/dev/null; then
		die "no Dovecot running for $DIR; start it with '$0 start $DIR'"
	fi
	# shellcheck source=/dev/null
	(set -a && . "$ENV_FILE" && python3 -) <<'EOF'
import hashlib
import imaplib
import os
import ssl
import sys

HOST = "127.0.0.1"
port = int(os.environ["IMAP_PORT"])
tls_port = int(os.environ["IMAPS_PORT"])
admin = os.environ["DOVECOT_ADMIN"]
admin_password = os.environ["DOVECOT_ADMIN_PASSWORD"]
user = os.environ["DOVECOT_USERS"].split()[0]
failures = 0
checks = 0


def check(name, function):
    global checks, failures
    checks += 1
    try:
        function()
        print(f"ok    {name}")
    except Exception as error:  # report every failed step, then go on
        failures += 1
        print(f"FAIL  {name}: {error!r}")


def expect_ok(result):
    status, data = result
    if status != "OK":
        raise AssertionError(f"{status} {data}")
    return data


def tls_context():
    return ssl.create_default_context(cafile=os.environ["DOVECOT_CA"])


def admin_login():
    with imaplib.IMAP4(HOST, port) as imap:
        expect_ok(imap.login(admin, admin_password))


def master_login():
    with imaplib.IMAP4(HOST, port) as imap:
        expect_ok(imap.login(f"{user}*{admin}", admin_password))
        expect_ok(imap.select("INBOX", readonly=True))


def unknown_user_rejected():
    with imaplib.IMAP4(HOST, port) as imap:
        try:
            imap.login(f"nosuchuser*{admin}", admin_password)
        except imaplib.IMAP4.error:
            return
        raise AssertionError("login as nosuchuser*admin succeeded")


def admin_mailbox():
    with imaplib.IMAP4(HOST, port) as imap:
        expect_ok(imap.login(admin, admin_password))
        for name in ("A.B", "Entw&APw-rfe"):
            status, data = imap.create(name)
            if status != "OK" and b"ALREADYEXISTS" not in b" ".join(data):
                raise AssertionError(f"CREATE {name}: {status} {data}")
            message = b"Subject: check\r\n\r\nbody\r\n"
            data = expect_ok(imap.append(name, r"(\Seen)", None, message))
            if b"APPENDUID" not in data[0]:
                raise AssertionError(f"APPEND {name}: no APPENDUID in {data}")
        # Each LIST line ends with the name, quoted only when it needs quotes.
        names = {line.rsplit(b" ", 1)[-1].strip(b'"') for line in expect_ok(imap.list())}
        for name in (b"A.B", b"Entw&APw-rfe"):
            if name not in names:
                raise AssertionError(f"LIST has no {name!r}: {sorted(names)}")


def starttls_localhost():
    with imaplib.IMAP4("localhost", port) as imap:
        imap.starttls(ssl_context=tls_context())
        expect_ok(imap.login(admin, admin_password))


def starttls_ip():
    with imaplib.IMAP4(HOST, port) as imap:
        imap.starttls(ssl_context=tls_context())
        expect_ok(imap.login(admin, admin_password))


def imaps():
    with imaplib.IMAP4_SSL(HOST, tls_port, ssl_context=tls_context()) as imap:
        expect_ok(imap.login(f"{user}*{admin}", admin_password))


def untrusted_certificate_rejected():
    imap = imaplib.IMAP4(HOST, port)
    try:
        imap.starttls(ssl_context=ssl.create_default_context())
    except ssl.SSLCertVerificationError:
        return
    finally:
        imap.sock.close()
    raise AssertionError("STARTTLS succeeded without DOVECOT_CA")


def fingerprint():
    with imaplib.IMAP4_SSL(HOST, tls_port, ssl_context=tls_context()) as imap:
        leaf = imap.sock.getpeercert(binary_form=True)
    got = "sha256:" + hashlib.sha256(leaf).hexdigest()
    if got != os.environ["DOVECOT_FINGERPRINT"]:
        raise AssertionError(f"{got} != {os.environ['DOVECOT_FINGERPRINT']}")


check(f"LOGIN {admin}", admin_login)
check(f"LOGIN {user}*{admin} (master user)", master_login)
check(f"LOGIN nosuchuser*{admin} rejected", unknown_user_rejected)
check("CREATE and APPEND A.B and Entw&APw-rfe", admin_mailbox)
check("STARTTLS verified for 127.0.0.1", starttls_ip)
check("STARTTLS verified for localhost", starttls_localhost)
check("IMAPS verified, master user", imaps)
check("STARTTLS without DOVECOT_CA rejected", untrusted_certificate_rejected)
check("certificate matches DOVECOT_FINGERPRINT", fingerprint)
print(f"{checks - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
EOF
}

require_root() {
	[[ $EUID -eq 0 ]] || die "run as root: Dovecot must switch to the mail user $MAIL_USER"
}

main() {
	case ${1:-} in
	-h | --help | help)
		usage
		return
		;;
	esac
	if (($# != 2)); then
		usage >&2
		exit 2
	fi
	local command=$1
	shift
	case $command in
	start)
		require_root
		cmd_start "$@"
		;;
	stop)
		require_root
		cmd_stop "$@"
		;;
	env) cmd_env "$@" ;;
	check) cmd_check "$@" ;;
	*)
		usage >&2
		exit 2
		;;
	esac
}

main "$@"
