"""The simulated node as the read model sees a node: --status and --verify on --simulate read the
node a simulated --reload acts on (never the machine they run on), through the same diagnosis and
rendering as a live node."""

from __future__ import annotations

from nvreload.engine.plan import ReloadView
from nvreload.engine.sim import SimulatedNode
from nvreload.model import (
    Consumers,
    EngineState,
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
    UserspaceLibrary,
)

# An H100 SXM5's PCI identity; the scenario names the GPUs, not their silicon.
_VENDOR, _DEVICE, _CLASS_3D = "0x10de", "0x2330", "0x030200"
_LIBRARY_DIR = "/usr/lib/x86_64-linux-gnu"


def _banner(version: str, flavor: str | None) -> str:
    kind = "Open Kernel Module" if flavor == "open" else "Kernel Module"
    return f"NVRM version: NVIDIA UNIX {kind} for x86_64  {version}  Release Build  (simulated)"


def simulated_node_state(node: SimulatedNode, view: ReloadView | None = None) -> NodeState:
    """`view`: the node's observation when the caller has it (observe() itself, asking the diagnosis)."""
    s = node.s
    release = s["kernel"].get("release", "6.1.0-26-amd64")
    loaded_version = s["loaded_version"] if "nvidia" in s["loaded"] else None
    installed = s.get("installed_version")
    flavor = s["driver"].get("flavor")
    view = view or node.observe()  # the consumers exactly as the simulated reload will plan them
    modules = tuple(
        KernelModule(
            name=m.name,
            state="live",
            refcount=len(m.holders) + len(node._handles(m.name)),
            holders=m.holders,
            version=loaded_version,
            parameters=dict(m.parameters),
        )
        for m in view.modules
    )
    gpus = s["gpus"]
    return NodeState(
        hostname="simulated",
        kernel=KernelInfo(
            release=release,
            modules_supported=True,
            module_unload_supported=bool(s["kernel"].get("module_unload_supported", True)),
            module_loading_disabled=bool(s["kernel"].get("modules_disabled", False)),
        ),
        modules=modules,
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
        kernel_log=KernelLog(source=None, lines=0, last_driver_load=None, xids=(), load_errors=(), fallen_off_bus=()),
        mofed_ready=bool(s.get("mofed_ready", True)),
        peermem_wanted="nvidia_peermem" in s["loaded"] or "nvidia_peermem" in s.get("modules_load_d", []),
        fabric_manager_version=s.get("fabric_manager_version") if s.get("nvswitch") else None,
        consumers=_consumers(view),
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


def _nvml(node: SimulatedNode, loaded_version: str | None) -> NvmlReport:
    """What NVML answers: the GPUs only while it works (the driver loaded, of the library's version)."""
    status = node.nvml_status()
    devices = tuple(
        NvmlDevice(
            index,
            g.get("name"),
            g.get("uuid"),
            g["pci_bus_id"],
            bool(g.get("persistence_now")),
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


def _consumers(view: ReloadView) -> Consumers:
    return Consumers(
        processes=view.processes,
        services=view.services,
        containers=view.containers,
        scanned=True,
        # each engine the simulated containers name, with its GPU containers (no socket: a URL of its own)
        engines=tuple(
            EngineState(name, f"simulated://{name}", sum(1 for c in view.containers if c.engine == name))
            for name in sorted({c.engine for c in view.containers})
        ),
    )
