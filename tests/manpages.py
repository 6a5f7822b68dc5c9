#!/usr/bin/env python3
"""Check that the man pages and the example config match the code.

Run by "make check" (and so by "make distcheck"). The keys come from the
table key_specs in src/cfg.c, the options from the --help output of the
built programs, and the defaults from doc/config.md. Prints one
"PASS: name" or "FAIL: name" line per check and exits 1 on any failure.
"""

import os
import re
import subprocess
import sys
import tempfile

SRCDIR = os.environ.get("MAILREPL_SRCDIR", ".")
BUILDDIR = os.environ.get("MAILREPL_BUILDDIR", ".")
failures = 0


def report(name, problems):
    """Print PASS or FAIL for one check, with each problem under it."""
    global failures
    if problems:
        failures += 1
        print("FAIL: %s" % name)
        for problem in problems:
            print("  %s" % problem)
    else:
        print("PASS: %s" % name)


def read(path):
    with open(os.path.join(SRCDIR, path), encoding="utf-8") as f:
        return f.read()


def cfg_keys():
    """Return the (section, key) pairs of key_specs in src/cfg.c."""
    source = read("src/cfg.c")
    table = source[source.index("key_specs[] = {"):]
    table = table[:table.index("};")]
    keys = re.findall(r'\{"(\w+)", "(\w+)",', table)
    if len(keys) < 30:
        sys.exit("manpages.py: found only %d keys in src/cfg.c; has the "
                 "table key_specs changed its form?" % len(keys))
    return keys


def sections_of(text, header_re, item_re):
    """Map each section name to the items listed under its header."""
    found = {}
    section = None
    for line in text.splitlines():
        header = re.match(header_re, line)
        if header:
            section = header.group(1)
            found.setdefault(section, [])
            continue
        if line.startswith("#"):
            section = None
            continue
        if section is None:
            continue
        item = re.match(item_re, line)
        if item:
            found[section].append(item.group(1))
    return found


def man_keys():
    """Map each [section] of mailrepl.conf.5 to its tagged keys."""
    text = read("doc/mailrepl.conf.5")
    found = {}
    section = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        header = re.match(r'\.SH "THE \[(\w+)\] SECTION"', line)
        if header:
            section = header.group(1)
            found[section] = []
        elif line.startswith(".SH"):
            section = None
        elif line == ".TP" and section and i + 1 < len(lines):
            tag = re.fullmatch(r"\\fB(\w+)\\fR", lines[i + 1])
            if tag:
                found[section].append(tag.group(1))
    return found


def compare_keys(name, listed, keys):
    """Report keys missing from LISTED, and keys LISTED that cfg.c lacks."""
    problems = []
    for section, key in keys:
        if key not in listed.get(section, []):
            problems.append("[%s] %s is missing" % (section, key))
    known = set(keys)
    for section, names in listed.items():
        for key in names:
            if (section, key) not in known:
                problems.append("[%s] %s is not in src/cfg.c" %
                                (section, key))
    report(name, problems)


def check_generated():
    """The committed mailrepl.conf.5 is what md2man.py makes now."""
    result = subprocess.run(
        [sys.executable, os.path.join(SRCDIR, "scripts/md2man.py"),
         os.path.join(SRCDIR, "doc/config.md"),
         os.path.join(SRCDIR, "doc/mailrepl.conf.5.tmpl")],
        capture_output=True, text=True)
    problems = []
    if result.returncode != 0:
        problems.append("md2man.py failed: %s" % result.stderr.strip())
    elif result.stdout != read("doc/mailrepl.conf.5"):
        problems.append("doc/mailrepl.conf.5 is out of date; run "
                        "scripts/md2man.py doc/config.md "
                        "doc/mailrepl.conf.5.tmpl >doc/mailrepl.conf.5")
    report("mailrepl.conf.5 generated from config.md", problems)


def config_md_defaults():
    """Map (section, key) to the first literal of config.md's default."""
    defaults = {}
    section = None
    for line in read("doc/config.md").splitlines():
        header = re.match(r"## \[(\w+)\]", line)
        if header:
            section = header.group(1)
        elif line.startswith("## "):
            section = None
        elif section and line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            key = cells[0].strip("`")
            literal = re.match(r"`([^`]+)`", cells[1])
            defaults[(section, key)] = literal.group(1) if literal else None
    return defaults


