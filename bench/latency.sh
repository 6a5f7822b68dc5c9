#!/bin/bash
# Measure running replication: how long a delivered message takes to
# appear on the replica at a steady rate, and how fast the agent drains a
# backlog. Run as root from anywhere in a clone:
#
#   bench/latency.sh [--duration S] [--rate N] [--write-doc] ...
#
# bench/README.md describes the method; bench/latency.py does the
# deliveries, the IMAP watching and the figures.
set -euo pipefail

readonly SECTION_BEGIN='<!-- latency:begin -->'
readonly SECTION_END='<!-- latency:end -->'

top=$(cd -- "$(dirname -- "$0")/.." && pwd -P)
helper=$top/bench/latency.py
duration=60
rate=100
interval=2
drain_count=10000
user_count=10
cache=$top/work/corpus
layout_args=()
write_doc=no
keep=no
workdir=

usage() {
	cat <<EOF
Usage: $0 [OPTIONS]

Lays out the corpus for --users users, starts a private Dovecot on
127.0.0.1 as the replica, runs "mailrepl init" and then the agent
(mailrepld) in master mode. Delivers --rate messages per second for
--duration seconds and measures how long each takes to appear on the
replica, then stops the agent, delivers --drain messages, starts it again
and times the catch-up. Run as root; missing Debian packages are
installed with apt-get.

Options:
  --duration S    seconds of steady delivery (default: $duration)
  --rate N        messages per second (default: $rate)
  --interval MS   sleep between two NOOP rounds of the watcher (default: $interval)
  --drain N       messages delivered while the agent is stopped (default: $drain_count)
  --users N       users user01..userNN (default: $user_count)
  --scale TOTAL   messages in the master tree before the run (default: the
                  corpus, 6,046); passed to scripts/corpus.sh layout
  --cache DIR     corpus download cache (default: $top/work/corpus)
  --workdir DIR   put the master tree, the replica and all state in DIR,
                  which must not exist yet (default: a new directory under
                  \${TMPDIR:-/tmp}); it is deleted at the end unless --keep
  --keep          keep the work directory
  --write-doc     add or replace the section "Running replication: latency
                  and drain" in doc/benchmarks.md
EOF
}

die() {
	echo "latency: $*" >&2
	exit 1
}

log() {
	echo "latency: $*" >&2
}

positive_number() {
	[[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive whole number, got '${2:-}'"
}

parse_args() {
	while (($#)); do
		case $1 in
		--duration | --rate | --interval | --drain | --users)
			positive_number "$1" "${2:-}"
			case $1 in
			--duration) duration=$2 ;;
			--rate) rate=$2 ;;
			--interval) interval=$2 ;;
			--drain) drain_count=$2 ;;
			--users) user_count=$2 ;;
			esac
			shift 2
			;;
		--scale)
			positive_number "$1" "${2:-}"
			layout_args+=("$1" "$2")
			shift 2
			;;
		--cache | --workdir)
			[[ -n ${2:-} ]] || die "$1 needs a directory"
			if [[ $1 == --cache ]]; then cache=$2; else workdir=$2; fi
			shift 2
			;;
		--keep)
			keep=yes
			shift
			;;
		--write-doc)
			write_doc=yes
			shift
			;;
		-h | --help)
			usage
			exit 0
			;;
		*)
			usage >&2
			die "unknown option '$1'"
			;;
		esac
	done
}

install_packages() {
	bash "$top/scripts/install-deps.sh" || die "scripts/install-deps.sh failed"
}

build_mailrepl() {
	[[ -x $top/src/mailrepl && -x $top/src/mailrepld ]] && return
	log "building mailrepl"
	(
		cd -- "$top"
		if [[ ! -f Makefile ]]; then
			autoreconf -fi && ./configure -q
		fi
		make -j"$(nproc)"
	) >"$work/build.log" 2>&1 || {
		tail -n 30 "$work/build.log" >&2
		die "building mailrepl failed; the whole output is in $work/build.log"
	}
}

layout_master() {
	master=$work/master
	bash "$top/scripts/corpus.sh" layout "$cache" "$master" \
		--users "$user_count" "${layout_args[@]}" >&2
	local summary
	summary=$(head -n 1 "$master/.mailrepl-corpus")
	layout_messages=$(sed -E 's/.* messages=([0-9]+).*/\1/' <<<"$summary")
	users=$(awk -F '\t' 'NR > 1 && !seen[$1]++ { printf "%s ", $1 }' "$master/.mailrepl-corpus")
	users=${users% }
	[[ $layout_messages =~ ^[0-9]+$ && -n $users ]] ||
		die "missing or invalid layout summary in $master/.mailrepl-corpus; run scripts/corpus.sh layout by hand to see why"
}

