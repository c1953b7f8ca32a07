"""The simulated node as the read model sees a node: what read_node would read on a machine in the
simulated node's state. --status and --verify on --simulate read it, and a simulated reload's
observation goes from it through the live path (engine/observation.py): the same diagnosis, the
same blockers, the same view."""

from __future__ import annotations

from typing import Protocol

from nvreload.model import (
    Consumers,
    ContainerState,
    EngineState,
    GpuProcess,
    KernelInfo,
    KernelLog,
    KernelModule,
    NodeState,
    NvmlDevice,
    NvmlReport,
    OnDiskModule,
    PciGpu,
    ProcGpu,
    ResidentDriver,
    ServiceState,
    UserspaceLibrary,
)


class SimulatedWorld(Protocol):
    """What the reading needs of the simulated node (engine/sim.py), which reads itself through it."""

    s: dict
    MODULES: frozenset[str]

    def module_holders(self, name: str) -> list[str]: ...
    def module_users(self, name: str) -> list[str]: ...
    def gpu_processes(self) -> list[GpuProcess]: ...
    def gpu_units_and_containers(
        self, processes: list[GpuProcess]
    ) -> tuple[tuple[ServiceState, ...], tuple[ContainerState, ...]]: ...
    def nvml_status(self) -> str: ...


# An H100 SXM5's PCI identity; the scenario names the GPUs, not their silicon.
_VENDOR, _DEVICE, _CLASS_3D = "0x10de", "0x2330", "0x030200"
_LIBRARY_DIR = "/usr/lib/x86_64-linux-gnu"


def _banner(version: str, flavor: str | None) -> str:
    kind = "Open Kernel Module" if flavor == "open" else "Kernel Module"
    return f"NVRM version: NVIDIA UNIX {kind} for x86_64  {version}  Release Build  (simulated)"


def simulated_node_state(node: SimulatedWorld) -> NodeState:
    """The node as the readers would find it: /proc/modules, the GPUs, NVML (answering only while
    the driver loaded is of the library's version), and the consumers a /proc scan and the
    container engines would list. Called with the node's lock held, or where nothing else acts."""
    s = node.s
    release = s["kernel"].get("release", "6.1.0-26-amd64")
    loaded_version = s["loaded_version"] if "nvidia" in s["loaded"] else None
    installed = s.get("installed_version")
    flavor = s["driver"].get("flavor")
    unload = bool(s["kernel"].get("module_unload_supported", True))
    gpus = s["gpus"]
    return NodeState(
        hostname=s.get("hostname", "simulated"),
        kernel=KernelInfo(
            release=release,
            modules_supported=True,
            module_unload_supported=unload,
            module_loading_disabled=bool(s["kernel"].get("modules_disabled", False)),
        ),
        modules=_modules(node, loaded_version, unload),
        resident=ResidentDriver(
            loaded_version,
            flavor if loaded_version else None,
            _banner(loaded_version, flavor) if loaded_version else None,
        ),
        on_disk=_on_disk(release, installed),
        dkms=(),
        userspace=UserspaceLibrary(
            installed,
            f"{_LIBRARY_DIR}/libnvidia-ml.so.{installed}" if installed else None,
            f"{_LIBRARY_DIR}/libnvidia-ml.so.1" if installed else None,
        ),
        pci_gpus=tuple(
            PciGpu(g["pci_bus_id"], _VENDOR, _DEVICE, _CLASS_3D, "nvidia" if loaded_version else None) for g in gpus
        ),
        proc_gpus=tuple(ProcGpu(g["pci_bus_id"], g.get("name"), g.get("uuid"), index) for index, g in enumerate(gpus))
        if loaded_version
        else (),
        nvml=_nvml(node, loaded_version),
        # the driver's capability directories, one per GPU instance: there with or without NVML
        mig_gpu_instances={g["pci_bus_id"].lower(): len(g["mig_now"]) for g in gpus if g.get("mig_now")}
        if loaded_version
        else {},
        kernel_log=KernelLog(source=None, lines=0, last_driver_load=None, xids=(), load_errors=(), fallen_off_bus=()),
        mofed_ready=bool(s.get("mofed_ready", True)),
        peermem_wanted="nvidia_peermem" in s["loaded"] or "nvidia_peermem" in s.get("modules_load_d", []),
        fabric_manager_version=s.get("fabric_manager_version") if s.get("nvswitch") else None,
        consumers=_consumers(node),
    )


def _modules(node: SimulatedWorld, loaded_version: str | None, unload: bool) -> tuple[KernelModule, ...]:
    """/proc/modules: each simulated module loaded, with the kernel's use count (a holder module,
    an open handle), '-' where the kernel cannot unload at all."""
    return tuple(
        KernelModule(
            name=name,
            state="live",
            refcount=len(node.module_holders(name)) + len(node.module_users(name)) if unload else None,
            holders=tuple(node.module_holders(name)),
            version=loaded_version,
            parameters=dict(parameters),
        )
        for name, parameters in node.s["loaded"].items()
        if name in node.MODULES
    )


def _on_disk(release: str, installed: str | None) -> OnDiskModule | None:
    if not installed:
        return None
    return OnDiskModule(
        f"/lib/modules/{release}/updates/dkms/nvidia.ko",
        installed,
        f"{release} SMP preempt mod_unload modversions",
        "Dual MIT/GPL",
    )


def _nvml(node: SimulatedWorld, loaded_version: str | None) -> NvmlReport:
    """What NVML answers: the GPUs only while it works (the driver loaded, of the library's version)."""
    status = node.nvml_status()
    devices = tuple(
        NvmlDevice(
            index,
            g.get("name"),
            g.get("uuid"),
            g["pci_bus_id"],
            bool(g.get("persistence_now")),  # as it is now: a fresh driver instance has it off
            bool(g.get("mig")),
            mig_pending=bool(g.get("mig")) != bool(g.get("mig_pending")),
        )
        for index, g in enumerate(node.s["gpus"])
    )
    return NvmlReport(
        status=status,
        source="simulated",
        driver_version=loaded_version if status == "ok" else None,
        devices=devices if status == "ok" else (),
    )


def _consumers(node: SimulatedWorld) -> Consumers:
    processes = node.gpu_processes()
    services, containers = node.gpu_units_and_containers(processes)
    return Consumers(
        processes=tuple(processes),
        services=services,
        containers=containers,
        scanned=True,
        # each engine the simulated containers name, with its GPU containers (no socket: a URL of its own)
        engines=tuple(
            EngineState(name, f"simulated://{name}", sum(1 for c in containers if c.engine == name))
            for name in sorted({c.engine for c in containers})
        ),
    )
