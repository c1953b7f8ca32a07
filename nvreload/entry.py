"""The console entry point, and what the two ways in share.

`nvreload --status --json` is what fleet monitoring runs every few seconds on every node, so a
command line that asks only for status (`--status`/`-s`, `--json`, `--root DIR`, `--verbose`/`-v`)
goes straight to the application: importing click and what it pulls in (datetime, platform,
gettext...) would be a sixth of that run. Every other command line, --help and --version included,
goes through the click CLI in cli.py, which owns the documented interface. Both ways render through
run_read_only() and report errors through guarded(), and tests/test_entry.py holds them to the same
output and exit code.
"""

from __future__ import annotations

import sys

from nvreload.frontend import guarded, run_read_only
from nvreload.requests import StatusRequest

_STATUS = ("--status", "-s")
_JSON = ("--json",)
_VERBOSE = ("--verbose", "-v")


def status_request(args: list[str]) -> StatusRequest | None:
    """The request when `args` only ask for status; None sends them to click."""
    request = StatusRequest()
    rest = iter(args)
    for arg in rest:
        if arg in _STATUS:
            continue
        if arg in _JSON:
            request.as_json = True
        elif arg in _VERBOSE:
            request.verbose = True
        elif arg == "--root":
            value = next(rest, None)
            if value is None or value.startswith("-"):
                return None  # click says what is wrong with it
            request.root = value
        elif arg.startswith("--root="):
            request.root = arg[len("--root="):]
        else:
            return None
    return request


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    request = status_request(args)
    if request is None:
        from nvreload.cli import main as cli_main

        cli_main(args)
        return
    sys.exit(guarded(lambda: run_read_only("status", request.root, request.as_json, request.verbose), request.verbose))
