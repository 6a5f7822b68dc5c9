#!/bin/bash
# Time "mailrepl init" beside its peers on the same Maildir++ tree and the
# same private Dovecot, in one run: mbsync pushing over IMAP, "doveadm
# backup" writing into the replica's storage directly, and "cp -r" plus
# "sync" as the floor. Run as root from anywhere in a clone:
#
#   bench/peers.sh [--rounds N] [--scale TOTAL] [--users N] [--write-doc] ...
#
# The functions shared with bench/init-vs-mbsync.sh (layout, replica,
# mailrepl and mbsync configuration, timing, machine description, doc
# update) come from that script. bench/README.md describes the method.
set -euo pipefail

top=$(cd -- "$(dirname -- "$0")/.." && pwd -P)
# shellcheck source=bench/init-vs-mbsync.sh
. "$top/bench/init-vs-mbsync.sh"

SECTION_BEGIN='<!-- peers:begin -->'
SECTION_END='<!-- peers:end -->'
readonly ALL_TOOLS="mailrepl mbsync doveadm doveadm_par cp"

rounds=3
mbsync_jobs=1
doveadm_jobs=4
cache=$top/work/corpus
layout_args=(--users 20 --scale 50000)
rss_scale=10000
profile=yes
tool_list=$ALL_TOOLS
write_doc=no
keep=no
workdir=

usage() {
	cat <<EOF
Usage: $0 [OPTIONS]

Lays out the SpamAssassin corpus as the master's Maildir++ tree (by default
50,000 messages for 20 users), starts a private Dovecot on 127.0.0.1 as the
replica, and times "mailrepl init", mbsync, "doveadm backup" and "cp -r"
plus "sync", each into an emptied replica, in rotating order. Then it runs
mailrepl once on a smaller tree to compare its peak RSS, and profiles one
more "mailrepl init" with perf. Prints Markdown tables. Run as root;
missing Debian packages are installed with apt-get.

Options:
  --rounds N        runs of each tool (default: 3)
  --scale TOTAL     messages in the master tree (default: 50000)
  --users N         users user01..userNN (default: 20)
  --rss-scale TOTAL messages in the tree of the extra RSS run of mailrepl
                    (default: 10000; 0 skips that run)
  --tools LIST      comma-separated subset of: ${ALL_TOOLS// /,}
                    (ratios need mailrepl; the doc is written only for all)
  --mbsync-jobs N   N mbsync processes at once, one user each (default: 1)
  --doveadm-jobs N  doveadm_par runs N doveadm backup processes at once,
                    one user each (default: 4, as mailrepl's workers);
                    doveadm runs one after another
  --no-profile      skip the perf profile of mailrepl init
  --cache DIR       corpus download cache (default: $top/work/corpus)
  --workdir DIR     a new directory for all files (default: a new one under
                    \${TMPDIR:-/tmp}); deleted at the end unless --keep
  --keep            keep the work directory
  --write-doc       write the results to doc/benchmarks.md between
                    $SECTION_BEGIN and $SECTION_END
EOF
}

die() {
	echo "peers: $*" >&2
	exit 1
}

log() {
	echo "peers: $*" >&2
}

parse_args() {
	local scale=50000 nusers=20
	while (($#)); do
		case $1 in
		--rounds | --mbsync-jobs | --doveadm-jobs | --scale | --users)
			positive_number "$1" "${2:-}"
			case $1 in
			--rounds) rounds=$2 ;;
			--mbsync-jobs) mbsync_jobs=$2 ;;
			--doveadm-jobs) doveadm_jobs=$2 ;;
			--scale) scale=$2 ;;
			--users) nusers=$2 ;;
			esac
			shift 2
			;;
		--rss-scale)
			[[ ${2:-} =~ ^[0-9]+$ ]] || die "--rss-scale needs a whole number, got '${2:-}'"
			rss_scale=$2
			shift 2
			;;
		--tools)
			local t
			for t in ${2//,/ }; do
				[[ " $ALL_TOOLS " == *" $t "* ]] ||
					die "--tools: unknown tool '$t'; choose from ${ALL_TOOLS// /,}"
			done
			[[ -n ${2:-} ]] || die "--tools needs a list"
			tool_list=${2//,/ }
			shift 2
			;;
		--no-profile)
			profile=no
			shift
			;;
		--cache | --workdir)
			[[ -n ${2:-} ]] || die "$1 needs a directory"
			[[ $1 == --cache ]] && cache=$2 || workdir=$2
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
	layout_args=(--users "$nusers" --scale "$scale")
}

