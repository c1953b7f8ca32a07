"""The console entry point, and what the two ways in share.

`nvreload --status --json` is what fleet monitoring runs every few seconds on every node, so a
command line that asks only for status (`--status`/`-s`, `--json`, `--format human|json|prometheus`,
`--output FILE`, `--root DIR`, `--verbose`/`-v`) goes straight to the application: importing click
and what it pulls in (datetime, platform, gettext...) would be a sixth of that run. The metrics timer
(`--status --format prometheus --output FILE`, every minute) takes this way too. Every other command line, --help and --version included,
goes through the click CLI in cli.py, which owns the documented interface. Both ways render through
run_read_only() and report errors through guarded(), and tests/test_entry.py holds them to the same
output and exit code.
"""

from __future__ import annotations

import sys

# Nothing else at the top: everything this module needs is imported inside main()'s guard, so that a
# Ctrl-C while Python imports is one line and exit 130, never a traceback (the console script
# imports this module before it calls main).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

    from nvreload.requests import StatusRequest

_STATUS = ("--status", "-s")
_JSON = ("--json",)
_VERBOSE = ("--verbose", "-v")


def _value(arg: str, name: str, rest: Iterator[str]) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE`; None when it is missing (click says so)."""
    if arg.startswith(name + "="):
        return arg[len(name) + 1 :]
    value = next(rest, None)
    return None if value is None or value.startswith("-") else value


def status_request(args: list[str]) -> StatusRequest | None:
    """The request when `args` only ask for status; None sends them to click (which also says what is
    wrong with a bad value, or with --json beside another --format)."""
    from nvreload.requests import FORMATS, StatusRequest

    request = StatusRequest()
    as_json, chosen = False, None
    rest = iter(args)
    for arg in rest:
        name = arg.split("=", 1)[0]
        if arg in _STATUS:
            continue
        if arg in _JSON:
            as_json = True
        elif arg in _VERBOSE:
            request.verbose = True
        elif name in ("--root", "--format", "--output", "--baseline"):
            value = _value(arg, name, rest)
            if not value or (name == "--format" and value not in FORMATS):
                return None
            if name == "--root":
                request.root = value
            elif name == "--format":
                chosen = value
            elif name == "--baseline":
                request.baseline = value
            else:
                request.output = value
        else:
            return None
    if as_json and chosen not in (None, "json"):
        return None
    request.format = "json" if as_json else chosen or "human"
    return request


# Set by the shell completion scripts click generates: the shell asks for candidates with an empty
# command line, which the fast path would otherwise read as `--status` and run on every TAB.
COMPLETION_VARIABLE = "_NVRELOAD_COMPLETE"


def main(argv: list[str] | None = None) -> None:
    try:
        _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C while Python is still importing, before guarded() is in place: nothing was changed
        sys.stderr.write("nvreload: interrupted before anything was changed\n")
        sys.exit(130)


def _main(argv: list[str] | None) -> None:
    import os

    args = list(sys.argv[1:] if argv is None else argv)
    request = None if COMPLETION_VARIABLE in os.environ else status_request(args)
    if request is None:
        from nvreload.cli import main as cli_main

        cli_main(args)
        return
    from nvreload.frontend import guarded, run_read_only

    sys.exit(
        guarded(
            lambda: run_read_only(
                "status",
                request.root,
                request.format,
                request.verbose,
                output=request.output,
                baseline=request.baseline,
            ),
            request.verbose,
        )
    )
