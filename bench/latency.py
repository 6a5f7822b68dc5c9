#!/usr/bin/env python3
"""Helper of bench/latency.sh: delivers messages into the master's
Maildirs, watches the replica over IMAP, and summarises the results.

Subcommands (all write JSON or TSV that bench/latency.sh passes on):

  latency   deliver RATE messages per second for DURATION seconds across
            the users and record when each one becomes visible on the
            replica; write the raw records and a summary
  deliver   deliver COUNT messages across the users as fast as possible
  count     print the number of messages in the users' INBOXes on the
            replica
  wait      wait until the replica's INBOXes hold EXPECT messages and the
            agent reports no pending changes; print the times
  procstat  print the CPU seconds and peak RSS of a process
  report    print the Markdown table of a run

Standard library only. Times of deliveries and arrivals are both taken
from CLOCK_MONOTONIC (time.monotonic()), which all processes share.
"""
import argparse
import glob
import imaplib
import json
import multiprocessing
import os
import re
import ssl
import subprocess
import sys
import textwrap
import time

BENCH_HEADER = "X-Bench-Id"
FETCH_ITEMS = "(UID BODY.PEEK[HEADER.FIELDS (%s)])" % BENCH_HEADER.upper()
UID_RE = re.compile(rb"UID (\d+)")
ID_RE = re.compile(rb"X-Bench-Id:\s*(\d+)", re.IGNORECASE)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def fail(msg):
    print("latency.py: " + msg, file=sys.stderr)
    sys.exit(1)


# Processes

def proc_cpu_seconds(pid):
    """User plus system CPU seconds of pid, from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    # The command name in parentheses may contain spaces.
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_peak_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


# Delivery

def corpus_files(cache):
    files = sorted(glob.glob(os.path.join(cache, "messages", "*", "*.txt")))
    if not files:
        fail("no corpus messages under %s/messages; run scripts/corpus.sh "
             "fetch %s first" % (cache, cache))
    return files


def deliver(root, users, cache, count, rate, first_id, out_path):
    """Deliver count messages, one user after the other, at rate per second
    (0: back to back). Each is written to tmp/ and renamed into new/; the
    time is taken right before the rename. Writes id, user, monotonic and
    wall-clock time of the rename per line to out_path, and returns the
    schedule's lateness in ms (rename time minus due time) as a list."""
    files = corpus_files(cache)
    dirs = [os.path.join(root, u, "Maildir") for u in users]
    for d in dirs:
        if not os.path.isdir(os.path.join(d, "new")):
            fail("%s/new is not a directory; is %s a laid-out master tree?"
                 % (d, root))

    pid = os.getpid()
    step = 1.0 / rate if rate > 0 else 0.0
    start = time.monotonic() + 0.05
    lateness = []

    with open(out_path, "w") as out:
        for i in range(count):
            bench_id = first_id + i
            ui = i % len(users)
            due = start + i * step
            if step:
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)

            with open(files[bench_id % len(files)], "rb") as f:
                body = f.read()
            now = time.time()
            name = "%d.M%06dP%dQ%d.latbench" % (
                int(now), int(now % 1 * 1e6), pid, bench_id)
            tmp = os.path.join(dirs[ui], "tmp", name)
            with open(tmp, "wb") as f:
                f.write(b"%s: %d\n" % (BENCH_HEADER.encode(), bench_id))
                f.write(body)

            wall = time.time()
            mono = time.monotonic()
            os.rename(tmp, os.path.join(dirs[ui], "new", name))
            if step:
                lateness.append((mono - due) * 1000)
            out.write("%d\t%s\t%.6f\t%.6f\n" % (bench_id, users[ui], mono,
                                                wall))
    return lateness


# The replica

def imap_login(args, user):
    conn = imaplib.IMAP4(args.host, args.port)
    ctx = ssl.create_default_context(cafile=args.ca)
    conn.starttls(ssl_context=ctx)
    conn.login("%s*%s" % (user, args.admin), read_password(args))
    return conn


def read_password(args):
    with open(args.password_file) as f:
        return f.read().strip()