start_replica() {
	DOVECOT_TEST_USERS=$users bash "$top/scripts/dovecot-test.sh" start "$replica" >/dev/null
	replica_running=yes
	set -a
	# shellcheck source=/dev/null
	. "$replica/env"
	set +a
}

stop_replica() {
	bash "$top/scripts/dovecot-test.sh" stop "$replica" >/dev/null 2>&1 || true
	replica_running=no
}

write_conf() {
	conf=$work/mailrepl.conf
	(
		umask 077
		printf '%s\n' "$DOVECOT_ADMIN_PASSWORD" >"$work/admin.pw"
		cat >"$conf" <<EOF
# Written by bench/latency.sh for one run.
[general]
mode = master
state_dir = $work/state
log_file = $work/mailrepl.log
control_socket = $work/control.sock

[maildir]
root = $master

[master]
replica_host = 127.0.0.1
imap_port = $IMAP_PORT
imap_tls = starttls
tls_ca_file = $DOVECOT_CA
admin_user = $DOVECOT_ADMIN
admin_password_file = $work/admin.pw
workers = 4
control_port = 0
EOF
	)
}

# Start mailrepld in the foreground mode in the background; sets agent_pid.
start_agent() {
	"$top/src/mailrepld" -c "$conf" -f >>"$work/mailrepld.out" 2>&1 &
	agent_pid=$!
}

stop_agent() {
	[[ -n ${agent_pid:-} ]] || return 0
	kill -TERM "$agent_pid" 2>/dev/null || true
	wait "$agent_pid" 2>/dev/null || true
	agent_pid=
}

status_cmd() {
	printf '%q -c %q status' "$top/src/mailrepl" "$conf"
}

# Wait until the agent has queued its start-up reconcile and applied it.
wait_idle() {
	local i
	for ((i = 0; i < 600; i++)); do
		kill -0 "$agent_pid" 2>/dev/null ||
			die "mailrepld exited; the end of its output: $(tail -n 5 "$work/mailrepld.out")"
		if grep -q 'event=reconcile' "$work/mailrepl.log" 2>/dev/null &&
			eval "$(status_cmd)" | grep '^pending: *0 changes' >/dev/null; then
			return 0
		fi
		sleep 0.2
	done
	die "the agent did not finish its start-up reconcile within 120 s; see $work/mailrepl.log"
}

imap_args() {
	echo --port "$IMAP_PORT" --ca "$DOVECOT_CA" --admin "$DOVECOT_ADMIN" \
		--password-file "$work/admin.pw"
}

run_latency() {
	log "latency: $rate messages/s for $duration s across $user_count users"
	# shellcheck disable=SC2046
	python3 "$helper" latency $(imap_args) --users "$users" \
		--master "$master" --cache "$cache" --rate "$rate" \
		--duration "$duration" --interval "$interval" \
		--agent-pid "$agent_pid" --workdir "$work" \
		--out "$work/latency.json" >/dev/null
	python3 "$helper" analyse --records "$work/latency-records.json" \
		--log "$work/mailrepl.log" --out "$work/analysis.json" >/dev/null
}

run_drain() {
	local before since
	stop_agent
	# shellcheck disable=SC2046
	before=$(python3 "$helper" count $(imap_args) --users "$users")
	log "drain: delivering $drain_count messages with the agent stopped"
	python3 "$helper" deliver --users "$users" --master "$master" \
		--cache "$cache" --count "$drain_count" --first-id 10000000 \
		--out "$work/drain-deliveries.tsv"
	sync
	since=$(date +%s.%N)
	start_agent
	# shellcheck disable=SC2046
	python3 "$helper" wait $(imap_args) --users "$users" \
		--expect $((before + drain_count)) --since "$since" \
		--status-cmd "$(status_cmd)" --agent-pid "$agent_pid" \
		>"$work/drain.json"
	log "drain: $(tr -d '\n' <"$work/drain.json")"
}

