"""Where nvreload keeps its own files (a value built once, like the root), the one way it writes
them, and the one way it reads a JSON (or other small) file it is handed or left itself.

- state_dir: what must outlive a reboot, the run journal (/var/lib/nvreload);
- runtime_dir: what must not, the node lock and the .modinfo cache (/run/nvreload, tmpfs).
$NVRELOAD_STATE_DIR puts both in one directory (tests, a second instance).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Mapping

TYPE_CHECKING = False  # not typing's: importing typing costs the --status path
if TYPE_CHECKING:
    from typing import Any, BinaryIO, TypeVar

    R = TypeVar("R")

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
    """Replace nvreload's own file `path` with `data` (write_new_file): readers see the old file or
    the new one, never half of one. `durable` adds the fsyncs that make it survive power loss, not
    just the death of the process (the page cache survives that). OSError when it cannot be
    written (the journal gives back its reserve and tries again)."""
    # No indent: with an indent json falls back to its pure-Python encoder, several ms per write.
    payload = json.dumps(data, sort_keys=True).encode()
    write_new_file(path, lambda raw: raw.write(payload), mode=0o644, durable=durable, create_dirs=True)


def write_new_file(
    destination: str,
    write: Callable[[BinaryIO], R],
    mode: int = 0o600,
    durable: bool = False,
    create_dirs: bool = False,
    refuse: Callable[[int, str], None] | None = None,
    suffix: str = ".tmp",
) -> R:
    """The one way nvreload writes a file: its journal and state, --collect's archive, --output's
    metrics. The directory is reached one component at a time without following a link another
    user owns (root would write into whatever directory it points to; `create_dirs` makes what is
    missing), and everything after happens relative to that one open directory: `refuse(dir_fd,
    name)` may refuse what is there now; `write` fills a new file of its own (O_EXCL|O_NOFOLLOW, a
    hidden random name that a textfile collector reading *.prom skips and no one can plant), which
    is given `mode` and renamed over the destination, so a reader sees the old file or the whole
    new one; `durable`: fsynced, and the directory after the rename. Returns what `write` returns;
    OSError (BadInputError for an untrusted directory) when it cannot be written, and no temporary
    file left."""
    from nvreload.trusted_paths import TrustedWalk

    dir_fd, name, _ = TrustedWalk(destination, follow_last=False, create=create_dirs).parent()
    tmp = None
    try:
        if refuse is not None:
            refuse(dir_fd, name)
        tmp = f".nvreload-{os.urandom(6).hex()}{suffix}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as raw:
            value = write(raw)
            raw.flush()
            os.fchmod(raw.fileno(), mode)
            if durable:
                os.fsync(raw.fileno())
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        tmp = None
        if durable:
            os.fsync(dir_fd)
        return value
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
        os.close(dir_fd)


class UnreadableFile(ValueError):
    """Why a file could not be read as asked: one line (the caller names the file and what it wanted)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def read_capped(path: str, limit: int, own: bool = False) -> bytes | None:
    """The bytes of the regular file `path`, at most `limit` of them; None where there is no such
    file. The open never blocks (a FIFO named in its place must not hang a package hook or a
    run), only a regular file is read, and a larger one is refused rather than cut. `own`: one of
    nvreload's own files in its state directory, opened without following a link and only while
    the running user owns it and nobody else can write it (trusted_paths.read_own_file).
    UnreadableFile says why otherwise."""
    import stat

    if own:
        from nvreload.errors import BadInputError
        from nvreload.trusted_paths import read_own_file

        try:
            raw = read_own_file(path, limit)
        except BadInputError as exc:
            raise UnreadableFile(exc.message) from None
        except OSError as exc:
            raise UnreadableFile(exc.strerror or str(exc)) from None
    else:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UnreadableFile(exc.strerror or str(exc)) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnreadableFile("not a regular file")
            chunks, left = [], limit + 1
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 20))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            raw = b"".join(chunks)
        except OSError as exc:
            raise UnreadableFile(exc.strerror or str(exc)) from None
        finally:
            os.close(fd)
    if raw is not None and len(raw) > limit:
        raise UnreadableFile(f"larger than {_size(limit)}")
    return raw


def read_json(path: str, limit: int, own: bool = False) -> Any:
    """The JSON document in `path` read as read_capped reads it; None where there is no file.
    UnreadableFile says why it is not one (JSON nested deeper than Python goes included)."""
    raw = read_capped(path, limit, own)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise UnreadableFile(f"not JSON ({exc})") from None


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 and not limit % (1 << 20) else f"{limit} bytes"


_KINDS = (
    (stat.S_ISLNK, "a symlink"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def _refuse_destination(dir_fd: int, name: str, destination: str, flag: str) -> None:
    """nvreload runs as root: DEST is a new file or a regular file it replaces, never a link that
    another user planted (root would write where it points), a device or a directory."""
    from nvreload.errors import BadInputError

    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BadInputError(f"cannot write {destination}: {exc.strerror or exc}") from None
    for test, kind in _KINDS:
        if test(mode):
            raise BadInputError(f"{destination} is {kind}: {flag} writes a regular file (give a new path)")


def write_user_file(
    destination: str, write: Callable[[BinaryIO], R], flag: str, mode: int = 0o600, suffix: str = ".tmp"
) -> R:
    """Write DEST, a path the operator gave (--collect's archive, --output's metrics), through
    state_files.write_new_file: a DEST that is a link, a device or a directory is refused.
    BadInputError naming DEST when it cannot be written."""
    from nvreload.errors import BadInputError

    def refuse(dir_fd: int, name: str) -> None:
        _refuse_destination(dir_fd, name, destination, flag)

    try:
        return write_new_file(destination, write, mode=mode, refuse=refuse, suffix=suffix)
    except FileNotFoundError as exc:
        raise BadInputError(f"cannot write {destination}: {exc.filename}: {exc.strerror}") from None
    except OSError as exc:
        raise BadInputError(f"cannot write {destination}: {exc.strerror or exc}") from None