# Print the tools in the order of ROUND: the list rotated by one place per
# round, so every tool runs early and late, after each of the others.
round_order() {
	local -a list
	read -ra list <<<"$tool_list"
	local n=${#list[@]} i
	for ((i = 0; i < n; i++)); do
		printf '%s ' "${list[$(((i + $1 - 1) % n))]}"
	done
}

# Install what init-vs-mbsync.sh installs, and perf for the profile.
install_peer_packages() {
	install_packages
	[[ $profile == no ]] || command -v perf >/dev/null 2>&1 || {
		log "installing linux-perf"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-perf >&2 ||
			die "apt-get install linux-perf failed; use --no-profile to skip the profile"
	}
}

# doveadm backup reads a Maildir through Dovecot's own storage code, which
# writes its index and UID list files into the tree it reads. It therefore
# gets a fresh copy of the master tree, owned by Dovecot's mail user,
# made before each run and outside the timing.
prepare_doveadm() {
	prepare_dsync 1
}

prepare_doveadm_par() {
	prepare_dsync "$doveadm_jobs"
}

prepare_dsync() {
	local jobs=$1
	rm -rf -- "$work/dsync-src"
	cp -a -- "$master" "$work/dsync-src"
	rm -f -- "$work/dsync-src/.mailrepl-corpus"
	chown -R vmail:vmail -- "$work/dsync-src"
	tree_listing "$work/dsync-src" >"$work/dsync.before"
	# -R reverses the direction: without it, backup would make the
	# location named here (the copy) equal to the user's empty mailbox on
	# the replica, deleting the copy's messages. xargs exits 123 when one
	# of the doveadm runs failed.
	{
		printf 'printf "%%s\\n" %s |\n' "$users"
		printf "\txargs -n 1 -P %s sh -c 'doveadm -c \"\$0\" backup -R -u \"\$2\" \"maildir:\$1/\$2/Maildir\"' \\\\\n" "$jobs"
		printf "\t'%s' '%s'\n" "$DOVECOT_CONF" "$work/dsync-src"
	} >"$work/doveadm-all.sh"
}

# cp writes as Dovecot's mail user into the replica's mail directory, so
# that Dovecot can index the result for the count and the verify.
prepare_cp() {
	{
		echo 'set -e'
		printf 'for user in %s; do\n' "$users"
		printf "\tmkdir -- '%s'/\"\$user\"\n" "$DOVECOT_MAIL"
		printf "\tcp -r -- '%s'/\"\$user\"/Maildir '%s'/\"\$user\"/Maildir\n" "$master" "$DOVECOT_MAIL"
		echo 'done'
		echo 'sync'
	} >"$work/cp-all.sh"
}

# Describe what doveadm backup changed in its copy of the master tree, once.
describe_doveadm_writes() {
	[[ -z ${doveadm_writes:-} ]] || return 0
	tree_listing "$work/dsync-src" >"$work/dsync.after"
	local added renamed
	added=$(comm -13 <(cut -f1 "$work/dsync.before") <(cut -f1 "$work/dsync.after") |
		sed -E 's|.*/||; s/^(dovecot-uidvalidity)\.[0-9a-f]+$/\1.<hex>/' | sort | uniq -c | sort -rn |
		awk '{ printf "%s%s (%s)", sep, $2, $1; sep = ", " }')
	renamed=$(comm -23 <(cut -f1 "$work/dsync.before") <(cut -f1 "$work/dsync.after") | wc -l)
	doveadm_writes="In its copy of the master tree doveadm backup created ${added:-no files} and renamed or removed $renamed files."
}

# Print the command that copies with TOOL, one word per line.
tool_command() {
	case $1 in
	mailrepl)
		printf '%s\n' "$top/src/mailrepl" -c "$work/mailrepl.conf" init
		;;
	mbsync)
		if ((mbsync_jobs == 1)); then
			printf '%s\n' mbsync -c "$work/mbsyncrc" -a -q
		else
			printf '%s\n' bash -c "xargs -P $mbsync_jobs -n 1 mbsync -c '$work/mbsyncrc' -q <<<'$users'"
		fi
		;;
	doveadm | doveadm_par)
		printf '%s\n' bash "$work/doveadm-all.sh"
		;;
	cp)
		printf '%s\n' runuser -u vmail -- bash "$work/cp-all.sh"
		;;
	esac
}

