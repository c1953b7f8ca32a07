"""Paths nvreload may act on as root: walked one component at a time from /, never through a link
or a directory that another user controls.

nvreload runs as root and takes paths from its command line and its environment (`--output`, a
`.run`, a scenario, `NVRELOAD_STATE_DIR`, `XDG_STATE_HOME` under `sudo -E`). A path is only as safe
as every directory and link on the way to it: a user who can write one of them can redirect root.
So each component is opened relative to the one before with O_NOFOLLOW, and

- a symbolic link is followed only when its owner is trusted (root, or the user nvreload runs as)
  and so is the directory holding it, which nobody else may write (a root-owned link hard-linked
  into /tmp by a user would otherwise resolve relative to the user's directory);
- a directory may be required to be owned by a trusted user and writable by nobody else (or
  sticky, like /tmp: nobody else can rename or replace what another owns in it).

What is checked is what is used: callers get the final directory as an open descriptor and create
or open the last name relative to it.
"""

from __future__ import annotations

import errno
import os
import stat

from nvreload.errors import BadInputError

MAX_LINKS = 40  # the kernel's own limit on links followed in one lookup
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def trusted_owners() -> frozenset[int]:
    """Root, and the user nvreload runs as."""
    return frozenset({0, os.geteuid()})


def _writable_by_others(st: os.stat_result) -> bool:
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def directory_problem(st: os.stat_result, owners: frozenset[int]) -> str | None:
    """Why a directory on the way cannot be trusted, or None."""
    if st.st_uid not in owners:
        return f"is owned by uid {st.st_uid}"
    if _writable_by_others(st) and not st.st_mode & stat.S_ISVTX:
        return "is writable by group or others"
    return None


def _link_problem(link: os.stat_result, holder: os.stat_result, owners: frozenset[int]) -> str | None:
    if link.st_uid not in owners:
        return f"is a symbolic link owned by uid {link.st_uid}"
    if holder.st_uid not in owners or _writable_by_others(holder):
        return "is a symbolic link in a directory that others can write"
    return None


class TrustedWalk:
    """The walk from / to a path's last component. `check_dirs`: every directory on the way must
    pass directory_problem(); links are held to the rule above whatever `check_dirs` says."""

    def __init__(
        self,
        path: str,
        owners: frozenset[int] | None = None,
        check_dirs: bool = False,
        create: bool = False,
        follow_last: bool = True,
    ) -> None:
        self.path = path
        self.owners = trusted_owners() if owners is None else owners
        self.check_dirs = check_dirs
        self.create = create  # make missing directories on the way (0755), each inside a checked one
        self.follow_last = follow_last  # False: a last name that is a link is the caller's to refuse

    def _fail(self, where: str, why: str) -> BadInputError:
        """`why` is a phrase ("is owned by uid 1000") or an error (": Not a directory")."""
        shown = where if where == self.path else f"{self.path}: {where}"
        return BadInputError(f"{shown}{why if why.startswith(':') else ' ' + why}; refusing to use it")

    def parent(self) -> tuple[int, str, str]:
        """(descriptor of the last directory, the last name, that directory's real path). The caller
        closes the descriptor. A last name that is a trusted link is followed too."""
        if not self.path:
            raise BadInputError("an empty path")
        pending = [p for p in os.path.abspath(self.path).split("/") if p]
        if not pending:
            raise BadInputError(f"{self.path}: not a file name")
        stack = [os.open("/", _DIR_FLAGS)]  # the open directories from / down to where the walk is
        real: list[str] = []  # their names
        links = 0
        try:
            self._check_dir(stack[0], "/")
            while True:
                part = pending.pop(0)
                if part == "..":
                    if len(stack) > 1:
                        os.close(stack.pop())
                        real.pop()
                    continue
                if part == ".":
                    continue
                where = "/" + "/".join(real + [part])
                st = self._lstat(part, stack[-1], where)
                if st is not None and stat.S_ISLNK(st.st_mode) and (pending or self.follow_last):
                    links += 1
                    if links > MAX_LINKS:
                        raise self._fail(where, "has too many levels of symbolic links")
                    pending[:0] = self._link_target(part, st, stack, real, where) or ["."]
                    continue
                if not pending:
                    return stack.pop(), part, "/" + "/".join(real)
                stack.append(self._enter(part, st, stack[-1], where))
                real.append(part)
        finally:
            for fd in stack:
                os.close(fd)

    def _lstat(self, part: str, directory: int, where: str) -> os.stat_result | None:
        try:
            return os.stat(part, dir_fd=directory, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._fail(where, f": {exc.strerror}") from None

    def _link_target(self, part: str, st: os.stat_result, stack: list[int], real: list[str], where: str) -> list[str]:
        """The names a trusted link leads to; an absolute one takes the walk back to /."""
        problem = _link_problem(st, os.fstat(stack[-1]), self.owners)
        if problem:
            raise self._fail(where, problem)
        target = os.readlink(part, dir_fd=stack[-1])
        if target.startswith("/"):
            while len(stack) > 1:
                os.close(stack.pop())
            real.clear()
        return [p for p in target.split("/") if p]

    def _enter(self, part: str, st: os.stat_result | None, directory: int, where: str) -> int:
        """The next directory of the walk, opened (made first where asked to) and checked."""
        if st is None and not self.create:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), where)
        if st is None:
            try:
                os.mkdir(part, 0o755, dir_fd=directory)
            except OSError as exc:
                raise self._fail(where, f"cannot be made: {exc.strerror}") from None
        try:
            fd = os.open(part, _DIR_FLAGS, dir_fd=directory)
        except OSError as exc:
            raise self._fail(where, f": {exc.strerror}") from None
        try:
            self._check_dir(fd, where)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _check_dir(self, fd: int, where: str) -> None:
        if self.check_dirs:
            problem = directory_problem(os.fstat(fd), self.owners)
            if problem:
                raise self._fail(where, problem)


