"""A node's files under one root: the live `/`, a snapshot directory, or a .tar.gz snapshot.

The root is a value passed around, never a global. Every read resolves symlinks *inside* the root
(an absolute link target means root + target), so a snapshot of another node can never make us
read this machine's files. Snapshots produced by copying files with `cat` keep a symlink as a small
text file holding the link target; `link_target` understands those stand-ins where a link is
expected (a PCI device's `driver`, a library's `.so.1` name).

A snapshot comes from anywhere, so the work it can cause is bounded: only regular files are read
(a FIFO, a device or a socket is reported unreadable, never opened in a way that could block), a
file is read whole only up to MAX_FILE_BYTES, and a .tar.gz is inflated only up to its caps
(below). What goes past a cap is listed in `denied`, which the status document reports as
`unreadable`, and nothing more of it is loaded.
"""

from __future__ import annotations

import io
import os
import posixpath
import stat

from nvreload.errors import SnapshotError
from nvreload.records import record

TYPE_CHECKING = False  # not typing's: importing typing costs the --status path; mypy and pyright read this name as True
if TYPE_CHECKING:
    import tarfile
    from types import ModuleType
    from typing import BinaryIO

_MAX_LINK_HOPS = 40
# The most read_bytes() returns when the caller sets no limit; a larger file is unreadable. The
# largest file read whole is a captured kernel log: a busy server's dmesg is a few MB (ring
# buffers are 128 KiB to a few MiB); nvidia-smi -q -x for 8 GPUs is ~300 KB; a distribution
# kernel's whole modules.dep ~1 MB. Twice the biggest of those, with room, and little enough that
# parsing it stays in tens of MB.
MAX_FILE_BYTES = 16 << 20
# A .tar.gz snapshot: the most it may inflate to. A real one is a few MB compressed; its largest
# member is the on-disk module, which --collect copies up to 256 MiB (collect.MAX_FILE; a plain
# nvidia.ko is ~100 MB). Inflating 512 MiB of a gzip bomb takes about a second, then we stop.
MAX_ARCHIVE_BYTES = 512 << 20
# Members of one archive: a real snapshot has a few hundred; each costs an index entry (~0.5 KB).
MAX_ARCHIVE_MEMBERS = 50_000
# A pax or GNU long-name header is held in memory by tarfile: a path or two, never megabytes.
MAX_EXTENDED_HEADER_BYTES = 64 << 10
# More records than a pax header of a real archive holds (path, linkpath, size, times).
_MAX_PAX_RECORDS = 32
# A member name or link target: a snapshot's paths are under 300 characters.
_MAX_NAME = 1024
# A decompressed archive is kept in memory up to this size, then spooled to an unlinked temp file.
_SPOOL_IN_MEMORY = 32 << 20
# Open flags for a file of a snapshot: never block (a FIFO without a writer, a tty) and never follow
# a link that appeared after we resolved the path ourselves.
_SNAPSHOT_OPEN = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_STAND_IN_MAX = 1024
# What a link target looks like: printable path characters only, with a dot or a slash somewhere (an
# ELF or a value file never matches both this and the places we expect links). A set, not a regular
# expression: compiling one would cost every status run more than all its checks together.
_STAND_IN_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./+:@-")


def _looks_like_link_target(text: str) -> bool:
    return ("." in text or "/" in text) and _STAND_IN_CHARACTERS.issuperset(text)


class UnreadableFile(OSError):
    """A file we refuse to read: not a regular file, or larger than its cap."""


def _norm(rel: str) -> str:
    """'/proc//modules' and 'proc/./modules' both become 'proc/modules'; '..' cannot climb out."""
    parts: list[str] = []
    for part in rel.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/".join(parts)


@record
class _Entry:
    """One member of a .tar.gz snapshot: where its bytes lie in the inflated archive."""

    kind: str  # "file" | "dir" | "link" | "other" (a device, a FIFO, a sparse file: never read)
    offset: int = 0
    size: int = 0
    target: str = ""
    mode: int = 0o644
    cut: bool = False  # its bytes lie past MAX_ARCHIVE_BYTES: not inflated


