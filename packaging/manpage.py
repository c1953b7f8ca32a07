"""nvreload(8), written from the command's own help: click's option list (the lines `nvreload --help`
prints) and the help epilog's sections (exit codes, environment, examples). packaging/build-deb runs
it with the package's own venv at build time, so the man page cannot drift from the command it
ships with; tests/test_packaging_deb.py holds the shipped page to the CLI's options.

    python packaging/manpage.py > nvreload.8

SOURCE_DATE_EPOCH (set by dpkg-buildpackage from debian/changelog) dates the page, so that two builds
of one version write the same bytes.
"""

from __future__ import annotations

import os
import re
import sys
import time

import click

from nvreload import __version__
from nvreload.cli import HELP_EPILOG, command

# the epilog's sections and where they go in a man page; a new one fails the build until named here
SECTIONS = {"Exit codes": "EXIT STATUS", "Environment": "ENVIRONMENT", "Examples": "EXAMPLES"}

FILES = (
    ("/etc/nvreload/nvreload.conf", "the upgrade policy of the package hooks (on_upgrade = report or when-idle)"),
    (
        "/var/lib/nvreload/journal.json",
        "the journal of the last acting run; an unfinished one is finished by --rollback",
    ),
    ("/var/lib/nvreload/reload-pending.json", "a reload that is due but was not done (exit 13)"),
    ("/run/nvreload/lock", "the lock one run holds on the node"),
    ("/usr/lib/nvreload/post-invoke", "the hook apt (and dnf) run after each transaction"),
    ("/etc/kernel/postinst.d/zz-nvreload", "the hook run after a kernel is installed (--check-kernel)"),
)


def roff(text: str) -> str:
    """Text as roff reads it literally: backslashes and hyphens escaped, no line taken for a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def options() -> list[tuple[str, str]]:
    """(the option's names and value, its help) for each option, as `nvreload --help` lists them."""
    ctx = click.Context(command, info_name="nvreload", **command.context_settings)
    records = (param.get_help_record(ctx) for param in command.get_params(ctx))
    return [record for record in records if record is not None]


def epilog_sections() -> dict[str, list[tuple[str, str]]]:
    """The epilog's blocks ("Title:" then "  term  text" lines, deeper-indented lines continuing the
    text) as {title: [(term, text)]}."""
    sections: dict[str, list[tuple[str, str]]] = {}
    for block in HELP_EPILOG.split("\n\n"):
        lines = [line for line in block.splitlines() if line.strip() and line != "\b"]
        title = lines[0].rstrip(":")
        if title not in SECTIONS:
            raise SystemExit(f"manpage.py: the help epilog has a section {title!r} this generator does not place")
        entries: list[tuple[str, str]] = []
        for line in lines[1:]:
            term, _, text = line.strip().partition("  ")
            if line.startswith("   ") and entries:  # a continuation of the entry above
                entries[-1] = (entries[-1][0], f"{entries[-1][1]} {line.strip()}")
            else:
                entries.append((term, text.strip()))
        sections[title] = entries
    return sections


def tagged(entries: list[tuple[str, str]], bold: bool = True) -> list[str]:
    out = []
    for term, text in entries:
        out += [".TP", f"\\fB{roff(term)}\\fR" if bold else roff(term), roff(text)]
    return out


def page() -> str:
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
    date = time.strftime("%Y-%m-%d", time.gmtime(epoch))
    summary = (command.help or "").strip().splitlines()[0]
    name_line = summary[0].lower() + summary[1:].rstrip(".")
    lines = [
        f'.TH NVRELOAD 8 "{date}" "nvreload {roff(__version__)}" "System Administration"',
        ".SH NAME",
        f"nvreload \\- {roff(name_line)}",
        ".SH SYNOPSIS",
        ".B nvreload",
        "[\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        roff(summary),
        "Without an action it prints the node's status (\\fB\\-\\-status\\fR).",
        "Actions that change the node need root and ask for confirmation unless \\fB\\-\\-yes\\fR is given.",
        ".SH OPTIONS",
    ]
    lines += tagged(options())
    sections = epilog_sections()
    for title, heading in SECTIONS.items():
        lines.append(f'.SH "{heading}"' if " " in heading else f".SH {heading}")
        lines += tagged(sections.get(title, []))
    lines.append(".SH FILES")
    lines += tagged(list(FILES))
    lines += ['.SH "SEE ALSO"', "\\fBsystemctl\\fR(1), \\fBmodprobe\\fR(8), \\fBnvidia\\-smi\\fR(1)"]
    return "\n".join(lines) + "\n"


def option_names(text: str) -> set[str]:
    """Every --long and -s option a page names in its OPTIONS section (for the tests)."""
    section = text.split(".SH OPTIONS", 1)[1].split("\n.SH ", 1)[0]
    lines = section.splitlines()
    heads = [re.sub(r"\\f[BRI]", "", lines[i + 1]).replace("\\-", "-") for i, line in enumerate(lines) if line == ".TP"]
    return {name for head in heads for name in re.findall(r"(?<![\w-])--?[\w-]+", head)}


if __name__ == "__main__":
    sys.stdout.write(page())
