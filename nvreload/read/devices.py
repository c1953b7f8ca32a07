"""Which device files are the GPU, and what a process's /proc files say about it: parsers only.

A descriptor counts when it is a character device whose major number is an NVIDIA one from
/proc/devices (nvidia, nvidia-uvm, nvidia-caps, nvidia-nvswitch, nvidia-nvlink,
nvidia-caps-imex-channels) or a DRM card node that nvidia_drm owns. Matching by major, not by
path, catches device nodes made anywhere (containers mknod their own /dev). The live scan that
uses these is host/processes.py.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass

from nvreload.names import printable
from nvreload.rootfs import RootFS

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
    r"/libpod_parent/libpod-([0-9a-f]{64})(?![0-9a-f])",  # Podman's cgroupfs manager (systemd not PID 1)
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
        # isascii: str.isdigit() also accepts '²', which int() refuses
        if (
            in_char
            and len(fields) == 2
            and fields[0].isascii()
            and fields[0].isdigit()
            and fields[1] in NVIDIA_DEVICE_NAMES
        ):
            majors.add(int(fields[0]))
    return frozenset(majors)


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


def node_gpu_matcher(root: RootFS) -> DeviceMatcher:
    """The matcher of the node as it is now: /proc/devices and nvidia_drm's DRM nodes."""
    return gpu_matcher(nvidia_majors(root.read_text("proc/devices")), nvidia_drm_minors(root))


@dataclass(frozen=True)
class ProcessIdentity:
    """Who a PID is right now: the start time tells a reused PID from the one we saw."""

    pid: int
    start_time: int
    comm: str
    is_kernel_thread: bool
    state: str = "?"  # R, S, D, Z...: a zombie has released everything it held
    process_group: int | None = None  # a holder's children share it and inherit its descriptors

    @property
    def is_zombie(self) -> bool:
        return self.state == "Z"


def parse_proc_stat(pid: int, raw: str) -> ProcessIdentity | None:
    """The one parser of /proc/<pid>/stat. comm may hold spaces and parentheses: the fields
    after it start after the last ')'."""
    close = raw.rfind(")")
    if close < 0:
        return None
    comm = printable(raw[raw.find("(") + 1 : close])
    fields = raw[close + 2 :].split()
    # fields[0] is field 3 (state); pgrp is field 5, flags field 9, starttime field 22
    try:
        group = int(fields[2])
        flags = int(fields[6])
        start = int(fields[19])
    except (IndexError, ValueError):
        return None
    return ProcessIdentity(pid, start, comm, bool(flags & PF_KTHREAD), fields[0], group)


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


def cgroup_unit(cgroup_text: str) -> str | None:
    """The systemd service a cgroup path is in, whatever container encloses it (a unit of a
    containerised systemd is under its container's cgroup)."""
    unit = _cgroup_patterns()[1]
    for line in cgroup_text.splitlines():
        match = unit.search(line.rsplit(":", 1)[-1] + "/")
        if match:
            return match.group(1)
    return None


# the Docker CLI's global options that take a value (before its subcommand)
_DOCKER_GLOBAL_VALUES = frozenset({"-H", "--host", "-c", "--context", "--config", "-l", "--log-level"})
_DOCKER_GLOBAL_VALUES |= frozenset({"--tlscacert", "--tlscert", "--tlskey"})


# `docker run` options that take no value (every other option does, unless written --opt=value)
_DOCKER_RUN_FLAGS = frozenset(
    {"--detach", "--interactive", "--tty", "--rm", "--init", "--privileged", "--publish-all", "--read-only"}
    | {"--no-healthcheck", "--oom-kill-disable", "--sig-proxy", "--quiet", "--help"}
)
_SHORT_FLAGS = re.compile(r"-[ditPq]+")  # -d, -it, -dit ...


def docker_client_containers(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The containers a `docker run --name X` / `docker start -a X` client process runs in the
    foreground (what a service's ExecStart does): names or ids, from its argv."""
    args = list(argv[1:])
    while args and args[0].startswith("-"):
        option = args.pop(0)
        if option in _DOCKER_GLOBAL_VALUES and args:
            args.pop(0)
    if args[:1] == ["container"]:
        args = args[1:]
    if not args or args[0] not in ("run", "start"):
        return ()
    command, rest = args[0], args[1:]
    if command == "run":
        # its options up to the image; past it the words are the container's own command
        index = 0
        while index < len(rest) and rest[index].startswith("-") and rest[index] != "--":
            arg = rest[index]
            if arg.startswith("--name="):
                return (arg.split("=", 1)[1],)
            if arg == "--name":
                return (rest[index + 1],) if index + 1 < len(rest) else ()
            takes_value = "=" not in arg and arg not in _DOCKER_RUN_FLAGS and not _SHORT_FLAGS.fullmatch(arg)
            index += 2 if takes_value else 1
        return ()
    # start: its options take no values but --detach-keys; the rest are the containers
    names, skip = [], False
    for arg in rest:
        if skip:
            skip = False
        elif arg == "--detach-keys":
            skip = True
        elif not arg.startswith("-"):
            names.append(arg)
    return tuple(names)


def character_major(proc_devices: str | None, name: str) -> int | None:
    """The major a driver registered for its character devices under `name`, from /proc/devices."""
    in_char = False
    for line in (proc_devices or "").splitlines():
        if line.startswith("Character devices"):
            in_char = True
        elif line.startswith("Block devices"):
            in_char = False
        else:
            fields = line.split()
            if in_char and len(fields) == 2 and fields[1] == name and fields[0].isascii() and fields[0].isdigit():
                return int(fields[0])
    return None
