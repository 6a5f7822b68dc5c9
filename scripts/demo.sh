#!/bin/bash
# Demo on real mail: lay out the SpamAssassin corpus as a master's
# Maildir++ tree, start a replica Dovecot on 127.0.0.1, replicate with
# "mailrepl init", then check the result with "mailrepl verify" and show
# "mailrepl status". Everything lives under ./work/demo; the replica keeps
# running afterwards so that you can look at it with an IMAP client.
#
#   scripts/demo.sh          set up (installs packages, builds) and run
#   scripts/demo.sh stop     stop the demo's Dovecot
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
demo=$top/work/demo
cd "$top"

if [ "${1:-}" = stop ]; then
	bash scripts/dovecot-test.sh stop "$demo/replica"
	exit 0
fi

bash scripts/install-deps.sh
if [ ! -x src/mailrepl ]; then
	echo "demo: building mailrepl" >&2
	{ [ -f Makefile ] || { autoreconf -fi && ./configure -q; }; } >/dev/null
	make -j2 >/dev/null
fi

bash scripts/dovecot-test.sh stop "$demo/replica" >/dev/null 2>&1 || true
rm -rf "$demo"
mkdir -p "$demo"
bash scripts/corpus.sh fetch "$top/work/corpus"
bash scripts/corpus.sh layout "$top/work/corpus" "$demo/master"
eval "$(bash scripts/dovecot-test.sh start "$demo/replica")"

umask 077
printf '%s\n' "$DOVECOT_ADMIN_PASSWORD" >"$demo/admin.pw"
cat >"$demo/mailrepl.conf" <<CONF
# The demo's master: the corpus tree, replicated to the local Dovecot.
[general]
mode = master
state_dir = $demo/state
log_file = $demo/mailrepl.log

[maildir]
root = $demo/master
user_path = %u/Maildir

[master]
replica_host = 127.0.0.1
imap_port = $IMAP_PORT
imap_tls = starttls
tls_ca_file = $DOVECOT_CA
admin_user = $DOVECOT_ADMIN
admin_password_file = $demo/admin.pw
workers = 4
# The demo's replica is a plain Dovecot without a mailrepl agent, so
# there is no control channel to negotiate over.
control_port = 0
CONF

run() {
	echo
	echo "\$ mailrepl -c $demo/mailrepl.conf $*"
	src/mailrepl -c "$demo/mailrepl.conf" "$@"
}

run init
echo "(init prints nothing on success without a terminal; its summary from the log:)"
grep 'event=run_end' "$demo/mailrepl.log" | tail -1
run verify | tail -3
run status || true
cat <<TEXT

The replica keeps running on 127.0.0.1:$IMAP_PORT (STARTTLS, CA
$DOVECOT_CA). Log in as alice*$DOVECOT_ADMIN with password
$DOVECOT_ADMIN_PASSWORD to browse alice's copy. The replication log is
$demo/mailrepl.log. Stop the replica with: scripts/demo.sh stop
TEXT
