#!/bin/bash
# Time "mailrepl init" and mbsync (isync) on the same Maildir++ tree, pushing
# into the same private Dovecot on 127.0.0.1, in one run, and report
# throughput as ratios. Run as root from anywhere in a clone:
#
#   bench/init-vs-mbsync.sh [--rounds N] [--scale TOTAL] [--users N] ...
#
# Each round runs mailrepl, then mbsync, each into an empty replica with no
# state of its own, so every run is a full initial copy. bench/README.md
# describes the method; the results go to doc/benchmarks.md.
set -euo pipefail

# Not readonly: bench/peers.sh sources this file and writes its own section.
SECTION_BEGIN='<!-- init-vs-mbsync:begin -->'
SECTION_END='<!-- init-vs-mbsync:end -->'

top=$(cd -- "$(dirname -- "$0")/.." && pwd -P)
rounds=3
mbsync_jobs=1
cache=$top/work/corpus
layout_args=()
only=
write_doc=yes
keep=no
workdir=

usage() {
	cat <<EOF
Usage: $0 [OPTIONS]

Lays out the SpamAssassin corpus as the master's Maildir++ tree, starts a
private Dovecot on 127.0.0.1 as the replica, and times "mailrepl init" and
"mbsync -a" alternately, each into an empty replica. Prints a Markdown
table and writes it to doc/benchmarks.md. Run as root; missing Debian
packages are installed with apt-get.

Options:
  --rounds N      runs of each tool (default: 3, at least 1)
  --scale TOTAL   messages in the master tree (default: the corpus, 6,046);
                  passed to scripts/corpus.sh layout
  --users N       users user01..userNN instead of alice bob carol dave erin;
                  passed to scripts/corpus.sh layout
  --cache DIR     corpus download cache (default: $top/work/corpus)
  --workdir DIR   put the master tree, the replica and all state in DIR,
                  which must not exist yet (default: a new directory under
                  \${TMPDIR:-/tmp}); it is deleted at the end unless --keep
  --keep          keep the work directory and leave Dovecot stopped there
  --mbsync-jobs N run N mbsync processes at once, one channel (user) each,
                  in place of one "mbsync -a" (default: 1)
  --only TOOL     run only mailrepl or only mbsync: no ratio, and
                  doc/benchmarks.md is not written
  --no-doc        print the results but do not write doc/benchmarks.md
EOF
}

die() {
	echo "init-vs-mbsync: $*" >&2
	exit 1
}

log() {
	echo "init-vs-mbsync: $*" >&2
}

positive_number() {
	[[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "$1 needs a positive whole number, got '${2:-}'"
}

parse_args() {
	while (($#)); do
		case $1 in
		--rounds)
			positive_number "$1" "${2:-}"
			rounds=$2
			shift 2
			;;
		--mbsync-jobs)
			positive_number "$1" "${2:-}"
			mbsync_jobs=$2
			shift 2
			;;
		--scale | --users)
			positive_number "$1" "${2:-}"
			layout_args+=("$1" "$2")
			shift 2
			;;
		--cache)
			[[ -n ${2:-} ]] || die "--cache needs a directory"
			cache=$2
			shift 2
			;;
		--workdir)
			[[ -n ${2:-} ]] || die "--workdir needs a directory"
			workdir=$2
			shift 2
			;;
		--keep)
			keep=yes
			shift
			;;
		--only)
			[[ ${2:-} == mailrepl || ${2:-} == mbsync ]] ||
				die "--only needs 'mailrepl' or 'mbsync', got '${2:-}'"
			only=$2
			write_doc=no
			shift 2
			;;
		--no-doc)
			write_doc=no
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

tools() {
	if [[ -n $only ]]; then
		echo "$only"
	else
		echo mailrepl mbsync
	fi
}

uses() {
	[[ -z $only || $only == "$1" ]]
}

