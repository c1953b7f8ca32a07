"""Processes that hold NVIDIA device files open, found by scanning /proc/<pid>/fd.

A descriptor counts when it is a character device whose major number is an NVIDIA one from
/proc/devices (nvidia, nvidia-uvm, nvidia-caps, nvidia-nvswitch, nvidia-nvlink,
nvidia-caps-imex-channels) or a DRM card node that nvidia_drm owns. Matching by major, not by
path, catches device nodes made anywhere (containers mknod their own /dev).
"""

from __future__ import annotations

import functools
import json
import os
import re
import stat as statmod
from dataclasses import dataclass

from nvreload.host.rootfs import RootFS
from nvreload.model import GpuProcess

NVIDIA_DEVICE_NAMES = (
    "nvidia",
    "nvidiactl",
    "nvidia-uvm",
    "nvidia-caps",
    "nvidia-nvswitch",
    "nvidia-nvlink",
    "nvidia-caps-imex-channels",
    "nvidia-frontend",
    "nvidia-modeset",
)
DRM_MAJOR = 226
PF_KTHREAD = 0x00200000

# cgroup paths that name a container (tried in this order) and a systemd service. Compiled on first
# use: the --status path on a snapshot, or with no open handles, never classifies a process.
_CONTAINER_PATTERNS = (
    r"docker-([0-9a-f]{12,64})\.scope",
    r"/docker/([0-9a-f]{12,64})",
    r"cri-containerd-([0-9a-f]{12,64})\.scope",
    r"crio-([0-9a-f]{12,64})\.scope",
    r"libpod-([0-9a-f]{12,64})\.scope",
    r"/kubepods[^\n]*/([0-9a-f]{64})",
)
_UNIT = r"/system\.slice/(?:[^/]+\.slice/)*([^/]+\.service)(?:/|$)"


@functools.cache
def _cgroup_patterns() -> tuple[tuple[re.Pattern[str], ...], re.Pattern[str]]:
    return tuple(re.compile(p) for p in _CONTAINER_PATTERNS), re.compile(_UNIT)


def nvidia_majors(proc_devices: str | None) -> frozenset[int]:
    """Character-device majors that belong to NVIDIA, from /proc/devices."""
    majors = set()
    in_char = False
    for line in (proc_devices or "").splitlines():
        if line.startswith("Character devices"):
            in_char = True
            continue
        if line.startswith("Block devices"):
            in_char = False
            continue
        fields = line.split()
        if in_char and len(fields) == 2 and fields[0].isdigit() and fields[1] in NVIDIA_DEVICE_NAMES:
            majors.add(int(fields[0]))
    return frozenset(majors)


@dataclass(frozen=True)
class ProcessIdentity:
    """Who a PID is right now: the start time tells a reused PID from the one we saw."""

    pid: int
    start_time: int
    comm: str
    is_kernel_thread: bool


def read_identity(pid: int, proc: str = "/proc") -> ProcessIdentity | None:
    """pid, start time and comm from /proc/<pid>/stat; None when the process is gone."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as handle:
            raw = handle.read().decode("utf-8", "replace")
    except OSError:
        return None
    close = raw.rfind(")")
    comm = raw[raw.find("(") + 1 : close]
    fields = raw[close + 2 :].split()
    # fields[0] is field 3 (state); flags is field 9, starttime is field 22
    try:
        flags = int(fields[6])
        start = int(fields[19])
    except (IndexError, ValueError):
        return None
    return ProcessIdentity(pid, start, comm, bool(flags & PF_KTHREAD))


@dataclass(frozen=True)
class DeviceMatcher:
    """Which character devices count as the GPU: any minor of `majors`, or exact (major, minor) pairs."""

    majors: frozenset[int] = frozenset()
    exact: frozenset[tuple[int, int]] = frozenset()

    def __bool__(self) -> bool:
        return bool(self.majors or self.exact)

    @functools.cached_property
    def exact_rdevs(self) -> frozenset[int]:
        """The exact pairs as st_rdev values, so the scan's hot loop compares one integer."""
        return frozenset(os.makedev(major, minor) for major, minor in self.exact)


