#!/usr/bin/env python3
"""Change Maildir++ trees the way a delivery agent and an IMAP server do,
for the running-replication tests (tests/e2e/live.sh).

  maildir_load.py burst ROOT CORPUS COUNT TAG USER...
      Deliver COUNT copies of corpus messages, round robin over the
      users' INBOX and Archive, each written to tmp/ and renamed into
      new/ under a new unique name.

  maildir_load.py mix ROOT CORPUS TAG (--ops N | --until FILE) USER...
      Run a random mix of deliveries, new/ to cur/ renames, flag
      renames, moves between folders and deletes, one every few
      milliseconds, for N operations or until FILE exists. Prints the
      count of each kind at the end.

CORPUS is the directory of the corpus messages (one subdirectory per
group). TAG makes the new file names unique between runs.
"""
import argparse
import collections
import os
import random
import sys
import time

FOLDERS = ["", ".Sent", ".Archive", ".Trash"]
# System flags and the keyword letters the corpus layout defines in
# every folder's dovecot-keywords (a, b, c).
FLAG_CHOICES = "DFRSTabc"


def corpus_files(corpus):
    files = []
    for group in sorted(os.listdir(corpus)):
        group_dir = os.path.join(corpus, group)
        if os.path.isdir(group_dir):
            files += [os.path.join(group_dir, name)
                      for name in sorted(os.listdir(group_dir))]
    if not files:
        sys.exit("maildir_load.py: no messages found in %s" % corpus)
    return files


def deliver(folder_dir, name, data):
    """Write data to tmp/ and rename it into new/, as a delivery does."""
    tmp = os.path.join(folder_dir, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, os.path.join(folder_dir, "new", name))


def base_name(tag, seq):
    return "%d.M%dP%d.%s" % (time.time(), seq, os.getpid(), tag)


def messages_in(folder_dir, sub):
    try:
        return [n for n in os.listdir(os.path.join(folder_dir, sub))
                if not n.startswith(".")]
    except FileNotFoundError:
        return []


def cmd_burst(args):
    files = corpus_files(args.corpus)
    targets = [os.path.join(args.root, user, "Maildir", folder)
               for user in args.users for folder in ("", ".Archive")]
    for seq in range(args.count):
        with open(files[seq % len(files)], "rb") as f:
            data = f.read()
        deliver(targets[seq % len(targets)], base_name(args.tag, seq), data)
    return 0


class Mix:
    def __init__(self, args):
        self.args = args
        self.files = corpus_files(args.corpus)
        self.rng = random.Random()
        self.seq = 0
        self.done = collections.Counter()

    def folder(self):
        user = self.rng.choice(self.args.users)
        return os.path.join(self.args.root, user, "Maildir",
                            self.rng.choice(FOLDERS))

    def flags(self):
        chosen = self.rng.sample(FLAG_CHOICES, self.rng.randint(0, 3))
        return "".join(sorted(chosen))

    def op_deliver(self):
        with open(self.rng.choice(self.files), "rb") as f:
            data = f.read()
        self.seq += 1
        deliver(self.folder(), base_name(self.args.tag, self.seq), data)
        return True

    def op_to_cur(self):
        folder = self.folder()
        names = messages_in(folder, "new")
        if not names:
            return False
        name = self.rng.choice(names)
        os.rename(os.path.join(folder, "new", name),
                  os.path.join(folder, "cur", name + ":2," + self.flags()))
        return True

    def op_flags(self):
        folder = self.folder()
        names = messages_in(folder, "cur")
        if not names:
            return False
        name = self.rng.choice(names)
        uniq = name.rpartition(":2,")[0] or name
        new = uniq + ":2," + self.flags()
        if new == name:
            return False
        os.rename(os.path.join(folder, "cur", name),
                  os.path.join(folder, "cur", new))
        return True

    def op_move(self):
        source, target = self.folder(), self.folder()
        names = messages_in(source, "cur")
        if source == target or not names:
            return False
        name = self.rng.choice(names)
        os.rename(os.path.join(source, "cur", name),
                  os.path.join(target, "cur", name))
        return True

    def op_delete(self):
        folder = self.folder()
        names = messages_in(folder, "cur")
        if not names:
            return False
        os.unlink(os.path.join(folder, "cur", self.rng.choice(names)))
        return True

    def step(self):
        ops = [("deliver", self.op_deliver, 30), ("to_cur", self.op_to_cur, 15),
               ("flags", self.op_flags, 25), ("move", self.op_move, 15),
               ("delete", self.op_delete, 15)]
        name, op, _ = self.rng.choices(ops, weights=[w for *_, w in ops])[0]
        if op():
            self.done[name] += 1
            return True
        return False


def cmd_mix(args):
    mix = Mix(args)
    done = 0
    while True:
        if args.ops is not None and done >= args.ops:
            break
        if args.until is not None and os.path.exists(args.until):
            break
        if mix.step():
            done += 1
        time.sleep(mix.rng.uniform(0.002, 0.02))
    print(" ".join("%s=%d" % kv for kv in sorted(mix.done.items())))
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    burst = sub.add_parser("burst")
    burst.add_argument("root")
    burst.add_argument("corpus")
    burst.add_argument("count", type=int)
    burst.add_argument("tag")
    burst.add_argument("users", nargs="+")
    mix = sub.add_parser("mix")
    mix.add_argument("root")
    mix.add_argument("corpus")
    mix.add_argument("tag")
    limit = mix.add_mutually_exclusive_group(required=True)
    limit.add_argument("--ops", type=int)
    limit.add_argument("--until")
    mix.add_argument("users", nargs="+")
    args = parser.parse_args()
    return cmd_burst(args) if args.command == "burst" else cmd_mix(args)


if __name__ == "__main__":
    sys.exit(main())
