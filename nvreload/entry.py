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
from collections.abc import Callable

from nvreload.errors import ExitCode, NvreloadError
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


def run_read_only(action: str, root: str | None, as_json: bool, verbose: bool, collect_to: str | None = None) -> int:
    """--status, --verify, --collect: call the application, render its document, return the exit code."""
    from nvreload.app import App

    app = App(root=root)
    if action == "collect":
        result = app.collect(str(collect_to))
    else:
        result = app.status() if action == "status" else app.verify()
    if as_json:
        from nvreload.render.json_out import emit_json

        emit_json(result.document)
        return result.exit_code
    from nvreload.render import human

    if action == "status":
        human.render_status(result.document, verbose=verbose)
    elif action == "verify":
        human.render_verify(result.document)
    else:
        human.console().print(f"snapshot written to {collect_to} ({result.document['manifest']['files']} entries)")
    return result.exit_code


def say(message: str) -> None:
    sys.stderr.write(f"nvreload: {message}\n")
    sys.stderr.flush()


def guarded(call: Callable[[], int], verbose: bool) -> int:
    """Run a command; every error becomes one line on stderr and its documented exit code."""
    try:
        return call()
    except NvreloadError as exc:
        say(exc.message)
        return exc.exit_code
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug: one line unless --verbose
        if verbose:
            import traceback  # only for bugs: not worth its import on every run

            traceback.print_exc()
        say(f"internal error: {type(exc).__name__}: {exc} (run with --verbose for the traceback)")
        return ExitCode.INTERNAL


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    request = status_request(args)
    if request is None:
        from nvreload.cli import main as cli_main

        cli_main(args)
        return
    sys.exit(guarded(lambda: run_read_only("status", request.root, request.as_json, request.verbose), request.verbose))
