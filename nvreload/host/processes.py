"""The one door to other processes: reading who they are in /proc, finding those that hold the GPU,
and signalling them. Every os.kill and every scan worker fork of nvreload is here.

Signals follow one rule, whoever the target: never PID 1, a kernel thread or ourselves, and only
while the same process (pid + start time, read again right before each signal) is still there;
SIGTERM, a grace, then SIGKILL.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from dataclasses import dataclass

from nvreload.catalog import GPU_DAEMONS
from nvreload.errors import HostError
from nvreload.model import GpuProcess
from nvreload.names import printable
from nvreload.read.devices import (
    DeviceMatcher,
    ProcessIdentity,
    cgroup_unit,
    classify_cgroup,
    docker_client_containers,
    parse_proc_stat,
)
from nvreload.read.kube import kube_pod

TYPE_CHECKING = False  # not typing's: importing typing costs the --status path; mypy and pyright read this name as True
if TYPE_CHECKING:
    from nvreload.host.commands import CommandRunner


# identity ----------------------------------------------------------------------------------------
def read_identity(pid: int, proc: str = "/proc") -> ProcessIdentity | None:
    """pid, start time, comm and state from /proc/<pid>/stat; None when the process is gone."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as handle:
            raw = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    return parse_proc_stat(pid, raw)


_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


