"""What the two ways in (entry.py's status fast path and cli.py) share: a read-only command run and
rendered, and every error turned into one line on stderr and its documented exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable

from nvreload.errors import ExitCode, NvreloadError


def run_read_only(action: str, root: str | None, as_json: bool, verbose: bool, collect_to: str | None = None,
                  simulate: str | None = None) -> int:
    """--status, --verify, --collect: call the application, render its document, return the exit code."""
    from nvreload.app import App

    app = App(root=root, simulate=simulate)
    if action == "collect":
        result = app.collect(str(collect_to))
    else:
        result = app.status() if action == "status" else app.verify()
    from nvreload.render.output import reader_may_leave

    with reader_may_leave():  # the exit code is the node's, whoever still reads
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
            human.console().print(f"snapshot written to {human.text(collect_to)} ({result.document['manifest']['files']} entries)")
    return result.exit_code


def say(message: str) -> None:
    from nvreload.render.output import reader_may_leave

    with reader_may_leave():
        sys.stderr.write(f"nvreload: {message}\n")


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
