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
        return isinstance(other, StatePaths) and (self.state_dir, self.runtime_dir) == (other.state_dir, other.runtime_dir)

    def __hash__(self) -> int:
        return hash((self.state_dir, self.runtime_dir))

    def __repr__(self) -> str:
        return f"StatePaths(state_dir={self.state_dir!r}, runtime_dir={self.runtime_dir!r})"

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> "StatePaths":
        override = environ.get(STATE_DIR_VARIABLE)
        return cls(override, override) if override else cls()

    @property
    def journal(self) -> str:
        return os.path.join(self.state_dir, "journal.json")

    @property
    def lock(self) -> str:
        return os.path.join(self.runtime_dir, "lock")

    @property
    def modinfo_cache(self) -> str:
        return os.path.join(self.runtime_dir, "modinfo-cache.json")


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
        with open(tmp, "w") as handle:
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
