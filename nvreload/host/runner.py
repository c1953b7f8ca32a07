"""The one door for subprocesses: every command nvreload runs goes through a CommandRunner."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


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

    def run(self, argv: Sequence[str], timeout: float = 30.0, input_text: str | None = None) -> CommandResult:
        import subprocess  # lazily: the --status fast path usually runs no command at all

        argv = tuple(argv)
        binary = self.which(argv[0]) if "/" not in argv[0] else argv[0]
        if binary is None:
            return CommandResult(argv, 127, "", f"{argv[0]}: command not found")
        try:
            proc = subprocess.run(
                (binary,) + argv[1:],
                input=input_text,
                capture_output=True,
                text=True,
                timeout=timeout,
                errors="replace",
            )
        except subprocess.TimeoutExpired:
            return CommandResult(argv, 124, "", f"{argv[0]}: timed out after {timeout:g} s")
        except OSError as exc:
            return CommandResult(argv, 126, "", f"{argv[0]}: {exc}")
        return CommandResult(argv, proc.returncode, proc.stdout, proc.stderr)
