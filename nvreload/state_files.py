"""Where nvreload keeps its own files (a value built once, like the root), and the one way it
writes them.

- state_dir: what must outlive a reboot, the run journal (/var/lib/nvreload);
- runtime_dir: what must not, the node lock and the .modinfo cache (/run/nvreload, tmpfs).
$NVRELOAD_STATE_DIR puts both in one directory (tests, a second instance).
"""

from __future__ import annotations

import json
import os
from _thread import get_ident  # threading's own id, without importing threading on the --status path
from collections.abc import Mapping

STATE_DIR_VARIABLE = "NVRELOAD_STATE_DIR"


class StatePaths:
    """nvreload's own files on this node. A plain class, not a dataclass: it is built on every
    --status run, and a frozen dataclass costs about a millisecond of import there."""

    __slots__ = ("state_dir", "runtime_dir")

    def __init__(self, state_dir: str = "/var/lib/nvreload", runtime_dir: str = "/run/nvreload") -> None:
        self.state_dir = state_dir
        self.runtime_dir = runtime_dir

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StatePaths) and (self.state_dir, self.runtime_dir) == (
            other.state_dir,
            other.runtime_dir,
        )

    def __hash__(self) -> int:
        return hash((self.state_dir, self.runtime_dir))

    def __repr__(self) -> str:
        return f"StatePaths(state_dir={self.state_dir!r}, runtime_dir={self.runtime_dir!r})"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> StatePaths:
        override = environ.get(STATE_DIR_VARIABLE)
        return cls(override, override) if override else cls()

    @classmethod
    def for_simulation(cls, environ: Mapping[str, str] = os.environ) -> StatePaths:
        """Where --simulate keeps its node, journal and lock: $NVRELOAD_STATE_DIR, else one fixed
        directory per user (so --stop and a later --start find each other), never the real state."""
        override = environ.get(STATE_DIR_VARIABLE)
        if override:
            return cls(override, override)
        base = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        directory = os.path.join(base, "nvreload", "simulated")
        return cls(directory, directory)

    def for_run(self, simulated: bool) -> StatePaths:
        """These paths, except for a simulation left at the defaults: it gets for_simulation()'s,
        so a simulation never touches the real state."""
        return StatePaths.for_simulation() if simulated and self == StatePaths() else self

    @property
    def journal(self) -> str:
        return os.path.join(self.state_dir, "journal.json")

    @property
    def lock(self) -> str:
        return os.path.join(self.runtime_dir, "lock")

    @property
    def modinfo_cache(self) -> str:
        return os.path.join(self.runtime_dir, "modinfo-cache.json")


def check_writable_dirs(paths: StatePaths) -> None:
    """Before a run acts: its state and runtime directories exist (made 0755 if not), are
    directories of the running user's that nobody else can write, reached through no directory or
    link that another user controls (a state directory under a user's home, run by root with
    `sudo -E`, would let that user plant the lock, the journal or the simulated node), and take a
    file. BadInputError naming the directory otherwise, instead of a failure halfway through a run."""
    from nvreload.errors import BadInputError
    from nvreload.trusted_paths import open_trusted_directory

    for directory in dict.fromkeys((paths.state_dir, paths.runtime_dir)):
        if os.path.lexists(directory) and not os.path.isdir(directory):
            raise BadInputError(f"state directory {directory} is not a directory")
        try:
            dir_fd = open_trusted_directory(directory, create=True)
        except BadInputError as exc:
            raise BadInputError(f"state directory {exc.message}") from None
        probe = f".nvreload-write-test-{os.getpid()}"
        try:
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dir_fd))
            os.unlink(probe, dir_fd=dir_fd)
        except OSError as exc:
            raise BadInputError(f"state directory {directory} cannot be written: {exc.strerror}") from None
        finally:
            os.close(dir_fd)


def atomic_write_json(path: str, data: dict, durable: bool = True) -> None:
    """Replace `path` atomically: readers see the old file or the new one, never half of one.
    `durable` adds the fsyncs that make it survive power loss, not just the death of the process
    (the page cache survives that). A failed write leaves no temporary file behind."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{get_ident()}"
    # No indent: with an indent json falls back to its pure-Python encoder, several ms per write.
    payload = json.dumps(data, sort_keys=True)
    try:
        # O_EXCL|O_NOFOLLOW: a name planted in the directory is never followed or reused
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except FileExistsError:  # left by a process of the same pid that died mid-write
            os.unlink(tmp)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with open(fd, "w") as handle:
            handle.write(payload)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if not durable:
        return
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