# Compare the master with the replica with "mailrepl verify" and print
# "missing<TAB>extra<TAB>other<TAB>unpaired": messages or folders absent
# from the replica, messages only on the replica, differences in flags,
# INTERNALDATE or subscriptions, and the sum over folders of the
# difference between missing and extra messages (a folder whose messages
# all arrived changed has as many extra as missing ones).
verify_replica() {
	local out=$1
	set +e
	"$top/src/mailrepl" -c "$work/mailrepl.conf" verify >"$out" 2>&1
	set -e
	awk '
		/: folder missing on the replica|: folder exists only on the/ { m++; u++; next }
		/: missing on the replica/ { m++; f[substr($0, 1, index($0, ": missing") - 1)]++; next }
		/: extra on the replica/ { e++; f[substr($0, 1, index($0, ": extra") - 1)]--; next }
		/^verify:/ { next }
		/: / { o++ }
		END {
			for (k in f) u += f[k] < 0 ? -f[k] : f[k]
			printf "%d\t%d\t%d\t%d\n", m, e, o, u
		}' "$out"
}

# mbsync 1.4 adds an "X-TUID:" header line to every message it appends,
# to find the message again when the server sends no APPENDUID. Succeed
# when the first message of the first user's INBOX on the replica has it.
mbsync_marks_messages() {
	local user=${users%% *}
	doveadm -c "$DOVECOT_CONF" fetch -u "$user" hdr mailbox INBOX 1 2>/dev/null | grep -q '^X-TUID: '
}

# Succeed when every message that VERIFY_OUTPUT lists as missing has a bare
# CR (one not followed by LF) in its master file. mailrepl sends such a CR
# as CRLF, as its verify expects, but doveadm backup keeps the file's bytes,
# so verify lists that message as missing and the stored one as extra.
all_missing_have_bare_cr() {
	python3 - "$1" "$master" <<'EOF'
import os
import re
import sys

names = set()
with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
    for line in f:
        m = re.search(r": missing on the replica: (\S+) \(", line)
        if m:
            names.add(m.group(1))
found = 0
for folder, _, files in os.walk(sys.argv[2]):
    for name in files:
        base = name.split(":2,")[0]
        if base in names:
            with open(os.path.join(folder, name), "rb") as msg:
                if not re.search(rb"\r(?!\n)", msg.read()):
                    sys.exit(1)
            found += 1
sys.exit(0 if names and found >= len(names) else 1)
EOF
}

# Print a short account of the kinds of metadata differences in FILE.
difference_kinds() {
	sed -nE 's/^[^:]*: (flags differ|INTERNALDATE differs|subscribed on the [a-z]+ only).*/\1/p' "$1" |
		sort | uniq -c | awk '{ c = $1; $1 = ""; printf "%s%s%s", sep, c, $0; sep = ", " }'
}

