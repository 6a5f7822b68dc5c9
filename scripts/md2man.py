#!/usr/bin/env python3
"""Convert doc/config.md into the body of the mailrepl.conf(5) man page.

doc/config.md is the one description of every configuration key, so the
man page is generated from it rather than written twice:

    scripts/md2man.py doc/config.md doc/mailrepl.conf.5.tmpl > doc/mailrepl.conf.5

The template (doc/mailrepl.conf.5.tmpl) contains the .TH line, NAME, SYNOPSIS,
FILES and SEE ALSO; the line "@CONFIG_MD@" in it is replaced by the
converted Markdown. tests/manpages.sh runs this again and fails when the
committed page differs.

Only the Markdown that doc/config.md uses is understood: "#" to "###"
headings, paragraphs, "- " bullet lists, code blocks indented by four
spaces, pipe tables, `code`, **bold** and [text](link). Anything else is
copied as text.
"""

import re
import sys


def escape(text):
    """Escape roff's special characters in running text."""
    return text.replace("\\", "\\e")


def inline(text):
    """Convert Markdown inline markup of one line or paragraph to roff."""
    out = []
    # Split on code spans first, so that nothing inside them is parsed.
    for i, part in enumerate(re.split(r"`([^`]*)`", text)):
        if i % 2:
            out.append("\\fB" + escape(part).replace("-", "\\-") + "\\fR")
            continue
        part = escape(part)
        part = re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", part)
        part = re.sub(r"\*\*([^*]+)\*\*", r"\\fB\1\\fR", part)
        out.append(part)
    return "".join(out)


def text_line(text):
    """Return one line of roff text that cannot be read as a request."""
    line = inline(text.strip())
    if line.startswith((".", "'")):
        line = "\\&" + line
    return line


def heading(level, text):
    """Return the roff heading for a Markdown heading of LEVEL."""
    section = re.fullmatch(r"\[(\w+)\]", text)
    if section:
        return '.SH "THE [%s] SECTION"' % section.group(1)
    if level <= 2:
        return '.SH "%s"' % inline(text).upper()
    return '.SS "%s"' % inline(text)


def split_row(line):
    """Split one table row into its stripped cells."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def table(rows):
    """Convert a table to a tagged paragraph list.

    The first column becomes the tag and the last column the text. Each
    column between them becomes a line "Header: value.", so a key table
    (key, default, allowed, meaning) shows the default and the allowed
    values under the meaning.
    """
    header = split_row(rows[0])
    out = []
    for row in rows[2:]:
        cells = split_row(row)
        out.append(".TP")
        out.append(text_line(cells[0]))
        out.append(text_line(cells[-1]))
        for name, cell in zip(header[1:-1], cells[1:-1]):
            out.append(".br")
            out.append(text_line("%s: %s." % (name.capitalize(),
                                              cell.rstrip("."))))
    return out


def code_block(lines):
    """Convert an indented code block to an unfilled, indented block."""
    out = [".PP", ".RS 4", ".nf"]
    for line in lines:
        body = escape(line[4:])
        if body.startswith((".", "'")):
            body = "\\&" + body
        out.append(body)
    out += [".fi", ".RE"]
    return out


def convert(markdown):
    """Convert the Markdown text to a list of roff lines."""
    lines = markdown.splitlines()
    out = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue

        match = re.match(r"(#{1,3}) (.*)", line)
        if match:
            # The first-level title is the page's NAME line.
            if len(match.group(1)) > 1:
                out.append(heading(len(match.group(1)), match.group(2)))
            i += 1
            continue

        if line.startswith("    "):
            block = []
            while i < len(lines) and (lines[i].startswith("    ") or
                                      not lines[i].strip()):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            out += code_block(block)
            continue

        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i])
                i += 1
            out += table(rows)
            continue

        if line.startswith("- "):
            while i < len(lines) and lines[i].startswith("- "):
                item = [lines[i][2:]]
                i += 1
                while i < len(lines) and lines[i].startswith("  ") and \
                        lines[i].strip():
                    item.append(lines[i].strip())
                    i += 1
                out.append(".IP \\(bu 2")
                out.append(text_line(" ".join(item)))
            continue

        paragraph = []
        while i < len(lines) and lines[i].strip() and \
                not lines[i].startswith(("|", "#", "    ", "- ")):
            paragraph.append(lines[i].strip())
            i += 1
        out.append(".PP")
        out.append(text_line(" ".join(paragraph)))
    return out


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: md2man.py MARKDOWN TEMPLATE\n")
        return 64
    with open(sys.argv[1], encoding="utf-8") as f:
        body = "\n".join(convert(f.read()))
    with open(sys.argv[2], encoding="utf-8") as f:
        template = f.read()
    if "@CONFIG_MD@\n" not in template:
        sys.stderr.write("md2man.py: the line @CONFIG_MD@ is missing from "
                         "%s; add it where the converted text goes\n" %
                         sys.argv[2])
        return 1
    sys.stdout.write(template.replace("@CONFIG_MD@\n", body + "\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
