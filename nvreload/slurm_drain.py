"""`--drain slurm`: drain this node in Slurm, wait (bounded) until its jobs end, and resume it once
the run is over: reloaded, rolled back or partial. A node that needs a reboot after the run stays
drained, its reason saying so. A node an admin had drained or downed before stays as it was.

`slurm-drain.json` in the state directory records that nvreload drained the node before it does, and
is removed after the resume: a run killed while it waited for jobs or reloaded leaves it, and
`nvreload --rollback` (or `--start`) resumes the node from it. A run that needs a reboot keeps it
too: after the reboot, the `--rollback` that finishes that run's journal resumes the node. A resume
from the record happens only while the node is drained for nvreload's own reason: a run killed
between writing the record and draining left it as it was, and an admin's later drain stays.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field

from nvreload.engine.engine import Reporter
from nvreload.errors import BadInputError, ExitCode, HostError, RefusedError
from nvreload.host.slurm import DRAINED_FLAGS, REASON, REBOOT_REASON, SlurmNode
from nvreload.names import is_slurm_node_name
from nvreload.state_files import atomic_write_json
from nvreload.trusted_paths import read_own_file

RECORD = "slurm-drain.json"
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


def record_path(state_dir: str) -> str:
    return os.path.join(state_dir, RECORD)


class SlurmDrain:
    def __init__(
        self, node: SlurmNode, state_dir: str, reporter: Reporter, timeout: float = DEFAULT_TIMEOUT_S, poll: float = 1.0
    ) -> None:
        self.node = node
        self.record = record_path(state_dir)
        self.reporter = reporter
        self.timeout = timeout
        self.poll = poll
        self.report: DrainReport | None = None

    def drain_and_wait(self) -> DrainReport:
        """Drain (unless an admin did), then wait for the node's jobs. RefusedError when they do not
        end in time: the node is resumed (if nvreload drained it) and nothing else was touched."""
        before = self.node.state()
        ours = not before.held_by_admin
        self.report = DrainReport(self.node.name, drained=ours)
        if ours:
            # written first: a run killed from here on leaves the record --rollback resumes from
            atomic_write_json(self.record, {"schema_version": 1, "node": self.node.name, "since": time.time()})
            try:
                self.node.drain(REASON)
            except HostError as exc:
                clear_record(self.record)
                raise RefusedError(
                    f"--drain slurm: cannot drain {self.node.name}: {exc.message}; nothing was stopped"
                ) from None
        self.reporter.step("drain_slurm", "running")
        started = time.monotonic()
        last_progress = started
        jobs = self.node.jobs()
        self.report.jobs_waited_for = list(jobs)
        while jobs:
            now = time.monotonic()
            if now - started >= self.timeout:
                self._give_back()
                self.reporter.step("drain_slurm", "failed", now - started, f"jobs still running: {', '.join(jobs)}")
                raise RefusedError(
                    f"--drain slurm: {len(jobs)} job(s) still running on {self.node.name} after {self.timeout:g} s "
                    f"({', '.join(jobs)}); nothing was stopped"
                    + ("; the node is resumed" if ours else "; the node stays as the admin left it")
                )
            if now - last_progress >= PROGRESS_EVERY_S:
                self.reporter.step("drain_slurm", "waiting", now - started, f"{len(jobs)} job(s): {', '.join(jobs)}")
                last_progress = now
            time.sleep(self.poll)
            jobs = self.node.jobs()
            self.report.jobs_waited_for = sorted(set(self.report.jobs_waited_for) | set(jobs))
        self.report.waited_seconds = time.monotonic() - started
        self.reporter.step("drain_slurm", "done", self.report.waited_seconds)
        return self.report

    def finish(self, exit_code: int) -> DrainReport | None:
        """After the run: resume the node nvreload drained, unless the run left the GPUs unusable
        (a reboot is needed): then it stays drained, and its reason says why."""
        report = self.report
        if report is None or not report.drained:
            return report
        if exit_code == ExitCode.NEEDS_REBOOT:
            # the record stays: the --rollback after the reboot resumes the node it names
            self.node.drain(REBOOT_REASON)
            report.left_drained = (
                "the reload failed and the node needs a reboot (nvreload --rollback after it resumes it)"
            )
            return report
        try:
            self._give_back()
        except HostError as exc:  # the record stays: nvreload --rollback tries again
            report.left_drained = f"resume failed: {exc.message} (nvreload --rollback, or scontrol update state=resume)"
            return report
        report.resumed = True
        return report

    def _give_back(self) -> None:
        self.node.resume()
        clear_record(self.record)


def read_record(path: str) -> str | None:
    """The node a killed run left drained, or None. The name goes to scontrol as `nodename=NAME`:
    one that could name other nodes (a comma list, a hostlist range) is not a record of ours."""
    try:
        raw = read_own_file(path, 64 << 10)
        if raw is None:
            return None
        data = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: not a drain record ({exc})") from None
    if not isinstance(data, dict) or not is_slurm_node_name(data.get("node")):
        raise BadInputError(f"{path}: not a drain record (no node name, or one that is not a Slurm node's)")
    return data["node"]


def clear_record(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def resume_after_crash(state_dir: str) -> str | None:
    """--rollback, --start: resume the node a killed run (or one that needed a reboot) left drained;
    its name, or None. Only a node drained for nvreload's own reason is resumed: one never drained
    (the run died between its record and the drain) or drained by an admin since stays as it is."""
    path = record_path(state_dir)
    name = read_record(path)
    if name is None:
        return None
    node = SlurmNode(name)
    state = node.state()
    ours = bool(state.flags & DRAINED_FLAGS) and (state.reason or "").startswith(REASON)
    if ours:
        node.resume()
    clear_record(path)
    return name if ours else None