class RootFS:
    """Read-only access to a node's files. Subclasses provide the primitive lookups."""

    is_live: bool = False
    label: str = "/"

    def __init__(self) -> None:
        self.denied: list[str] = []
        # directories already resolved, each a path of directories with no link in it: a status
        # reads a few dozen files from the same few directories, and each read would otherwise
        # lstat every directory of its path again. Only ever a directory: a path that was missing
        # is looked up again. (A snapshot changed meanwhile is caught where the file is opened:
        # DirRoot opens every directory without following a link.)
        self._directories: set[str] = set()

    # primitives ---------------------------------------------------------------------------
    def _lkind(self, rel: str) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _readlink(self, rel: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, rel: str, limit: int | None) -> bytes:  # pragma: no cover - abstract
        """The file's bytes: up to `limit`, or all of it up to MAX_FILE_BYTES (UnreadableFile past that)."""
        raise NotImplementedError

    def _open(self, rel: str) -> BinaryIO:  # pragma: no cover - abstract
        raise NotImplementedError

    def _list(self, rel: str) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    # resolution ---------------------------------------------------------------------------
    def resolve(self, rel: str) -> str | None:
        """The path `rel` names after following every symlink inside the root, or None."""
        found = self._resolve(rel)
        return None if found is None else found[0]

    def _resolve(self, rel: str) -> tuple[str, str] | None:
        """resolve(), with the kind of what the path names ('file', 'dir', 'other'): the walk has
        just looked at its last component, so a reader need not look again."""
        normal = _norm(rel)
        pending = normal.split("/") if normal else []
        done = self._known_directory(pending)
        last = "dir"  # the kind of `done`: the root, or what a link that climbed with '..' left
        hops = 0
        while pending:
            part = pending.pop(0)
            candidate = "/".join(done + [part])
            kind = "dir" if candidate in self._directories else self._lkind(candidate)
            if kind is None:
                return None
            if kind == "dir":
                self._directories.add(candidate)
            if kind == "link":
                hops += 1
                if hops > _MAX_LINK_HOPS:
                    return None
                target = self._readlink(candidate)
                if target.startswith("/"):
                    done = []
                pending = [p for p in target.split("/") if p] + pending
                # resolve '..' against what is already resolved
                while pending and pending[0] in (".", ".."):
                    if pending.pop(0) == ".." and done:
                        done.pop()
                last = "dir"  # what `done` holds: resolved directories only
                continue
            done.append(part)
            last = kind
        return "/".join(done), last

    def _known_directory(self, pending: list[str]) -> list[str]:
        """The longest leading part of `pending` already resolved as a directory (taken off
        `pending`), so that resolution goes on from there."""
        for length in range(len(pending) - 1, 0, -1):
            prefix = "/".join(pending[:length])
            if prefix in self._directories:
                del pending[:length]
                return prefix.split("/")
        return []

    # public reads -------------------------------------------------------------------------
    def _resolved_file(self, rel: str) -> str | None:
        """The path to read for `rel`, or None when it is not a regular file inside the root."""
        found = self._resolve(rel)
        return found[0] if found is not None and found[1] == "file" else None

    def kind(self, rel: str) -> str | None:
        """'file', 'dir', 'other' (a device, FIFO or socket: never read) or None, after following links."""
        found = self._resolve(rel)
        return None if found is None else found[1]

    def exists(self, rel: str) -> bool:
        return self.kind(rel) is not None

    def is_dir(self, rel: str) -> bool:
        return self.kind(rel) == "dir"

    def _unreadable(self, rel: str) -> None:
        self.denied.append("/" + _norm(rel))

    def _regular_file(self, rel: str) -> str | None:
        """`rel` resolved to a regular file, or None; a FIFO, device or socket there is listed in
        `denied` (it exists, and cannot be read)."""
        real = self._resolved_file(rel)
        if real is None and self.kind(rel) == "other":
            self._unreadable(rel)
        return real

    def read_bytes(self, rel: str, limit: int | None = None) -> bytes | None:
        """The whole file, or its first `limit` bytes. None when it is missing or unreadable: a file
        that is not a regular one, or larger than MAX_FILE_BYTES without a `limit`, is also listed
        in `denied`."""
        real = self._regular_file(rel)
        if real is None:
            return None
        try:
            return self._read(real, limit)
        except (PermissionError, UnreadableFile):
            self._unreadable(rel)
            return None
        except OSError:
            return None

    def open_file(self, rel: str) -> BinaryIO | None:
        """A seekable binary handle on a regular file, for a reader that needs only parts of a large
        one (a kernel module's section table); the caller closes it. None as read_bytes() says."""
        real = self._regular_file(rel)
        if real is None:
            return None
        try:
            return self._open(real)
        except (PermissionError, UnreadableFile):
            self._unreadable(rel)
            return None
        except OSError:
            return None

    def read_text(self, rel: str, limit: int | None = None) -> str | None:
        data = self.read_bytes(rel, limit)
        if data is None:
            return None
        return data.decode("utf-8", errors="replace")

    def read_line(self, rel: str) -> str | None:
        text = self.read_text(rel, 4096)
        return None if text is None else text.strip()

    def listdir(self, rel: str) -> list[str]:
        found = self._resolve(rel)
        if found is None or found[1] != "dir":
            return []
        real = found[0]
        try:
            return sorted(self._list(real))
        except PermissionError:
            self.denied.append("/" + _norm(rel))
            return []
        except OSError:
            return []

    def _unfollowed(self, rel: str) -> str | None:
        """`rel` with its parent directories resolved but its last component not followed."""
        rel = _norm(rel)
        parent = posixpath.dirname(rel)
        real_parent = self.resolve(parent) if parent else ""
        if real_parent is None:
            return None
        return posixpath.join(real_parent, posixpath.basename(rel)) if real_parent else posixpath.basename(rel)

    def is_symlink(self, rel: str) -> bool:
        """True for a real symlink at `rel` (its parents resolved, the link itself not followed)."""
        name = self._unfollowed(rel)
        return name is not None and self._lkind(name) == "link"

    def link_target(self, rel: str) -> str | None:
        """The target of a symlink at `rel` (not followed), or of a snapshot's stand-in text file."""
        name = self._unfollowed(rel)
        if name is None:
            return None
        kind = self._lkind(name)
        if kind == "link":
            return self._readlink(name)
        if kind == "file" and not self.is_live:
            try:
                data = self._read(name, _STAND_IN_MAX + 1)
            except OSError:
                return None
            text = data.decode("utf-8", errors="replace").strip()
            if 0 < len(data) <= _STAND_IN_MAX and _looks_like_link_target(text):
                return text
        return None

    def host_path(self, rel: str) -> str | None:
        """A real path on this machine for the file, where there is one (not inside an archive)."""
        return None

    def follow_stand_ins(self, rel: str) -> str | None:
        """Follow a chain of symlinks or stand-ins from `rel`; the final path inside the root."""
        current = _norm(rel)
        for _ in range(_MAX_LINK_HOPS):
            target = self.link_target(current)
            if target is None:
                return current if self.exists(current) else None
            if target.startswith("/"):
                current = _norm(target)
            else:
                current = _norm(posixpath.join(posixpath.dirname(current), target))
        return None


