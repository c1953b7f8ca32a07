"""Where nvreload keeps its own files, and the one way it writes them.

- state_dir(): what must outlive a reboot, the run journal (/var/lib/nvreload);
- runtime_dir(): what must not, the node lock and the .modinfo cache (/run/nvreload, tmpfs).
$NVRELOAD_STATE_DIR puts both in one directory (tests, a second instance).
"""

from __future__ import annotations

import json
import os
from _thread import get_ident  # threading's own id, without importing threading on the --status path


def state_dir() -> str:
    return os.environ.get("NVRELOAD_STATE_DIR") or "/var/lib/nvreload"


def runtime_dir() -> str:
    return os.environ.get("NVRELOAD_STATE_DIR") or "/run/nvreload"


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
