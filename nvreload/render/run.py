"""Human output of the acting commands: live progress of each step, then the run's summary or the
dry-run plan, on stderr."""

from __future__ import annotations

from nvreload.engine.engine import Reporter
from nvreload.render.human import console, pending_line, text
from nvreload.render.output import reader_may_leave

TYPE_CHECKING = False
if TYPE_CHECKING:
    from rich.progress import Progress

    from nvreload.actions import ActionResult
    from nvreload.engine.kinds import Action


class ConsoleReporter(Reporter):
    """Each step as a spinner with its elapsed time while it runs (waits on container stops and
    module loads can take minutes), then one line with how long it took."""

    QUIET_OUTCOMES = ("done", "terminated", "killed", "gone")

    def __init__(self, verbose: bool = False, dry_run: bool = False) -> None:
        self.out = console()
        self.verbose = verbose
        self.dry_run = dry_run  # nothing runs: a step is "planned", never "done" in 0.0 s
        self._progress: Progress | None = None

    def step(self, name: str, status: str, seconds: float | None = None, detail: str = "") -> None:
        # progress that cannot be printed (the terminal went away) must not fail the run it reports
        with reader_may_leave():
            self._step(name, status, seconds, detail)

    def action(self, action: Action, status: str, detail: str = "") -> None:
        with reader_may_leave():
            self._action(action, status, detail)

    def _step(self, name: str, status: str, seconds: float | None, detail: str) -> None:
        if self.dry_run:
            if status == "done":
                self.out.print(f"{name:18} planned")
            elif status != "running":
                self.out.print(f"{name:18} {text(status)}{' ' + text(detail) if detail else ''}")
            return
        if status == "running":
            if not self.out.is_terminal:
                return  # a log or a pipe gets the finished lines only
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=self.out, transient=True
            )
            self._progress.start()
            self._progress.add_task(name, total=None)
            return
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        mark = {"done": "[green]done[/]", "failed": "[red]FAILED[/]", "interrupted": "[yellow]interrupted[/]"}.get(
            status, status
        )
        self.out.print(f"{name:18} {mark} ({seconds or 0:.1f} s){' ' + text(detail) if detail else ''}")

    def _action(self, action: Action, status: str, detail: str) -> None:
        if self.verbose or not status.startswith(self.QUIET_OUTCOMES):
            self.out.print(
                f"  {action.kind} {text(action.target)}: {text(status)}{' ' + text(detail) if detail else ''}"
            )


def render_action_result(result: ActionResult, action: str) -> None:
    out = console(report=True)
    if result.pending is not None:
        out.print(f"[yellow]reload pending[/]: {text(pending_line(result.pending.document()))}")
        return
    if result.not_needed is not None:
        out.print(f"no reload needed (the diagnosis recommends: {text(result.not_needed)})")
        return
    if result.slurm_resumed is not None:
        out.print(f"Slurm node {text(result.slurm_resumed)} resumed (a killed --drain slurm run had left it drained)")
    if result.nothing_to_do is not None:
        if result.nothing_to_do == "none":
            return
        out.print(f"nothing to {action}: the last run ended {text(result.nothing_to_do)}")
        return
    if result.dry_run:
        out.print("[bold]plan (dry run: nothing was changed)[/]")
        if not result.plan:
            out.print("  nothing to do")
        for index, planned in enumerate(result.plan, 1):
            extra = f" {planned.detail['parameters']}" if planned.detail.get("parameters") else ""
            out.print(f"{index:3}. {planned.kind} {text(planned.target + extra)}")
        return
    report = result.report
    assert report is not None
    style = (
        "green"
        if report.result in ("reloaded", "started", "stopped")
        else ("yellow" if report.result == "rolled_back" else "red")
    )
    out.print(f"result: [{style}]{report.result}[/]" + (f" ({text(report.error)})" if report.error else ""))
    if report.stopped:
        out.print("stopped: " + text(", ".join(report.stopped)))
    if report.restarted:
        out.print("came back: " + text(", ".join(report.restarted)))
    for failure in report.restart_failures:
        out.print(f"[red]did not come back[/]: {text(failure['target'])}: {text(failure['error'])}")
    for warning in report.warnings:
        out.print(f"[yellow]warning[/]: {text(warning['warning'])}")
    for left in report.left_alone:
        out.print(f"[yellow]left alone[/]: {text(left['service'])}: {text(left['why'])}")
    for killed in report.killed:
        out.print(f"ended process {killed['pid']} ({text(killed.get('comm'))}): {text(killed['outcome'])}")
    if report.slurm is not None:
        slurm = report.slurm
        if slurm["left_drained"]:
            out.print(f"[yellow]Slurm node {text(slurm['node'])} stays drained[/]: {text(slurm['left_drained'])}")
        elif slurm["resumed"]:
            waited = f", after waiting {slurm['waited_seconds']:.0f} s for {len(slurm['jobs_waited_for'])} job(s)"
            out.print(f"Slurm node {text(slurm['node'])} resumed{waited if slurm['jobs_waited_for'] else ''}")
        else:
            out.print(f"Slurm node {text(slurm['node'])} left as it was (drained or down before the run)")
    if report.gpu_unavailable_seconds is not None:
        out.print(f"GPUs unavailable for {report.gpu_unavailable_seconds:.1f} s")
    if report.remaining_action:
        out.print(f"[bold red]remaining action: {report.remaining_action}[/]")