def _read(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _argv(pid: int, proc: str) -> tuple[str, ...]:
    return tuple(part for part in _read(f"{proc}/{pid}/cmdline").split("\0") if part)


def own_unit(proc: str = "/proc") -> str | None:
    """The systemd service this process runs in, if any (from its own cgroup)."""
    return classify_cgroup(_read(f"{proc}/self/cgroup"))[1]


def docker_client_units(proc: str = "/proc") -> dict[str, str]:
    """Container name or id -> the systemd service whose `docker run`/`docker start -a` client runs
    it in the foreground (a `docker run` in a service's ExecStart): the container is the unit's.
    Only root's clients count: anyone may name a process docker and give it such arguments."""
    owned: dict[str, str] = {}
    for name in os.listdir(proc):
        if not name.isdigit() or _read(f"{proc}/{name}/comm").strip() != "docker" or _owner(int(name), proc) != 0:
            continue
        containers = docker_client_containers(_argv(int(name), proc))
        unit = cgroup_unit(_read(f"{proc}/{name}/cgroup")) if containers else None
        if unit:
            owned.update(dict.fromkeys(containers, unit))
    return owned


# the holder scan ---------------------------------------------------------------------------------
def _label(rdev: int, mode: int, majors: frozenset[int], exact: frozenset[int]) -> str | None:
    """'major:minor' when the device is one the matcher accepts, else None."""
    import stat as statmod

    if (rdev in exact or (bool(majors) and os.major(rdev) in majors)) and statmod.S_ISCHR(mode):
        return f"{os.major(rdev)}:{os.minor(rdev)}"
    return None


def _namespace_verdicts(
    pid: int, proc: str, cache: dict[str, dict[str, str | None]] | None
) -> dict[str, str | None] | None:
    """The bulk scan's verdicts per path in pid's mount namespace (a path names another file in
    another namespace); None without a cache, or where the namespace cannot be told."""
    if cache is None:
        return None
    try:
        return cache.setdefault(os.readlink(f"{proc}/{pid}/ns/mnt"), {})
    except OSError:
        return None  # cannot tell namespaces apart: stat everything


def held_devices(
    pid: int, matcher: DeviceMatcher, proc: str = "/proc", cache: dict[str, dict[str, str | None]] | None = None
) -> list[str]:
    """The device files (as 'major:minor path') among pid's descriptors that the matcher accepts.

    Without a cache every descriptor is stat()ed: exact, for the re-check before a signal. With a
    cache (the bulk scan, one matcher), a descriptor is first readlink()ed: sockets, pipes and
    anonymous inodes are never devices and cost nothing more, and a path already stat()ed in the
    same mount namespace reuses its verdict. The cache can only cause a miss when a device node was
    replaced under a path while open; the unload then fails "in use" and the run rolls back.
    """
    try:
        # stat relative to the open fd directory: the kernel walks one component per descriptor
        # instead of /proc/<pid>/fd/<n> each time.
        dir_fd = os.open(f"{proc}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return []
    held = []
    stat_fn, readlink = os.stat, os.readlink
    majors, exact = matcher.majors, matcher.exact_rdevs
    verdicts = _namespace_verdicts(pid, proc, cache)
    try:
        for fd in os.listdir(dir_fd):
            target = None
            if verdicts is not None:
                try:
                    target = readlink(fd, dir_fd=dir_fd)
                except OSError:
                    continue
                if target[:1] != "/":
                    continue  # socket:[..], pipe:[..], anon_inode:..: never a device node
                if target in verdicts:
                    label = verdicts[target]
                    if label is not None:
                        held.append(f"{label} {target}")
                    continue
            try:
                st = stat_fn(fd, dir_fd=dir_fd)
            except OSError:
                continue
            label = _label(st.st_rdev, st.st_mode, majors, exact)
            if verdicts is not None and target is not None and not target.endswith(" (deleted)"):
                verdicts[target] = label
            if label is None:
                continue
            if target is None:
                try:
                    target = readlink(fd, dir_fd=dir_fd)
                except OSError:
                    target = "?"
            held.append(f"{label} {target}")
    except OSError:
        return []
    finally:
        os.close(dir_fd)
    return sorted(set(held))  # a CUDA process holds dozens of descriptors on the same few nodes


# Below this many processes one pass is faster than starting workers.
PARALLEL_SCAN_MIN_PROCESSES = 256


def _scan_pids(pids: list[int], matcher: DeviceMatcher, proc: str) -> dict[int, list[str]]:
    found = {}
    cache: dict[str, dict[str, str | None]] = {}
    for pid in pids:
        devices = held_devices(pid, matcher, proc, cache)
        if devices:
            found[pid] = devices
    return found


def _scan_forked(pids: list[int], matcher: DeviceMatcher, proc: str, workers: int) -> dict[int, list[str]]:
    """Split the process table over `workers` forked scanners (the scan is syscall-bound, one core
    each); a worker that fails has its share rescanned here, so the result never loses a holder."""
    shares = [pids[i::workers] for i in range(workers)]
    children = []
    for share in shares[1:]:
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # the worker: scan, write JSON, leave without running any cleanup
            status = 1
            try:
                os.close(read_end)
                payload = json.dumps(_scan_pids(share, matcher, proc)).encode()
                with os.fdopen(write_end, "wb") as out:
                    out.write(payload)
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        children.append((child, read_end, share))
    found = _scan_pids(shares[0], matcher, proc)
    for child, read_end, share in children:
        with os.fdopen(read_end, "rb") as incoming:
            payload = incoming.read()
        _, status = os.waitpid(child, 0)
        try:
            if status != 0:
                raise ValueError("worker failed")
            found.update({int(pid): devices for pid, devices in json.loads(payload).items()})
        except ValueError:
            found.update(_scan_pids(share, matcher, proc))
    return found


def describe(
    pid: int, devices: tuple[str, ...], source: str, proc: str = "/proc", runtime_root: str = "/"
) -> GpuProcess | None:
    ident = read_identity(pid, proc)
    if ident is None:
        return None
    cgroup = _read(f"{proc}/{pid}/cgroup")
    container, unit = classify_cgroup(cgroup)
    if container is None:
        # Podman without cgroups of its own (rootless where systemd is not PID 1, cgroups=disabled)
        # leaves no trace in the cgroup: the container is the one its conmon ancestor monitors
        container = conmon_container(pid, proc)
    cmdline = printable(_read(f"{proc}/{pid}/cmdline").replace("\0", " ").strip())
    return GpuProcess(
        pid=pid,
        start_time=ident.start_time,
        comm=ident.comm,
        cmdline=cmdline,
        devices=devices,
        container_id=container,
        systemd_unit=unit,
        source=source,
        process_group=ident.process_group,
        pod=kube_pod(cgroup, runtime_root) if "kubepods" in cgroup else None,
        uid=_owner(pid, proc),
    )


def _owner(pid: int, proc: str) -> int | None:
    try:
        return os.stat(f"{proc}/{pid}").st_uid
    except OSError:
        return None


def conmon_container(pid: int, proc: str = "/proc", depth: int = 16) -> str | None:
    """The container id of the conmon (Podman's container monitor) above `pid`, if any: conmon
    is started with `--cid <id>` (or `-c <id>`), and the container's processes descend from it."""
    for _ in range(depth):
        raw = _read(f"{proc}/{pid}/stat")
        close = raw.rfind(")")
        fields = raw[close + 2 :].split() if close >= 0 else []
        if len(fields) < 2 or not fields[1].isdigit():
            return None
        if raw[raw.find("(") + 1 : close] == "conmon":
            argv = _argv(pid, proc)
            for flag, value in zip(argv, argv[1:], strict=False):
                if flag in ("-c", "--cid") and _CONTAINER_ID.fullmatch(value):
                    return value
            return None
        pid = int(fields[1])  # the parent
        if pid <= 1:
            return None
    return None


def scan_gpu_holders(
    matcher: DeviceMatcher,
    proc: str = "/proc",
    extra_pids: tuple[int, ...] = (),
    workers: int | None = None,
    runtime_root: str = "/",
) -> tuple[GpuProcess, ...]:
    """Every process holding a matching device, merged with pids another source (NVML) named;
    `runtime_root` is where the container runtimes' state is (/run/containerd...): a test's own."""
    own = os.getpid()
    found: dict[int, GpuProcess] = {}
    if matcher:
        pids = [int(name) for name in os.listdir(proc) if name.isdigit() and int(name) != own]
        if workers is None:
            workers = min(os.cpu_count() or 1, 8) if len(pids) >= PARALLEL_SCAN_MIN_PROCESSES else 1
        held = _scan_forked(pids, matcher, proc, workers) if workers > 1 else _scan_pids(pids, matcher, proc)
        for pid, devices in sorted(held.items()):
            described = describe(pid, tuple(devices), "procfs", proc, runtime_root)
            if described is not None:
                found[pid] = described
    for pid in extra_pids:
        if pid in found:
            found[pid] = GpuProcess(**{**found[pid].__dict__, "source": "procfs+nvml"})
        elif pid != own:
            described = describe(pid, (), "nvml", proc, runtime_root)
            if described is not None:
                found[pid] = described
    return tuple(found[pid] for pid in sorted(found))


# signals -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Termination:
    """What signalling one process came to, and why."""

    pid: int
    outcome: str  # "terminated" | "killed" | "gone" | "refused" | "survived" | "planned"
    reason: str
    # the process may still hold the GPU: it survived SIGKILL, or it was one never to signal (PID
    # 1, nvreload itself, a kernel thread). One that moved on (exited, let go of the GPU, its pid
    # reused) is not: the unload can go on.
    holds_on: bool = False

    @property
    def text(self) -> str:
        """How the journal and the progress lines say it."""
        return f"{self.outcome}: {self.reason}"


def refusal(pid: int, proc: str = "/proc") -> str | None:
    """Why `pid` must never be signalled, or None."""
    if pid <= 1:
        return "never signal PID 1 (or lower)"
    if pid == os.getpid() or pid == os.getppid():
        return "never signal nvreload itself or its parent"
    ident = read_identity(pid, proc)
    if ident is not None and ident.is_kernel_thread:
        return f"pid {pid} ({ident.comm}) is a kernel thread"
    return None


def _still_there(pid: int, start_time: int | None, proc: str) -> bool:
    """The same process (start time) is alive: not gone, not a zombie, pid not reused."""
    ident = read_identity(pid, proc)
    return ident is not None and not ident.is_zombie and (start_time is None or ident.start_time == start_time)


def _send(pid: int, start_time: int | None, signum: int, proc: str) -> bool:
    """Signal `pid` only while it is the same process; False when it is not there any more."""
    if not _still_there(pid, start_time, proc):
        return False
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(
    targets: list[tuple[int, int | None]], seconds: float, proc: str, poll: float
) -> list[tuple[int, int | None]]:
    """Wait up to `seconds` for every target to go; returns those still there."""
    deadline = time.monotonic() + seconds
    left = [t for t in targets if _still_there(t[0], t[1], proc)]
    while left and time.monotonic() < deadline:
        time.sleep(poll)
        left = [t for t in left if _still_there(t[0], t[1], proc)]
    return left


class ProcessReaper:
    """Ends GPU holders: SIGTERM, the grace, SIGKILL, each signal after a re-check that the same
    process still holds a device the matcher accepts."""

    def __init__(self, matcher: DeviceMatcher, proc: str = "/proc", grace: float = 10.0, poll: float = 0.05) -> None:
        self.matcher = matcher
        self.proc = proc
        self.grace = grace
        self.poll = poll

    def _same_holder(self, pid: int, start_time: int | None) -> tuple[bool, str]:
        ident = read_identity(pid, self.proc)
        if ident is None:
            return False, "gone"
        if start_time is not None and ident.start_time != start_time:
            return False, f"pid {pid} now belongs to another process (start time {ident.start_time} != {start_time})"
        if not held_devices(pid, self.matcher, self.proc):
            return False, f"pid {pid} no longer holds a GPU device"
        return True, ""

    def refusal(self, pid: int) -> str | None:
        return refusal(pid, self.proc)

    def terminate(self, pid: int, start_time: int | None) -> Termination:
        refused = refusal(pid, self.proc)
        if refused:
            return Termination(pid, "refused", refused, holds_on=True)
        holds, why = self._same_holder(pid, start_time)
        if not holds:
            return Termination(pid, "gone" if why == "gone" else "refused", why or "gone")
        if not _send(pid, start_time, signal.SIGTERM, self.proc):
            return Termination(pid, "gone", "exited before SIGTERM")
        if not _wait_gone([(pid, start_time)], self.grace, self.proc, self.poll):
            return Termination(pid, "terminated", "exited after SIGTERM")
        holds, why = self._same_holder(pid, start_time)
        if not holds:
            return Termination(pid, "terminated", why)
        if not _send(pid, start_time, signal.SIGKILL, self.proc):
            return Termination(pid, "terminated", "exited before SIGKILL")
        if not _wait_gone([(pid, start_time)], 5.0, self.proc, self.poll):
            return Termination(pid, "killed", f"ignored SIGTERM for {self.grace:g} s; SIGKILL")
        return Termination(
            pid, "survived", "still there after SIGKILL (uninterruptible sleep in the driver?)", holds_on=True
        )


# daemons without systemd -------------------------------------------------------------------------
@dataclass(frozen=True)
class Daemon:
    """A GPU daemon found by its executable where systemd is not PID 1, with the command to start
    it again: that executable's path and the arguments it was started with."""

    name: str
    pid: int
    start_time: int
    command: tuple[str, ...]


def _real_and_effective_uid(pid: int, proc: str) -> tuple[int, int] | None:
    for line in _read(f"{proc}/{pid}/status").splitlines():
        if line.startswith("Uid:"):
            fields = line.split()
            if len(fields) >= 3 and fields[1].isdigit() and fields[2].isdigit():
                return int(fields[1]), int(fields[2])
    return None


def _executable(pid: int, proc: str) -> str | None:
    """The file the process runs, from /proc/<pid>/exe (the kernel's word, not argv, which any
    process sets for itself); a binary replaced by an upgrade reads '<path> (deleted)': the path
    is what starts it again."""
    try:
        path = os.readlink(f"{proc}/{pid}/exe")
    except OSError:
        return None
    path = path.removesuffix(" (deleted)")
    return path if path.startswith("/") else None


def _settled_argv(pid: int, proc: str, tries: int = 20, pause: float = 0.005) -> tuple[str, ...]:
    """The daemon's argv, read once its exec has finished. Mid-execve the kernel already shows the
    new /proc/<pid>/exe while the argument pages are not yet laid out, so cmdline reads empty for a
    moment: a command recorded then would start the daemon again without its arguments. A process
    exec'd with an empty argv really has none; after ~0.1 s that is believed."""
    for _ in range(tries):
        argv = _argv(pid, proc)
        if argv:
            return argv
        time.sleep(pause)
    return ()


def executable_problem(path: str) -> str | None:
    """Why root must not run `path` as a GPU daemon, or None: it must be a regular file of root's
    that nobody else can write, in directories and through links only root controls."""
    from nvreload.errors import BadInputError
    from nvreload.trusted_paths import TrustedWalk

    try:
        parent, name, _ = TrustedWalk(path, frozenset({0}), check_dirs=True).parent()
    except BadInputError as exc:
        return exc.message
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    finally:
        os.close(parent)
    import stat as statmod

    if not statmod.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if st.st_uid != 0 or st.st_mode & (statmod.S_IWGRP | statmod.S_IWOTH):
        return f"{path} is not root's alone (uid {st.st_uid}, mode {st.st_mode & 0o7777:o})"
    return None


def find_daemons(names: tuple[str, ...] = GPU_DAEMONS, proc: str = "/proc") -> list[Daemon]:
    """Root's processes whose executable is one of the daemons `names`. A process of another user
    is never one, whatever it calls itself: its recorded command would be run as root by --start."""
    found = []
    for entry in os.listdir(proc):
        if not entry.isdigit():
            continue
        pid = int(entry)
        exe = _executable(pid, proc)
        if exe is None or os.path.basename(exe) not in names or _real_and_effective_uid(pid, proc) != (0, 0):
            continue
        ident = read_identity(pid, proc)
        if ident is not None and not ident.is_kernel_thread:
            found.append(Daemon(os.path.basename(exe), pid, ident.start_time, (exe,) + _settled_argv(pid, proc)[1:]))
    return sorted(found, key=lambda d: (names.index(d.name), d.pid))


def stop_daemon(name: str, proc: str = "/proc", grace: float = 10.0, poll: float = 0.05) -> list[Daemon]:
    """SIGTERM every instance of `name`, SIGKILL what is left after the grace; returns what it stopped."""
    daemons = [d for d in find_daemons((name,), proc) if refusal(d.pid, proc) is None]
    targets: list[tuple[int, int | None]] = [(d.pid, d.start_time) for d in daemons]
    for pid, start_time in targets:
        _send(pid, start_time, signal.SIGTERM, proc)
    for pid, start_time in _wait_gone(targets, grace, proc, poll):
        _send(pid, start_time, signal.SIGKILL, proc)
    return daemons


def start_daemon(
    runner: CommandRunner, name: str, command: list[str] | tuple[str, ...] | None, settle: float = 0.5
) -> None:
    """Without systemd a daemon comes back by the command line recorded when it was stopped; one
    that exits within `settle` seconds did not come back."""
    if not command:
        raise HostError(f"{name}: no recorded command line to start it with")
    if not command[0].startswith("/") or os.path.basename(command[0]) != name:
        raise HostError(f"{name}: the recorded command {command[0]!r} is not that daemon's executable")
    problem = executable_problem(command[0])
    if problem:
        raise HostError(f"{name}: not started: {problem}")
    try:
        pid = runner.spawn_detached(command)
    except OSError as exc:
        raise HostError(f"{name}: {command[0]}: {exc.strerror or exc}") from None
    time.sleep(settle)
    if not any(d.pid == pid for d in find_daemons((name,))):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        raise HostError(f"{name}: exited right after start ({' '.join(command)})")