def inbox_count(conn):
    typ, data = conn.status("INBOX", "(MESSAGES)")
    if typ != "OK":
        fail("STATUS INBOX failed: %r" % data)
    m = re.search(rb"MESSAGES (\d+)", data[0])
    return int(m.group(1))


class Watcher:
    """One user's INBOX on the replica, examined read-only."""

    def __init__(self, args, user):
        self.user = user
        self.conn = imap_login(args, user)
        typ, data = self.conn.select("INBOX", readonly=True)
        if typ != "OK":
            fail("EXAMINE INBOX of %s failed: %r" % (user, data))
        uidnext = self.conn.response("UIDNEXT")[1]
        self.conn.response("EXISTS")
        self.last_uid = int(uidnext[-1]) - 1

    def send_noop(self):
        """Send NOOP without waiting for the reply, so that the round's
        NOOPs are served by the replica's IMAP processes in parallel.
        imaplib has no public call for that; _command() and
        _command_complete() are what its noop() does in two halves."""
        self.tag = self.conn._command("NOOP")

    def poll(self, seen):
        """Read the reply to send_noop(); on a new EXISTS fetch the new
        messages' ids and note them in seen with the time the NOOP
        returned."""
        typ, data = self.conn._command_complete("NOOP", self.tag)
        now = time.monotonic()
        if typ != "OK":
            fail("NOOP for %s failed: %r" % (self.user, data))
        exists = self.conn.response("EXISTS")[1]
        if exists == [None]:
            return
        typ, data = self.conn.uid("FETCH", "%d:*" % (self.last_uid + 1),
                                  FETCH_ITEMS)
        if typ != "OK":
            fail("UID FETCH for %s failed: %r" % (self.user, data))
        for item in data:
            if not isinstance(item, tuple):
                continue
            uid = UID_RE.search(item[0])
            if uid is None or int(uid.group(1)) <= self.last_uid:
                continue
            self.last_uid = int(uid.group(1))
            bench_id = ID_RE.search(item[1])
            if bench_id is not None:
                seen.setdefault(int(bench_id.group(1)), now)

    def close(self):
        try:
            self.conn.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def deliver_process(args, count, out_path, queue):
    lateness = deliver(args.master, args.users, args.cache, count, args.rate,
                       args.first_id, out_path)
    queue.put(lateness)


