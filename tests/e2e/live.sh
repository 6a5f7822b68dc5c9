#!/bin/bash
# End-to-end tests of running replication: "mailrepld" in master mode
# watches a Maildir++ tree laid out from the SpamAssassin corpus and keeps
# a private Dovecot replica on 127.0.0.1 current while the tests change
# the tree. Prints "PASS: name" or "FAIL: name: why" for each test.
#
# No test asserts how fast a change arrives: each one polls until
# imapcompare.py finds master and replica equal (and the change queue
# empty), and fails only after a timeout.
#
# Environment:
#   MAILREPL_CORPUS_CACHE  where the corpus package is kept between runs
#                          (default: <source>/work/corpus)
#   E2E_LIVE_KILLS         kill -9 rounds of the agent (default 20)
#   E2E_LIVE_TIMEOUT       seconds to wait for convergence (default 60)
#   E2E_KEEP               keep the temp dir (its path is printed)
set -uo pipefail

top=$(cd "$(dirname "$0")/../.." && pwd)
bin=$top/src/mailrepl
daemon=$top/src/mailrepld
cache=${MAILREPL_CORPUS_CACHE:-$top/work/corpus}
kills=${E2E_LIVE_KILLS:-20}
timeout=${E2E_LIVE_TIMEOUT:-60}
work=$(mktemp -d /tmp/mailrepl-live-XXXXXX)
# Dovecot's mail user must be able to reach the replica's directory.
chmod 755 "$work"
conf=$work/mailrepl.conf
log=$work/mailrepl.log
root=$work/master
users=(user01 user02 user03)
# user04 is added while the agent runs, and user05 has a size limit on
# the replica; Dovecot must know both already.
replica_users="${users[*]} user04 user05"
# The replica rejects user05's messages above 20 KB with NO [LIMIT].
export DOVECOT_TEST_SIZE_LIMIT=user05:20k
agent_pid=
load_pid=
saved_queue_limit=

stop_agent() {
	[ -n "$agent_pid" ] || return 0
	kill "$agent_pid" 2>/dev/null
	for _ in $(seq 100); do
		kill -0 "$agent_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$agent_pid" 2>/dev/null
	wait "$agent_pid" 2>/dev/null
	agent_pid=
}

restore_queue_limit() {
	[ -n "$saved_queue_limit" ] || return 0
	sysctl -q -w fs.inotify.max_queued_events="$saved_queue_limit"
	saved_queue_limit=
}

