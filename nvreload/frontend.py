"""What the two ways in (entry.py's status fast path and cli.py) share: a read-only command run and
rendered, and every error turned into one line on stderr and its documented exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable

from nvreload.errors import ExitCode, NvreloadError

TYPE_CHECKING = False  # not typing's: importing typing costs the --status path
if TYPE_CHECKING:
    from nvreload.app import App
    from nvreload.render.prometheus import JournalView


def run_read_only(
    action: str,
    root: str | None,
    output_format: str,
    verbose: bool,
    collect_to: str | None = None,
    simulate: str | None = None,
    output: str | None = None,
    kernel: str | None = None,
    baseline: str | None = None,
) -> int:
    """--status, --verify, --collect: call the application, render its document in `output_format`
    (human, json, prometheus), return the exit code. `output`: write the prometheus text to that file
    (atomically, for node_exporter's textfile collector) instead of stdout."""
    # which format, output and baseline go with which action: commandline.check(), on both ways in
    from nvreload.app import App

    app = App(root=root, simulate=simulate)
    if action == "collect":
        result = app.collect(str(collect_to))
    elif action == "check_kernel":
        result = app.check_kernel(str(kernel))
    else:
        result = app.status(baseline) if action == "status" else app.verify()
    if output_format == "prometheus":
        return _metrics(app, result.document, output, result.exit_code)
    from nvreload.render.output import reader_may_leave

    with reader_may_leave():  # the exit code is the node's, whoever still reads
        if output_format == "json":
            from nvreload.render.json_out import emit_json

            emit_json(result.document)
            return result.exit_code
        from nvreload.render import human

        if action == "check_kernel":
            human.render_kernel_check(result.document)
        elif action == "status":
            human.render_status(result.document, verbose=verbose)
        elif action == "verify":
            human.render_verify(result.document)
        else:
            human.console(report=True).print(
                f"snapshot written to {human.text(collect_to)} ({result.document['manifest']['files']} entries)"
            )
    return result.exit_code


def _metrics(app: App, document: dict, output: str | None, exit_code: int) -> int:
    from nvreload.render.prometheus import render_prometheus

    text = render_prometheus(document, _journal_view(app))
    if output is not None:
        from nvreload.state_files import write_user_file

        # 0644: node_exporter reads it as its own user
        write_user_file(output, lambda raw: raw.write(text.encode()), "--output", mode=0o644)
        return exit_code
    from nvreload.render.output import reader_may_leave

    with reader_may_leave():
        sys.stdout.write(text)
    return exit_code


def _journal_view(app: App) -> JournalView | None:
    """What the journal of the node being read says of its last run; None for a --root snapshot (the
    journal here is this machine's, not the snapshot's). A journal that cannot be read is said once on
    stderr and reported as a metric, never an error: the node's metrics still matter most."""
    if app.root_arg is not None and app.simulate is None:
        return None
    from nvreload.engine.journal import Journal
    from nvreload.errors import JournalError
    from nvreload.render.prometheus import JournalView, LastRun

    # the journal the acting commands write for this node
    paths = app.paths.for_run(simulated=app.simulate is not None)
    try:
        journal = Journal.load_if_any(paths.journal)
    except (JournalError, OSError) as exc:
        say(f"journal unreadable: {exc}")
        return JournalView(readable=False)
    if journal is None:
        return JournalView()
    return JournalView(
        last_run=LastRun(
            action=journal.action,
            state=journal.state,
            unfinished=journal.unfinished,
            started=journal.time_of("started"),
            updated=journal.time_of("updated"),
            finished=journal.time_of("finished"),
        )
    )


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