# Run TOOL once into an empty replica and append a line to results.tsv.
run_peer_once() {
	local round=$1 tool=$2 note='' ok=yes
	reset_replica
	prepare_mailrepl
	[[ $tool == mailrepl ]] || "prepare_$tool"
	local before cmd
	before=$(tree_listing "$master" | sha256sum)
	mapfile -t cmd < <(tool_command "$tool")
	timed_run "$tool-$round" "${cmd[@]}"

	if ((run_status != 0)); then
		ok=no
		note="failed with exit status $run_status"
		log "$tool (round $round) $note; its output:"
		tail -n 20 "$work/$tool-$round.err" "$work/$tool-$round.out" >&2 || true
	fi
	case $tool in
	mbsync) describe_mbsync_writes ;;
	doveadm | doveadm_par) describe_doveadm_writes ;;
	esac
	[[ $(tree_listing "$master" | sha256sum) == "$before" ]] ||
		note+="${note:+; }modified the master tree"

	replica_per_user >"$work/replica.counts"
	local total missing extra other
	total=$(awk -F '\t' '{ n += $2 } END { print n + 0 }' "$work/replica.counts")
	if ! cmp -s <(expected_per_user) "$work/replica.counts"; then
		note+="${note:+; }replica holds $total of $expected_messages messages"
		discrepancies=yes
	fi
	IFS=$'\t' read -r missing extra other unpaired < <(verify_replica "$work/$tool-$round.verify")
	if [[ $tool == mbsync ]] && ((unpaired == 0 && missing > 0)) && mbsync_marks_messages; then
		# Every message arrived with one more header line: compared
		# as the count and the per-folder pairing above.
		note+="${note:+; }verify: $missing messages differ by mbsync's X-TUID line"
	elif ((unpaired == 0 && missing > 0)) && all_missing_have_bare_cr "$work/$tool-$round.verify"; then
		note+="${note:+; }verify: $missing messages with bare CR stored with other line ends"
	elif ((missing + extra > 0)); then
		note+="${note:+; }verify: $missing missing, $extra extra"
		discrepancies=yes
	fi
	[[ $ok == yes ]] || failures=yes
	echo "$(difference_kinds "$work/$tool-$round.verify")" >"$work/$tool.kinds"

	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$tool" "$run_seconds" \
		"$run_status" "$run_rss_kb" "$run_cpu" "$total" "$ok" "$other" "$note" \
		>>"$work/results.tsv"
	log "round $round $tool: ${run_seconds}s exit $run_status, replica holds $total messages, verify $missing missing $extra extra $other other${note:+ ($note)}"
}

# Run mailrepl once on a smaller tree for its peak RSS. Sets small_* from
# the run; the main tree and its results stay as they are.
rss_run() {
	local big_master=$master big_expected=$expected_messages big_users=$users
	local big_bytes=$expected_bytes big_folders=$folder_count
	layout_args_small=("${layout_args[@]}")
	layout_args_small[3]=$rss_scale
	master=$work/master-small
	bash "$top/scripts/corpus.sh" layout "$cache" "$master" "${layout_args_small[@]}" >&2
	small_messages=$(head -n 1 "$master/.mailrepl-corpus" | sed -E 's/.* messages=([0-9]+).*/\1/')
	reset_replica
	prepare_mailrepl
	timed_run mailrepl-small "$top/src/mailrepl" -c "$work/mailrepl.conf" init
	small_status=$run_status small_seconds=$run_seconds small_rss_kb=$run_rss_kb small_cpu=$run_cpu
	small_total=$(replica_per_user | awk -F '\t' '{ n += $2 } END { print n + 0 }')
	log "RSS run at $small_messages messages: ${run_seconds}s exit $run_status, peak RSS ${run_rss_kb} KiB, replica holds $small_total"
	rm -rf -- "$master"
	master=$big_master expected_messages=$big_expected users=$big_users
	expected_bytes=$big_bytes folder_count=$big_folders
}

