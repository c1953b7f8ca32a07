"""Kernel modules as /proc/modules and /sys/module show them, and the kernel's module switches."""

from __future__ import annotations

from nvreload.model import KernelInfo, KernelModule
from nvreload.records import record
from nvreload.rootfs import RootFS

_STATES = {"Live": "live", "Loading": "coming", "Unloading": "going"}

# Modules whose state matters to a reload. Anything that holds one of these is added too.
NVIDIA_MODULES = (
    "nvidia",
    "nvidia_uvm",
    "nvidia_modeset",
    "nvidia_drm",
    "nvidia_peermem",
    "nvidia_fs",
    "nvidia_vgpu_vfio",
    "gdrdrv",
    "nouveau",
)
MOFED_MODULES = ("ib_core", "mlx5_core")
# what the NVLink fabric's daemons need besides the driver (NVLink 5: nvlsm reaches the switches through ib_umad)
FABRIC_MODULES = ("ib_umad",)


@record
class ProcModulesLine:
    """One parsed line of /proc/modules."""

    name: str
    size: int | None
    refcount: int | None
    unload_supported: bool
    holders: tuple[str, ...]
    state: str


def _version(text: str | None) -> str | None:
    """A module's MODULE_VERSION as sysfs shows it, when it is one (dotted digits); a damaged
    file is no version rather than text that would pass for one."""
    text = (text or "").strip()
    parts = text.split(".")
    return text if text.isascii() and len(parts) > 1 and all(part.isdigit() for part in parts) else None


def _count(field: str) -> int | None:
    """A count as the kernel prints it: ASCII digits only (int() would also take '-1', '1_0', '٣')."""
    return int(field) if field.isascii() and field.isdigit() else None


def parse_proc_modules(text: str) -> list[ProcModulesLine]:
    """Parse /proc/modules; lines that do not have the kernel's shape are skipped, not fatal."""
    parsed = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[0].replace("-", "_").isidentifier():
            continue
        name, size, refcount, used_by, state = fields[:5]
        unload_supported = refcount != "-"
        count, size_bytes = _count(refcount), _count(size)
        if size_bytes is None or (unload_supported and count is None) or state not in _STATES:
            continue
        holders = tuple(h for h in used_by.split(",") if h and h != "-")
        parsed.append(ProcModulesLine(name, size_bytes, count, unload_supported, holders, _STATES[state]))
    return parsed


def read_parameters(root: RootFS, name: str) -> dict[str, str]:
    params = {}
    for param in root.listdir(f"sys/module/{name}/parameters"):
        value = root.read_line(f"sys/module/{name}/parameters/{param}")
        if value is not None:
            params[param] = value
    return params


def read_module(root: RootFS, name: str, proc_line: ProcModulesLine | None) -> KernelModule | None:
    base = f"sys/module/{name}"
    in_sys = root.is_dir(base)
    if proc_line is None and not in_sys:
        return None
    initstate = root.read_line(f"{base}/initstate")
    if initstate not in _STATES.values():
        initstate = None  # not a state the kernel writes there: it tells nothing
    holders = set(root.listdir(f"{base}/holders"))
    refcount = None
    if proc_line is not None:
        holders.update(proc_line.holders)
        refcount = proc_line.refcount
        state = initstate or proc_line.state
    elif initstate:
        state = initstate
    else:
        # In /sys/module with no initstate and no /proc/modules line: compiled into the kernel.
        state = "builtin"
    if refcount is None and state != "builtin":
        refcnt = root.read_line(f"{base}/refcnt")
        refcount = _count(refcnt) if refcnt is not None else None
    return KernelModule(
        name=name,
        state=state,
        refcount=refcount,
        holders=tuple(sorted(holders)),
        version=_version(root.read_line(f"{base}/version")),
        parameters=read_parameters(root, name),
        size=proc_line.size if proc_line else None,
    )


def read_modules(root: RootFS, proc_lines: list[ProcModulesLine]) -> tuple[KernelModule, ...]:
    """The NVIDIA modules, their holders (transitively) and the MOFED modules peermem needs."""
    by_name = {line.name: line for line in proc_lines}
    wanted = list(NVIDIA_MODULES) + list(MOFED_MODULES)
    found: dict[str, KernelModule] = {}
    while wanted:
        name = wanted.pop(0)
        if name in found:
            continue
        module = read_module(root, name, by_name.get(name))
        if module is None:
            continue
        found[name] = module
        if name not in MOFED_MODULES:
            wanted.extend(h for h in module.holders if h not in found)
    return tuple(found.values())


def read_kernel(root: RootFS, proc_lines: list[ProcModulesLine], proc_modules_present: bool) -> KernelInfo:
    release = root.read_line("proc/sys/kernel/osrelease") or None  # an empty file names no release
    disabled = root.read_line("proc/sys/kernel/modules_disabled")
    if proc_lines:
        unload = all(line.unload_supported for line in proc_lines)
    else:
        # No module loaded to tell by: a loadable module exposes refcnt only with CONFIG_MODULE_UNLOAD.
        unload = proc_modules_present
    return KernelInfo(
        release=release,
        modules_supported=proc_modules_present,
        module_unload_supported=unload,
        module_loading_disabled=(disabled == "1") or not proc_modules_present,
        modules_tree_present=bool(release)
        and (root.is_dir(f"lib/modules/{release}") or root.is_dir(f"usr/lib/modules/{release}")),
    )


MOFED_READY_MARKER = "run/mellanox/drivers/.driver-ready"


def mofed_ready(root: RootFS, modules: tuple[KernelModule, ...]) -> bool:
    """MOFED is ready for nvidia_peermem: the network operator's marker file exists, or ib_core and
    mlx5_core are live (host or inbox drivers). `modules` as read_modules() returns them."""
    if root.exists(MOFED_READY_MARKER):
        return True
    by_name = {m.name: m for m in modules}
    return all(by_name.get(m) is not None and by_name[m].state in ("live", "builtin") for m in MOFED_MODULES)


def read_loaded_modules(root: RootFS) -> tuple[KernelModule, ...]:
    """The narrow question asked during a run: which NVIDIA (and MOFED) modules are there now."""
    return read_modules(root, parse_proc_modules(root.read_text("proc/modules") or ""))