def gpu_matcher(majors: frozenset[int], drm_minors: frozenset[int] = frozenset()) -> DeviceMatcher:
    return DeviceMatcher(majors, frozenset((DRM_MAJOR, m) for m in drm_minors))


def _label(rdev: int, mode: int, majors: frozenset[int], exact: frozenset[int]) -> str | None:
    """'major:minor' when the device is one the matcher accepts, else None."""
    if (rdev in exact or (bool(majors) and os.major(rdev) in majors)) and statmod.S_ISCHR(mode):
        return f"{os.major(rdev)}:{os.minor(rdev)}"
    return None


def held_devices(pid: int, matcher: DeviceMatcher, proc: str = "/proc",
                 cache: dict[str, dict[str, str | None]] | None = None) -> list[str]:
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
    verdicts: dict[str, str | None] | None = None
    if cache is not None:
        try:
            verdicts = cache.setdefault(readlink(f"{proc}/{pid}/ns/mnt"), {})
        except OSError:
            verdicts = None  # cannot tell namespaces apart: stat everything
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
            if verdicts is not None and not target.endswith(" (deleted)"):
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


def classify_cgroup(cgroup_text: str) -> tuple[str | None, str | None]:
    """(container id, systemd unit) from /proc/<pid>/cgroup."""
    containers, unit = _cgroup_patterns()
    for pattern in containers:
        match = pattern.search(cgroup_text)
        if match:
            return match.group(1), None
    for line in cgroup_text.splitlines():
        match = unit.search(line.rsplit(":", 1)[-1] + "/")
        if match:
            return None, match.group(1)
    return None, None


def _read(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def describe(pid: int, devices: tuple[str, ...], source: str, proc: str = "/proc") -> GpuProcess | None:
    ident = read_identity(pid, proc)
    if ident is None:
        return None
    container, unit = classify_cgroup(_read(f"{proc}/{pid}/cgroup"))
    cmdline = _read(f"{proc}/{pid}/cmdline").replace("\0", " ").strip()
    return GpuProcess(
        pid=pid,
        start_time=ident.start_time,
        comm=ident.comm,
        cmdline=cmdline,
        devices=devices,
        container_id=container,
        systemd_unit=unit,
        source=source,
    )


def scan_gpu_holders(
    matcher: DeviceMatcher,
    proc: str = "/proc",
    extra_pids: tuple[int, ...] = (),
    workers: int | None = None,
) -> tuple[GpuProcess, ...]:
    """Every process holding a matching device, merged with pids another source (NVML) named."""
    own = os.getpid()
    found: dict[int, GpuProcess] = {}
    if matcher:
        pids = [int(name) for name in os.listdir(proc) if name.isdigit() and int(name) != own]
        if workers is None:
            workers = min(os.cpu_count() or 1, 8) if len(pids) >= PARALLEL_SCAN_MIN_PROCESSES else 1
        held = _scan_forked(pids, matcher, proc, workers) if workers > 1 else _scan_pids(pids, matcher, proc)
        for pid, devices in sorted(held.items()):
            described = describe(pid, tuple(devices), "procfs", proc)
            if described is not None:
                found[pid] = described
    for pid in extra_pids:
        if pid in found:
            found[pid] = GpuProcess(**{**found[pid].__dict__, "source": "procfs+nvml"})
        elif pid != own:
            described = describe(pid, (), "nvml", proc)
            if described is not None:
                found[pid] = described
    return tuple(found[pid] for pid in sorted(found))


def nvidia_drm_minors(root: RootFS) -> frozenset[int]:
    """Minors of /dev/dri/card* and renderD* nodes whose device is driven by nvidia."""
    minors = set()
    for name in root.listdir("sys/class/drm"):
        if not re.match(r"^(card|renderD)\d+$", name):
            continue
        driver = root.link_target(f"sys/class/drm/{name}/device/driver")
        if driver and driver.rstrip("/").endswith("/nvidia"):
            dev = root.read_line(f"sys/class/drm/{name}/dev")
            if dev and ":" in dev:
                minors.add(int(dev.split(":")[1]))
    return frozenset(minors)
