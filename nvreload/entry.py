"""The console entry point, and what the two ways in share.

`nvreload --status --json` is what fleet monitoring runs every few seconds on every node, so a
command line that asks only for status (the options commandline.FAST_STATUS_OPTIONS declares, kept to
the same rules by commandline.check()) goes straight to the application: importing click
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


def _value(arg: str, name: str, rest: Iterator[str]) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE`; None when it is missing (click says so)."""
    if arg.startswith(name + "="):
        return arg[len(name) + 1 :]
    value = next(rest, None)
    return None if value is None or value.startswith("-") else value


def status_request(args: list[str]) -> StatusRequest | None:
    """The request when `args` only ask for status (commandline.FAST_STATUS_OPTIONS, kept to every
    rule commandline.check() holds a command line to); None sends them to click, which also says
    what is wrong with a bad value or a broken rule."""
    from nvreload.commandline import FAST_STATUS_OPTIONS, check
    from nvreload.errors import UsageError
    from nvreload.requests import FORMATS, StatusRequest

    options: dict[str, object] = {"status": True}
    rest = iter(args)
    for arg in rest:
        name = arg.split("=", 1)[0]
        known = next((o for o in FAST_STATUS_OPTIONS if name in o[0]), None)
        if known is None:
            return None
        _strings, key, takes_value = known
        if not takes_value:
            if arg != name:
                return None  # --json=x: click says what is wrong
            options[key] = True
            continue
        value = _value(arg, name, rest)
        if not value or (key == "format" and value not in FORMATS):
            return None
        options[key] = value
    try:
        check("status", options)
    except UsageError:
        return None
    return StatusRequest(
        root=options.get("root"),  # type: ignore[arg-type]
        format="json" if options.get("as_json") else str(options.get("format") or "human"),
        verbose=bool(options.get("verbose")),
        output=options.get("output"),  # type: ignore[arg-type]
        baseline=options.get("baseline"),  # type: ignore[arg-type]
    )


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
    import gc
    import os

    # A status run is short and read-only, and makes almost no reference cycles: the collector's
    # passes while some forty modules are imported and the node is read are a tenth of the run's
    # own time, for garbage that the process's end frees anyway. Every other run gets it back.
    gc.disable()
    args = list(sys.argv[1:] if argv is None else argv)
    request = None if COMPLETION_VARIABLE in os.environ else status_request(args)
    if request is None:
        gc.enable()
        from nvreload.cli import main as cli_main

        cli_main(args)
        return
    from nvreload.frontend import guarded, run_read_only

    code = guarded(
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
    if argv is None:  # the console script: nothing of this process runs after main()
        leave_now(code)
    sys.exit(code)


def leave_now(code: int) -> None:
    """End the process with `code` once its output is out, without the interpreter's teardown: a
    status run has written everything it writes (stdout, a metrics file already renamed into place)
    and holds nothing an exit handler must release, and tearing down its modules and objects would
    cost about as much again as reading the node. A reader that left meanwhile does not change the
    code (render.output: the exit code is the node's)."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # a reader gone, a stream closed or None
            pass
    os._exit(code)