class DirRoot(RootFS):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        # a plain normalised string, not a pathlib.Path: this is on every file read, and pathlib
        # costs the --status fast path an import
        self.base = os.path.normpath(os.fspath(path)) if os.fspath(path) else "."
        self.is_live = self.base == "/"
        self.label = self.base

    def _abs(self, rel: str) -> str:
        return os.path.join(self.base, rel) if rel else self.base

    def _lkind(self, rel: str) -> str | None:
        try:
            mode = os.lstat(self._abs(rel)).st_mode
        except OSError:
            return None
        if stat.S_ISLNK(mode):
            return "link"
        if stat.S_ISDIR(mode):
            return "dir"
        return "file" if stat.S_ISREG(mode) else "other"

    def _readlink(self, rel: str) -> str:
        return os.readlink(self._abs(rel))

    def _open_fd(self, rel: str) -> tuple[int, int]:
        """A descriptor on the regular file `rel`, and the file's size. In a snapshot, `rel` is
        already resolved: it is opened one directory at a time, none of them followed if it became
        a link meanwhile, so the file opened lies under the root; nothing blocks (O_NONBLOCK)
        whatever the file is."""
        if self.is_live:
            fd = os.open(self._abs(rel), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        else:
            *parents, name = rel.split("/")
            directory = os.open(self.base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                for part in parents:
                    inner = os.open(part, _DIR_OPEN, dir_fd=directory)
                    os.close(directory)
                    directory = inner
                fd = os.open(name, _SNAPSHOT_OPEN, dir_fd=directory)
            finally:
                os.close(directory)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise UnreadableFile(f"{rel} is not a regular file")
        return fd, info.st_size

    def _open(self, rel: str) -> BinaryIO:
        return os.fdopen(self._open_fd(rel)[0], "rb")

    def _read(self, rel: str, limit: int | None) -> bytes:
        cap = MAX_FILE_BYTES if limit is None else limit
        # read(2) on the descriptor itself: a buffered file object would cost three more system
        # calls per file (fstat, a tty test, lseek), and a status reads some seventy files
        fd, size = self._open_fd(rel)
        try:
            if limit is None and size > cap:
                raise UnreadableFile(f"{rel} is larger than {cap} bytes")
            # Read in modest chunks: procfs sysctl handlers reject one huge read() with ENOMEM, and a
            # procfs file may answer a read with less than it holds. One byte past the cap tells a
            # file that grew (or a procfs size of 0) from one that fits.
            chunks, total = [], 0
            while total <= cap:
                chunk = os.read(fd, min(65536, cap + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        finally:
            os.close(fd)
        if total > cap:
            if limit is None:
                raise UnreadableFile(f"{rel} is larger than {cap} bytes")
            chunks[-1] = chunks[-1][: len(chunks[-1]) - (total - cap)]
        return b"".join(chunks)

    def _list(self, rel: str) -> list[str]:
        return os.listdir(self._abs(rel))

    def _resolved_file(self, rel: str) -> str | None:
        if self.is_live:
            # On the live root the kernel follows links itself; open() reports what is missing.
            # (Directories fail the read with IsADirectoryError, an OSError, like a missing file.)
            return _norm(rel)
        return super()._resolved_file(rel)

    def _resolve(self, rel: str) -> tuple[str, str] | None:
        if self.is_live:
            # On the live root the OS resolves links exactly as we would, only faster.
            real = _norm(os.path.realpath("/" + _norm(rel)))
            kind = self._lkind(real)
            return None if kind is None else (real, kind)
        return super()._resolve(rel)

    def host_path(self, rel: str) -> str | None:
        """A real path for tools that need one (only for files already resolved inside the root)."""
        real = self.resolve(rel)
        return None if real is None else self._abs(real)


class _ArchiveLimit(Exception):
    """An archive went past one of its caps: what was read so far is kept, the rest is not read."""


def _bounded_tarinfo(tarfile: ModuleType) -> type:
    """tarfile's TarInfo, refusing the extended headers that it would otherwise hold in memory
    whatever their size (pax records, GNU long names), and pax headers of more than a few records
    (tarfile copies a global header's records into every later member)."""
    extended = (
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    )

    # tarfile here is the module passed in (imported lazily), which mypy cannot resolve as a base
    class BoundedTarInfo(tarfile.TarInfo):  # type: ignore[name-defined]
        def _proc_member(self, archive):
            if self.type in extended:
                if self.size > MAX_EXTENDED_HEADER_BYTES:
                    raise _ArchiveLimit(f"an extended header of {self.size} bytes")
                position = archive.fileobj.tell()
                records = archive.fileobj.read(self.size).count(b"\n")
                archive.fileobj.seek(position)
                if records > _MAX_PAX_RECORDS:
                    raise _ArchiveLimit(f"an extended header of {records} records")
            return super()._proc_member(archive)

    return BoundedTarInfo


class _MemberReader(io.RawIOBase):
    """A seekable read-only view of one member's bytes inside the inflated archive."""

    def __init__(self, spool: BinaryIO, offset: int, size: int) -> None:
        super().__init__()
        self._spool, self._offset, self._size, self._pos = spool, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, buffer) -> int:
        count = max(0, min(len(buffer), self._size - self._pos))
        self._spool.seek(self._offset + self._pos)
        data = self._spool.read(count)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


class TarRoot(RootFS):
    """A .tar.gz snapshot: nothing is extracted, so nothing can escape. The archive is inflated
    once, up to MAX_ARCHIVE_BYTES, into memory or (past _SPOOL_IN_MEMORY) an unlinked temp file;
    only an index of its members is kept, and a read takes the member's bytes from there."""

    def __init__(self, archive: str | os.PathLike[str]) -> None:
        # imported here: the live --status path never opens an archive and should not pay for it
        import gzip
        import tarfile
        import tempfile
        import zlib

        super().__init__()
        self.label = str(archive)
        self.entries: dict[str, _Entry] = {"": _Entry("dir")}
        self._children: dict[str, list[str]] = {}
        self._spool: BinaryIO = tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY)  # type: ignore[assignment]
        try:
            cut = self._inflate(archive, gzip)
            self._spool.seek(0)
            with tarfile.open(fileobj=self._spool, mode="r:", tarinfo=_bounded_tarinfo(tarfile)) as tar:
                self._index(tar, cut)
        except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
            raise SnapshotError(f"{archive}: not a readable .tar.gz snapshot ({exc})") from None
        except _ArchiveLimit:
            self._unreadable_archive()
        # an archive may name files without their parent directories
        for name in list(self.entries):
            parent = posixpath.dirname(name)
            while parent and parent not in self.entries:
                self.entries[parent] = _Entry("dir")
                parent = posixpath.dirname(parent)
        # each directory's names, built once: listing one must not scan every member
        for name in self.entries:
            if name:
                self._children.setdefault(posixpath.dirname(name), []).append(posixpath.basename(name))

    def _unreadable_archive(self) -> None:
        """The archive holds more than we read: say so by its own name."""
        self.denied.append(self.label)

    def _inflate(self, archive: str | os.PathLike[str], gzip: ModuleType) -> bool:
        """Inflate the archive into the spool, at most MAX_ARCHIVE_BYTES; True when it was cut."""
        fd = os.open(archive, _SNAPSHOT_OPEN & ~os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnreadableFile(f"{archive} is not a regular file")
            inflated = gzip.GzipFile(fileobj=handle)
            while True:
                chunk = inflated.read(1 << 20)
                if not chunk:
                    return False
                room = MAX_ARCHIVE_BYTES - self._spool.tell()
                self._spool.write(chunk[:room])
                if len(chunk) > room:
                    return True

    def _index(self, tar: tarfile.TarFile, cut: bool) -> None:
        length = self._spool.seek(0, os.SEEK_END)
        count = 0
        while (member := tar.next()) is not None:
            tar.members.clear()  # type: ignore[attr-defined]  # our index keeps what we need; tarfile's list would keep every TarInfo
            count += 1
            if count > MAX_ARCHIVE_MEMBERS:
                raise _ArchiveLimit(f"more than {MAX_ARCHIVE_MEMBERS} members")
            if len(member.name) > _MAX_NAME or len(member.linkname) > _MAX_NAME:
                self._unreadable_archive()
                continue
            name = _norm(member.name)
            if not name:
                continue
            if member.isfile() and not member.issparse() and member.offset_data + member.size > length:
                if not cut:
                    raise OSError(f"{member.name} is truncated")
                self.entries[name] = _Entry("file", size=member.size, mode=member.mode, cut=True)
                self._unreadable(name)  # the member the cap fell in: nothing after it was read
                return
            self._add(member, name)

    def _add(self, member: tarfile.TarInfo, name: str) -> None:
        if member.isdir():
            self.entries[name] = _Entry("dir", mode=member.mode)
        elif member.issym():
            self.entries[name] = _Entry("link", target=member.linkname)
        elif member.islnk():
            linked = self.entries.get(_norm(member.linkname))
            if linked is not None:
                self.entries[name] = linked
        elif member.isfile() and not member.issparse():
            self.entries[name] = _Entry("file", offset=member.offset_data, size=member.size, mode=member.mode)
        else:
            self.entries[name] = _Entry("other", mode=member.mode)  # a device, a FIFO, a sparse file

    def _lkind(self, rel: str) -> str | None:
        entry = self.entries.get(rel)
        return None if entry is None else entry.kind

    def _readlink(self, rel: str) -> str:
        return self.entries[rel].target

    def _member(self, rel: str) -> _Entry:
        entry = self.entries[rel]
        if entry.kind != "file" or entry.cut:
            raise UnreadableFile(f"{rel} lies past {MAX_ARCHIVE_BYTES} bytes of the inflated archive")
        return entry

    def _open(self, rel: str) -> BinaryIO:
        entry = self._member(rel)
        return io.BufferedReader(_MemberReader(self._spool, entry.offset, entry.size))

    def _read(self, rel: str, limit: int | None) -> bytes:
        entry = self._member(rel)
        if limit is None and entry.size > MAX_FILE_BYTES:
            raise UnreadableFile(f"{rel} is larger than {MAX_FILE_BYTES} bytes")
        self._spool.seek(entry.offset)
        return self._spool.read(entry.size if limit is None else min(limit, entry.size))

    def _list(self, rel: str) -> list[str]:
        return list(self._children.get(rel, ()))


SNAPSHOT_MARKERS = ("proc", "sys", "nvreload-snapshot")


def open_root(path: str | None) -> RootFS:
    """The root named by --root (a directory or a .tar.gz), or the live `/`."""
    if path is None or path == "/":
        return DirRoot("/")
    if not os.path.exists(path):
        raise SnapshotError(f"{path}: no such file or directory")
    if os.path.isdir(path):
        root: RootFS = DirRoot(path)
    elif os.path.isfile(path):
        root = TarRoot(path)
    else:
        raise SnapshotError(f"{path}: neither a directory nor a .tar.gz snapshot")
    if not any(root.is_dir(marker) for marker in SNAPSHOT_MARKERS):
        raise SnapshotError(f"{path}: not a node snapshot (no proc/, sys/ or nvreload-snapshot/ in it)")
    return root
