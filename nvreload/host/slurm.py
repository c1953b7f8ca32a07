"""The door to Slurm: drain this node, list its jobs, resume it (scontrol and squeue, through the
CommandRunner). The cluster is whatever those commands reach: SLURM_CONF, the node's own slurm.conf.

A node's state in Slurm is a base state and flags: IDLE, MIXED+DRAIN, DOWN*+DRAIN... A node an admin
drained or downed before nvreload came must stay that way afterwards: state() says which it is.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from nvreload.errors import BadInputError, HostError
from nvreload.host.commands import CommandRunner

REASON = "nvreload: driver reload"
REBOOT_REASON = "nvreload: driver reload failed, reboot needed"  # starts with REASON: nvreload's own
DRAINED_FLAGS = frozenset({"DRAIN", "DRAINING", "DRAINED"})


@dataclass(frozen=True)
class SlurmNodeState:
    name: str
    state: str  # scontrol's State=, e.g. "IDLE", "MIXED+DRAIN", "DOWN*"
    reason: str | None

    @property
    def flags(self) -> set[str]:
        return set(self.state.rstrip("*~#!%$@^-").replace("*", "").split("+"))

    @property
    def held_by_admin(self) -> bool:
        """Drained, draining or down for a reason that is not nvreload's: leave it so."""
        unavailable = bool(self.flags & {"DRAIN", "DRAINING", "DRAINED", "DOWN", "FAIL", "MAINT"})
        return unavailable and not (self.reason or "").startswith(REASON)


def local_node_name() -> str:
    """Slurm's usual NodeName: the short host name."""
    return socket.gethostname().split(".", 1)[0]


class SlurmNode:
    def __init__(self, name: str, runner: CommandRunner | None = None) -> None:
        self.name = name
        self.runner = runner or CommandRunner()

    def state(self) -> SlurmNodeState:
        result = self.runner.run(["scontrol", "--oneliner", "show", "node", self.name], timeout=30)
        if not result.ok:
            last = (result.stderr.strip() or result.stdout.strip() or f"exit {result.returncode}").splitlines()[-1]
            raise BadInputError(f"Slurm does not know node {self.name} ({last}): name it with --slurm-node")
        return parse_node(self.name, result.stdout)

    def jobs(self) -> tuple[str, ...]:
        """The ids of the jobs running (or being set up, or completing) on this node."""
        output = self.runner.check(
            [
                "squeue",
                "--noheader",
                "--nodelist",
                self.name,
                "--states",
                "RUNNING,CONFIGURING,COMPLETING,SUSPENDED",
                "--format",
                "%i",
            ],
            timeout=30,
        )
        return tuple(line.strip() for line in output.splitlines() if line.strip())

    def drain(self, reason: str = REASON) -> None:
        self.runner.check(["scontrol", "update", f"nodename={self.name}", "state=drain", f"reason={reason}"])

    def resume(self) -> None:
        self.runner.check(["scontrol", "update", f"nodename={self.name}", "state=resume"])


def parse_node(name: str, output: str) -> SlurmNodeState:
    """`scontrol --oneliner show node NAME`: key=value pairs on one line; Reason= runs to the end of
    its value, which may hold spaces (it is the last key scontrol prints that can)."""
    state, reason = None, None
    for token in output.split():
        if token.startswith("State="):
            state = token.removeprefix("State=")
    if " Reason=" in output:
        reason = output.split(" Reason=", 1)[1].strip()
        reason = reason.split(" [", 1)[0] if reason.endswith("]") else reason  # "why [user@time]"
    if state is None:
        raise HostError(f"scontrol printed no State for node {name}")
    return SlurmNodeState(name, state, reason or None)