cleanup() {
	restore_queue_limit
	if [ -n "$load_pid" ]; then
		touch "$work/load.stop"
		kill "$load_pid" 2>/dev/null
		wait "$load_pid" 2>/dev/null
	fi
	stop_agent
	bash "$top/scripts/dovecot-test.sh" stop "$work/replica" >/dev/null 2>&1
	if [ -n "${E2E_KEEP:-}" ]; then
		echo "live: kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

pass() { echo "PASS: $1"; }
fail() { echo "FAIL: $1: $2"; }

write_config() {
	umask 077
	printf '%s\n' "$DOVECOT_ADMIN_PASSWORD" >"$work/admin.pw"
	cat >"$conf" <<CONF
[general]
mode = master
state_dir = $work/state
log_file = $log
control_socket = $work/run/control.sock

[maildir]
root = $root

[master]
replica_host = 127.0.0.1
imap_port = $IMAP_PORT
imap_tls = starttls
tls_ca_file = $DOVECOT_CA
admin_user = $DOVECOT_ADMIN
admin_password_file = $work/admin.pw
workers = 2
control_port = 0
CONF
	umask 022
}

setup() {
	bash "$top/scripts/corpus.sh" fetch "$cache" >/dev/null || return 1
	bash "$top/scripts/corpus.sh" layout "$cache" "$root" --users 3 \
		--scale 600 || return 1
	eval "$(DOVECOT_TEST_USERS=$replica_users \
		bash "$top/scripts/dovecot-test.sh" start "$work/replica")"
	[ -n "${IMAP_PORT:-}" ] || return 1
	write_config
}

# --- Helpers ---

compare() { # users as arguments (default: all)
	python3 "$top/tests/e2e/imapcompare.py" "$root" 127.0.0.1 \
		"$IMAP_PORT" "$DOVECOT_CA" "$DOVECOT_ADMIN" \
		"$DOVECOT_ADMIN_PASSWORD" "$@"
}

# The number of queued changes that "mailrepl status" reports.
pending() {
	"$bin" -c "$conf" status 2>/dev/null |
		sed -n 's/^pending: *\([0-9][0-9]*\) change.*/\1/p'
}

# Wait until the replica equals the master and the change queue is empty,
# polling; $1 is the timeout in seconds, the rest are users for compare.
# On a timeout $work/compare contains the last comparison.
converge() {
	local limit=$1 deadline
	shift
	deadline=$((SECONDS + limit))
	echo "imapcompare: not run, changes still queued" >"$work/compare"
	while :; do
		if [ "$(pending)" = 0 ] &&
			compare "$@" >"$work/compare" 2>&1 &&
			[ "$(pending)" = 0 ] &&
			compare "$@" >"$work/compare" 2>&1; then
			return 0
		fi
		[ "$SECONDS" -lt "$deadline" ] || return 1
		sleep 0.2
	done
}

# Why converge failed: the first differences and the summary.
diverged() {
	echo "no convergence within $1 s (pending $(pending)): $(grep -v '^imapcompare:' "$work/compare" | head -5 | tr '\n' ';') $(tail -1 "$work/compare")"
}

# The number of copies of the message with header X-Mailrepl-Live: $2 in
# all folders of user $1 on the replica, then each folder that has one.
copies() {
	python3 - "$top/tests/e2e" "$IMAP_PORT" "$DOVECOT_CA" "$DOVECOT_ADMIN" \
		"$DOVECOT_ADMIN_PASSWORD" "$1" "$2" <<'PY'
import imaplib, ssl, sys
sys.path.insert(0, sys.argv[1])
import imapcompare
port, ca, admin, password, user, marker = sys.argv[2:]
imap = imaplib.IMAP4("127.0.0.1", int(port))
imap.starttls(ssl_context=ssl.create_default_context(cafile=ca))
imap.login("%s*%s" % (user, admin), password)
total, where = 0, []
for name, noselect in imapcompare.parse_list(imap.list('""', "*")[1]).items():
    if noselect:
        continue
    imap.select('"%s"' % name, readonly=True)
    n = len(imap.uid("SEARCH", "HEADER", "X-Mailrepl-Live", marker)[1][0].split())
    if n:
        total += n
        where.append("%s:%d" % (name, n))
imap.logout()
print(total, " ".join(where))
PY
}

corpus_pick() { # a corpus message file, chosen by $1
	local files=("$cache"/messages/*/*.txt)
	echo "${files[$(($1 % ${#files[@]}))]}"
}

# Deliver a corpus message with the header X-Mailrepl-Live: $2 into the
# folder directory $1, as a delivery agent does: written to tmp/, then
# renamed into new/. The file name is the marker.
deliver() {
	{
		printf 'X-Mailrepl-Live: %s\n' "$2"
		cat "$(corpus_pick "$RANDOM")"
	} >"$1/tmp/$2"
	mv "$1/tmp/$2" "$1/new/$2"
}

marker() { echo "$(date +%s).M$RANDOM$RANDOM.live-$1"; }

agent_starts() {
	local n
	n=$(grep -c 'event=repl_start' "$log" 2>/dev/null)
	echo "${n:-0}"
}

# Start the agent and wait until its watcher runs.
start_agent() {
	local before
	before=$(agent_starts)
	"$daemon" -f -c "$conf" >>"$work/agent.out" 2>&1 &
	agent_pid=$!
	for _ in $(seq 300); do
		[ "$(agent_starts)" -gt "$before" ] && return 0
		kill -0 "$agent_pid" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# Check that the replica converges; $1 is the test name.
expect_converged() {
	if converge "$timeout"; then
		pass "$1"
	else
		fail "$1" "$(diverged "$timeout")"
	fi
}

# --- Tests against one running agent ---

test_agent_start() {
	if ! start_agent; then
		fail agent_start "the agent did not start: $(tail -3 "$work/agent.out")"
		return 1
	fi
	# The agent runs the initial replication by itself.
	for _ in $(seq 600); do
		grep -q 'event=run_end.*result=ok' "$log" && break
		sleep 0.2
	done
	if ! grep -q 'event=run_end.*result=ok' "$log"; then
		fail agent_start "no successful initial replication: $(grep -E 'event=(run_end|error)' "$log" | tail -3)"
		return 1
	fi
	expect_converged agent_start_init
}

test_delivery() {
	local m
	m=$(marker delivery)
	deliver "$root/user01/Maildir" "$m"
	expect_converged delivery_new
	DELIVERED=$m
	if [ "$(copies user01 "$m")" != "1 INBOX:1" ]; then
		fail delivery_one_copy "$(copies user01 "$m")"
	else
		pass delivery_one_copy
	fi
}

test_new_to_cur() {
	local dir=$root/user01/Maildir m=$DELIVERED
	mv "$dir/new/$m" "$dir/cur/$m:2,"
	expect_converged new_to_cur
	mv "$dir/cur/$m:2," "$dir/cur/$m:2,S"
	expect_converged flag_seen
	mv "$dir/cur/$m:2,S" "$dir/cur/$m:2,FS"
	expect_converged flag_rename
}

# Letter d is not in the layout's dovecot-keywords: the test defines it,
# uses it, then makes it mean another keyword.
test_keywords() {
	local dir=$root/user01/Maildir m=$DELIVERED
	{
		cat "$dir/dovecot-keywords"
		echo "3 Urgent"
	} >"$dir/dovecot-keywords.tmp"
	mv "$dir/dovecot-keywords.tmp" "$dir/dovecot-keywords"
	mv "$dir/cur/$m:2,FS" "$dir/cur/$m:2,FSd"
	expect_converged keyword_letter

	sed 's/^3 Urgent$/3 Later/' "$dir/dovecot-keywords" >"$dir/dovecot-keywords.tmp"
	mv "$dir/dovecot-keywords.tmp" "$dir/dovecot-keywords"
	expect_converged keyword_remapped
}

test_delete() {
	local dir=$root/user02/Maildir victim
	victim=$(ls "$dir/cur" | head -1)
	rm "$dir/cur/$victim"
	expect_converged delete
}

test_move() {
	local dir=$root/user01/Maildir m=$DELIVERED found
	mv "$dir/cur/$m:2,FSd" "$dir/.Archive/cur/$m:2,FSd"
	expect_converged move
	if ! grep 'event=move' "$log" | grep -q "user=user01 .*file=$m "; then
		fail move_logged "no event=move for $m: $(grep 'event=move' "$log" | tail -2)"
	else
		pass move_logged
	fi
	found=$(copies user01 "$m")
	if [ "$found" != "1 Archive:1" ]; then
		fail move_one_copy "expected one copy in Archive: $found"
	else
		pass move_one_copy
	fi
}

make_folder() { # $1: folder directory
	mkdir -p "$1/cur" "$1/new" "$1/tmp"
	touch "$1/maildirfolder"
}

test_folders() {
	local dir=$root/user03/Maildir
	make_folder "$dir/.New"
	deliver "$dir/.New" "$(marker folder)"
	expect_converged folder_create
	make_folder "$dir/.New.Sub"
	deliver "$dir/.New.Sub" "$(marker nested)"
	expect_converged folder_nested
	# A Maildir++ folder rename renames the folder and each child.
	mv "$dir/.New" "$dir/.Renamed"
	mv "$dir/.New.Sub" "$dir/.Renamed.Sub"
	expect_converged folder_rename
	rm -rf "$dir/.Renamed.Sub" "$dir/.Renamed"
	expect_converged folder_delete
}

# user01's file has one name per line, user02's is Dovecot's version 2.
test_subscriptions() {
	local one=$root/user01/Maildir two=$root/user02/Maildir
	{
		grep -v '^Trash$' "$one/subscriptions"
		echo Spam
	} >"$one/subscriptions.tmp"
	mv "$one/subscriptions.tmp" "$one/subscriptions"
	{
		grep -v '^Sent$' "$two/subscriptions"
		printf 'Spam\n'
	} >"$two/subscriptions.tmp"
	mv "$two/subscriptions.tmp" "$two/subscriptions"
	expect_converged subscriptions
}

test_user_added() {
	local dir=$root/user04/Maildir i
	make_folder "$dir"
	rm "$dir/maildirfolder"
	make_folder "$dir/.Projects"
	for i in 1 2 3; do
		deliver "$dir" "$(marker newuser)"
		deliver "$dir/.Projects" "$(marker newuser)"
	done
	mv "$dir/new/$(ls "$dir/new" | head -1)" "$dir/cur/newuser-seen:2,S"
	printf 'INBOX\nProjects\n' >"$dir/subscriptions"
	expect_converged user_added
}

# Write a message of about $2 KB with the header X-Mailrepl-Live: $3 into
# the folder directory $1, through tmp/ as a delivery agent does.
deliver_size() {
	{
		printf 'X-Mailrepl-Live: %s\nSubject: %s KB\n\n' "$3" "$2"
		head -c $(($2 * 1024)) /dev/zero | tr '\0' 'x' | fold -w 76
	} >"$1/tmp/$3"
	mv "$1/tmp/$3" "$1/new/$3"
}

# A message the replica rejects is reported once and skipped; later
# changes of its folder still go through and do not send it again.
test_rejected() {
	local dir=$root/user05/Maildir big small after n
	make_folder "$dir"
	rm "$dir/maildirfolder"

	small=$(marker small)
	deliver_size "$dir" 2 "$small"
	big=$(marker big)
	deliver_size "$dir" 40 "$big"
	for _ in $(seq $((timeout * 5))); do
		grep -q "event=reject .*file=$big" "$log" && break
		sleep 0.2
	done

	after=$(marker after)
	deliver_size "$dir" 2 "$after"
	for _ in $(seq $((timeout * 5))); do
		[ "$(copies user05 "$after")" = "1 INBOX:1" ] && break
		sleep 0.2
	done
	# The info line of each APPEND the replica rejected is never folded
	# into a repeat summary, so it counts every attempt.
	n=$(grep -c "level=info event=reject .*$big" "$log")

	if [ "$(copies user05 "$small")" != "1 INBOX:1" ] ||
		[ "$(copies user05 "$after")" != "1 INBOX:1" ]; then
		fail rejected_skipped "the small messages did not arrive: $(copies user05 "$small"), $(copies user05 "$after")"
	elif [ "$n" != 1 ]; then
		fail rejected_skipped "expected one reject line for $big, found $n"
	else
		pass rejected_skipped
	fi
	# The rest of the tests compare everything, so the rejected message
	# leaves the master again.
	rm "$dir/new/$big"
	expect_converged rejected_cleared
}

test_burst() {
	local start end
	start=$(date +%s.%N)
	if ! python3 "$top/tests/e2e/maildir_load.py" burst "$root" \
		"$cache/messages" 5000 burst "${users[@]}" >"$work/load.out" 2>&1; then
		fail burst "maildir_load.py: $(tail -2 "$work/load.out")"
		return
	fi
	# 5,000 messages take longer than single changes; the limit is
	# only a guard against a hang.
	if ! converge $((timeout * 5)); then
		fail burst "$(diverged $((timeout * 5)))"
		return
	fi
	end=$(date +%s.%N)
	awk -v s="$start" -v e="$end" 'BEGIN {
		printf "burst: 5000 deliveries replicated in %.1f s\n", e - s }'
	tail -1 "$work/compare"
	pass burst
}

test_replica_down() {
	local port=$IMAP_PORT n=
	bash "$top/scripts/dovecot-test.sh" stop "$work/replica" >/dev/null 2>&1

	# Dovecot's imap processes serve the agent's open connections for a
	# few seconds after the master process is gone. The replica is down
	# only when they have ended.
	for _ in $(seq 100); do
		[ -z "$(ss -Htn state established "( sport = :$port )")" ] && break
		sleep 0.2
	done

	python3 "$top/tests/e2e/maildir_load.py" mix "$root" "$cache/messages" \
		down --ops 100 "${users[@]}" >"$work/load.out" 2>&1
	for _ in $(seq 300); do
		n=$(pending)
		[ "${n:-0}" -gt 0 ] && break
		sleep 0.2
	done
	if [ "${n:-0}" -gt 0 ]; then
		pass replica_down_pending
	else
		fail replica_down_pending "status: $("$bin" -c "$conf" status 2>&1 | grep pending)"
	fi

	# Changes made while the agent waits are queued too.
	python3 "$top/tests/e2e/maildir_load.py" mix "$root" "$cache/messages" \
		down2 --ops 50 "${users[@]}" >>"$work/load.out" 2>&1
	eval "$(DOVECOT_TEST_USERS=$replica_users \
		bash "$top/scripts/dovecot-test.sh" start "$work/replica")"
	if [ "$IMAP_PORT" != "$port" ]; then
		fail replica_down "Dovecot came back on port $IMAP_PORT, not $port"
		return
	fi
	expect_converged replica_down_converges
}

# --- Tests that restart the agent ---

test_kill_loop() {
	local i killed=0 up down
	rm -f "$work/load.stop"
	python3 "$top/tests/e2e/maildir_load.py" mix "$root" "$cache/messages" \
		kill --until "$work/load.stop" "${users[@]}" >"$work/load.out" 2>&1 &
	load_pid=$!

	for ((i = 1; i <= kills; i++)); do
		up=$(awk -v r="$RANDOM" 'BEGIN { printf "%.2f", 0.3 + r % 271 / 100 }')
		down=$(awk -v r="$RANDOM" 'BEGIN { printf "%.2f", 0.2 + r % 181 / 100 }')
		sleep "$up"
		if kill -9 "$agent_pid" 2>/dev/null; then
			killed=$((killed + 1))
		fi
		wait "$agent_pid" 2>/dev/null
		agent_pid=

		sleep "$down"
		if ! start_agent; then
			fail kill_loop "round $i: the agent did not start again: $(tail -3 "$work/agent.out")"
			break
		fi
	done

	touch "$work/load.stop"
	wait "$load_pid"
	load_pid=
	echo "kill_loop: $killed kills; changes made: $(cat "$work/load.out")"
	if [ -z "$agent_pid" ] && ! start_agent; then
		fail kill_loop "the agent did not start: $(tail -3 "$work/agent.out")"
		return
	fi

	if [ "$killed" -lt "$kills" ]; then
		fail kill_loop "the agent was gone before $((kills - killed)) of $kills kills"
	elif ! converge "$timeout"; then
		fail kill_loop "$(diverged "$timeout")"
	else
		tail -1 "$work/compare"
		pass kill_loop
	fi
}

# A small inotify queue makes the kernel drop events; the agent must
# notice and reconcile everything.
test_overflow() {
	local before
	stop_agent
	before=$(grep -c 'event=overflow' "$log")

	saved_queue_limit=$(sysctl -n fs.inotify.max_queued_events) || {
		fail overflow "cannot read fs.inotify.max_queued_events"
		return
	}
	# The limit applies to inotify instances created after the change.
	if ! sysctl -q -w fs.inotify.max_queued_events=16; then
		saved_queue_limit=
		fail overflow "cannot set fs.inotify.max_queued_events"
		return
	fi
	start_agent
	local started=$?
	restore_queue_limit
	if [ "$started" -ne 0 ]; then
		fail overflow "the agent did not start: $(tail -3 "$work/agent.out")"
		return
	fi

	# A watcher that reads fast enough keeps a queue of 16 from filling,
	# so the agent is stopped during the burst: the kernel queue must
	# overflow then, and the agent finds IN_Q_OVERFLOW when it goes on.
	kill -STOP "$agent_pid"
	python3 "$top/tests/e2e/maildir_load.py" burst "$root" \
		"$cache/messages" 500 overflow "${users[@]}" >"$work/load.out" 2>&1
	kill -CONT "$agent_pid"
	if ! converge "$timeout"; then
		fail overflow "$(diverged "$timeout")"
	elif [ "$(grep -c 'event=overflow' "$log")" -le "$before" ]; then
		fail overflow "no event=overflow in the log"
	else
		pass overflow
	fi
}

# Every kind of event that the tests above provoke must be in the log,
# each with the keys an admin filters on.
test_log_events() {
	local missing="" event
	for event in repl_start reconcile apply upload batch flags expunge \
		move folder_create folder_rename folder_delete subscribe \
		unsubscribe reject repl_wait repl_resume overflow \
		sync_state imap_connected imap_close agent_start agent_stop; do
		grep -q "event=$event " "$log" || missing="$missing $event"
	done
	if ! grep -q 'event=apply user=[^ ]* folder=[^ ]* ms=[0-9]' "$log"; then
		missing="$missing apply(user,folder,ms)"
	fi
	if grep -q -- "$DOVECOT_ADMIN_PASSWORD" "$log" "$work/agent.out"; then
		fail log_events "the admin password is in the log"
	elif [ -n "$missing" ]; then
		fail log_events "not in the log:$missing"
	else
		pass log_events
	fi
}

if ! setup >"$work/setup.log" 2>&1; then
	fail setup "$(tail -5 "$work/setup.log")"
	exit 1
fi
started=$SECONDS
if test_agent_start; then
	test_delivery
	test_new_to_cur
	test_keywords
	test_delete
	test_move
	test_folders
	test_subscriptions
	test_user_added
	test_rejected
	test_burst
	test_replica_down
	test_kill_loop
	test_overflow
	test_log_events
	errors=$(grep -c 'event=error' "$log")
	echo "live: $((SECONDS - started)) s; $errors event=error lines in the log"
fi