def percentile(values, p):
    """Nearest-rank percentile of sorted values."""
    if not values:
        return None
    rank = max(1, -(-len(values) * p // 100))
    return values[int(rank) - 1]


def spread(values):
    values = sorted(values)
    return {"p50": percentile(values, 50), "p95": percentile(values, 95),
            "p99": percentile(values, 99),
            "max": values[-1] if values else None,
            "mean": sum(values) / len(values) if values else None}


def cmd_latency(args):
    count = int(args.rate * args.duration)
    watchers = [Watcher(args, u) for u in args.users]
    deliveries = os.path.join(args.workdir, "deliveries.tsv")
    queue = multiprocessing.Queue()
    agent_cpu0 = proc_cpu_seconds(args.agent_pid)
    cpu0 = time.process_time()
    started = time.monotonic()
    proc = multiprocessing.Process(target=deliver_process,
                                   args=(args, count, deliveries, queue))
    proc.start()
    seen = {}
    rounds = 0
    lateness = None
    deadline = None
    sleep = args.interval / 1000.0
    while True:
        for w in watchers:
            w.send_noop()
        for w in watchers:
            w.poll(seen)
        rounds += 1
        if lateness is None and not proc.is_alive():
            proc.join()
            if proc.exitcode != 0:
                fail("the delivery process failed (exit %s)" % proc.exitcode)
            lateness = queue.get()
            deadline = time.monotonic() + args.grace
        if lateness is not None and (len(seen) >= count or
                                     time.monotonic() > deadline):
            break
        time.sleep(sleep)
    watch_secs = time.monotonic() - started
    watch_cpu = time.process_time() - cpu0
    agent_cpu = proc_cpu_seconds(args.agent_pid) - agent_cpu0
    for w in watchers:
        w.close()

    records = []
    with open(deliveries) as f:
        for line in f:
            bench_id, user, mono, wall = line.rstrip("\n").split("\t")
            vis = seen.get(int(bench_id))
            records.append({"id": int(bench_id), "user": user,
                            "rename": float(mono), "rename_wall": float(wall),
                            "visible": vis})
    with open(os.path.join(args.workdir, "latency-records.json"), "w") as f:
        json.dump(records, f)
    lat = [(r["visible"] - r["rename"]) * 1000 for r in records
           if r["visible"] is not None]
    first = min(r["rename"] for r in records)
    last = max(r["rename"] for r in records)
    windows = []
    step = max(1.0, args.duration / 6)
    for k in range(int(-(-args.duration // step))):
        part = [(r["visible"] - r["rename"]) * 1000 for r in records
                if r["visible"] is not None and
                k * step <= r["rename"] - first < (k + 1) * step]
        windows.append({"from_s": k * step, "to_s": (k + 1) * step,
                        "seen": len(part), "latency_ms": spread(part)})
    summary = {
        "rate": args.rate, "duration": args.duration, "users": len(args.users),
        "delivered": len(records), "seen": len(lat),
        "delivery_seconds": last - first,
        "latency_ms": spread(lat),
        "windows": windows,
        "schedule_lateness_ms": spread(lateness),
        "poll_sleep_ms": args.interval,
        "poll_round_ms": watch_secs * 1000 / rounds,
        "watcher_cpu_s": watch_cpu,
        "agent_cpu_s": agent_cpu,
        "agent_peak_rss_kb": proc_peak_rss_kb(args.agent_pid),
        "seconds": watch_secs,
    }
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))


def cmd_deliver(args):
    deliver(args.master, args.users, args.cache, args.count, 0,
            args.first_id, args.out)


def cmd_count(args):
    total = 0
    for user in args.users:
        conn = imap_login(args, user)
        total += inbox_count(conn)
        conn.logout()
    print(total)


def pending_zero(status_cmd):
    out = subprocess.run(status_cmd, shell=True, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT).stdout.decode()
    for line in out.splitlines():
        if line.startswith("pending:"):
            return line.split()[1] == "0"
    fail("no 'pending:' line in the output of %s:\n%s" % (status_cmd, out))


def cmd_wait(args):
    """Poll STATUS of every INBOX until they hold args.expect messages,
    then the agent's status until no change is pending. Times count from
    args.since, a wall-clock time taken right before the agent started."""
    conns = [imap_login(args, u) for u in args.users]
    deadline = time.time() + args.timeout
    total = 0
    while True:
        total = sum(inbox_count(c) for c in conns)
        if total >= args.expect or time.time() > deadline:
            break
        time.sleep(args.interval / 1000.0)
    all_seen = time.time() - args.since
    while not pending_zero(args.status_cmd) and time.time() < deadline:
        time.sleep(args.interval / 1000.0)
    pending0 = time.time() - args.since
    for c in conns:
        c.logout()
    result = {"expect": args.expect, "count": total,
              "seconds_all_seen": all_seen, "seconds_pending_zero": pending0,
              "agent_cpu_s": proc_cpu_seconds(args.agent_pid),
              "agent_peak_rss_kb": proc_peak_rss_kb(args.agent_pid)}
    print(json.dumps(result, indent=1))
    if total < args.expect:
        fail("after %d s the replica holds %d of %d messages"
             % (args.timeout, total, args.expect))


def cmd_procstat(args):
    print("%.2f %d" % (proc_cpu_seconds(args.pid), proc_peak_rss_kb(args.pid)))


# The agent's log

LOG_TS_RE = re.compile(r"ts=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z")


def parse_applies(log_path):
    """(end wall time, user, folder, ms) of each event=apply line."""
    import calendar
    applies = []
    with open(log_path, errors="replace") as f:
        for line in f:
            if "event=apply " not in line:
                continue
            fields = dict(kv.split("=", 1) for kv in line.split()
                          if "=" in kv)
            ts = LOG_TS_RE.search(line).group(1)
            secs = calendar.timegm(time.strptime(ts[:19], "%Y-%m-%dT%H:%M:%S"))
            applies.append((secs + float(ts[19:]), fields.get("user"),
                            fields.get("folder"), int(fields.get("ms", 0))))
    return applies


def breakdown(records, applies):
    """Split each latency into the wait before the apply that carried the
    message started, that apply's duration, and the rest (the poll delay;
    negative when the message was visible before the apply ended). The
    log's times have millisecond resolution."""
    by_user = {}
    for end, user, folder, ms in applies:
        if folder == "INBOX":
            by_user.setdefault(user, []).append((end - ms / 1000.0, end))
    waits, runs, rest = [], [], []
    for r in records:
        if r["visible"] is None:
            continue
        vis_wall = r["rename_wall"] + (r["visible"] - r["rename"])
        chosen = None
        for start, end in by_user.get(r["user"], []):
            if end + 0.0005 < r["rename_wall"]:
                continue
            if start > vis_wall:
                break
            chosen = (start, end)
            if start >= r["rename_wall"] - 0.0005:
                break
        if chosen is None:
            continue
        waits.append(max(0.0, chosen[0] - r["rename_wall"]) * 1000)
        runs.append((chosen[1] - chosen[0]) * 1000)
        rest.append((vis_wall - chosen[1]) * 1000)
    return {"matched": len(waits), "wait_ms": spread(waits),
            "apply_ms": spread(runs), "after_apply_ms": spread(rest)}


def cmd_analyse(args):
    with open(args.records) as f:
        records = json.load(f)
    applies = parse_applies(args.log)
    first = min(r["rename_wall"] for r in records) - 0.001
    last = max(r["rename_wall"] for r in records) + 30
    window = [a for a in applies if first <= a[0] <= last]
    inbox = [a[3] for a in window if a[2] == "INBOX"]
    result = {"applies": len(window), "inbox_applies": len(inbox),
              "apply_ms_all": spread([a[3] for a in window]),
              "messages_per_apply": (len(records) / len(inbox)
                                     if inbox else None),
              "breakdown": breakdown(records, window)}
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


# The report

def say(text):
    print(textwrap.fill(text, width=74))


def fmt(v, digits=0):
    if v is None:
        return "-"
    return "{:,.{}f}".format(v, digits)


def cmd_report(args):
    with open(args.latency) as f:
        lat = json.load(f)
    with open(args.drain) as f:
        drain = json.load(f)
    with open(args.analysis) as f:
        ana = json.load(f)
    ms = lat["latency_ms"]

    print("| delivered | seen | p50 ms | p95 ms | p99 ms | max ms "
          "| agent CPU s | agent peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("| %s | %s | %s | %s | %s | %s | %.2f | %.1f |" % (
        fmt(lat["delivered"]), fmt(lat["seen"]), fmt(ms["p50"], 1),
        fmt(ms["p95"], 1), fmt(ms["p99"], 1), fmt(ms["max"], 1),
        lat["agent_cpu_s"], lat["agent_peak_rss_kb"] / 1024))
    print()
    say("Latency: %s messages at %s per second over %.1f s, spread "
          "across %d users; the watcher slept %s ms between NOOP rounds "
          "over the %d connections, one round every %.1f ms on average "
          "(the resolution), using %.1f CPU s itself. Deliveries were at "
          "most %.1f ms behind their schedule (p99 %.1f ms)." % (
              fmt(lat["delivered"]), fmt(lat["rate"]),
              lat["delivery_seconds"], lat["users"],
              fmt(lat["poll_sleep_ms"], 1), lat["users"],
              lat["poll_round_ms"], lat["watcher_cpu_s"],
              lat["schedule_lateness_ms"]["max"],
              lat["schedule_lateness_ms"]["p99"]))
    print()
    print("| deliveries in second | seen | p50 ms | p95 ms | p99 ms "
          "| max ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    for w in lat["windows"]:
        s = w["latency_ms"]
        print("| %g–%g | %s | %s | %s | %s | %s |" % (
            w["from_s"], w["to_s"], fmt(w["seen"]), fmt(s["p50"], 1),
            fmt(s["p95"], 1), fmt(s["p99"], 1), fmt(s["max"], 1)))
    b = ana["breakdown"]
    print()
    print("| part of the latency (from the agent's log) | p50 ms | p95 ms "
          "| p99 ms | max ms |")
    print("| --- | --- | --- | --- | --- |")
    for label, key in (("rename to start of the apply that carried it",
                        "wait_ms"),
                       ("that apply (event=apply ms)", "apply_ms"),
                       ("end of the apply to seen by the watcher",
                        "after_apply_ms")):
        s = b[key]
        print("| %s | %s | %s | %s | %s |" % (
            label, fmt(s["p50"], 1), fmt(s["p95"], 1), fmt(s["p99"], 1),
            fmt(s["max"], 1)))
    print()
    say("The agent logged %s INBOX applies for %s messages (%.2f "
          "messages per apply)." % (
              fmt(ana["inbox_applies"]), fmt(lat["delivered"]),
              ana["messages_per_apply"] or 0))
    print()
    print("| drain: messages | on the replica after s | pending 0 after s "
          "| msgs/s | agent CPU s | agent peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("| %s | %.2f | %.2f | %s | %.2f | %.1f |" % (
        fmt(args.drain_count), drain["seconds_all_seen"],
        drain["seconds_pending_zero"],
        fmt(args.drain_count / drain["seconds_all_seen"]),
        drain["agent_cpu_s"], drain["agent_peak_rss_kb"] / 1024))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def imap_args(sp):
        sp.add_argument("--host", default="127.0.0.1")
        sp.add_argument("--port", type=int, required=True)
        sp.add_argument("--ca", required=True)
        sp.add_argument("--admin", required=True)
        sp.add_argument("--password-file", required=True)
        sp.add_argument("--users", type=lambda s: s.split(), required=True)

    def deliver_args(sp):
        sp.add_argument("--master", required=True)
        sp.add_argument("--cache", required=True)
        sp.add_argument("--first-id", type=int, default=1)

    sp = sub.add_parser("latency")
    imap_args(sp)
    deliver_args(sp)
    sp.add_argument("--rate", type=float, default=100)
    sp.add_argument("--duration", type=float, default=60)
    sp.add_argument("--interval", type=float, default=2,
                    help="ms to sleep between NOOP rounds")
    sp.add_argument("--grace", type=float, default=60,
                    help="s to wait for missing messages after the last")
    sp.add_argument("--agent-pid", type=int, required=True)
    sp.add_argument("--workdir", required=True)
    sp.add_argument("--out", required=True)
    sp.set_defaults(func=cmd_latency)

    sp = sub.add_parser("deliver")
    sp.add_argument("--users", type=lambda s: s.split(), required=True)
    deliver_args(sp)
    sp.add_argument("--count", type=int, required=True)
    sp.add_argument("--out", required=True)
    sp.set_defaults(func=cmd_deliver)

    sp = sub.add_parser("count")
    imap_args(sp)
    sp.set_defaults(func=cmd_count)

    sp = sub.add_parser("wait")
    imap_args(sp)
    sp.add_argument("--expect", type=int, required=True)
    sp.add_argument("--since", type=float, required=True)
    sp.add_argument("--status-cmd", required=True)
    sp.add_argument("--agent-pid", type=int, required=True)
    sp.add_argument("--interval", type=float, default=20)
    sp.add_argument("--timeout", type=float, default=1800)
    sp.set_defaults(func=cmd_wait)

    sp = sub.add_parser("procstat")
    sp.add_argument("pid", type=int)
    sp.set_defaults(func=cmd_procstat)

    sp = sub.add_parser("analyse")
    sp.add_argument("--records", required=True)
    sp.add_argument("--log", required=True)
    sp.add_argument("--out", required=True)
    sp.set_defaults(func=cmd_analyse)

    sp = sub.add_parser("report")
    sp.add_argument("--latency", required=True)
    sp.add_argument("--drain", required=True)
    sp.add_argument("--analysis", required=True)
    sp.add_argument("--drain-count", type=int, required=True)
    sp.set_defaults(func=cmd_report)

    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
