"""The node's end of a rollout: nvreload run as an operator runs it (a subprocess of this same
installation), its documents read back, and the node's state in Slurm."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from nvreload.engine.journal import Journal
from nvreload.engine.lock import NodeLock
from nvreload.errors import BadInputError, BusyError, HostError, JournalError, NvreloadError
from nvreload.host.slurm import SlurmNode, SlurmNodeState
from nvreload.state_files import StatePaths

BUSY_EXIT = 75


@dataclass(frozen=True)
class Invocation:
    """One nvreload run: its exit status, its JSON document (None when it printed none: a refusal
    before the report, a crash) and its last line on stderr."""

    exit_code: int
    document: dict | None
    error: str | None


@dataclass(frozen=True)
class NodeTools:
    """How this node runs nvreload: --simulate (a simulated node, for a demo or the tests) or the
    real one, and the Slurm node to drain (None: no Slurm)."""

    simulate: bool
    slurm_node: str | None
    scenario: str | None = None  # the simulated node's scenario file (None: nvreload's default)

    def nvreload(self, *args: str, timeout: float) -> Invocation:
        simulate = ["--simulate", *([self.scenario] if self.scenario else [])] if self.simulate else []
        argv = [sys.executable, "-m", "nvreload", *args, *simulate]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            return Invocation(124, None, f"nvreload {' '.join(args)} took longer than {timeout:g} s")
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return Invocation(done.returncode, _document(done.stdout), lines[-1] if lines else None)

    def status(self, *extra: str) -> Invocation:
        return self.nvreload("--status", "--json", *extra, timeout=300)

    def paths(self) -> StatePaths:
        return StatePaths.from_environment().for_run(self.simulate)

    def slurm(self) -> SlurmNode | None:
        return SlurmNode(self.slurm_node) if self.slurm_node else None

    def slurm_state(self) -> SlurmNodeState | None:
        node = self.slurm()
        return node.state() if node else None

    def journal(self) -> Journal | None:
        """The node's journal of its last run (None: none, or one nvreload would refuse: nvreload
        itself says what is wrong with it when it is asked to act)."""
        try:
            return Journal.load_if_any(self.paths().journal)
        except (JournalError, BadInputError, OSError):
            return None

    def unfinished_run(self) -> str | None:
        """The run id of an earlier run's journal that is not finished (killed, stopped, or still
        running), if one is not: nvreload refuses a reload over it until --rollback finished it."""
        journal = self.journal()
        return journal.run_id if journal is not None and journal.unfinished else None

    def journal_unfinished(self) -> bool:
        return self.unfinished_run() is not None

    def busy(self) -> bool:
        """A run holds the node lock now (a reload a killed controller started, still going)."""
        path = self.paths().lock
        if not os.path.exists(path):  # no run ever took it: nothing to wait for, nothing to create
            return False
        try:
            lock = NodeLock(path).acquire()
        except BusyError:
            return True
        except (OSError, NvreloadError):
            return False
        lock.release()
        return False

    def wait_while_busy(self, timeout: float, poll: float = 2.0) -> bool:
        """Wait (bounded) for a run that holds the lock; True when it was busy at first."""
        deadline = time.monotonic() + timeout
        was_busy = False
        while self.busy():
            was_busy = True
            if time.monotonic() > deadline:
                raise HostError(f"another nvreload run still holds the node after {timeout:g} s")
            time.sleep(poll)
        return was_busy


def _document(stdout: str) -> dict | None:
    text = stdout.strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def short_hostname() -> str:
    return socket.gethostname().split(".", 1)[0]


def slurm_document(state: SlurmNodeState | None) -> dict | None:
    if state is None:
        return None
    return {"node": state.name, "state": state.state, "reason": state.reason}


def environment_problem() -> str | None:
    if os.geteuid() != 0:
        return "nvreload-fleet runs on the node as root (become: true)"
    return None