# Profile one more mailrepl init on the main tree: perf samples every
# process on both cores (cpu-clock, with call graphs), and counts the
# fsync and fdatasync calls system-wide. Writes the perf-*.txt summaries
# and a copy of mailrepl's log into the work directory.
profile_run() {
	reset_replica
	prepare_mailrepl
	sync
	local start end
	start=$(date +%s%N)
	set +e
	perf stat -a -x, -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync \
		-o "$work/perf-stat.csv" -- \
		perf record -a -g -F 499 -e cpu-clock -o "$work/perf.data" -- \
		"$top/src/mailrepl" -c "$work/mailrepl.conf" init >"$work/profile-run.out" 2>&1
	profile_status=$?
	set -e
	end=$(date +%s%N)
	profile_seconds=$(awk -v ns=$((end - start)) 'BEGIN { printf "%.1f", ns / 1e9 }')
	profile_total=$(replica_per_user | awk -F '\t' '{ n += $2 } END { print n + 0 }')
	perf report -i "$work/perf.data" --no-children --sort comm --stdio 2>/dev/null |
		awk '$1 ~ /^[0-9.]+%$/ && NF == 2' >"$work/perf-comm.txt" || true
	perf report -i "$work/perf.data" --no-children --comm mailrepl --percentage relative \
		--sort dso,sym --stdio -g none 2>/dev/null |
		grep -E '^ +[0-9]' | head -n 25 >"$work/perf-mailrepl.txt" || true
	perf report -i "$work/perf.data" --no-children --comm imap --percentage relative \
		--sort dso,sym --stdio -g none 2>/dev/null |
		grep -E '^ +[0-9]' | head -n 25 >"$work/perf-imap.txt" || true
	perf report -i "$work/perf.data" --no-children --sort comm,dso --stdio -g none 2>/dev/null |
		grep -E '^ +[0-9]' | head -n 25 >"$work/perf-comm-dso.txt" || true
	cp -- "$work/mailrepl.log" "$work/profile-mailrepl.log"
	log "profile run: exit $profile_status, replica holds $profile_total messages"
}

# Summarise results.tsv and the RSS run as Markdown on stdout.
peer_report() {
	python3 - "$work" "$expected_messages" "$expected_bytes" "$tool_list" \
		"${small_messages:-0}" "${small_rss_kb:-0}" "${small_cpu:-0}" \
		"${small_seconds:-0}" "${small_status:-}" "${small_total:-0}" <<'EOF'
import os
import statistics
import sys

work, messages, size, tools = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split()
small_msgs, small_rss, small_cpu, small_secs = int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
small_status, small_total = sys.argv[9], int(sys.argv[10])
runs = []
with open(os.path.join(work, "results.tsv")) as f:
    for line in f:
        r, tool, secs, status, rss, cpu, total, ok, other, note = line.rstrip("\n").split("\t")
        runs.append(dict(round=int(r), tool=tool, secs=float(secs), status=int(status),
                         rss=int(rss or 0), cpu=float(cpu), total=int(total), ok=ok == "yes",
                         other=int(other), note=note))


def spread(values, fmt):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


medians = {}
print("| tool | runs | msgs/s median (min–max) | MB/s median (min–max) "
      "| seconds median | peak RSS MiB (max) | CPU s median |")
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
          f"| {max(r['rss'] for r in good) / 1024:.1f} "
          f"| {statistics.median(r['cpu'] for r in good):.1f} |")

if "mailrepl" in medians and len(medians) > 1:
    print("\n| mailrepl / peer | ratio of median msgs/s | lowest to highest (round by round) |")
    print("| --- | --- | --- |")
    for tool in tools:
        if tool == "mailrepl" or tool not in medians:
            continue
        per_round = []
        for r in sorted({r["round"] for r in runs}):
            a = [x for x in runs if x["round"] == r and x["tool"] == "mailrepl" and x["ok"]]
            b = [x for x in runs if x["round"] == r and x["tool"] == tool and x["ok"]]
            if a and b:
                per_round.append(b[0]["secs"] / a[0]["secs"])
        rng = f"{min(per_round):.2f}–{max(per_round):.2f}" if per_round else ""
        print(f"| {tool} | **{medians['mailrepl'] / medians[tool]:.2f}** | {rng} |")

