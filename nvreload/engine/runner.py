"""Glue between the command line and the engine: pick the host, the journal and the lock, check
preconditions, confirm, run, render. The reload logic itself knows none of this."""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile

from nvreload.engine.dry_run import RecordingHost
from nvreload.engine.engine import Engine, Reporter, RunReport
from nvreload.engine.journal import Journal, NullJournal
from nvreload.engine.lock import NodeLock, NullLock, lock_path
from nvreload.engine.planner import build_plan
from nvreload.entry import emit_json
from nvreload.errors import BadInputError, ExitCode, RefusedError, UsageError
from nvreload.state_files import state_dir


def check_installer(path: str) -> None:
    """A .run we would execute as root: it must exist, be an NVIDIA makeself archive, and not be
    writable by anyone but its owner (root)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise BadInputError(f"{path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadInputError(f"{path}: not a regular file")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise BadInputError(f"{path}: writable by group or others; refusing to run it as root")
    with open(path, "rb") as handle:
        head = handle.read(16384)
    if b"makeself" not in head.lower() or b"NVIDIA" not in head:
        raise BadInputError(f"{path}: not an NVIDIA driver installer (.run makeself archive)")


class ConsoleReporter(Reporter):
    """Each step as a spinner with its elapsed time while it runs (waits on container stops and
    module loads can take minutes), then one line with how long it took."""

    QUIET_OUTCOMES = ("done", "terminated", "killed", "gone")

    def __init__(self, verbose: bool = False) -> None:
        from nvreload.render.human import console

        self.out = console()
        self.verbose = verbose
        self._progress = None

    def step(self, name: str, status: str, seconds: float | None = None, detail: str = "") -> None:
        if status == "running":
            if not self.out.is_terminal:
                return  # a log or a pipe gets the finished lines only
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                      console=self.out, transient=True)
            self._progress.start()
            self._progress.add_task(name, total=None)
            return
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        mark = {"done": "[green]done[/]", "failed": "[red]FAILED[/]", "interrupted": "[yellow]interrupted[/]"}.get(status, status)
        self.out.print(f"{name:18} {mark} ({seconds or 0:.1f} s){' ' + detail if detail else ''}")

    def action(self, action, status: str, detail: str = "") -> None:  # type: ignore[no-untyped-def]
        if self.verbose or not status.startswith(self.QUIET_OUTCOMES):
            self.out.print(f"  {action.action} {action.target}: {status}{' ' + detail if detail else ''}")


def _host(opts: dict):  # type: ignore[no-untyped-def]
    """(host, journal directory, lock path) for a simulated or a live node."""
    if opts["simulate"] is not None:
        from nvreload.engine.sim import SimulatedNode, load_scenario

        directory = os.environ.get("NVRELOAD_STATE_DIR") or tempfile.mkdtemp(prefix="nvreload-sim-")
        scenario = load_scenario(opts["simulate"] or None)
        node_class = SimulatedNode
        if scenario.get("consumers") == "live":
            from nvreload.engine.sim_live import SimulatedModulesLiveConsumers as node_class  # noqa: N813
        return node_class(scenario, directory), directory, os.path.join(directory, "lock")
    from nvreload.engine.live import LiveReloadHost
    from nvreload.host.local import LocalHost
    from nvreload.host.rootfs import open_root

    return LiveReloadHost(LocalHost(open_root(opts["root"]))), state_dir(), lock_path()


def _render(report: RunReport, opts: dict, recorded=None) -> None:  # type: ignore[no-untyped-def]
    if recorded is not None:
        document = {"schema_version": 1, "plan": [{"action": a.action, "target": a.target, **({"detail": a.detail} if a.detail else {})} for a in recorded]}
        if opts["as_json"]:
            emit_json(document)
        else:
            from nvreload.render.human import console

            out = console()
            out.print("[bold]plan (dry run: nothing was changed)[/]")
            for index, action in enumerate(recorded, 1):
                extra = f" {action.detail['parameters']}" if action.detail.get("parameters") else ""
                out.print(f"{index:3}. {action.action} {action.target}{extra}")
        return
    if opts["as_json"]:
        emit_json(report.document())
        return
    from nvreload.render.human import console

    out = console()
    style = "green" if report.result in ("reloaded", "started", "stopped") else ("yellow" if report.result == "rolled_back" else "red")
    out.print(f"result: [{style}]{report.result}[/]" + (f" ({report.error})" if report.error else ""))
    if report.stopped:
        out.print("stopped: " + ", ".join(report.stopped))
    if report.restarted:
        out.print("came back: " + ", ".join(report.restarted))
    for failure in report.restart_failures:
        out.print(f"[red]did not come back[/]: {failure['target']}: {failure['error']}")
    for left in report.left_alone:
        out.print(f"[yellow]left alone[/]: {left['service']}: {left['why']}")
    for killed in report.killed:
        out.print(f"ended process {killed['pid']} ({killed.get('comm')}): {killed['outcome']}")
    if report.gpu_unavailable_seconds is not None:
        out.print(f"GPUs unavailable for {report.gpu_unavailable_seconds:.1f} s")
    if report.remaining_action:
        out.print(f"[bold red]remaining action: {report.remaining_action}[/]")


def run_action(action: str, opts: dict) -> int:
    if action == "reset":
        raise UsageError("--reset is not implemented yet; use --reload")
    if opts["driver"]:
        check_installer(str(opts["driver"]))
    dry_run = bool(opts["dry_run"])
    if opts["simulate"] is None and not dry_run and os.geteuid() != 0:
        raise RefusedError(f"--{action} needs root (it stops services and unloads kernel modules); run it with sudo")
    host, directory, lock_file = _host(opts)
    recorder = None
    if dry_run:
        recorder = host = RecordingHost(host)
    lock = NullLock() if dry_run else NodeLock(lock_file)
    with lock:
        previous = None if dry_run else Journal.load_if_any(directory)
        reporter = ConsoleReporter(bool(opts["verbose"])) if not opts["as_json"] else Reporter()
        if action in ("start", "rollback"):
            if dry_run:
                journal_doc = Journal.load(directory)
                raise UsageError(f"--{action} --dry-run: the journal of run {journal_doc.data.get('run_id')} would be resumed")
            if previous is None:
                raise BadInputError(f"no journal in {directory}: nothing to {action}")
            if not previous.unfinished:
                if opts["as_json"]:
                    sys.stdout.write(json.dumps({"schema_version": 1, "result": "nothing_to_do", "journal_state": previous.data.get("state")}) + "\n")
                else:
                    from nvreload.render.human import console

                    console().print(f"nothing to {action}: the last run ended {previous.data.get('state')}")
                return ExitCode.OK
            report = Engine(host, previous, reporter).resume()
            _render(report, opts)
            return report.exit_code
        if previous is not None and previous.unfinished:
            raise RefusedError(
                f"an unfinished run ({previous.data.get('action')}, state {previous.data.get('state')}) is in "
                f"{previous.path}: run nvreload --rollback{' --simulate' if opts['simulate'] is not None else ''} first")
        view = host.observe()
        blockers = [b for b in view.blockers if not (b == "display_server_active" and opts["force_display"])]
        if view.display_processes and not opts["force_display"] and "display_server_active" not in blockers:
            blockers.append("display_server_active")
        if blockers and action == "reload" and not dry_run:
            raise RefusedError("reload refused: " + ", ".join(blockers) + " (nvreload --status explains)")
        plan = build_plan(view, host.configured_parameters(), driver=opts["driver"], stop_only=action == "stop",
                          restart_container_engine=bool(opts["restart_docker"]))
        if not dry_run and not opts["yes"]:
            if not sys.stdin.isatty():
                raise RefusedError(f"--{action} acts on the node: confirm with --yes when no terminal can ask")
            import click

            if not click.confirm(f"{action}: {len(plan.actions())} actions on this node. Go ahead?", err=True):
                raise RefusedError("not confirmed")
        journal = NullJournal() if dry_run else Journal.start(directory, action, [
            {"step": s.name, "action": a.action, "target": a.target} for s in plan.steps for a in s.actions
        ], {"host": host.name, "driver": opts["driver"], "container_engine": view.container_engine})
        engine = Engine(host, journal, reporter)
        report = engine.stop(plan) if action == "stop" else engine.reload(plan)
        report.container_engine = view.container_engine
        report.left_alone = [{"service": name, "why": "enabled but already failed before the run; not started"}
                             for name in view.failed_services]
        _render(report, opts, recorder.recorded if recorder is not None else None)
        return ExitCode.OK if dry_run else report.exit_code
