"""Assemble the whole read model of a node from a machine's files and probes."""

from __future__ import annotations

from nvreload.model import (
    Consumers,
    ContainerState,
    EngineState,
    GpuProcess,
    KernelInfo,
    KernelModule,
    NextKernel,
    NodeInput,
    NodeState,
    NvmlReport,
    ServiceState,
)
from nvreload.read.kernel_log import parse_kernel_log
from nvreload.read.kernel_modules import FABRIC_MODULES, mofed_ready, parse_proc_modules, read_kernel, read_modules
from nvreload.read.nvidia_proc import read_mig_gpu_instances, read_proc_gpus, read_resident
from nvreload.read.on_disk import newer_kernels, read_dkms, read_on_disk_module
from nvreload.read.pci import read_pci_gpus
from nvreload.read.readability import kernel_release_input, read_readability
from nvreload.read.userspace import read_userspace
from nvreload.records import replace
from nvreload.rootfs import RootFS

TYPE_CHECKING = False  # not typing's: importing typing costs the --status path; mypy and pyright read this name as True
if TYPE_CHECKING:
    from typing import Protocol

    from nvreload.read.on_disk import ModinfoMemo

    class ReadableMachine(Protocol):
        """What read_node needs of a machine (Machine, live or on a snapshot)."""

        fs: RootFS
        live: bool

        @property
        def modinfo_cache(self) -> ModinfoMemo | None: ...  # read-only here: a Machine's ModinfoCache fits

        def hostname(self) -> str | None: ...
        def kernel_log(self) -> tuple[str | None, str | None]: ...
        def nvml(self, module_live: bool, userspace_found: bool) -> NvmlReport: ...
        def gpu_processes(
            self, majors: frozenset[int], drm_minors: frozenset[int], nvml_pids: tuple[int, ...]
        ) -> tuple[GpuProcess, ...]: ...
        def services(self) -> tuple[ServiceState, ...]: ...
        def containers(self, holder_ids: tuple[str, ...] = ()) -> tuple[tuple[ContainerState, ...], str | None]: ...
        def engine_states(self, containers: tuple[ContainerState, ...]) -> tuple[EngineState, ...]: ...
        def fabric_manager_version(self) -> str | None: ...
        def recorded_consumers(self) -> Consumers | None: ...


def configured_modules(fs: RootFS) -> frozenset[str]:
    """Modules the node loads at boot by configuration: /etc/modules and modules-load.d."""
    names = set()
    for name in ["etc/modules"] + [f"etc/modules-load.d/{n}" for n in fs.listdir("etc/modules-load.d")]:
        for line in (fs.read_text(name) or "").splitlines():
            module = line.split("#", 1)[0].strip().replace("-", "_")
            if module:
                names.add(module.split()[0])
    return frozenset(names)


# Modules whose device nodes processes open; each open descriptor takes a reference on its module.
DEVICE_MODULES = ("nvidia", "nvidia_uvm", "nvidia_modeset", "nvidia_drm")


def no_open_handles(modules: tuple[KernelModule, ...]) -> bool:
    """True when every loaded NVIDIA device module's refcount is accounted for by its holders:
    then no process holds a device and the /proc scan can be skipped. Unknown refcounts (a kernel
    without module unloading) never allow the shortcut."""
    loaded = [m for m in modules if m.name in DEVICE_MODULES and m.state in ("live", "coming")]
    return bool(loaded) and all(m.refcount is not None and m.refcount <= len(m.holders) for m in loaded)