ml = [r for r in runs if r["tool"] == "mailrepl" and r["ok"]]
if ml and small_msgs:
    print("\n| mailrepl init | messages | seconds | peak RSS MiB | CPU s (user + system) |")
    print("| --- | --- | --- | --- | --- |")
    note = "" if small_status == "0" and small_total == small_msgs else f" (exit {small_status}, replica {small_total:,})"
    print(f"| RSS run | {small_msgs:,}{note} | {small_secs:.1f} | {small_rss / 1024:.1f} | {small_cpu:.1f} |")
    for r in ml:
        print(f"| round {r['round']} | {messages:,} | {r['secs']:.1f} | {r['rss'] / 1024:.1f} | {r['cpu']:.1f} |")

print("\n| round | tool | seconds | exit | replica messages | other differences (verify) | note |")
print("| --- | --- | --- | --- | --- | --- | --- |")
for r in runs:
    print(f"| {r['round']} | {r['tool']} | {r['secs']:.2f} | {r['status']} | {r['total']:,} "
          f"| {r['other']:,} | {r['note']} |")
EOF
}

# Print the profile as Markdown on stdout: the samples by process and in
# groups (mailrepl, Dovecot, kernel threads, idle, other), the hottest
# symbols of mailrepl and of Dovecot's imap processes, and the fsync calls
# per APPEND transaction from mailrepl's batch log lines.
profile_report() {
	[[ -f $work/perf-comm.txt ]] || return 0
	python3 - "$work" "$profile_seconds" "$expected_messages" "$profile_status" "$profile_total" <<'EOF'
import os
import re
import statistics
import sys

work, seconds, messages, status, total = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])


def rows(name):
    out = []
    with open(os.path.join(work, name)) as f:
        for line in f:
            parts = line.split()
            if parts and parts[0].endswith("%"):
                out.append((float(parts[0][:-1]), parts[1:]))
    return out


dovecot = {"imap", "imap-login", "dovecot", "auth", "anvil", "log", "config", "stats", "doveadm"}
groups = {"mailrepl": 0.0, "Dovecot (imap, imap-login, dovecot, auth, ...)": 0.0,
          "kernel threads (kworker, jbd2, ...)": 0.0, "idle (swapper)": 0.0, "other processes": 0.0}
comm = rows("perf-comm.txt")
for share, (name, *_) in comm:
    if name == "mailrepl":
        key = "mailrepl"
    elif name in dovecot:
        key = "Dovecot (imap, imap-login, dovecot, auth, ...)"
    elif name == "swapper":
        key = "idle (swapper)"
    elif re.match(r"(kworker|jbd2|ksoftirqd|rcu_|kcompactd|migration)", name):
        key = "kernel threads (kworker, jbd2, ...)"
    else:
        key = "other processes"
    groups[key] += share
note = "" if status == "0" and total == messages else f", exit {status}, replica {total:,} messages"
print(f"The profiled run copied {messages:,} messages in {seconds:.1f} s{note}. "
      "Share of all samples on both cores (`perf record -a -g -F 499 -e cpu-clock`), "
      f"in core-seconds of the {2 * seconds:.0f} available:")
print()
print("| group | share | core-seconds |")
print("| --- | --- | --- |")
for key, share in groups.items():
    print(f"| {key} | {share:.1f}% | {share / 100 * 2 * seconds:.1f} |")
print()
print("Processes above 1%: " + ", ".join(f"{n[0]} {s:.1f}%" for s, n in comm if s >= 1.0) + ".")
for title, name in (("mailrepl", "perf-mailrepl.txt"), ("Dovecot's imap processes", "perf-imap.txt")):
    print()
    print(f"Hottest symbols in {title} (share of that process's samples):")
    print()
    print("| share | object | symbol |")
    print("| --- | --- | --- |")
    for share, parts in rows(name)[:10]:
        print(f"| {share:.1f}% | {parts[0]} | `{' '.join(parts[2:])}` |")

