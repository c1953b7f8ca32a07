"""GPU daemons on a node whose PID 1 is not systemd (containers, Firecracker VMs, GPU operator
pods): found by their executable name in /proc, stopped with signals, and started again by the
exact command line recorded before they were stopped."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from nvreload.read.gpu_processes import read_identity

# Executable names (argv[0] basename) of the daemons a reload must stop and bring back.
GPU_DAEMONS = ("nv-hostengine", "dcgm-exporter", "nvsm", "nvidia-persistenced", "nv-fabricmanager")


@dataclass(frozen=True)
class Daemon:
    """A GPU daemon found by its argv[0] where systemd is not PID 1, with the command to start it again."""

    name: str
    pid: int
    start_time: int
    command: tuple[str, ...]


def _argv(pid: int, proc: str) -> tuple[str, ...]:
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as handle:
            raw = handle.read()
    except OSError:
        return ()
    return tuple(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)


def find_daemons(names: tuple[str, ...] = GPU_DAEMONS, proc: str = "/proc") -> list[Daemon]:
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        argv = _argv(int(entry), proc)
        if not argv or os.path.basename(argv[0]) not in names:
            continue
        ident = read_identity(int(entry), proc)
        if ident is not None and not ident.is_kernel_thread:
            found.append(Daemon(os.path.basename(argv[0]), int(entry), ident.start_time, argv))
    return sorted(found, key=lambda d: (names.index(d.name), d.pid))


def stop_daemon(name: str, proc: str = "/proc", grace: float = 10.0) -> list[Daemon]:
    """SIGTERM every instance of `name`, SIGKILL what is left after the grace; returns what it stopped."""
    daemons = [d for d in find_daemons((name,), proc) if d.pid > 1 and d.pid != os.getpid()]
    for daemon in daemons:
        _signal(daemon, signal.SIGTERM, proc)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_alive(d, proc) for d in daemons):
        time.sleep(0.05)
    for daemon in daemons:
        if _alive(daemon, proc):
            _signal(daemon, signal.SIGKILL, proc)
    return daemons


def start_daemon(command: tuple[str, ...] | list[str]) -> int:
    """Start `command` detached from us (own session, no inherited stdio); returns its pid."""
    import subprocess

    child = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
    return child.pid


def _alive(daemon: Daemon, proc: str) -> bool:
    ident = read_identity(daemon.pid, proc)
    if ident is None or ident.start_time != daemon.start_time:
        return False
    try:
        with open(f"{proc}/{daemon.pid}/stat", "rb") as handle:
            raw = handle.read()
        return raw[raw.rfind(b")") + 2 : raw.rfind(b")") + 3] != b"Z"
    except OSError:
        return False


def _signal(daemon: Daemon, signum: int, proc: str) -> None:
    if _alive(daemon, proc):  # the PID-reuse guard: same pid, same start time
        try:
            os.kill(daemon.pid, signum)
        except ProcessLookupError:
            pass
