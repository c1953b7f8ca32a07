"""`--drain slurm`: drain this node in Slurm, wait (bounded) until its jobs end, and resume it once
the run is over: reloaded, rolled back or partial. A node that needs a reboot after the run stays
drained, its reason saying so. A node an admin had drained or downed before stays as it was.

The drain is a step of the run's journal with its own undo record (`drain_slurm`, the node's name),
written before the drain: the journal alone says what a rollback must put back, the node in Slurm
included. A run killed while it waited for jobs or reloaded leaves the record outstanding, and
`nvreload --rollback` (or `--start`) resumes the node once the consumers are back. A run that needs
a reboot keeps it too: after the reboot, the `--rollback` that finishes that run's journal resumes
the node. A resume from the record happens only while the node is drained for nvreload's own
reason: a run killed between writing the record and draining left it as it was, and an admin's later
drain stays.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from nvreload.engine.engine import Reporter
from nvreload.engine.journal import Journal, UndoRecord
from nvreload.engine.outcome import Outcome, RunReport
from nvreload.errors import BadInputError, ExitCode, HostError, RefusedError
from nvreload.host.slurm import DRAINED_FLAGS, REASON, REBOOT_REASON, SlurmNode

UNDO_KIND = "drain_slurm"
STEP = "drain_slurm"
DEFAULT_TIMEOUT_S = 3600.0  # how long jobs may take to end; a longer wait is a scheduler's job
PROGRESS_EVERY_S = 30.0


@dataclass
class DrainReport:
    node: str
    drained: bool  # by this run (False: an admin had drained it, or it was down)
    waited_seconds: float = 0.0
    jobs_waited_for: list[str] = field(default_factory=list)
    resumed: bool = False
    left_drained: str | None = None  # why the node stays drained after the run

    def document(self) -> dict:
        return {
            "node": self.node,
            "drained": self.drained,
            "waited_seconds": round(self.waited_seconds, 1),
            "jobs_waited_for": self.jobs_waited_for,
            "resumed": self.resumed,
            "left_drained": self.left_drained,
        }


def drain_reason(reason: str, journal: Journal) -> str:
    """The reason Slurm shows: nvreload's own (its prefix is how a later run knows the drain is
    nvreload's) and the run that drained, whose journal says the rest."""
    return f"{reason} (run {journal.run_id})"