counts = {}
try:
    with open(os.path.join(work, "perf-stat.csv")) as f:
        for line in f:
            parts = line.split(",")
            if len(parts) > 2 and parts[2].startswith("syscalls:"):
                counts[parts[2].split("_")[-1]] = int(parts[0]) if parts[0].isdigit() else 0
except FileNotFoundError:
    pass
batches = []
ms = []
with open(os.path.join(work, "profile-mailrepl.log")) as f:
    for line in f:
        if "event=batch" in line:
            m = re.search(r" count=(\d+)", line)
            t = re.search(r" ms=(\d+)", line)
            if m:
                batches.append(int(m.group(1)))
                ms.append(int(t.group(1)) if t else 0)
print()
if batches:
    print(f"mailrepl sent {len(batches):,} APPEND commands (MULTIAPPEND transactions) for "
          f"{sum(batches):,} messages: {statistics.median(batches):.0f} messages per command at "
          f"the median, {statistics.mean(batches):.1f} on average, at most {max(batches)}; a command "
          f"took {statistics.median(ms):.0f} ms at the median.")
if counts:
    fs, fds = counts.get("fsync", 0), counts.get("fdatasync", 0)
    per = f" ({fs / len(batches):.2f} fsync and {fds / len(batches):.2f} fdatasync per APPEND command)" if batches else ""
    print(f"System-wide during the run: {fs:,} fsync and {fds:,} fdatasync calls{per}.")
EOF
}

