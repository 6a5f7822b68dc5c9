#!/bin/bash
# End-to-end tests of "mailrepl init" and "mailrepl verify" on the
# SpamAssassin corpus, laid out as a multi-user Maildir++ tree and pushed
# to a private Dovecot on 127.0.0.1. Prints "PASS: name" or "FAIL: name:
# why" for each test.
#
# Environment:
#   MAILREPL_CORPUS_CACHE  where the corpus package is kept between runs
#                          (default: <source>/work/corpus)
#   E2E_KILLS              kill -9 rounds in the resume test (default 20)
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
bin=${MAILREPL_BIN:-$top/src/mailrepl}
cache=${MAILREPL_CORPUS_CACHE:-$top/work/corpus}
kills=${E2E_KILLS:-20}
work=$(mktemp -d /tmp/mailrepl-e2e-XXXXXX)
# Dovecot's mail user must be able to reach the replica's directory.
chmod 755 "$work"
conf=$work/mailrepl.conf
log=$work/mailrepl.log

cleanup() {
	bash "$top/scripts/dovecot-test.sh" stop "$work/replica" >/dev/null 2>&1
	[ -n "${E2E_KEEP:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

pass() { echo "PASS: $1"; }
fail() { echo "FAIL: $1: $2"; }

# The last run_end line of the log, as "key=value" words.
last_run() { grep 'event=run_end' "$log" | tail -1; }
field() { last_run | grep -o " $1=[^ ]*" | cut -d= -f2; }

write_config() { # $1: extra [master] lines
	umask 077
	printf '%s\n' "$DOVECOT_ADMIN_PASSWORD" >"$work/admin.pw"
	cat >"$conf" <<CONF
[general]
mode = master
state_dir = $work/state
log_file = $log

[maildir]
root = $work/master

[master]
replica_host = 127.0.0.1
imap_port = $IMAP_PORT
imap_tls = starttls
tls_ca_file = $DOVECOT_CA
admin_user = $DOVECOT_ADMIN
admin_password_file = $work/admin.pw
workers = 4
control_port = ${E2E_CONTROL_PORT:-0}
$1
CONF
}

compare() { # extra users as arguments
	python3 "$top/tests/e2e/imapcompare.py" "$work/master" 127.0.0.1 \
		"$IMAP_PORT" "$DOVECOT_CA" "$DOVECOT_ADMIN" \
		"$DOVECOT_ADMIN_PASSWORD" "$@"
}

setup() {
	bash "$top/scripts/corpus.sh" fetch "$cache" >/dev/null || return 1
	bash "$top/scripts/corpus.sh" layout "$cache" "$work/master" ||
		return 1
	eval "$(bash "$top/scripts/dovecot-test.sh" start "$work/replica")"
	[ -n "${IMAP_PORT:-}" ] || return 1
	write_config ""
}

test_full_run() {
	local start end code msgs
	start=$(date +%s.%N)
	"$bin" -c "$conf" init >"$work/out" 2>&1
	code=$?
	end=$(date +%s.%N)
	msgs=$(field messages)
	if [ "$code" -ne 0 ]; then
		fail full_run "init exited $code: $(tail -3 "$work/out")"
		return
	fi
	awk -v m="$msgs" -v s="$start" -v e="$end" 'BEGIN {
		printf "full_run: %d messages in %.2f s, %.0f msgs/s\n",
			m, e - s, m / (e - s) }'
	if ! "$bin" -c "$conf" verify >"$work/verify" 2>&1; then
		fail full_run "verify found differences: $(head -5 "$work/verify")"
		return
	fi
	if ! compare >"$work/compare" 2>&1; then
		fail full_run "imapcompare: $(tail -3 "$work/compare")"
		return
	fi
	tail -1 "$work/verify"
	tail -1 "$work/compare"
	pass full_run
}

# After test_full_run: one upload line per message uploaded, batch lines
# with their timings, IMAP sessions, and no password anywhere.
test_log_events() {
	local uploaded uploads batches bytes
	uploaded=$(field uploaded)
	uploads=$(grep -c 'level=info event=upload user=.* uid=[0-9]* size=[0-9]*$' "$log")
	batches=$(grep -c 'level=info event=batch user=.* count=[0-9]* rejected=[0-9]* bytes=[0-9]* ms=[0-9]*$' "$log")
	bytes=$(grep 'event=batch ' "$log" | grep -o ' bytes=[0-9]*' |
		cut -d= -f2 | awk '{ s += $1 } END { print s + 0 }')
	if [ -z "$uploaded" ] || [ "$uploads" -ne "$uploaded" ]; then
		fail log_events "$uploads upload lines for $uploaded messages uploaded"
	elif [ "$batches" -eq 0 ] || [ "$bytes" -eq 0 ]; then
		fail log_events "$batches batch lines with $bytes bytes"
	elif ! grep -q 'level=info event=imap_connected user=.* ms=' "$log" ||
		! grep -q 'level=info event=imap_close ' "$log"; then
		fail log_events "no imap_connected or imap_close line"
	elif grep -qF "$DOVECOT_ADMIN_PASSWORD" "$log" "$work/out"; then
		fail log_events "the administrator's password is in the log or output"
	elif [ "$("$bin" -c "$conf" log -n 3 --level info --user "$(grep -m1 -o 'event=upload user=[^ ]*' "$log" | cut -d= -f3)" | grep -c 'event=')" -ne 3 ]; then
		fail log_events "mailrepl log --user does not print 3 lines"
	else
		pass log_events
	fi
}

test_rerun_uploads_nothing() {
	local out
	out=$("$bin" -c "$conf" init 2>&1)
	if [ $? -ne 0 ]; then
		fail rerun "init exited non-zero: $out"
	elif [ -n "$out" ]; then
		fail rerun "not silent without a terminal: $out"
	elif [ "$(field uploaded)" != 0 ] || [ "$(field adopted)" != 0 ] ||
		[ "$(field expunged)" != 0 ] || [ "$(field flag_updates)" != 0 ]; then
		fail rerun "second run changed something: $(last_run)"
	else
		pass rerun_uploads_nothing
	fi
}

# Kill -9 at random points of a run that starts from an emptied replica,
# resume, and check after every round that nothing is missing or twice.
test_kill_resume() {
	local i code pid delay killed=0 users=(--user alice --user bob)
	for ((i = 1; i <= kills; i++)); do
		"$bin" -c "$conf" init --reset-replica --yes "${users[@]}" \
			>/dev/null 2>&1 &
		pid=$!
		delay=$(awk -v r="$RANDOM" 'BEGIN { printf "%.2f", 0.05 + r % 200 / 100 }')
		sleep "$delay"
		if kill -9 "$pid" 2>/dev/null; then
			killed=$((killed + 1))
		fi
		wait "$pid" 2>/dev/null
		"$bin" -c "$conf" init "${users[@]}" >"$work/out" 2>&1
		code=$?
		if [ "$code" -ne 0 ]; then
			fail kill_resume "round $i (kill after ${delay}s): resumed init exited $code: $(tail -2 "$work/out")"
			return
		fi
		if ! compare alice bob >"$work/compare" 2>&1; then
			fail kill_resume "round $i (kill after ${delay}s): $(tail -3 "$work/compare")"
			return
		fi
	done
	echo "kill_resume: $killed of $kills rounds killed mid-run; $(tail -1 "$work/compare")"
	if [ "$killed" -lt $((kills / 2)) ]; then
		fail kill_resume "only $killed rounds were killed before they ended"
		return
	fi
	pass kill_resume
}

test_uidvalidity_change() {
	doveadm -c "$DOVECOT_CONF" mailbox update -u carol --uid-validity 4242 \
		INBOX || { fail uidvalidity "doveadm mailbox update failed"; return; }
	if ! "$bin" -c "$conf" init --user carol >"$work/out" 2>&1; then
		fail uidvalidity "init failed: $(tail -2 "$work/out")"
	elif [ "$(field uploaded)" != 0 ] || [ "$(field adopted)" -eq 0 ]; then
		fail uidvalidity "expected re-match without upload: $(last_run)"
	elif ! "$bin" -c "$conf" verify --user carol >"$work/verify" 2>&1; then
		fail uidvalidity "verify: $(head -3 "$work/verify")"
	else
		echo "uidvalidity: adopted $(field adopted), uploaded 0"
		pass uidvalidity_change
	fi
}

test_reset_replica() {
	if ! "$bin" -c "$conf" init --user dave --reset-replica --yes \
		>"$work/out" 2>&1; then
		fail reset_replica "init failed: $(tail -2 "$work/out")"
	elif [ "$(field uploaded)" -eq 0 ]; then
		fail reset_replica "nothing re-uploaded after the reset: $(last_run)"
	elif ! compare dave >"$work/compare" 2>&1; then
		fail reset_replica "$(tail -3 "$work/compare")"
	else
		pass reset_replica
	fi
	# Without a terminal the reset needs --yes.
	if "$bin" -c "$conf" init --user dave --reset-replica </dev/null \
		>"$work/out" 2>&1 || ! grep -q -- '--yes' "$work/out"; then
		fail reset_needs_yes "expected a refusal naming --yes: $(cat "$work/out")"
	else
		pass reset_needs_yes
	fi
}

test_wrong_password() {
	local code
	write_config ""
	printf 'not-the-password\n' >"$work/admin.pw"
	"$bin" -c "$conf" init --user erin >"$work/out" 2>&1
	code=$?
	if [ "$code" -ne 1 ]; then
		fail wrong_password "exit $code, expected 1"
	elif ! grep -q 'admin_user' "$work/out"; then
		fail wrong_password "error does not say what to check: $(cat "$work/out")"
	elif grep -q 'not-the-password' "$work/out" "$log"; then
		fail wrong_password "the password appears in the output or log"
	else
		pass wrong_password
	fi
	write_config ""
}

test_certificate_rejected() {
	local code
	write_config "tls_fingerprint = sha256:$(printf '%064d' 0)"
	"$bin" -c "$conf" init --user erin >"$work/out" 2>&1
	code=$?
	if [ "$code" -ne 1 ] || ! grep -q 'fingerprint' "$work/out"; then
		fail pin_mismatch "exit $code: $(cat "$work/out")"
	else
		pass pin_mismatch
	fi
	write_config ""
	sed -i "s|^tls_ca_file = .*|tls_ca_file = /etc/ssl/certs/ca-certificates.crt|" "$conf"
	"$bin" -c "$conf" init --user erin >"$work/out" 2>&1
	code=$?
	if [ "$code" -ne 1 ] || ! grep -qi 'certificate' "$work/out"; then
		fail unknown_ca "exit $code: $(cat "$work/out")"
	else
		pass unknown_ca
	fi
	write_config ""
}

test_lock() {
	local code
	mkdir -p "$work/state"
	exec 9>"$work/state/lock"
	flock -n 9
	"$bin" -c "$conf" init >"$work/out" 2>&1
	code=$?
	exec 9>&-
	if [ "$code" -ne 75 ]; then
		fail lock "exit $code, expected 75: $(cat "$work/out")"
	else
		pass lock_exit_75
	fi
}

# --- Two agents: the master negotiates with the replica's mailrepld ---

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# A raw control-channel client: sends the lines given as arguments after
# the greeting and an AUTH as the administrator, prints every answer.
ctl_say() {
	python3 - "$CTL_PORT" "$DOVECOT_ADMIN" "$DOVECOT_ADMIN_PASSWORD" "$@" <<'PY'
import base64, socket, sys
port, user, password, lines = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
f = s.makefile("rwb")
def answer():
    out = []
    while True:
        line = f.readline().decode().rstrip("\r\n")
        out.append(line)
        if not line.startswith("* "):
            return out
print(f.readline().decode().rstrip())
auth = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
for line in ["AUTH PLAIN " + auth] + lines + ["QUIT"]:
    f.write((line + "\r\n").encode()); f.flush()
    print("\n".join(answer()))
PY
}

peer_field() { # $1: python expression on the parsed peer.json as p
	python3 -c "import json,sys; p = json.load(open(sys.argv[1])); print($1)" \
		"$work/rstate/peer.json" 2>/dev/null
}

start_replica_agent() {
	CTL_PORT=$(free_port)
	umask 077
	cat >"$work/replica.conf" <<CONF
[general]
mode = replica
state_dir = $work/rstate
log_file = $work/replica.log
control_socket = $work/rrun/control.sock

[maildir]
root = $DOVECOT_MAIL

[replica]
listen = 127.0.0.1:$CTL_PORT
trusted_networks = 127.0.0.0/8
admin_user = $DOVECOT_ADMIN
imap_host = 127.0.0.1
imap_port = $IMAP_PORT
CONF
	"$top/src/mailrepld" -f -c "$work/replica.conf" >"$work/agent.out" 2>&1 &
	AGENT_PID=$!
	for _ in $(seq 50); do
		ctl_say >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	return 1
}

test_agents() {
	local code
	if ! start_replica_agent; then
		fail agents "the replica agent did not start: $(tail -3 "$work/agent.out")"
		return
	fi
	E2E_CONTROL_PORT=$CTL_PORT write_config ""

	"$bin" -c "$conf" init --user erin >"$work/out" 2>&1
	code=$?
	if [ "$code" -ne 0 ]; then
		fail negotiate_and_bind "init exited $code: $(tail -2 "$work/out")"
	elif [ "$(peer_field 'p["bound_master"]')" != "$(hostname)" ] ||
		[ "$(peer_field 'p["init_end"]["result"]')" != ok ]; then
		fail negotiate_and_bind "peer.json: $(cat "$work/rstate/peer.json")"
	else
		pass negotiate_and_bind
	fi

	# Another master takes the replica over; this one must stop.
	ctl_say "BIND other-master TAKEOVER" >"$work/ctl" 2>&1
	"$bin" -c "$conf" init --user erin >"$work/out" 2>&1
	code=$?
	if [ "$code" -ne 1 ] || ! grep -q -- '--takeover' "$work/out"; then
		fail bound_elsewhere_refused "exit $code: $(cat "$work/out")"
	else
		pass bound_elsewhere_refused
	fi
	"$bin" -c "$conf" init --user erin --takeover </dev/null >"$work/out" 2>&1
	code=$?
	if [ "$code" -ne 1 ] || ! grep -q -- '--yes' "$work/out"; then
		fail takeover_needs_yes "exit $code: $(cat "$work/out")"
	else
		pass takeover_needs_yes
	fi
	"$bin" -c "$conf" init --user erin --takeover --yes >"$work/out" 2>&1
	code=$?
	if [ "$code" -ne 0 ] || [ "$(peer_field 'p["bound_master"]')" != "$(hostname)" ]; then
		fail takeover "exit $code: $(cat "$work/out")"
	else
		pass takeover
	fi

	# A standalone server gets nothing: its agent does not listen on TCP.
	"$bin" -c "$work/replica.conf" mode standalone --yes >"$work/mode" 2>&1
	sleep 1
	"$bin" -c "$conf" init --user erin >"$work/out" 2>&1
	code=$?
	if [ "$code" -ne 1 ] || ! grep -q "agent" "$work/out"; then
		fail standalone_refused "exit $code: $(cat "$work/out")"
	else
		pass standalone_refused
	fi
	"$bin" -c "$work/replica.conf" mode replica --yes >"$work/mode" 2>&1
	sleep 1

	# An untrusted source is closed before a byte is sent.
	sed -i 's|^trusted_networks = .*|trusted_networks = 10.0.0.0/8|' "$work/replica.conf"
	kill -HUP "$AGENT_PID"
	sleep 1
	"$bin" -c "$conf" init --user erin >"$work/out" 2>&1
	code=$?
	if [ "$code" -ne 1 ] || ! grep -q "closed the connection" "$work/out" ||
		! grep -q "event=ctl_reject" "$work/replica.log"; then
		fail untrusted_closed "exit $code: $(cat "$work/out")"
	else
		pass untrusted_closed
	fi

	sed -i 's|^trusted_networks = .*|trusted_networks = 127.0.0.0/8|' "$work/replica.conf"
	kill -HUP "$AGENT_PID"
	sleep 1

	# INIT BEGIN reports, from the replica's own mail store, that it
	# holds mail by now.
	ctl_say "BIND $(hostname)" "INIT BEGIN $(hostname)" >"$work/ctl" 2>&1
	if grep -q '^\* HOLDS-MAIL yes' "$work/ctl"; then
		pass holds_mail
	else
		fail holds_mail "$(cat "$work/ctl")"
	fi

	# The replica's admin asks the master for a new initial replication.
	if ! "$bin" -c "$work/replica.conf" init --request >"$work/out" 2>&1; then
		fail init_request "exit $?: $(cat "$work/out")"
	else
		ctl_say STATUS >"$work/ctl" 2>&1
		if grep -q '^\* INIT-REQUESTED yes' "$work/ctl"; then
			pass init_request
		else
			fail init_request "STATUS does not show it: $(cat "$work/ctl")"
		fi
	fi

	# status on the replica shows its agent and the master it is bound
	# to (tests/e2e/status.sh tests the command in depth).
	"$bin" -c "$work/replica.conf" status >"$work/out" 2>&1
	if grep -q '^agent: *running' "$work/out" &&
		grep -q "^master: *$(hostname) (bound since" "$work/out"; then
		pass replica_status_bound
	else
		fail replica_status_bound "$(cat "$work/out")"
	fi

	# STARTTLS on the control channel, verified like the IMAP server.
	printf 'tls_cert_file = %s\ntls_key_file = %s\n' \
		"$work/replica/server.pem" "$work/replica/server.key" >>"$work/replica.conf"
	kill -HUP "$AGENT_PID"
	sleep 1
	ctl_say >"$work/ctl" 2>&1
	if ! head -1 "$work/ctl" | grep -q STARTTLS; then
		fail control_tls "the agent does not offer STARTTLS after the reload"
	elif ! "$bin" -c "$conf" init --user erin >"$work/out" 2>&1; then
		fail control_tls "init over TLS failed: $(cat "$work/out")"
	else
		pass control_tls
	fi
	E2E_CONTROL_PORT=$CTL_PORT write_config "tls_fingerprint = sha256:$(printf '%064d' 0)"
	"$bin" -c "$conf" init --user erin >"$work/out" 2>&1
	code=$?
	if [ "$code" -ne 1 ] || ! grep -q "control channel.*fingerprint" "$work/out"; then
		fail control_tls_pin_mismatch "exit $code: $(cat "$work/out")"
	else
		pass control_tls_pin_mismatch
	fi

	E2E_CONTROL_PORT=$CTL_PORT write_config ""
	sed -i "s|^tls_ca_file = .*|tls_ca_file = /etc/ssl/certs/ca-certificates.crt|" "$conf"
	"$bin" -c "$conf" init --user erin >"$work/out" 2>&1
	code=$?
	if [ "$code" -ne 1 ] || ! grep -q "control channel.*certificate" "$work/out"; then
		fail control_tls_unknown_ca "exit $code: $(cat "$work/out")"
	else
		pass control_tls_unknown_ca
	fi

	test_tls_required_off_loopback
	test_master_agent

	kill "$AGENT_PID"
	wait "$AGENT_PID" 2>/dev/null
	write_config ""
}

# A master agent with a fresh state store runs the initial replication by
# itself (adopting what the replica already holds) and then reports its
# status to the replica's agent.
test_master_agent() {
	local pid i
	E2E_CONTROL_PORT=$CTL_PORT write_config ""
	sed -e "s|^state_dir = .*|state_dir = $work/mstate|" \
		-e "s|^log_file = .*|log_file = $work/master.log|" \
		-e "s|^\[general\]|[general]\ncontrol_socket = $work/mrun/control.sock|" \
		"$conf" >"$work/master.conf"
	chmod 600 "$work/master.conf"
	"$top/src/mailrepld" -f -c "$work/master.conf" >"$work/master.out" 2>&1 &
	pid=$!
	for i in $(seq 120); do
		grep -q 'event=run_end.*result=ok' "$work/master.log" 2>/dev/null &&
			[ -n "$(peer_field 'p["master_status"]["received"]')" ] && break
		sleep 1
	done
	# The replica's agent goes away and comes back: the master reconnects.
	kill "$AGENT_PID"
	wait "$AGENT_PID" 2>/dev/null
	for _ in $(seq 30); do
		grep -q 'event=peer_down' "$work/master.log" && break
		sleep 1
	done
	"$top/src/mailrepld" -f -c "$work/replica.conf" >>"$work/agent.out" 2>&1 &
	AGENT_PID=$!
	for _ in $(seq 60); do
		[ "$(grep -c 'event=peer_up' "$work/master.log")" -ge 2 ] && break
		sleep 1
	done
	if [ "$(grep -c 'event=peer_up' "$work/master.log")" -ge 2 ]; then
		pass master_agent_reconnects
	else
		fail master_agent_reconnects "$(grep -E 'peer_(up|down)' "$work/master.log" | tail -3)"
	fi

	kill "$pid"
	wait "$pid" 2>/dev/null
	if ! grep -q 'event=run_end.*result=ok' "$work/master.log" 2>/dev/null; then
		fail master_agent_init "no successful run after $i s: $(tail -3 "$work/master.log" 2>/dev/null) $(tail -3 "$work/master.out")"
	elif [ -z "$(peer_field 'p["master_status"]["received"]')" ]; then
		fail master_agent_status "the replica got no status: $(cat "$work/rstate/peer.json")"
	else
		echo "master_agent: $(grep 'event=run_end' "$work/master.log" | tail -1 | grep -o 'adopted=[0-9]*') in $i s"
		pass master_agent_init
		pass master_agent_status
	fi
}

# TLS is required off loopback. Two network namespaces made here, joined
# by a veth pair: the replica's agent listens on 10.231.0.1 in one, and a
# client connects from 10.231.0.2 in the other. No traffic leaves them.
test_tls_required_off_loopback() {
	local a=mrA-$$ b=mrB-$$ port=2005 pid out
	if ! ip netns add "$a" || ! ip netns add "$b"; then
		fail tls_required_off_loopback "cannot create network namespaces"
		return
	fi
	ip link add "va$$" type veth peer name "vb$$"
	ip link set "va$$" netns "$a"
	ip link set "vb$$" netns "$b"
	ip -n "$a" addr add 10.231.0.1/30 dev "va$$"
	ip -n "$b" addr add 10.231.0.2/30 dev "vb$$"
	ip -n "$a" link set "va$$" up
	ip -n "$b" link set "vb$$" up
	ip -n "$a" link set lo up

	sed -e "s|^listen = .*|listen = 10.231.0.1:$port|" \
		-e "s|^trusted_networks = .*|trusted_networks = 10.231.0.0/30|" \
		-e "s|^control_socket = .*|control_socket = $work/nsrun/control.sock|" \
		-e "s|^state_dir = .*|state_dir = $work/nsstate|" \
		"$work/replica.conf" >"$work/ns.conf"
	chmod 600 "$work/ns.conf"
	ip netns exec "$a" "$top/src/mailrepld" -f -c "$work/ns.conf" >"$work/ns.out" 2>&1 &
	pid=$!
	out=$(ip netns exec "$b" python3 - "$port" <<'PY'
import socket, sys, time
for _ in range(50):
    try:
        s = socket.create_connection(("10.231.0.1", int(sys.argv[1])), timeout=5)
        break
    except OSError:
        time.sleep(0.1)
f = s.makefile("rwb")
print(f.readline().decode().rstrip())
f.write(b"AUTH PLAIN AHJlcGxhZG1pbgBhZG1pbnB3\r\n"); f.flush()
print(f.readline().decode().rstrip())
PY
)
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	ip netns del "$a"
	ip netns del "$b"
	if grep -q 'STARTTLS' <<<"$(head -1 <<<"$out")" &&
		grep -q '^NO \[STARTTLS\]' <<<"$out"; then
		pass tls_required_off_loopback
	else
		fail tls_required_off_loopback "$out $(tail -3 "$work/ns.out")"
	fi
}

if ! setup >"$work/setup.log" 2>&1; then
	fail setup "$(tail -5 "$work/setup.log")"
	exit 1
fi
test_full_run
test_log_events
test_rerun_uploads_nothing
test_uidvalidity_change
test_reset_replica
test_wrong_password
test_certificate_rejected
test_lock
test_agents
test_kill_resume