class SlurmDrain:
    """The drain around one run, journaled in that run's journal."""

    def __init__(
        self,
        node: SlurmNode,
        journal: Journal,
        reporter: Reporter,
        timeout: float = DEFAULT_TIMEOUT_S,
        poll: float = 1.0,
    ) -> None:
        self.node = node
        self.journal = journal
        self.reporter = reporter
        self.timeout = timeout
        self.poll = poll
        self.report: DrainReport | None = None
        self._record: UndoRecord | None = None

    def drain_and_wait(self) -> DrainReport:
        """Drain (unless an admin did), then wait for the node's jobs: the run's first journaled
        step. RefusedError when the drain fails or the jobs do not end in time: the node is resumed
        (if nvreload drained it), the journal ends rolled back, and nothing else was touched."""
        try:
            before = self.node.state()
        except (BadInputError, HostError) as exc:  # a node Slurm does not know: nothing was drained
            self._end_unstarted(exc.message)
            raise
        ours = not before.held_by_admin
        self.report = DrainReport(self.node.name, drained=ours)
        self.journal.step_started(STEP)
        self.reporter.step(STEP, "running")
        if ours:
            # written first: a run killed from here on leaves the record --rollback resumes from
            self._record = self.journal.intend(UNDO_KIND, self.node.name, {"reason": REASON})
            try:
                self.node.drain(drain_reason(REASON, self.journal))
            except HostError as exc:
                self.journal.mark(self._record, "undone")
                self._refuse(f"--drain slurm: cannot drain {self.node.name}: {exc.message}; nothing was stopped")
            self.journal.mark(self._record, "done")
        started = time.monotonic()
        self._wait_for_jobs(started, ours)
        self.report.waited_seconds = time.monotonic() - started
        self.journal.step_finished(STEP, "done")
        self.reporter.step(STEP, "done", self.report.waited_seconds)
        return self.report

    def _wait_for_jobs(self, started: float, ours: bool) -> None:
        assert self.report is not None
        last_progress = started
        jobs = self.node.jobs()
        self.report.jobs_waited_for = list(jobs)
        while jobs:
            now = time.monotonic()
            if now - started >= self.timeout:
                self._give_back()
                self.reporter.step(STEP, "failed", now - started, f"jobs still running: {', '.join(jobs)}")
                self._refuse(
                    f"--drain slurm: {len(jobs)} job(s) still running on {self.node.name} after {self.timeout:g} s "
                    f"({', '.join(jobs)}); nothing was stopped"
                    + ("; the node is resumed" if ours else "; the node stays as the admin left it")
                )
            if now - last_progress >= PROGRESS_EVERY_S:
                self.reporter.step(STEP, "waiting", now - started, f"{len(jobs)} job(s): {', '.join(jobs)}")
                last_progress = now
            time.sleep(self.poll)
            jobs = self.node.jobs()
            self.report.jobs_waited_for = sorted(set(self.report.jobs_waited_for) | set(jobs))

    def _refuse(self, why: str) -> None:
        self._end_unstarted(why)
        raise RefusedError(why)

    def _end_unstarted(self, why: str, step_failed: bool = True) -> None:
        """The run stops before it began: the journal says rolled back (the drain undone), and why."""
        if step_failed:
            self.journal.step_finished(STEP, "failed", why)
        report = RunReport(Outcome.ROLLED_BACK, steps=[], error=why)
        report.slurm = self.report.document() if self.report else None
        report.journal = self.journal.reference()
        self.journal.finish(Outcome.ROLLED_BACK.journal_state, report.document())

    def give_back_unstarted(self, why: str) -> None:
        """The jobs ended but the run could not start (the node read again, the plan made again,
        refused): nothing was stopped, so the node goes back to Slurm and the journal ends."""
        if self._record is not None and self._record.outstanding:
            try:
                self._give_back()
                if self.report is not None:
                    self.report.resumed = True
            except HostError:  # the record stays, and the run unfinished: nvreload --rollback resumes it
                return
        self._end_unstarted(why, step_failed=False)

    def settle(self, report: RunReport) -> None:
        """The engine's last step, before its journal is finished: resume the node nvreload drained,
        unless the run left the GPUs unusable (a reboot is needed): then it stays drained, and its
        reason says why."""
        drained = self.report
        if drained is None or not drained.drained or self._record is None:
            report.slurm = drained.document() if drained else None
            return
        if report.exit_code == ExitCode.NEEDS_REBOOT:
            # the record stays outstanding: the --rollback after the reboot resumes the node it names
            drained.left_drained = (
                "the reload failed and the node needs a reboot (nvreload --rollback after it resumes it)"
            )
            try:
                self.node.drain(drain_reason(REBOOT_REASON, self.journal))
            except HostError as exc:  # drained still, for the run's own reason
                drained.left_drained += f"; its reason could not say so: {exc.message}"
        else:
            try:
                self._give_back()
                drained.resumed = True
            except HostError as exc:  # the record stays: nvreload --rollback tries again
                drained.left_drained = (
                    f"resume failed: {exc.message} (nvreload --rollback, or scontrol update state=resume)"
                )
        report.slurm = drained.document()

    def _give_back(self) -> None:
        self.node.resume()
        if self._record is not None:
            self.journal.mark(self._record, "undone")


def resume_from_journal(journal: Journal, report: RunReport) -> str | None:
    """--rollback, --start, as their engine's last step: resume the node the journal's run drained
    and did not resume (it was killed, or needed a reboot); its name, or None. Only a node drained
    for nvreload's own reason is resumed: one never drained (the run died between its record and
    the drain) or drained by an admin since stays as it is. Not while the run still needs a reboot."""
    records = journal.outstanding(UNDO_KIND)
    if not records or report.exit_code == ExitCode.NEEDS_REBOOT:
        return None
    name = records[-1].target
    node = SlurmNode(name)
    try:
        state = node.state()
        ours = bool(state.flags & DRAINED_FLAGS) and (state.reason or "").startswith(REASON)
        if ours:
            node.resume()
    except (HostError, BadInputError) as exc:  # the record stays: the next --rollback tries again
        report.slurm = DrainReport(name, drained=True, left_drained=f"resume failed: {exc.message}").document()
        return None
    for record in records:
        journal.mark(record, "undone")
    report.slurm = DrainReport(name, drained=True, resumed=ours).document() if ours else report.slurm
    return name if ours else None
