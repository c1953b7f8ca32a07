"""How a run ends: one Outcome maps the result word, the exit code and the journal state, and the
RunReport is the --json document of --reload, --stop, --start and --rollback."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from nvreload.errors import ExitCode


class Outcome(Enum):
    # name = (result, exit code, journal state)
    RELOADED = ("reloaded", ExitCode.OK, "reloaded")
    ROLLED_BACK = ("rolled_back", ExitCode.ROLLED_BACK, "rolled_back")
    NEEDS_REBOOT = ("failed", ExitCode.NEEDS_REBOOT, "failed")
    PARTIAL = ("failed", ExitCode.PARTIAL, "failed")  # --start retries what did not come back
    STOPPED = ("stopped", ExitCode.OK, "stopped")  # unfinished on purpose: --start ends it
    STARTED = ("started", ExitCode.OK, "started")
    RESET = ("reset", ExitCode.OK, "reset")  # --reset: the GPUs were reset and came back

    @property
    def result(self) -> str:
        return self.value[0]

    @property
    def exit_code(self) -> int:
        return self.value[1]

    @property
    def journal_state(self) -> str:
        return self.value[2]


def settle(report: RunReport, broken: bool, reached: Outcome | None, again: str | None = None) -> None:
    """How a run ended, decided in this one place for every run (reload, reset, stop, start,
    rollback): its result word, exit code and journal state, and what is left to do.

    `broken`: the driver or a GPU did not come back (a reboot is the way out); otherwise anything
    that did not come back makes it partial (`--start` retries it); otherwise the run `reached` its
    goal, or, where it did not, it was rolled back (`again`: the command to run it again)."""
    if broken:
        report.outcome, report.remaining_action = Outcome.NEEDS_REBOOT, "reboot"
    elif report.restart_failures:
        report.outcome, report.remaining_action = Outcome.PARTIAL, "nvreload --start"
    elif reached is not None:
        report.outcome = reached
    else:
        report.outcome = Outcome.ROLLED_BACK
        if again is not None:
            report.remaining_action = again


@dataclass
class RunReport:
    """What a run did and how it ended."""

    outcome: Outcome
    steps: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    restart_failures: list[dict] = field(default_factory=list)
    killed: list[dict] = field(default_factory=list)
    error: str | None = None
    remaining_action: str | None = None
    gpu_unavailable_seconds: float | None = None
    left_alone: list[dict] = field(default_factory=list)
    container_engine: dict | None = None
    warnings: list[dict] = field(default_factory=list)  # what did not stop the run: an optional module
    # a signal that arrived while rollback ran: acted on (re-raised) once the report is out
    deferred_signal: int | None = None
    slurm: dict | None = None  # --drain slurm: what happened to the node in Slurm (slurm_drain.DrainReport)
    # the run's journal (path, run_id): what a fleet report points an operator at, and what a
    # drain reason names
    journal: dict | None = None

    @property
    def result(self) -> str:
        return self.outcome.result

    @property
    def exit_code(self) -> int:
        return self.outcome.exit_code

    def document(self) -> dict:
        return {
            "schema_version": 1,
            "result": self.result,
            "steps": self.steps,
            "final": self.final,
            "stopped": self.stopped,
            "restarted": self.restarted,
            "restart_failures": self.restart_failures,
            "killed": self.killed,
            "error": self.error,
            "remaining_action": self.remaining_action,
            "gpu_unavailable_seconds": self.gpu_unavailable_seconds,
            "left_alone": self.left_alone,
            "container_engine": self.container_engine,
            "warnings": self.warnings,
            **({"slurm": self.slurm} if self.slurm is not None else {}),
            **({"journal": self.journal} if self.journal is not None else {}),
        }
