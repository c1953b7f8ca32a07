"""The one door for subprocesses: every command nvreload runs goes through a CommandRunner."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from nvreload.records import record


@record
class CommandResult:
    """How a command ended: its exit status (124 timed out, 127 not found) and its output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


# Exit statuses a CommandResult carries when the command did not run to its own end (as timeout(1)).
TIMED_OUT = 124
NOT_STARTED = 126
NOT_FOUND = 127


class RunningCommand:
    """A command started with CommandRunner.start(): it runs beside us until result() or abandon()."""

    def __init__(self, argv: tuple[str, ...], proc, started: float, input_text: str | None = None) -> None:
        self.argv = argv
        self._proc = proc
        self._started = started
        self._input_text = input_text
        self._result: CommandResult | None = None

    @classmethod
    def finished(cls, result: CommandResult) -> RunningCommand:
        command = cls(result.argv, None, time.monotonic())
        command._result = result
        return command

    def result(self, timeout: float) -> CommandResult:
        """Wait until `timeout` seconds after the start (not after this call), then give up on it."""
        if self._result is not None:
            return self._result
        import subprocess

        remaining = max(0.0, timeout - (time.monotonic() - self._started))
        try:
            stdout, stderr = self._proc.communicate(input=self._input_text, timeout=remaining)
        except subprocess.TimeoutExpired:
            self.abandon()
            self._result = CommandResult(self.argv, TIMED_OUT, "", f"{self.argv[0]}: timed out after {timeout:g} s")
            return self._result
        self._result = CommandResult(self.argv, self._proc.returncode, stdout, stderr)
        return self._result

    @property
    def running(self) -> bool:
        """Whether the process is still there (not yet exited, or exited but not reaped)."""
        return self._proc is not None and self._proc.poll() is None

    def abandon(self) -> None:
        """SIGKILL it without waiting: a process stuck in the kernel (a wedged GPU's ioctl) cannot be
        reaped until the kernel lets go, and we must not hang with it."""
        if self._proc is None or self._proc.poll() is not None:
            return
        try:
            self._proc.kill()
        except OSError:
            return
        self._proc.poll()


class CommandRunner:
    """Runs a command with a timeout; a missing binary is a result (127), not an exception."""

    def __init__(self, extra_path: Sequence[str] = ("/usr/local/nvidia/bin", "/usr/sbin", "/sbin")) -> None:
        self.extra_path = tuple(extra_path)

    def which(self, name: str) -> str | None:
        import shutil

        found = shutil.which(name)
        if found:
            return found
        for directory in self.extra_path:
            found = shutil.which(name, path=directory)
            if found:
                return found
        return None

    def start(
        self, argv: Sequence[str], input_text: str | None = None, env: Mapping[str, str] | None = None
    ) -> RunningCommand:
        """Start a command and return at once; its output is collected by result()."""
        import subprocess  # lazily: the --status fast path usually runs no command at all

        argv = tuple(argv)
        binary = self.which(argv[0]) if "/" not in argv[0] else argv[0]
        if binary is None:
            return RunningCommand.finished(CommandResult(argv, NOT_FOUND, "", f"{argv[0]}: command not found"))
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                (binary,) + argv[1:],
                stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                env=dict(env) if env is not None else None,
            )
        except OSError as exc:
            return RunningCommand.finished(CommandResult(argv, NOT_STARTED, "", f"{argv[0]}: {exc}"))
        return RunningCommand(argv, proc, started, input_text)

    def run(self, argv: Sequence[str], timeout: float = 30.0, input_text: str | None = None) -> CommandResult:
        return self.start(argv, input_text=input_text).result(timeout)

    def check(self, argv: Sequence[str], timeout: float = 30.0, input_text: str | None = None) -> str:
        """Run a command that must succeed: its stdout, or HostError with its last line of output."""
        result = self.run(argv, timeout=timeout, input_text=input_text)
        if not result.ok:
            from nvreload.errors import HostError

            raise HostError(
                (
                    result.stderr.strip() or result.stdout.strip() or f"{argv[0]} exited {result.returncode}"
                ).splitlines()[-1]
            )
        return result.stdout

    def spawn_detached(self, argv: Sequence[str]) -> int:
        """Start a daemon that outlives us: its own session, no inherited stdio; returns its pid.
        OSError when it cannot start (the caller says which daemon did not come back)."""
        import subprocess

        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        return child.pid
