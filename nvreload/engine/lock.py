"""One run at a time: an fcntl flock that the kernel drops when its holder dies, so a dead holder
never blocks; the holder's pid is written into the file so a second run can name it."""

from __future__ import annotations

import fcntl
import os

from nvreload.errors import BusyError
from nvreload.trusted_paths import open_own_file


class NodeLock:
    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> NodeLock:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        # never through a link planted in the directory (root would truncate where it points), and
        # only a file of the running user's (open_own_file says which)
        fd = open_own_file(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BusyError(f"another nvreload run (pid {holder}) holds the node lock {self.path}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> NodeLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class NullLock(NodeLock):
    """For --dry-run: takes nothing, writes nothing."""

    def __init__(self) -> None:
        super().__init__("")

    def acquire(self) -> NullLock:
        return self

    def release(self) -> None:
        pass
