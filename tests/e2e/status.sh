#!/bin/bash
# End-to-end tests of "mailrepl status" with real agents: a private
# Dovecot on 127.0.0.1 as the replica's IMAP server, the replica's
# mailrepld on a free loopback port, and the master's mailrepld pushing a
# small generated Maildir tree. Walks the states in order (never
# initialized, initializing, in sync, the replica's side, --peer,
# pending with the replica's IMAP server down, lasting out of sync, agent
# down, standalone) and checks the text, the JSON and the exit code of
# each. Prints "PASS: name" or "FAIL: name: why" for each test.
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
bin=${MAILREPL_BIN:-$top/src/mailrepl}
agent_bin=${MAILREPLD_BIN:-$top/src/mailrepld}
work=$(mktemp -d /tmp/mailrepl-status-XXXXXX)
# Dovecot's mail user must be able to reach the replica's directory.
chmod 755 "$work"
outputs=$work/outputs
mkdir -p "$outputs"
# Seconds; small so that a lasting lag shows within the test. The
# replica's must be longer than the 10 s between the master's STATUS
# reports, because a replica judges by the last report it received.
out_of_sync_after=4
replica_out_of_sync_after=30
# Messages in the generated tree: enough that the initial replication
# runs for a moment, so status can see it running.
messages=${E2E_STATUS_MESSAGES:-3000}
MASTER_PID=
REPLICA_PID=