# Install what is missing: the project's build and test packages, isync for
# mbsync, and GNU time for peak RSS and CPU time.
install_packages() {
	bash "$top/scripts/install-deps.sh" || die "scripts/install-deps.sh failed"
	local missing=()
	command -v mbsync >/dev/null 2>&1 || missing+=(isync)
	[[ -x /usr/bin/time ]] || missing+=(time)
	((${#missing[@]} == 0)) && return
	log "installing ${missing[*]}"
	{
		apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
	} >&2 || die "apt-get install ${missing[*]} failed"
}

build_mailrepl() {
	[[ -x $top/src/mailrepl ]] && return
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

# Lay out the master tree and read back what it contains: the users, the
# message count and bytes in total and per user.
layout_master() {
	master=$work/master
	bash "$top/scripts/corpus.sh" layout "$cache" "$master" "${layout_args[@]}" >&2
	local summary
	summary=$(head -n 1 "$master/.mailrepl-corpus")
	expected_messages=$(sed -E 's/.* messages=([0-9]+).*/\1/' <<<"$summary")
	expected_bytes=$(sed -E 's/.* bytes=([0-9]+).*/\1/' <<<"$summary")
	folder_count=$(sed -E 's/.* folders=([0-9]+).*/\1/' <<<"$summary")
	users=$(awk -F '\t' 'NR > 1 && !seen[$1]++ { printf "%s ", $1 }' "$master/.mailrepl-corpus")
	users=${users% }
	[[ $expected_messages =~ ^[0-9]+$ && $expected_bytes =~ ^[0-9]+$ && -n $users ]] ||
		die "missing or invalid layout summary in $master/.mailrepl-corpus; run scripts/corpus.sh layout by hand to see why"
}

# Print "user<TAB>messages" for each user, as the layout wrote them.
expected_per_user() {
	awk -F '\t' 'NR > 1 { n[$1] += $3 } END { for (u in n) print u "\t" n[u] }' \
		"$master/.mailrepl-corpus" | sort
}

# Print one line per file of the master tree with its size, mtime and mode,
# so two listings differ when a file was added, removed, renamed or changed.
tree_listing() {
	(cd -- "$1" && find . -printf '%p\t%y\t%s\t%T@\t%m\n' | LC_ALL=C sort)
}

load_replica_env() {
	set -a
	# shellcheck source=/dev/null
	. "$replica/env"
	set +a
}

start_replica() {
	DOVECOT_TEST_USERS=$users bash "$top/scripts/dovecot-test.sh" start "$replica" >/dev/null
	replica_running=yes
	load_replica_env
}

stop_replica() {
	bash "$top/scripts/dovecot-test.sh" stop "$replica" >/dev/null 2>&1 || true
	replica_running=no
}

# Empty the replica: stop Dovecot, delete all of its mail and index files,
# start it again. The ports may change, so the env is read again.
reset_replica() {
	stop_replica
	rm -rf -- "${DOVECOT_MAIL:?}"/*
	start_replica
}

# Print "user<TAB>messages" for each user as the replica counts them.
replica_per_user() {
	local user count
	for user in $users; do
		count=$(doveadm -c "$DOVECOT_CONF" -f tab mailbox status -u "$user" messages '*' |
			awk -F '\t' 'NR > 1 { n += $NF } END { print n + 0 }')
		printf '%s\t%s\n' "$user" "$count"
	done | sort
}

# Print the path of Dovecot's server certificate for mbsync. isync 1.4.4
# rejects the CA-signed certificate for "Host 127.0.0.1" ("certificate owner
# does not match hostname") although its subjectAltName lists that address.
# It trusts a server certificate named in CertificateFile as it is, much like
# mailrepl's tls_fingerprint, so the file is checked against the fingerprint.
server_certificate() {
	local pem=$DOVECOT_DIR/server.pem hex
	[[ -r $pem ]] || die "server certificate $pem not found; has scripts/dovecot-test.sh changed?"
	hex=$(openssl x509 -in "$pem" -outform DER | sha256sum)
	[[ sha256:${hex%% *} == "$DOVECOT_FINGERPRINT" ]] ||
		die "$pem does not match DOVECOT_FINGERPRINT $DOVECOT_FINGERPRINT"
	echo "$pem"
}

write_password_file() {
	(umask 077 && printf '%s\n' "$DOVECOT_ADMIN_PASSWORD" >"$work/admin.pw")
}

write_mailrepl_conf() {
	local conf=$work/mailrepl.conf
	(
		umask 077
		cat >"$conf" <<EOF
# Written by bench/init-vs-mbsync.sh for one run.
[general]
mode = master
state_dir = $work/mailrepl-state
log_file = $work/mailrepl.log

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

# Write one mbsync channel per user: the user's Maildir++ tree (a copy, see
# prepare_mbsync) pushed to that user's mailbox on the replica, logged in
# as the master user. Create Far makes the folders, and Sync Push with
# Expunge None copies messages only towards the replica. CopyArrivalDate
# sends the file's mtime as INTERNALDATE, as mailrepl does.
write_mbsyncrc() {
	local rc=$work/mbsyncrc certificate user
	certificate=$(server_certificate)
	(
		umask 077
		{
			echo "# Written by bench/init-vs-mbsync.sh for one run."
			for user in $users; do
				cat <<EOF

IMAPAccount $user
Host 127.0.0.1
Port $IMAP_PORT
User $user*$DOVECOT_ADMIN
PassCmd "cat $work/admin.pw"
SSLType STARTTLS
CertificateFile $certificate

IMAPStore $user-replica
Account $user

MaildirStore $user-master
Inbox $work/mbsync-near/$user/Maildir
SubFolders Maildir++

Channel $user
Far :$user-replica:
Near :$user-master:
Patterns *
Create Far
Sync Push
Expunge None
CopyArrivalDate yes
SyncState $work/mbsync-state/$user/
EOF
			done
		} >"$rc"
	)
}

# mbsync records its UIDs in the Maildir it reads: it renames every message
# file to add ",U=<uid>" and writes a .uidvalidity file into every folder.
# It therefore reads a fresh copy of the master tree, made before each run
# and outside the timing, with its sync state in a directory of its own.
prepare_mbsync() {
	rm -rf -- "$work/mbsync-near" "$work/mbsync-state"
	cp -a -- "$master" "$work/mbsync-near"
	# The state file of a channel is named after the near mailbox ("INBOX",
	# "Archive!2018"), so each user needs a directory of its own.
	local user
	mkdir -m 700 -- "$work/mbsync-state"
	for user in $users; do
		mkdir -- "$work/mbsync-state/$user"
	done
	tree_listing "$work/mbsync-near" >"$work/near.before"
	write_mbsyncrc
}

prepare_mailrepl() {
	rm -rf -- "$work/mailrepl-state" "$work/mailrepl.log"
	write_mailrepl_conf
}

# Describe what mbsync changed in its copy of the master tree, once.
describe_mbsync_writes() {
	[[ -z ${mbsync_writes:-} ]] || return 0
	tree_listing "$work/mbsync-near" >"$work/near.after"
	local renamed added
	renamed=$(grep -c ',U=[0-9]' "$work/near.after" || true)
	added=$(grep -c '/\.uidvalidity	' "$work/near.after" || true)
	if cmp -s "$work/near.before" "$work/near.after"; then
		mbsync_writes="mbsync left its copy of the master tree unchanged."
	else
		mbsync_writes="In its copy of the master tree mbsync renamed $(with_commas "$renamed") message files (adding ,U=<uid>) and created $(with_commas "$added") .uidvalidity files."
	fi
}

# Run one timed command with GNU time, after writing back the page cache of
# the previous run. Sets run_seconds, run_status, run_rss_kb and run_cpu.
timed_run() {
	local name=$1 start end
	shift
	sync
	start=$(date +%s%N)
	set +e
	/usr/bin/time -v -o "$work/$name.time" "$@" >"$work/$name.out" 2>"$work/$name.err"
	run_status=$?
	set -e
	end=$(date +%s%N)
	run_seconds=$(awk -v ns=$((end - start)) 'BEGIN { printf "%.3f", ns / 1e9 }')
	run_rss_kb=$(awk -F ': ' '/Maximum resident set size/ { print $2 }' "$work/$name.time")
	run_cpu=$(awk -F ': ' '/User time|System time/ { s += $2 } END { printf "%.2f", s }' "$work/$name.time")
}

# Run TOOL once into an empty replica and append a line to results.tsv.
run_once() {
	local round=$1 tool=$2 note='' ok=yes
	reset_replica
	"prepare_$tool"
	local before
	before=$(tree_listing "$master" | sha256sum)

	if [[ $tool == mailrepl ]]; then
		timed_run "$tool-$round" "$top/src/mailrepl" -c "$work/mailrepl.conf" init
	elif ((mbsync_jobs == 1)); then
		timed_run "$tool-$round" mbsync -c "$work/mbsyncrc" -a -q
	else
		# xargs exits with 123 when any mbsync failed.
		timed_run "$tool-$round" xargs -P "$mbsync_jobs" -n 1 mbsync -c "$work/mbsyncrc" -q \
			<<<"$users"
	fi

	case $tool:$run_status in
	mailrepl:0 | mbsync:0) ;;
	mailrepl:2)
		# Exit status 2: the copy finished, but the replica rejected some
		# messages or some files were skipped, each logged as one event.
		local rejected skipped
		rejected=$(grep -c 'event=reject' "$work/mailrepl.log" || true)
		skipped=$(grep -c 'event=skip' "$work/mailrepl.log" || true)
		note="exit 2: $rejected rejected, $skipped skipped"
		;;
	*)
		ok=no
		note="failed with exit status $run_status"
		log "$tool (round $round) $note; its output:"
		tail -n 20 "$work/$tool-$round.err" "$work/$tool-$round.out" >&2 || true
		;;
	esac
	[[ $tool == mbsync ]] && describe_mbsync_writes

	[[ $(tree_listing "$master" | sha256sum) == "$before" ]] ||
		note+="${note:+; }modified the master tree"
	replica_per_user >"$work/replica.counts"
	local total
	total=$(awk -F '\t' '{ n += $2 } END { print n + 0 }' "$work/replica.counts")
	if ! cmp -s <(expected_per_user) "$work/replica.counts"; then
		note+="${note:+; }replica holds $total of $expected_messages messages"
		join -t "$(printf '\t')" <(expected_per_user) "$work/replica.counts" |
			awk -F '\t' '$2 != $3 { printf "  %s: %s messages on the master, %s on the replica\n", $1, $2, $3 }' >&2
		discrepancies=yes
	fi
	[[ $ok == yes ]] || failures=yes

	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$tool" "$run_seconds" \
		"$run_status" "$run_rss_kb" "$run_cpu" "$total" "$ok" "$note" >>"$work/results.tsv"
	log "round $round $tool: ${run_seconds}s exit $run_status, replica holds $total messages${note:+ ($note)}"
}

# Print the machine and software description as Markdown list items.
describe_machine() {
	local cpu mem fs kernel os
	cpu=$(awk -F ': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
	fs=$(df -T -- "$work" | awk 'NR == 2 { print $2 }')
	kernel=$(uname -sr)
	echo "- CPU: $(nproc) cores online, ${cpu:-unknown model}; RAM: $mem"
	echo "- Master tree and replica mail on $fs; kernel $kernel"
	echo "- Load average at the start: $start_load (1, 5 and 15 minutes)"
	echo "- Dovecot $(dovecot --version | cut -d' ' -f1), isync $(mbsync --version | cut -d' ' -f2)," \
		"libetpan $(dpkg-query -W -f='${Version}' libetpan20 2>/dev/null || echo unknown)"
	# shellcheck source=/dev/null
	os=$(. /etc/os-release && echo "$PRETTY_NAME")
	echo "- mailrepl $(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown) on $os"
}

# Summarise results.tsv as Markdown on stdout.
report() {
	python3 - "$work/results.tsv" "$expected_messages" "$expected_bytes" "$(tools)" <<'EOF'
import statistics
import sys

path, messages, size, tools = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split()
runs = []
with open(path) as f:
    for line in f:
        r, tool, secs, status, rss, cpu, total, ok, note = line.rstrip("\n").split("\t")
        runs.append(dict(round=int(r), tool=tool, secs=float(secs), status=int(status),
                         rss=int(rss or 0), cpu=float(cpu), total=int(total), ok=ok == "yes",
                         note=note))


def spread(values, fmt):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


medians = {}
print("| tool | runs | msgs/s median (min–max) | MB/s median (min–max) "
      "| seconds median | peak RSS MiB | CPU s median |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for tool in tools:
    good = [r for r in runs if r["tool"] == tool and r["ok"]]
    if not good:
        print(f"| {tool} | 0 | failed | | | | |")
        continue
    rates = [messages / r["secs"] for r in good]
    mbs = [size / 1e6 / r["secs"] for r in good]
    medians[tool] = statistics.median(rates)
    print(f"| {tool} | {len(good)} | {spread(rates, '{:,.0f}')} | {spread(mbs, '{:.1f}')} "
          f"| {statistics.median(r['secs'] for r in good):.1f} "
          f"| {max(r['rss'] for r in good) / 1024:.0f} "
          f"| {statistics.median(r['cpu'] for r in good):.1f} |")
if len(medians) == 2:
    print(f"\nRatio of the medians, mailrepl / mbsync: **{medians['mailrepl'] / medians['mbsync']:.2f}**")

print("\n| round | tool | seconds | exit | replica messages | note |")
print("| --- | --- | --- | --- | --- | --- |")
for r in runs:
    print(f"| {r['round']} | {r['tool']} | {r['secs']:.2f} | {r['status']} | {r['total']:,} | {r['note']} |")
EOF
}

# Write the section between the markers in doc/benchmarks.md, creating the
# page when it does not exist. Other sections of the page stay as they are.
update_doc() {
	local section=$1 doc=$top/doc/benchmarks.md
	if [[ ! -f $doc ]]; then
		cat >"$doc" <<EOF
# Benchmarks

Measured numbers, each section written by the script it names. Timings on
a shared machine vary between runs, so compare numbers within one section,
which come from one run of its script.

$SECTION_BEGIN
$SECTION_END
EOF
	fi
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

# Print TEXT as a Markdown list item wrapped at 74 columns.
note_item() {
	fmt -w 72 <<<"$1" | sed '1s/^/- /; 2,$s/^/  /'
}

# Print a whole number with commas between groups of three digits.
with_commas() {
	sed -E ':a; s/([0-9])([0-9]{3})($|[^0-9])/\1,\2\3/; ta' <<<"$1"
}

# Print the Markdown section for doc/benchmarks.md.
doc_section() {
	local command=$1 table=$2 elapsed=$3 mbsync_how
	if ((mbsync_jobs == 1)); then
		mbsync_how="\`mbsync -a\` (one channel per user, run one after another over one connection at a time)"
	else
		mbsync_how="$mbsync_jobs mbsync processes at once, each running one user's channel"
	fi
	echo "## mailrepl init and mbsync, initial copy into Dovecot"
	echo
	fmt -w 74 <<EOF
Written by \`bench/init-vs-mbsync.sh\` on $(date -u +%Y-%m-%d); bench/README.md
describes the method. Both tools copy the same master tree into an
emptied private Dovecot on 127.0.0.1 over IMAP with STARTTLS, logged in
as the Dovecot master user on behalf of each user. The tree, laid out by
\`scripts/corpus.sh\`, has $(with_commas "$expected_messages") messages of $(with_commas "$expected_bytes") bytes
for $(wc -w <<<"$users") users, with $folder_count folders in all. Each round runs mailrepl (4 workers)
and then $mbsync_how. Before
each run the replica's mail and the tool's own state are deleted and the
page cache is written back with \`sync\`. MB/s counts the message files'
bytes on disk (LF line ends), in units of 10^6 bytes. Peak RSS is the
largest of the rounds.
EOF
	cat <<EOF

Command: \`$command\` (the whole benchmark took $elapsed s)

$(describe_machine)

$table

Notes:

EOF
	note_item "${mbsync_writes:-mbsync did not run.} It reads a fresh copy of the master tree in every round, and the script checks after every run of either tool that the master tree itself is unchanged. Its sync state goes to a directory of its own (\`SyncState\`)."
	note_item "mbsync 1.4.4 rejects the Dovecot certificate for \`Host 127.0.0.1\` although its subjectAltName lists that IP address, so mbsync trusts the server certificate itself (\`CertificateFile\`). mailrepl checks the CA signature and the IP address."
	note_item "The tools, Dovecot and anything else running share the same cores, and both tools read the master tree from a warm page cache."
	note_item "The work differs a little: mailrepl also replicates keywords and subscriptions and records every message in its SQLite state, while mbsync 1.4.4 sends system flags only."
}

cleanup() {
	local status=$?
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
	local command="bench/init-vs-mbsync.sh${*:+ $*}" started=$SECONDS
	parse_args "$@"
	# Other work on the machine skews the timings, so the doc records it.
	start_load=$(cut -d' ' -f1-3 /proc/loadavg)
	[[ $EUID -eq 0 ]] || die "run as root: the private Dovecot must switch to its mail user"

	install_packages
	if [[ -n $workdir ]]; then
		[[ ! -e $workdir ]] || die "--workdir $workdir already exists; name a new directory"
		mkdir -p -- "$workdir"
		work=$(cd -- "$workdir" && pwd -P)
	else
		work=$(mktemp -d "${TMPDIR:-/tmp}/mailrepl-bench.XXXXXX")
		# Dovecot's mail user must reach the replica's mail below it.
		chmod 755 -- "$work"
	fi
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	replica=$work/replica
	mkdir -p -- "$replica"
	uses mailrepl && build_mailrepl

	layout_master
	start_replica
	write_password_file
	: >"$work/results.tsv"
	failures=no
	discrepancies=no

	local round tool
	for ((round = 1; round <= rounds; round++)); do
		for tool in $(tools); do
			run_once "$round" "$tool"
		done
	done
	stop_replica

	local table elapsed
	table=$(report)
	elapsed=$((SECONDS - started))
	echo "$table"
	echo
	echo "${mbsync_writes:-}"
	echo "The whole benchmark took $elapsed s."

	if [[ $failures == yes ]]; then
		log "some runs failed; doc/benchmarks.md is left as it is"
		return 1
	fi
	if [[ $write_doc == yes ]]; then
		doc_section "$command" "$table" "$elapsed" >"$work/section.md"
		update_doc "$work/section.md"
	fi
	if [[ $discrepancies == yes ]]; then
		log "the replica did not always hold every message; see the note column"
		return 1
	fi
}

# bench/peers.sh sources this file for its functions; only a direct run
# runs the benchmark.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	main "$@"
fi
