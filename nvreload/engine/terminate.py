"""Ending a GPU process safely: never PID 1, a kernel thread or ourselves; and only while the same
process (pid + start time) still holds a GPU device, checked right before each signal."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from nvreload.read.gpu_processes import DeviceMatcher, held_devices, read_identity


@dataclass(frozen=True)
class Termination:
    """What signalling one process came to, and why."""

    pid: int
    outcome: str  # "terminated" | "killed" | "gone" | "refused" | "survived"
    reason: str


class ProcessReaper:
    def __init__(self, matcher: DeviceMatcher, proc: str = "/proc", grace: float = 10.0, poll: float = 0.05) -> None:
        self.matcher = matcher
        self.proc = proc
        self.grace = grace
        self.poll = poll

    def _same_holder(self, pid: int, start_time: int | None) -> tuple[bool, str]:
        ident = read_identity(pid, self.proc)
        if ident is None:
            return False, "gone"
        if start_time is not None and ident.start_time != start_time:
            return False, f"pid {pid} now belongs to another process (start time {ident.start_time} != {start_time})"
        if not held_devices(pid, self.matcher, self.proc):
            return False, f"pid {pid} no longer holds a GPU device"
        return True, ""

    def refusal(self, pid: int) -> str | None:
        if pid <= 1:
            return "never signal PID 1 (or lower)"
        if pid == os.getpid() or pid == os.getppid():
            return "never signal nvreload itself or its parent"
        ident = read_identity(pid, self.proc)
        if ident is not None and ident.is_kernel_thread:
            return f"pid {pid} ({ident.comm}) is a kernel thread"
        return None

    def _wait_gone(self, pid: int, start_time: int | None, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ident = read_identity(pid, self.proc)
            if ident is None or (start_time is not None and ident.start_time != start_time) or _is_zombie(pid, self.proc):
                return True
            time.sleep(self.poll)
        return False

    def terminate(self, pid: int, start_time: int | None) -> Termination:
        refused = self.refusal(pid)
        if refused:
            return Termination(pid, "refused", refused)
        holds, why = self._same_holder(pid, start_time)
        if not holds:
            return Termination(pid, "gone" if why == "gone" else "refused", why or "gone")
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return Termination(pid, "gone", "exited before SIGTERM")
        if self._wait_gone(pid, start_time, self.grace):
            return Termination(pid, "terminated", "exited after SIGTERM")
        holds, why = self._same_holder(pid, start_time)
        if not holds:
            return Termination(pid, "terminated", why)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return Termination(pid, "terminated", "exited before SIGKILL")
        if self._wait_gone(pid, start_time, 5.0):
            return Termination(pid, "killed", f"ignored SIGTERM for {self.grace:g} s; SIGKILL")
        return Termination(pid, "survived", "still there after SIGKILL (uninterruptible sleep in the driver?)")


def _is_zombie(pid: int, proc: str) -> bool:
    try:
        with open(f"{proc}/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return True
    return raw[raw.rfind(b")") + 2 : raw.rfind(b")") + 3] == b"Z"