def open_trusted_directory(path: str, create: bool = False) -> int:
    """A descriptor of directory `path` (made, with what is missing above it, when `create`),
    reached through trusted directories and links only; the directory itself must be owned by the
    running user and writable by nobody else."""
    parent, name, _ = TrustedWalk(path, check_dirs=True, create=create).parent()
    try:
        if create:
            try:
                os.mkdir(name, 0o755, dir_fd=parent)
            except FileExistsError:
                pass
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise BadInputError(f"{path}: {exc.strerror}; refusing to use it") from None
    finally:
        os.close(parent)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or _writable_by_others(st):
        os.close(fd)
        why = f"owned by uid {st.st_uid}" if st.st_uid != os.geteuid() else "writable by group or others"
        raise BadInputError(f"{path} is {why}, not the running user's alone; refusing to use it")
    return fd


def own_file_problem(st: os.stat_result) -> str | None:
    """Why a file nvreload keeps for itself (lock, journal, records) cannot be trusted, or None: it
    must be a regular file of root's or the running user's that nobody else can write."""
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid not in trusted_owners():
        return f"is owned by uid {st.st_uid}, not the running user"
    if _writable_by_others(st):
        return "is writable by group or others"
    return None


def open_own_file(path: str, flags: int, mode: int = 0o600) -> int:
    """Open one of nvreload's own files without following a link (O_NONBLOCK: a FIFO planted there
    cannot hang the open); BadInputError when own_file_problem() has something to say."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BadInputError(f"{path} is a symbolic link; refusing to use it") from None
        raise
    problem = own_file_problem(os.fstat(fd))
    if problem:
        os.close(fd)
        raise BadInputError(f"{path} {problem}; refusing to use it")
    return fd


def read_own_file(path: str, limit: int) -> bytes | None:
    """Up to limit + 1 bytes of one of nvreload's own files (the caller tells a file that is too
    large by the length); None when there is none. OSError for other read failures."""
    try:
        fd = open_own_file(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def open_trusted_file(path: str, owners: frozenset[int] | None = None, what: str = "use it") -> int:
    """A read-only descriptor of the regular file `path` that root may act on: reached through
    trusted directories and links only (TrustedWalk with check_dirs), owned by one of `owners`
    (root and the running user by default) and writable by nobody else. `what` ends the refusal
    ("run it as root"). FileNotFoundError when it (or a directory above it) does not exist."""
    owners = trusted_owners() if owners is None else owners
    if path.endswith("/"):  # the kernel reads "file/" as a directory: so does this, and refuses it
        raise BadInputError(f"{path}: Not a directory (a file was expected)")
    try:
        parent, name, _ = TrustedWalk(path, owners, check_dirs=True).parent()
    except BadInputError as exc:
        raise BadInputError(exc.message.replace("refusing to use it", f"refusing to {what}")) from None
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang the open; it is refused just below
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise BadInputError(f"{path}: {exc.strerror}") from None
    finally:
        os.close(parent)
    st = os.fstat(fd)
    why = None
    if stat.S_ISDIR(st.st_mode):
        why = "a directory, not a file"
    elif not stat.S_ISREG(st.st_mode):
        why = "not a regular file"
    elif st.st_uid not in owners:
        who = "root" if owners == frozenset({0}) else "root or the running user"
        why = f"owned by uid {st.st_uid}, not {who}; refusing to {what}"
    elif _writable_by_others(st):
        why = f"writable by group or others; refusing to {what}"
    if why:
        os.close(fd)
        raise BadInputError(f"{path}: {why}")
    return fd
