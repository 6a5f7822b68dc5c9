#!/usr/bin/env python3
"""Compare a Maildir++ tree with a replica over IMAP, independently of
mailrepl's own code: a second opinion for the end-to-end tests.

For every user and folder it compares the multiset of message contents
(SHA-256 of the CRLF form), the system flags and keywords of each
content, and the subscriptions. It prints one line per difference, then
a summary with the missing and duplicated counts, and exits 1 when
anything differs.

Usage: imapcompare.py MAILROOT HOST PORT CAFILE ADMIN PASSWORD [USER...]
"""
import collections
import hashlib
import imaplib
import os
import re
import ssl
import sys

FLAG_LETTERS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered",
                "S": "\\Seen", "T": "\\Deleted"}


def crlf_digest(data):
    """Hash data as the replica stores it: bare LF and CR become CRLF.
    Dovecot 2.3 returns a stored NUL as 0x80 in BODY[], so NUL is hashed
    as 0x80 on both sides."""
    data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    data = data.replace(b"\n", b"\r\n").replace(b"\0", b"\x80")
    return hashlib.sha256(data).hexdigest()


def read_keywords(folder_dir):
    table = {}
    try:
        with open(os.path.join(folder_dir, "dovecot-keywords"), "rb") as f:
            for line in f:
                parts = line.decode("utf-8", "replace").split(None, 1)
                if len(parts) == 2 and parts[0].isdigit():
                    table[int(parts[0])] = parts[1].strip()
    except FileNotFoundError:
        pass
    return table


def master_flags(letters, keywords, in_new):
    flags = set()
    for ch in letters:
        if ch in FLAG_LETTERS:
            flags.add(FLAG_LETTERS[ch])
        elif ch == "P":
            flags.add("$forwarded")
        elif "a" <= ch <= "z" and (ord(ch) - 97) in keywords:
            flags.add(keywords[ord(ch) - 97].lower())
    if in_new:
        flags.discard("\\Seen")
    return frozenset(f if f.startswith("\\") else f.lower() for f in flags)


def master_folder(folder_dir):
    """Contents of one folder: a Counter of (digest, flags)."""
    keywords = read_keywords(folder_dir)
    found = collections.Counter()
    for sub in ("cur", "new"):
        d = os.path.join(folder_dir, sub)
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            path = os.path.join(d, name)
            if name.startswith(".") or not os.path.isfile(path):
                continue
            if os.path.getsize(path) == 0:
                continue
            uniq, sep, letters = name.rpartition(":2,")
            if not sep:
                uniq, letters = name, ""
            if ":" in uniq:
                continue  # malformed: mailrepl skips it and says so
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            flags = master_flags(letters, keywords, sub == "new")
            found[(crlf_digest(data), flags)] += 1
    return found


def master_tree(user_dir):
    folders = {}
    if os.path.isdir(os.path.join(user_dir, "cur")):
        folders["INBOX"] = master_folder(user_dir)
    for name in os.listdir(user_dir):
        d = os.path.join(user_dir, name)
        if (name.startswith(".") and not name.startswith("..")
                and os.path.isdir(d)
                and (os.path.isdir(os.path.join(d, "cur"))
                     or os.path.isdir(os.path.join(d, "new")))):
            folders[name[1:]] = master_folder(d)
    subs = set()
    try:
        with open(os.path.join(user_dir, "subscriptions"), "rb") as f:
            for line in f:
                line = line.decode("utf-8", "replace").rstrip("\r\n")
                if line and not line.startswith("V\t"):
                    subs.add(line.replace("\t", "."))
    except FileNotFoundError:
        pass
    return folders, subs


LIST_RE = re.compile(rb'\((?P<flags>[^)]*)\) (?P<sep>"[^"]*"|NIL) (?P<name>.*)$')


def parse_list(lines):
    names = {}
    for line in lines:
        if not line:
            continue
        m = LIST_RE.match(line)
        if not m:
            continue
        name = m.group("name").decode()
        if name.startswith('"'):
            name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        names[name] = b"\\Noselect" in m.group("flags") or \
            b"\\NonExistent" in m.group("flags")
    return names


def replica_folder(imap, name):
    typ, _ = imap.select('"%s"' % name, readonly=True)
    if typ != "OK":
        return None
    found = collections.Counter()
    typ, data = imap.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
    for item in data:
        if not isinstance(item, tuple):
            continue
        head, body = item
        m = re.search(rb"FLAGS \(([^)]*)\)", head)
        flags = set()
        for f in (m.group(1).decode().split() if m else []):
            if f == "\\Recent":
                continue
            flags.add(f if f.startswith("\\") else f.lower())
        found[(crlf_digest(body), frozenset(flags))] += 1
    if not data or data == [None]:
        return found
    # A FETCH that returned the message heads after the bodies puts the
    # FLAGS in a trailing line; this test Dovecot always sends them first.
    return found


def compare_user(args, user, user_dir):
    diffs = missing = extra = 0
    folders, subs = master_tree(user_dir)
    ctx = ssl.create_default_context(cafile=args["ca"])
    imap = imaplib.IMAP4(args["host"], args["port"])
    imap.starttls(ssl_context=ctx)
    imap.login("%s*%s" % (user, args["admin"]), args["password"])
    typ, lines = imap.list('""', "*")
    rnames = parse_list(lines)
    typ, lines = imap.lsub('""', "*")
    rsubs = set(parse_list(lines))
    for name in sorted(folders):
        if name not in rnames or rnames[name]:
            print("%s %s: folder missing on the replica" % (user, name))
            diffs += 1
            missing += sum(folders[name].values())
            continue
        got = replica_folder(imap, name)
        want = folders[name]
        lost = want - got
        dup = got - want
        for (digest, flags), n in lost.items():
            print("%s %s: missing %d x %s flags %s" %
                  (user, name, n, digest[:12], sorted(flags)))
        for (digest, flags), n in dup.items():
            print("%s %s: extra %d x %s flags %s" %
                  (user, name, n, digest[:12], sorted(flags)))
        missing += sum(lost.values())
        extra += sum(dup.values())
    for name, noselect in rnames.items():
        if not noselect and name not in folders:
            print("%s %s: folder only on the replica" % (user, name))
            diffs += 1
    for name in subs ^ rsubs:
        print("%s %s: subscription differs" % (user, name))
        diffs += 1
    imap.logout()
    total = sum(sum(c.values()) for c in folders.values())
    return diffs + missing + extra, missing, extra, total


def main(argv):
    if len(argv) < 7:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    root = argv[1]
    args = {"host": argv[2], "port": int(argv[3]), "ca": argv[4],
            "admin": argv[5], "password": argv[6]}
    users = argv[7:] or sorted(os.listdir(root))
    differences = missing = extra = messages = 0
    for user in users:
        user_dir = os.path.join(root, user, "Maildir")
        if not os.path.isdir(user_dir):
            continue
        d, m, e, t = compare_user(args, user, user_dir)
        differences += d
        missing += m
        extra += e
        messages += t
    print("imapcompare: %d users, %d messages, %d missing, %d duplicated "
          "or extra, %d differences" %
          (len(users), messages, missing, extra, differences))
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