def scan_consumers(
    machine: ReadableMachine, modules: tuple[KernelModule, ...], nvml: NvmlReport, services: tuple[ServiceState, ...]
) -> Consumers:
    """The live node's GPU holders, services and containers (read_node's scan, and what --collect
    records for a snapshot)."""
    fs = machine.fs
    nvml_pids = tuple(sorted({pid for dev in nvml.devices for pid in dev.compute_pids}))
    from nvreload.read.devices import nvidia_drm_minors, nvidia_majors  # live scans only

    if no_open_handles(modules):
        majors, drm_minors = frozenset[int](), frozenset[int]()  # nothing to find: only NVML's pids are described
    else:
        majors, drm_minors = nvidia_majors(fs.read_text("proc/devices")), nvidia_drm_minors(fs)
    processes = machine.gpu_processes(majors, drm_minors, nvml_pids)
    containers, engine_error = machine.containers(tuple(sorted({p.container_id for p in processes if p.container_id})))
    return Consumers(
        processes=processes,
        services=services,
        containers=containers,
        scanned=True,
        container_engine_error=engine_error,
        engines=machine.engine_states(containers),
    )


def _kernel(fs: RootFS, proc_lines: list, proc_modules_read: bool) -> tuple[KernelInfo, NodeInput]:
    """The kernel's switches and release, and where the release was read."""
    kernel = read_kernel(fs, proc_lines, proc_modules_read)
    release_input, release = kernel_release_input(fs)
    if kernel.release is None and release:
        # a snapshot that kept /proc/version but not osrelease
        tree = fs.is_dir(f"lib/modules/{release}") or fs.is_dir(f"usr/lib/modules/{release}")
        kernel = replace(kernel, release=release, modules_tree_present=tree)
    return kernel, release_input


def read_node(machine: ReadableMachine, with_consumers: bool = True) -> NodeState:
    fs = machine.fs
    proc_modules_text = fs.read_text("proc/modules")
    proc_lines = parse_proc_modules(proc_modules_text or "")
    kernel, release_input = _kernel(fs, proc_lines, proc_modules_text is not None)
    readable = read_readability(fs, proc_modules_text, release_input)
    modules = read_modules(fs, proc_lines)
    by_name = {m.name: m for m in modules}
    userspace = read_userspace(fs)
    nvidia = by_name.get("nvidia")
    module_live = nvidia is not None and nvidia.state in ("live", "coming", "builtin")
    # Every file read comes before the NVML answer is needed: on a live node the NVML probe (a child
    # process, started before this module was imported) runs beside them.
    kernel_log = parse_kernel_log(*machine.kernel_log())
    resident = read_resident(fs)
    on_disk = read_on_disk_module(fs, kernel.release, cache=machine.modinfo_cache)
    next_kernels = tuple(
        NextKernel(release, read_on_disk_module(fs, release, cache=machine.modinfo_cache))
        for release in newer_kernels(fs, kernel.release)
    )
    dkms = read_dkms(fs)
    pci_gpus = read_pci_gpus(fs)
    proc_gpus = read_proc_gpus(fs)
    fabric_manager_version = machine.fabric_manager_version()
    peermem = by_name.get("nvidia_peermem")
    peermem_wanted = (peermem is not None and peermem.state != "going") or "nvidia_peermem" in configured_modules(fs)
    scan = with_consumers and machine.live
    services = machine.services() if scan else ()  # systemctl, also beside the probe
    nvml = machine.nvml(module_live, userspace.link is not None)
    consumers = Consumers()
    if scan:
        consumers = scan_consumers(machine, modules, nvml, services)
    elif with_consumers:
        # what the live scan saw when the snapshot was taken (--collect records it)
        consumers = machine.recorded_consumers() or Consumers()
    return NodeState(
        hostname=machine.hostname(),
        kernel=kernel,
        modules=modules,
        resident=resident,
        on_disk=on_disk,
        next_kernels=next_kernels,
        dkms=dkms,
        userspace=userspace,
        pci_gpus=pci_gpus,
        proc_gpus=proc_gpus,
        mig_gpu_instances=read_mig_gpu_instances(fs, proc_gpus),
        nvml=nvml,
        kernel_log=kernel_log,
        mofed_ready=mofed_ready(fs, modules),
        peermem_wanted=peermem_wanted,
        fabric_manager_version=fabric_manager_version,
        fabric_modules=tuple(name for name in FABRIC_MODULES if any(line.name == name for line in proc_lines)),
        consumers=consumers,
        unreadable=tuple(dict.fromkeys(fs.denied)),
        live=machine.live,
        readable=readable,
    )