cleanup() {
	[ -n "$MASTER_PID" ] && kill "$MASTER_PID" 2>/dev/null
	[ -n "$REPLICA_PID" ] && kill "$REPLICA_PID" 2>/dev/null
	[ -n "${ALERT_PID:-}" ] && kill "$ALERT_PID" 2>/dev/null
	wait 2>/dev/null
	bash "$top/scripts/dovecot-test.sh" stop "$work/replica" >/dev/null 2>&1
	[ -n "${E2E_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

pass() { echo "PASS: $1"; }
fail() { echo "FAIL: $1: $2"; }

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Run status and keep its output under a name, so that the password
# check at the end sees every output. Sets CODE; prints nothing.
status() { # $1: output name, $2: config, then status options
	local name=$1 conf=$2
	shift 2
	"$bin" -c "$conf" status "$@" >"$outputs/$name" 2>&1
	CODE=$?
}

# A value of the JSON output $1 (a file under outputs) by a Python
# expression on j; None prints as "None".
jget() {
	python3 -c "import json, sys; j = json.load(open(sys.argv[1])); print($2)" \
		"$outputs/$1" 2>/dev/null
}

make_tree() { # $1: root, $2: messages for alice; bob gets 5
	python3 - "$1" "$2" <<'PY'
import os, sys, time
root, count = sys.argv[1], int(sys.argv[2])
def folder(path):
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
def message(path, i):
    name = "%d.M%dP1.status-e2e:2,S" % (1700000000 + i, i)
    with open(os.path.join(path, "cur", name), "w") as f:
        f.write("From: a@example.org\r\nTo: b@example.org\r\n"
                "Subject: status test %d\r\n\r\nbody %d\r\n" % (i, i))
for user, n in (("alice", count), ("bob", 5)):
    box = os.path.join(root, user, "Maildir")
    folder(box)
    folder(os.path.join(box, ".Archive"))
    for i in range(n):
        message(box, i)
PY
}

write_configs() {
	umask 077
	printf '%s\n' "$DOVECOT_ADMIN_PASSWORD" >"$work/admin.pw"
	cat >"$work/master.conf" <<CONF
[general]
mode = master
state_dir = $work/mstate
log_file = $work/master.log
control_socket = $work/mrun/control.sock
out_of_sync_after = $out_of_sync_after

[maildir]
root = $work/master

[master]
replica_host = 127.0.0.1
imap_port = $IMAP_PORT
imap_tls = starttls
tls_ca_file = $DOVECOT_CA
admin_user = $DOVECOT_ADMIN
admin_password_file = $work/admin.pw
control_port = $CTL_PORT

[alert]
url = http://127.0.0.1:$ALERT_PORT/hook
after = 1
CONF
	# The metrics file is set in [general], which comes first.
	sed -i "s|^out_of_sync_after = $out_of_sync_after\$|&\nmetrics_file = $work/metrics.prom|" \
		"$work/master.conf"
	cat >"$work/replica.conf" <<CONF
[general]
mode = replica
state_dir = $work/rstate
log_file = $work/replica.log
control_socket = $work/rrun/control.sock
out_of_sync_after = $replica_out_of_sync_after

[maildir]
root = $DOVECOT_MAIL

[replica]
listen = 127.0.0.1:$CTL_PORT
trusted_networks = 127.0.0.0/8
admin_user = $DOVECOT_ADMIN
imap_host = 127.0.0.1
imap_port = $IMAP_PORT
CONF
	cat >"$work/standalone.conf" <<CONF
[general]
mode = standalone
state_dir = $work/sstate
log_file = $work/standalone.log
control_socket = $work/srun/control.sock
CONF
}

# A webhook receiver on 127.0.0.1 that stores each POST body as
# $work/alerts/N.json.
start_alert_listener() {
	mkdir -p "$work/alerts"
	python3 - "$ALERT_PORT" "$work/alerts" >"$work/alerts.log" 2>&1 <<'PY' &
import http.server, os, sys
port, folder = int(sys.argv[1]), sys.argv[2]
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        n = len(os.listdir(folder))
        with open(os.path.join(folder, "%03d.json" % n), "wb") as f:
            f.write(body)
        self.send_response(204)
        self.end_headers()
http.server.HTTPServer(("127.0.0.1", port), Hook).serve_forever()
PY
	ALERT_PID=$!
}

# The names of the alerts received so far, in order.
alerts_received() {
	local f
	for f in "$work"/alerts/*.json; do
		[ -e "$f" ] || continue
		python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["event"])' "$f"
	done | tr '\n' ' '
}

setup() {
	eval "$(bash "$top/scripts/dovecot-test.sh" start "$work/replica")"
	[ -n "${IMAP_PORT:-}" ] || return 1
	CTL_PORT=$(free_port)
	ALERT_PORT=$(free_port)
	start_alert_listener
	make_tree "$work/master" "$messages"
	write_configs
	"$agent_bin" -f -c "$work/replica.conf" >"$work/replica.out" 2>&1 &
	REPLICA_PID=$!
	for _ in $(seq 50); do
		[ -S "$work/rrun/control.sock" ] && return 0
		sleep 0.1
	done
	return 1
}

test_never_initialized() {
	status never.txt "$work/master.conf"
	local text_code=$CODE
	status never.json "$work/master.conf" --json
	if [ "$text_code" -ne 2 ] || [ "$CODE" -ne 2 ]; then
		fail never_initialized "exit $text_code/$CODE, expected 2: $(cat "$outputs/never.txt")"
	elif ! head -1 "$outputs/never.txt" | grep -q '^MAILREPL CRITICAL - not initialized'; then
		fail never_initialized "first line: $(head -1 "$outputs/never.txt")"
	elif [ "$(jget never.json 'j["initial"]')" != None ] ||
		[ "$(jget never.json 'j["sync"]["state"]')" != not_initialized ] ||
		[ "$(jget never.json 'j["agent"]["running"]')" != False ]; then
		fail never_initialized "JSON: $(cat "$outputs/never.json")"
	else
		pass never_initialized
	fi
}

# Start the master's agent, which runs the initial replication by
# itself, and watch status until it is in sync.
test_initializing_then_in_sync() {
	local seen_running=no state i
	"$agent_bin" -f -c "$work/master.conf" >"$work/master.out" 2>&1 &
	MASTER_PID=$!
	for i in $(seq 1200); do
		status poll.json "$work/master.conf" --json
		state=$(jget poll.json 'j["sync"]["state"]')
		if [ "$state" = initializing ] && [ "$seen_running" = no ]; then
			seen_running=yes
			cp "$outputs/poll.json" "$outputs/initializing.json"
			status initializing.txt "$work/master.conf"
			INIT_CODE=$CODE
		fi
		[ "$state" = in_sync ] && break
		sleep 0.1
	done
	if [ "$seen_running" = no ]; then
		fail initializing "never saw the initial replication running; last: $state"
	elif [ "$INIT_CODE" -ne 1 ] ||
		[ "$(jget initializing.json 'j["initial"]["result"]')" != running ] ||
		[ "$(jget initializing.json 'j["exit_code"]')" != 1 ]; then
		fail initializing "exit $INIT_CODE: $(cat "$outputs/initializing.json")"
	elif ! grep -q '^initial replication: running' "$outputs/initializing.txt"; then
		fail initializing "$(cat "$outputs/initializing.txt")"
	else
		pass initializing
	fi

	status insync.txt "$work/master.conf"
	local text_code=$CODE
	status insync.json "$work/master.conf" --json
	if [ "$text_code" -ne 0 ] || [ "$CODE" -ne 0 ]; then
		fail in_sync "exit $text_code/$CODE: $(cat "$outputs/insync.txt") $(tail -3 "$work/master.log")"
	elif ! head -1 "$outputs/insync.txt" | grep -q '^MAILREPL OK - in sync, 0 pending'; then
		fail in_sync "first line: $(head -1 "$outputs/insync.txt")"
	elif [ "$(jget insync.json 'j["in_sync"]')" != True ] ||
		[ "$(jget insync.json 'j["agent"]["pid"]')" != "$MASTER_PID" ] ||
		[ "$(jget insync.json 'j["initial"]["result"]')" != ok ] ||
		[ "$(jget insync.json 'j["initial"]["messages"]')" != $((messages + 5)) ]; then
		fail in_sync "JSON: $(cat "$outputs/insync.json")"
	else
		pass in_sync
	fi
	# The agent records the connection to the replica's agent.
	for i in $(seq 50); do
		status peerstate.json "$work/master.conf" --json
		[ "$(jget peerstate.json 'j["peer"]["state"]')" = connected ] && break
		sleep 0.2
	done
	if [ "$(jget peerstate.json 'j["peer"]["state"]')" = connected ]; then
		pass peer_connected
	else
		fail peer_connected "$(jget peerstate.json 'j["peer"]')"
	fi
}

test_replica_side() {
	local i
	# The master sends its figures right after the initial replication.
	for i in $(seq 100); do
		status replica.json "$work/replica.conf" --json
		[ "$(jget replica.json 'j["peer"]["figures"] is not None')" = True ] && break
		sleep 0.2
	done
	status replica.txt "$work/replica.conf" --peer
	local text_code=$CODE
	status replica.json "$work/replica.conf" --json
	if [ "$text_code" -ne 0 ] || [ "$CODE" -ne 0 ]; then
		fail replica_side "exit $text_code/$CODE: $(cat "$outputs/replica.txt")"
	elif [ "$(jget replica.json 'j["peer"]["id"]')" != "$(hostname)" ] ||
		[ "$(jget replica.json 'j["initial"]["result"]')" != ok ] ||
		[ "$(jget replica.json 'j["agent"]["running"]')" != True ] ||
		[ "$(jget replica.json 'j["mode"]')" != replica ]; then
		fail replica_side "JSON: $(cat "$outputs/replica.json")"
	elif ! grep -q "^master: *$(hostname) (bound since" "$outputs/replica.txt" ||
		! grep -q "^master's last STATUS:" "$outputs/replica.txt"; then
		fail replica_side "text: $(cat "$outputs/replica.txt")"
	else
		pass replica_side
	fi
}

test_master_peer() {
	status peer.txt "$work/master.conf" --peer
	local text_code=$CODE
	status peer.json "$work/master.conf" --peer --json
	if [ "$text_code" -ne 0 ] || [ "$CODE" -ne 0 ]; then
		fail master_peer "exit $text_code/$CODE: $(cat "$outputs/peer.txt")"
	elif [ "$(jget peer.json 'j["peer"]["view"]["bound"]')" != "$(hostname)" ] ||
		[ "$(jget peer.json 'j["peer"]["view"]["init_result"]')" != ok ] ||
		[ "$(jget peer.json 'j["peer"]["view"]["master_figures"] is not None')" != True ] ||
		[ "$(jget peer.json 'j["peer"]["view_error"]')" != None ]; then
		fail master_peer "JSON: $(cat "$outputs/peer.json")"
	elif ! grep -q "^  bound to: *$(hostname)" "$outputs/peer.txt"; then
		fail master_peer "text: $(cat "$outputs/peer.txt")"
	else
		pass master_peer
	fi
}

# The replica's IMAP server stops: a new change stays queued, which is
# the normal lag at first and out of sync after out_of_sync_after.
test_pending_then_out_of_sync() {
	local box=$work/master/alice/Maildir i
	bash "$top/scripts/dovecot-test.sh" stop "$work/replica" >/dev/null 2>&1
	# Dovecot's imap processes keep the agent's open connections for a
	# few seconds after the master process is gone.
	for i in $(seq 100); do
		[ -z "$(ss -Htn state established "( sport = :$IMAP_PORT )")" ] && break
		sleep 0.2
	done
	printf 'Subject: late\r\n\r\nlate\r\n' >"$box/tmp/late.1"
	mv "$box/tmp/late.1" "$box/new/1800000000.late.status-e2e"
	for i in $(seq 20); do
		status pending.json "$work/master.conf" --json
		[ "$(jget pending.json 'j["pending"]["count"]')" != 0 ] && break
		sleep 0.1
	done
	status pending.txt "$work/master.conf"
	local text_code=$CODE
	if [ "$text_code" -ne 0 ] ||
		[ "$(jget pending.json 'j["in_sync"]')" != True ] ||
		[ "$(jget pending.json 'j["pending"]["count"]')" -lt 1 ]; then
		fail pending_replica_down "exit $text_code: $(cat "$outputs/pending.txt")"
	else
		pass pending_replica_down
	fi

	sleep $((out_of_sync_after + 2))
	status lasting.txt "$work/master.conf"
	local lasting_code=$CODE
	status lasting.json "$work/master.conf" --json
	if [ "$lasting_code" -ne 2 ] || [ "$CODE" -ne 2 ]; then
		fail lasting_out_of_sync "exit $lasting_code/$CODE: $(cat "$outputs/lasting.txt")"
	elif ! head -1 "$outputs/lasting.txt" | grep -q '^MAILREPL CRITICAL - out of sync'; then
		fail lasting_out_of_sync "first line: $(head -1 "$outputs/lasting.txt")"
	elif [ "$(jget lasting.json 'j["sync"]["state"]')" != out_of_sync ] ||
		[ "$(jget lasting.json 'j["sync"]["since"] is not None')" != True ] ||
		[ "$(jget lasting.json 'j["pending"]["oldest_age_s"] >= '$out_of_sync_after)" != True ]; then
		fail lasting_out_of_sync "JSON: $(cat "$outputs/lasting.json")"
	else
		pass lasting_out_of_sync
	fi

	# The replica's agent checks AUTH against its stopped IMAP server, so
	# --peer cannot get the replica's view now; that is shown, not fatal.
	status peerdown.txt "$work/master.conf" --peer
	status peerdown.json "$work/master.conf" --peer --json
	if [ "$CODE" -lt 1 ] || [ "$CODE" -gt 2 ] ||
		[ "$(jget peerdown.json 'j["peer"]["view_error"] is not None')" != True ] ||
		! grep -q "^replica's view: not available" "$outputs/peerdown.txt"; then
		fail peer_unreachable "exit $CODE: $(cat "$outputs/peerdown.txt")"
	else
		pass peer_unreachable
	fi
}

# The replica stays out of sync for longer than [alert] after: the agent
# posts an out_of_sync alert and its metrics say so; after the replica's
# IMAP server returns, an in_sync alert follows. The server then stops
# again, with a change pending, for the next test.
test_alert_and_metrics() {
	local box=$work/master/alice/Maildir got=""
	for _ in $(seq 100); do
		got=$(alerts_received)
		[[ $got == *out_of_sync* ]] && break
		sleep 0.2
	done
	if [[ $got != *out_of_sync* ]]; then
		fail alert_out_of_sync "alerts: '$got'; $(grep -E 'event=alert' "$work/master.log" | tail -2)"
	elif ! grep -q '^mailrepl_in_sync 0$' "$work/metrics.prom" ||
		! grep -q '^mailrepl_pending_changes [1-9]' "$work/metrics.prom"; then
		fail alert_out_of_sync "metrics: $(grep -E '^mailrepl_(in_sync|pending_changes) ' "$work/metrics.prom" | tr '\n' ' ')"
	else
		pass alert_out_of_sync
	fi

	eval "$(bash "$top/scripts/dovecot-test.sh" start "$work/replica")"
	for _ in $(seq 300); do
		got=$(alerts_received)
		[[ $got == *in_sync* ]] && break
		sleep 0.2
	done
	if [[ $got != *"out_of_sync in_sync"* ]]; then
		fail alert_recovered "alerts: '$got'"
	elif ! grep -q '^mailrepl_in_sync 1$' "$work/metrics.prom"; then
		fail alert_recovered "metrics: $(grep '^mailrepl_in_sync ' "$work/metrics.prom")"
	elif grep -qF -- "$DOVECOT_ADMIN_PASSWORD" "$work"/alerts/*.json "$work/metrics.prom"; then
		fail alert_recovered "the administrator's password is in an alert or the metrics"
	else
		pass alert_recovered
	fi

	bash "$top/scripts/dovecot-test.sh" stop "$work/replica" >/dev/null 2>&1
	for _ in $(seq 100); do
		[ -z "$(ss -Htn state established "( sport = :$IMAP_PORT )")" ] && break
		sleep 0.2
	done
	printf 'Subject: later\r\n\r\nlater\r\n' >"$box/tmp/later.1"
	mv "$box/tmp/later.1" "$box/new/1800000001.later.status-e2e"
	for _ in $(seq 50); do
		status repending.json "$work/master.conf" --json
		[ "$(jget repending.json 'j["pending"]["count"]')" != 0 ] && break
		sleep 0.2
	done
}

test_agent_down() {
	kill "$MASTER_PID"
	wait "$MASTER_PID" 2>/dev/null
	MASTER_PID=
	status down.txt "$work/master.conf"
	local text_code=$CODE
	status down.json "$work/master.conf" --json
	if [ "$text_code" -ne 2 ] || [ "$CODE" -ne 2 ]; then
		fail agent_down "exit $text_code/$CODE: $(cat "$outputs/down.txt")"
	elif ! grep -q '^agent: *not running; figures as of' "$outputs/down.txt"; then
		fail agent_down "text: $(cat "$outputs/down.txt")"
	elif [ "$(jget down.json 'j["agent"]["running"]')" != False ] ||
		[ "$(jget down.json 'j["agent"]["record_updated"] is not None')" != True ] ||
		[ "$(jget down.json 'j["running"]["waiting_for"]')" != "mailrepld is not running" ] ||
		[ "$(jget down.json 'j["pending"]["count"] >= 1')" != True ]; then
		fail agent_down "JSON: $(cat "$outputs/down.json")"
	else
		pass agent_down
	fi
}

test_standalone() {
	status standalone.txt "$work/standalone.conf"
	local text_code=$CODE
	status standalone.json "$work/standalone.conf" --json
	if [ "$text_code" -ne 0 ] || [ "$CODE" -ne 0 ] ||
		! head -1 "$outputs/standalone.txt" | grep -q '^MAILREPL OK - standalone' ||
		[ "$(jget standalone.json 'j["mode"]')" != standalone ]; then
		fail standalone "exit $text_code/$CODE: $(cat "$outputs/standalone.txt")"
	else
		pass standalone
	fi
}

test_unreadable_config() {
	status noconf.txt "$work/missing.conf"
	local text_code=$CODE
	status noconf.json "$work/missing.conf" --json
	if [ "$text_code" -ne 3 ] || [ "$CODE" -ne 3 ] ||
		[ "$(jget noconf.json 'j["error"] is not None')" != True ]; then
		fail unreadable_config "exit $text_code/$CODE: $(cat "$outputs/noconf.txt")"
	else
		pass unreadable_config
	fi
}

test_no_password() {
	local n
	n=$(ls "$outputs" | wc -l)
	if grep -rlF -- "$DOVECOT_ADMIN_PASSWORD" "$outputs"; then
		fail no_password_in_status "the administrator's password is in the files above"
	elif [ "$n" -lt 20 ]; then
		fail no_password_in_status "only $n outputs were kept"
	else
		echo "no_password_in_status: $n outputs checked"
		pass no_password_in_status
	fi
}

if ! setup >"$work/setup.log" 2>&1; then
	fail setup "$(tail -5 "$work/setup.log")"
	exit 1
fi
test_never_initialized
test_initializing_then_in_sync
test_replica_side
test_master_peer
test_pending_then_out_of_sync
test_alert_and_metrics
test_agent_down
test_standalone
test_unreadable_config
test_no_password