peer_doc_section() {
	local command=$1 table=$2 profile_md=$3 elapsed=$4
	echo "## mailrepl init beside mbsync, doveadm backup and cp"
	echo
	fmt -w 74 <<EOF
Written by \`bench/peers.sh\` on $(date -u +%Y-%m-%d); bench/README.md
describes the method. Every tool copies the same master tree, laid out by
\`scripts/corpus.sh\` ($(with_commas "$expected_messages") messages of $(with_commas "$expected_bytes") bytes for
$(wc -w <<<"$users") users, $folder_count folders in all), into the same
private Dovecot on 127.0.0.1, emptied before every run. The tools run
in a different order in each round (the list rotated by one). Only the
copy is timed; a \`sync\` runs right before it. MB/s counts the message
files' bytes on disk, in units of 10^6 bytes. After every run the script
counts the messages per user with \`doveadm mailbox status\` and compares
the whole replica with the master with \`mailrepl verify\`.
EOF
	cat <<EOF

Command: \`$command\` (the whole benchmark took $elapsed s)

$(describe_machine)

How each tool ran:

EOF
	note_item "**mailrepl**: \`mailrepl -c CONF init\` with \`workers = 4\`, STARTTLS, logged in as the Dovecot master user on behalf of each user."
	note_item "**mbsync** (isync $(mbsync --version | cut -d' ' -f2)): one channel per user with \`Patterns *\`, \`Create Far\`, \`Sync Push\`, \`Expunge None\`, \`CopyArrivalDate yes\`, STARTTLS as \`USER*repladmin\`; $(if ((mbsync_jobs == 1)); then echo "\`mbsync -a -q\`, the users one after another"; else echo "$mbsync_jobs mbsync processes at once, one user each"; fi). It reads a fresh copy of the master tree made before the run. ${mbsync_writes:-}"
	note_item "**doveadm**: \`doveadm -c REPLICA_CONF backup -R -u USER maildir:COPY/USER/Maildir\`, the users one after another (doveadm) or $doveadm_jobs users at once (doveadm_par, with \`xargs -P $doveadm_jobs\`). The replica's own \`mail_location = maildir:MAIL/%u/Maildir\` is the destination; \`-R\` makes the location on the command line the source (without it, backup would empty the copy to match the empty replica). It runs as the mail user \`vmail\` on a copy of the master tree owned by that user, made before the run, because it writes Dovecot's index files into the tree it reads. ${doveadm_writes:-}"
	note_item "**cp**: as the mail user, \`mkdir MAIL/USER\` and \`cp -r MASTER/USER/Maildir MAIL/USER/Maildir\` for each user, then \`sync\`, all timed. Dovecot indexes the copied files only when the count after the run opens them. \`cp -r\` does not keep mtimes, so Dovecot's INTERNALDATE differs from the master."
	cat <<EOF

$table

Where the time goes, from one more \`mailrepl init\` on the same tree under perf:

$profile_md

Notes:

EOF
	note_item "The count \"other differences\" is what \`mailrepl verify\` reported besides missing or extra messages. mailrepl: ${mailrepl_kinds:-none}. mbsync: ${mbsync_kinds:-none}. doveadm: ${doveadm_kinds:-none}. doveadm_par: ${doveadm_par_kinds:-none}. cp: ${cp_kinds:-none}."
	note_item "mbsync 1.4 adds an \`X-TUID:\` header line to every message it appends, so \`mailrepl verify\` lists each of its messages as missing and one as extra. The script accepts that when every folder has as many extra as missing messages, the counts per user match and the replica's first INBOX message has the line."
	note_item "doveadm backup stores a message file's bytes as they are, while mailrepl sends a bare CR (one not followed by LF) as CRLF, which is what \`mailrepl verify\` expects. A message with bare CRs therefore shows as one missing and one extra message on doveadm's replicas; the script accepts that only when every such master file has a bare CR and the folders pair up."
	note_item "The tools, Dovecot and anything else running share the same two cores, and every tool reads a tree from a warm page cache."
}

peers_main() {
	local command="bench/peers.sh${*:+ $*}" started=$SECONDS
	parse_args "$@"
	start_load=$(cut -d' ' -f1-3 /proc/loadavg)
	[[ $EUID -eq 0 ]] || die "run as root: the private Dovecot must switch to its mail user"
	install_peer_packages
	if [[ -n $workdir ]]; then
		[[ ! -e $workdir ]] || die "--workdir $workdir already exists; name a new directory"
		mkdir -p -- "$workdir"
		work=$(cd -- "$workdir" && pwd -P)
	else
		work=$(mktemp -d "${TMPDIR:-/tmp}/mailrepl-peers.XXXXXX")
	fi
	# Dovecot's mail user must reach the replica and the trees below it.
	chmod 755 -- "$work"
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	replica=$work/replica
	mkdir -p -- "$replica"
	build_mailrepl

	layout_master
	start_replica
	write_password_file
	: >"$work/results.tsv"
	failures=no
	discrepancies=no

	local round tool
	for ((round = 1; round <= rounds; round++)); do
		for tool in $(round_order "$round"); do
			run_peer_once "$round" "$tool"
		done
	done
	for tool in $tool_list; do
		printf -v "${tool}_kinds" '%s' "$(cat "$work/$tool.kinds" 2>/dev/null)"
	done
	[[ " $tool_list " == *" mailrepl "* ]] && ((rss_scale > 0)) && rss_run
	[[ $profile == yes ]] && profile_run
	stop_replica

	local table profile_md elapsed
	table=$(peer_report)
	profile_md=$(profile_report)
	elapsed=$((SECONDS - started))
	echo "$table"
	echo
	echo "$profile_md"
	echo
	echo "${mbsync_writes:-}"
	echo "${doveadm_writes:-}"
	echo "The whole benchmark took $elapsed s."

	if [[ $failures == yes ]]; then
		log "some runs failed; doc/benchmarks.md is left as it is"
		return 1
	fi
	if [[ $write_doc == yes ]]; then
		peer_doc_section "$command" "$table" "$profile_md" "$elapsed" >"$work/section.md"
		update_doc "$work/section.md"
	fi
	if [[ $discrepancies == yes ]]; then
		log "after some runs the replica lacked messages or had extra ones; see the note column"
		return 1
	fi
}

peers_main "$@"
