"""One error tree; each error owns its exit code. What each code means is declared once, in
commandline.EXIT_CODES (--help prints it; tests/test_commandline.py holds the README's table to it)."""

from __future__ import annotations


class ExitCode:
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3
    ROLLED_BACK = 10
    NEEDS_REBOOT = 11
    PARTIAL = 12
    RELOAD_PENDING = 13  # due but not done: GPU work runs (--when-idle) or the upgrade policy is report
    USAGE = 64
    BAD_INPUT = 66
    INTERNAL = 70
    BUSY = 75
    REFUSED = 77
    INTERRUPTED = 130


class NvreloadError(Exception):
    """Base of every error nvreload reports as one line and an exit code."""

    exit_code = ExitCode.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class UsageError(NvreloadError):
    exit_code = ExitCode.USAGE


class JournalWriteError(NvreloadError):
    """The journal could not be written (a full disk, an I/O error) in the middle of a run: the run
    stops there and rolls back, writing what it still can."""

    exit_code = ExitCode.ROLLED_BACK


class BadInputError(NvreloadError):
    exit_code = ExitCode.BAD_INPUT


class SnapshotError(BadInputError):
    """A --root that is missing, not a snapshot, or a damaged archive."""


class JournalError(BadInputError):
    """A journal that is missing where one is needed, or unreadable."""


class ScenarioError(BadInputError):
    """A --simulate file that is not a valid scenario."""


class RefusedError(NvreloadError):
    exit_code = ExitCode.REFUSED


class BusyError(NvreloadError):
    exit_code = ExitCode.BUSY


class StepFailed(NvreloadError):
    """A reload step failed; the engine decides whether it can roll back."""

    def __init__(self, step: str, message: str):
        super().__init__(f"{step}: {message}")
        self.step = step
        self.detail = message  # without the step's name, which whoever reports the step adds


class Interrupted(NvreloadError):
    """A signal (SIGINT, SIGTERM, SIGHUP) arrived while a run acted; the engine rolls back."""

    exit_code = ExitCode.INTERRUPTED

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


class HostError(NvreloadError):
    """An operation on the machine (a command, a syscall) failed."""


class ModuleFileError(Exception):
    """An on-disk kernel module that cannot be parsed (not an NvreloadError:
    the read model records it as evidence instead of stopping)."""
