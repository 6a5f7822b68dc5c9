#!/bin/bash
# Demo on real mail: lay out the SpamAssassin corpus as a master's
# Maildir++ tree, start a replica Dovecot on 127.0.0.1, replicate with
# "mailrepl init" and check the result with "mailrepl verify". Then start
# the agent, which keeps the replica current: deliver mail, set a flag
# and move a message on the master, and check the replica again.
# Everything lives under ./work/demo; the replica and the agent keep
# running afterwards so that you can look at them.
#
#   scripts/demo.sh          set up (installs packages, builds) and run
#   scripts/demo.sh stop     stop the demo's agent and Dovecot
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
demo=$top/work/demo
cd "$top"

stop_agent() {
	if [ -f "$demo/run/mailrepld.pid" ]; then
		kill "$(cat "$demo/run/mailrepld.pid")" 2>/dev/null || true
		sleep 1
	fi
}

if [ "${1:-}" = stop ]; then
	stop_agent
	bash scripts/dovecot-test.sh stop "$demo/replica"
	exit 0
fi

bash scripts/install-deps.sh
if [ ! -x src/mailrepl ]; then
	echo "demo: building mailrepl" >&2
	mkdir -p work
	# The build's warnings go to a log, shown only when it fails.
	if ! { { [ -f Makefile ] || { autoreconf -fi && ./configure -q; }; } &&
		make -j2; } >work/build.log 2>&1; then
		tail -30 work/build.log >&2
		echo "demo: the build failed; the whole output is in work/build.log" >&2
		exit 1
	fi
fi

stop_agent
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
control_socket = $demo/run/control.sock

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
	echo "\$ src/mailrepl -c $demo/mailrepl.conf $*"
	src/mailrepl -c "$demo/mailrepl.conf" "$@"
}

run init
echo "(init prints nothing on success without a terminal; its summary from the log:)"
grep 'event=run_end' "$demo/mailrepl.log" | tail -1
run verify | tail -3

echo
echo "\$ src/mailrepld -c $demo/mailrepl.conf    # the agent keeps the replica current"
src/mailrepld -c "$demo/mailrepl.conf"
sleep 2

# Changes as a delivery agent and an IMAP server make them on the master.
inbox=$demo/master/alice/Maildir
deliver() { # $1: unique name, $2: subject
	printf 'From: demo@example.org\nTo: alice@example.org\nSubject: %s\nMessage-ID: <%s@demo.example.org>\n\nSent while the agent runs.\n' \
		"$2" "$1" >"$inbox/tmp/$1"
	mv "$inbox/tmp/$1" "$inbox/new/$1"
}
echo
# Only the log lines of the changes below are shown, not those of the
# agent's start, which compares every folder once.
sleep 1
lines_before=$(wc -l <"$demo/mailrepl.log")
echo "Delivering 3 messages to alice, then flagging one and moving one:"
stamp=$(date +%s)
for number in 1 2 3; do
	deliver "$stamp.M${number}P$$.demo" "live delivery $number"
done
sleep 1
# A client reads message 1 and flags it; message 2 goes to Archive.
mv "$inbox/new/$stamp.M1P$$.demo" "$inbox/cur/$stamp.M1P$$.demo:2,FS"
mv "$inbox/new/$stamp.M2P$$.demo" \
	"$inbox/.Archive/cur/$stamp.M2P$$.demo:2,S"
sleep 2
tail -n +"$((lines_before + 1))" "$demo/mailrepl.log" |
	grep -E 'event=(apply|upload|move|flags)' | cut -c1-160
run verify | tail -3
run status || true
cat <<TEXT

The replica keeps running on 127.0.0.1:$IMAP_PORT (STARTTLS, CA
$DOVECOT_CA), and the agent keeps it current: change anything under
$demo/master and watch $demo/mailrepl.log
(or: src/mailrepl -c $demo/mailrepl.conf log -f). Log in as
alice*$DOVECOT_ADMIN with password $DOVECOT_ADMIN_PASSWORD to browse
alice's copy. Stop both with: scripts/demo.sh stop
TEXT
