"""A node's files under one root: the live `/`, a snapshot directory, or a .tar.gz snapshot.

The root is a value passed around, never a global. Every read resolves symlinks *inside* the root
(an absolute link target means root + target), so a snapshot of another node can never make us
read this machine's files. Snapshots produced by copying files with `cat` keep a symlink as a small
text file holding the link target; `link_target` understands those stand-ins where a link is
expected (a PCI device's `driver`, a library's `.so.1` name).
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from dataclasses import dataclass

from nvreload.errors import SnapshotError

TYPE_CHECKING = False  # not typing's: importing typing costs the --status path; mypy and pyright read this name as True
if TYPE_CHECKING:
    import tarfile

_MAX_LINK_HOPS = 40
_STAND_IN_MAX = 1024
# What a link target looks like: printable path characters only (an ELF or a value file never matches
# both this and the places we expect links).
_STAND_IN_TARGET = re.compile(r"^[A-Za-z0-9_./+:@-]*[./][A-Za-z0-9_./+:@-]*$")


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


@dataclass
class _Entry:
    """One member of a .tar.gz snapshot, held in memory."""

    kind: str  # "file" | "dir" | "link"
    data: bytes = b""
    target: str = ""
    mode: int = 0o644


class RootFS:
    """Read-only access to a node's files. Subclasses provide the primitive lookups."""

    is_live: bool = False
    label: str = "/"

    def __init__(self) -> None:
        self.denied: list[str] = []

    # primitives ---------------------------------------------------------------------------
    def _lkind(self, rel: str) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _readlink(self, rel: str) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, rel: str, limit: int | None) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _list(self, rel: str) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    # resolution ---------------------------------------------------------------------------
    def resolve(self, rel: str) -> str | None:
        """The path `rel` names after following every symlink inside the root, or None."""
        pending = _norm(rel).split("/") if _norm(rel) else []
        done: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            candidate = "/".join(done + [part])
            kind = self._lkind(candidate)
            if kind is None:
                return None
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
                continue
            done.append(part)
        return "/".join(done)

    # public reads -------------------------------------------------------------------------
    def _resolved_file(self, rel: str) -> str | None:
        """The path to read for `rel`, or None when it is not a regular file inside the root."""
        real = self.resolve(rel)
        if real is None or self._lkind(real) != "file":
            return None
        return real

    def kind(self, rel: str) -> str | None:
        """'file', 'dir' or None, after following links."""
        real = self.resolve(rel)
        if real is None:
            return None
        return self._lkind(real) if real else "dir"

    def exists(self, rel: str) -> bool:
        return self.kind(rel) is not None

    def is_dir(self, rel: str) -> bool:
        return self.kind(rel) == "dir"

    def read_bytes(self, rel: str, limit: int | None = None) -> bytes | None:
        real = self._resolved_file(rel)
        if real is None:
            return None
        try:
            return self._read(real, limit)
        except PermissionError:
            self.denied.append("/" + _norm(rel))
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
        real = self.resolve(rel)
        if real is None or (real and self._lkind(real) != "dir"):
            return []
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
            data = self._read(name, _STAND_IN_MAX + 1)
            text = data.decode("utf-8", errors="replace").strip()
            if 0 < len(data) <= _STAND_IN_MAX and _STAND_IN_TARGET.match(text):
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
        return "file"

    def _readlink(self, rel: str) -> str:
        return os.readlink(self._abs(rel))

    def _read(self, rel: str, limit: int | None) -> bytes:
        # Read in modest chunks: procfs sysctl handlers reject one huge read() with ENOMEM.
        chunks, total = [], 0
        with open(self._abs(rel), "rb") as handle:
            while limit is None or total < limit:
                chunk = handle.read(65536 if limit is None else min(65536, limit - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        return b"".join(chunks)

    def _list(self, rel: str) -> list[str]:
        return os.listdir(self._abs(rel))

    def _resolved_file(self, rel: str) -> str | None:
        if self.is_live:
            # On the live root the kernel follows links itself; open() reports what is missing.
            # (Directories fail the read with IsADirectoryError, an OSError, like a missing file.)
            return _norm(rel)
        return super()._resolved_file(rel)

    def resolve(self, rel: str) -> str | None:
        if self.is_live:
            # On the live root the OS resolves links exactly as we would, only faster.
            real = os.path.realpath("/" + _norm(rel))
            return _norm(real) if os.path.lexists(real) else None
        return super().resolve(rel)

    def host_path(self, rel: str) -> str | None:
        """A real path for tools that need one (only for files already resolved inside the root)."""
        real = self.resolve(rel)
        return None if real is None else self._abs(real)


class TarRoot(RootFS):
    """A .tar.gz snapshot read in memory: nothing is extracted, so nothing can escape."""

    def __init__(self, archive: str | os.PathLike[str]) -> None:
        # imported here: the live --status path never opens an archive and should not pay for it
        import gzip
        import io
        import tarfile
        import zlib

        super().__init__()
        self.label = str(archive)
        self.entries: dict[str, _Entry] = {"": _Entry("dir")}
        try:
            with open(archive, "rb") as handle:
                raw = gzip.decompress(handle.read())
            with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
                for member in tar.getmembers():
                    self._add(tar, member)
        except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
            raise SnapshotError(f"{archive}: not a readable .tar.gz snapshot ({exc})") from None
        # an archive may name files without their parent directories
        for name in list(self.entries):
            parent = posixpath.dirname(name)
            while parent and parent not in self.entries:
                self.entries[parent] = _Entry("dir")
                parent = posixpath.dirname(parent)

    def _add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = _norm(member.name)
        if not name:
            return
        if member.isdir():
            self.entries[name] = _Entry("dir", mode=member.mode)
        elif member.issym():
            self.entries[name] = _Entry("link", target=member.linkname)
        elif member.islnk():
            linked = self.entries.get(_norm(member.linkname))
            if linked is not None:
                self.entries[name] = linked
        elif member.isfile():
            extracted = tar.extractfile(member)
            data = extracted.read() if extracted else b""
            if len(data) != member.size:
                raise OSError(f"{member.name} is truncated")
            self.entries[name] = _Entry("file", data=data, mode=member.mode)

    def _lkind(self, rel: str) -> str | None:
        entry = self.entries.get(rel)
        return None if entry is None else entry.kind

    def _readlink(self, rel: str) -> str:
        return self.entries[rel].target

    def _read(self, rel: str, limit: int | None) -> bytes:
        data = self.entries[rel].data
        return data if limit is None else data[:limit]

    def _list(self, rel: str) -> list[str]:
        prefix = rel + "/" if rel else ""
        return [n[len(prefix):] for n in self.entries if n.startswith(prefix) and n != rel and "/" not in n[len(prefix):]]


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