def check_example_defaults(keys):
    """Each key of the example config shows config.md's default."""
    text = read("dist/mailrepl.conf")
    values = {}
    section = None
    for line in text.splitlines():
        header = re.match(r"\[(\w+)\]$", line)
        if header:
            section = header.group(1)
            continue
        setting = re.match(r"#?(\w+) =\s?(.*)$", line)
        if setting and section:
            values[(section, setting.group(1))] = setting.group(2)

    problems = []
    defaults = config_md_defaults()
    for pair in keys:
        if pair not in defaults:
            problems.append("[%s] %s is not in doc/config.md" % pair)
        if pair not in values:
            problems.append("[%s] %s is missing from dist/mailrepl.conf" %
                            pair)
            continue
        default = defaults.get(pair)
        if default is not None and values[pair] != default:
            problems.append("[%s] %s = %s in dist/mailrepl.conf, but the "
                            "default in doc/config.md is %s" %
                            (pair + (values[pair], default)))
    report("example config shows every default", problems)


def help_options(program, *args):
    """Return the options that PROGRAM --help lists."""
    result = subprocess.run([os.path.join(BUILDDIR, "src", program)] +
                            list(args), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit("manpages.py: %s %s exited %d" %
                 (program, " ".join(args), result.returncode))
    return sorted(set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)",
                                 result.stdout)))


def check_options(program, page):
    """Every option in PROGRAM --help is in its man page."""
    text = read(page)
    problems = []
    for option in help_options(program, "--help"):
        if option.replace("-", "\\-") not in text:
            problems.append("%s is missing from %s" % (option, page))
    report("%s options in %s" % (program, os.path.basename(page)), problems)


def check_exit_codes():
    """The exit codes the programs document are in the man pages."""
    problems = []
    pages = {"doc/mailrepl.1": ["0", "1", "2", "3", "64", "75"],
             "doc/mailrepld.8": ["0", "1", "64", "78"]}
    for page, codes in pages.items():
        text = read(page)
        for code in codes:
            if not re.search(r"^\.B %s$|\b%s\b" % (code, code), text,
                             re.M):
                problems.append("exit code %s is missing from %s" %
                                (code, page))
    report("exit codes in the man pages", problems)


def check_example_loads():
    """The example config loads, and so does it with every key set."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        example = os.path.join(tmp, "example.conf")
        every_key = os.path.join(tmp, "every-key.conf")
        with open(example, "w", encoding="utf-8") as f:
            f.write(read("dist/mailrepl.conf"))
        # Uncomment each key, except those whose value is a placeholder
        # or names a file that must exist.
        skipped = ("admin_password", "admin_password_file",
                   "tls_fingerprint", "tls_ca_file", "tls_cert_file",
                   "tls_key_file")
        lines = []
        for line in read("dist/mailrepl.conf").splitlines():
            setting = re.match(r"#(\w+) = ", line)
            if setting and setting.group(1) not in skipped:
                line = line[1:]
            lines.append(line)
        with open(every_key, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")

        for path in (example, every_key):
            os.chmod(path, 0o600)
            result = subprocess.run(
                [os.path.join(BUILDDIR, "src", "mailrepl"), "-c", path,
                 "mode"], capture_output=True, text=True)
            if result.returncode != 0:
                problems.append("%s: mailrepl mode exited %d: %s" %
                                (os.path.basename(path), result.returncode,
                                 result.stderr.strip()))
    report("example config loads", problems)


def main():
    keys = cfg_keys()
    check_generated()
    compare_keys("every cfg.c key in mailrepl.conf.5", man_keys(), keys)
    config_md = sections_of(read("doc/config.md"), r"## \[(\w+)\]",
                            r"\| `(\w+)` \|")
    compare_keys("every cfg.c key in config.md", config_md, keys)
    check_example_defaults(keys)
    check_options("mailrepl", "doc/mailrepl.1")
    check_options("mailrepld", "doc/mailrepld.8")
    check_exit_codes()
    check_example_loads()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
