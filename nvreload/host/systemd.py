"""The one door to systemd: every systemctl nvreload runs (state of the GPU units, stop, start,
restart, reset-failed), through $NVRELOAD_SYSTEMCTL when set."""

from __future__ import annotations

import os
import shlex
import time

from nvreload.catalog import GPU_SERVICES
from nvreload.errors import BadInputError, HostError
from nvreload.host.commands import CommandRunner
from nvreload.model import ServiceState


def parse_systemctl_show(text: str) -> list[ServiceState]:
    states = []
    for block in text.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        name = props.get("Id")
        if not name:
            continue
        if props.get("LoadState") == "not-found":
            states.append(ServiceState(name, "not-found", None))
            continue
        states.append(ServiceState(name, props.get("ActiveState", "unknown"), props.get("UnitFileState") or None))
    return states


def systemctl() -> list[str]:
    """How to reach systemd: plain `systemctl`, or $NVRELOAD_SYSTEMCTL (e.g. a wrapper that enters
    the namespaces of a systemd running in a container or a machine)."""
    value = os.environ.get("NVRELOAD_SYSTEMCTL") or "systemctl"
    try:
        command = shlex.split(value)
    except ValueError as exc:  # an unclosed quote: one line, not a traceback
        raise BadInputError(f"NVRELOAD_SYSTEMCTL={value!r} is not a command line ({exc})") from None
    if not command:
        raise BadInputError("NVRELOAD_SYSTEMCTL is blank: unset it, or name the systemctl command")
    return command


def systemctl_states(runner: CommandRunner, units: tuple[str, ...] = GPU_SERVICES) -> list[ServiceState]:
    result = runner.run([*systemctl(), "show", "--property=Id,LoadState,ActiveState,UnitFileState", *units], timeout=10)
    if not result.ok and not result.stdout:
        return []
    return [s for s in parse_systemctl_show(result.stdout) if s.active != "not-found"]


class Systemd:
    """Unit actions. `timeout` bounds each stop/start job; `settle` is how long a unit that just
    started is watched before it counts as back."""

    def __init__(self, runner: CommandRunner, timeout: float = 120.0, settle: float = 0.5) -> None:
        self.runner = runner
        self.timeout = timeout
        self.settle = settle

    def _run(self, *args: str, timeout: float | None = None) -> None:
        self.runner.check([*systemctl(), *args], timeout=timeout or self.timeout)

    def stop(self, name: str) -> None:
        self._run("stop", name)  # systemctl waits for the stop job; the runner's timeout bounds it

    def restart(self, name: str, timeout: float | None = None) -> None:
        self._run("restart", name, timeout=timeout)

    def start(self, name: str) -> None:
        result = self.runner.run([*systemctl(), "start", name], timeout=self.timeout)
        if not result.ok and "too often" in (result.stderr + result.stdout):
            # systemd's start limit: our own stop/start cycle can hit it; clear and try once more
            self.runner.run([*systemctl(), "reset-failed", name], timeout=30)
            result = self.runner.run([*systemctl(), "start", name], timeout=self.timeout)
        if not result.ok:
            raise HostError(
                f"{name}: " + (result.stderr.strip() or f"systemctl start exited {result.returncode}").splitlines()[0]
            )
        # A Type=simple unit "starts" as soon as it forks; one whose ExecStart dies at once shows
        # as failed a moment later. Watch it settle before calling it back.
        deadline = time.monotonic() + self.settle
        while True:
            state = self.runner.run([*systemctl(), "is-active", name], timeout=30).stdout.strip()
            if state in ("failed", "inactive"):
                raise HostError(f"{name}: {state} right after start (see journalctl -u {name})")
            if time.monotonic() >= deadline:
                return
            time.sleep(0.1)