describe_machine() {
	local cpu mem kernel os
	cpu=$(awk -F ': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
	kernel=$(uname -sr)
	# shellcheck source=/dev/null
	os=$(. /etc/os-release && echo "$PRETTY_NAME")
	echo "- CPU: $(nproc) cores online, ${cpu:-unknown model}; RAM: $mem"
	echo "- Kernel $kernel; master tree and replica on $(df -T -- "$work" | awk 'NR == 2 { print $2 }')"
	echo "- Load average at the start: $start_load, at the end: $end_load (1, 5 and 15 minutes)"
	echo "- Dovecot $(dovecot --version | cut -d' ' -f1)," \
		"libetpan $(dpkg-query -W -f='${Version}' libetpan20 2>/dev/null || echo unknown)"
	echo "- mailrepl $(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown) on $os"
}

# Print a whole number with commas between groups of three digits.
with_commas() {
	sed -E ':a; s/([0-9])([0-9]{3})($|[^0-9])/\1,\2\3/; ta' <<<"$1"
}

doc_section() {
	local command=$1 table=$2 elapsed=$3
	echo "## Running replication: latency and drain"
	echo
	fmt -w 74 <<EOF
Written by \`bench/latency.sh\` on $(date -u +%Y-%m-%d); bench/README.md
describes the method. The master tree has $(with_commas "$layout_messages") messages for
$user_count users; after \`mailrepl init\` the agent (\`mailrepld\`,
master mode, one worker) replicates into a private Dovecot on 127.0.0.1
over IMAP with STARTTLS. Latency is the time from the rename of a
delivered message into new/ until an IMAP connection to the replica
sees it (NOOP polling). Drain is the time from starting the agent until
all $(with_commas "$drain_count") messages delivered while it was stopped are on the
replica.
EOF
	cat <<EOF

Command: \`$command\` (the whole benchmark took $elapsed s)

$(describe_machine)

$table

Notes:

EOF
	note_item "The watcher polls, so a message is seen up to one NOOP round late; the round time above bounds the resolution. The polling, the deliveries, the agent and Dovecot share the same cores, so the watcher's CPU time (above) and that of the Dovecot processes answering its NOOPs are taken from the agent and the replica."
	note_item "The split of the latency pairs each message with the first INBOX apply of its user that started after its rename, or with the apply still running then when the message was visible before the next one started. The log's times have millisecond resolution."
}

# Print TEXT as a Markdown list item wrapped at 74 columns.
note_item() {
	fmt -w 72 <<<"$1" | sed '1s/^/- /; 2,$s/^/  /'
}

update_doc() {
	local section=$1 doc=$top/doc/benchmarks.md
	[[ -f $doc ]] || printf '# Benchmarks\n' >"$doc"
	python3 - "$doc" "$section" "$SECTION_BEGIN" "$SECTION_END" <<'EOF'
import sys

doc, section_file, begin, end = sys.argv[1:5]
with open(doc) as f:
    text = f.read()
with open(section_file) as f:
    section = f.read().strip("\n")
if begin in text and end in text and text.index(begin) < text.index(end):
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
else:
    head, tail = text.rstrip("\n") + "\n\n", "\n"
with open(doc, "w") as f:
    f.write(f"{head}{begin}\n{section}\n{end}{tail}")
EOF
	log "wrote the results to $doc"
}

cleanup() {
	local status=$?
	stop_agent
	if [[ ${replica_running:-no} == yes ]]; then
		stop_replica
	fi
	if [[ -n ${work:-} && -d $work && $keep == no ]]; then
		rm -rf -- "$work"
	elif [[ -n ${work:-} ]]; then
		log "kept the work directory $work"
	fi
	exit "$status"
}

main() {
	local command="bench/latency.sh${*:+ $*}" started=$SECONDS
	parse_args "$@"
	start_load=$(cut -d' ' -f1-3 /proc/loadavg)
	[[ $EUID -eq 0 ]] || die "run as root: the private Dovecot must switch to its mail user"

	install_packages
	if [[ -n $workdir ]]; then
		[[ ! -e $workdir ]] || die "--workdir $workdir already exists; name a new directory"
		mkdir -p -- "$workdir"
		work=$(cd -- "$workdir" && pwd -P)
	else
		work=$(mktemp -d "${TMPDIR:-/tmp}/mailrepl-lat.XXXXXX")
	fi
	# Dovecot's mail user must reach the replica's mail below it.
	chmod 755 -- "$work"
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	replica=$work/replica
	mkdir -p -- "$replica"
	build_mailrepl

	bash "$top/scripts/corpus.sh" fetch "$cache" >&2
	layout_master
	start_replica
	write_conf
	log "mailrepl init of $layout_messages messages"
	"$top/src/mailrepl" -c "$conf" init >"$work/init.out" 2>&1 ||
		die "mailrepl init failed (exit status $?): $(tail -n 5 "$work/init.out")"
	start_agent
	wait_idle
	run_latency
	run_drain
	stop_agent

	local table elapsed
	table=$(python3 "$helper" report --latency "$work/latency.json" \
		--drain "$work/drain.json" --analysis "$work/analysis.json" \
		--drain-count "$drain_count")
	elapsed=$((SECONDS - started))
	end_load=$(cut -d' ' -f1-3 /proc/loadavg)
	echo "$table"
	echo
	echo "The whole benchmark took $elapsed s."
	if [[ $write_doc == yes ]]; then
		doc_section "$command" "$table" "$elapsed" >"$work/section.md"
		update_doc "$work/section.md"
	fi
}

main "$@"
