"""What the engine knows of a node: the ReloadView (read once, before the run) and the FinalState
asked after it (typed, target-agnostic). What it does to the node, the Plan, is in engine/kinds.py."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from nvreload.catalog import DISPLAY_SERVERS, LOGIND_COMM, MPS_COMM
from nvreload.model import ContainerState, GpuProcess, NodeState, ServiceState
from nvreload.read.kernel_modules import MOFED_MODULES
from nvreload.read.nvidia_proc import normalize_bus_id

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nvreload.diagnosis.findings import Diagnosis

# Read for diagnosis, never part of the reload set: MOFED belongs to the network stack, and nouveau
# is another driver for the same GPUs (its presence is a finding, not something to reload).
NOT_RELOADED = frozenset(MOFED_MODULES) | {"nouveau"}
# What a node with no NVIDIA module loaded gets (dependency order), and the modules that need more
# than the driver (MOFED, a storage stack): loaded when configured, and their failure is a warning.
BOOT_MODULES = ("nvidia", "nvidia_uvm", "nvidia_modeset", "nvidia_drm")
OPTIONAL_MODULES = ("nvidia_peermem", "nvidia_fs", "gdrdrv")


@dataclass(frozen=True)
class LoadedModule:
    """A module that was loaded before the reload, to be loaded back with its parameters."""

    name: str
    holders: tuple[str, ...]
    parameters: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class MigInstance:
    """One MIG GPU instance and its compute instances as NVML creates them: profile ids and
    placements (start, size). A module reload loses every instance; this is what brings it back."""

    profile_id: int
    start: int
    size: int
    compute: tuple[tuple[int, int, int], ...] = ()  # (profile id, start, size) of each compute instance

    def document(self) -> dict:
        return {
            "profile_id": self.profile_id,
            "start": self.start,
            "size": self.size,
            "compute": [list(c) for c in self.compute],
        }

    @classmethod
    def from_document(cls, data: dict) -> MigInstance:
        return cls(
            int(data["profile_id"]),
            int(data["start"]),
            int(data["size"]),
            tuple((int(c[0]), int(c[1]), int(c[2])) for c in data.get("compute", ())),
        )


def mig_documents(geometry: dict[str, tuple[MigInstance, ...]]) -> dict[str, list[dict]]:
    return {bus: [i.document() for i in instances] for bus, instances in sorted(geometry.items())}


def mig_geometry(documents: dict[str, list[dict]]) -> dict[str, tuple[MigInstance, ...]]:
    return {bus: tuple(MigInstance.from_document(i) for i in instances) for bus, instances in documents.items()}


@dataclass(frozen=True)
class GpuRef:
    """One GPU as an operator names it (nvidia-smi's index, its PCI address, its UUID) and as
    processes hold it (/dev/nvidia<minor>)."""

    index: int
    bus_id: str
    minor: int | None = None
    uuid: str | None = None


@dataclass(frozen=True)
class ReloadView:
    """What the planner needs to know of a node to plan a reload: what is loaded and who uses it."""

    modules: tuple[LoadedModule, ...]  # loaded NVIDIA modules and whatever holds them
    processes: tuple[GpuProcess, ...]
    services: tuple[ServiceState, ...]  # GPU services that are active now
    containers: tuple[ContainerState, ...]  # running GPU containers
    mps_active: bool = False
    persistence: dict[str, bool] = field(default_factory=dict, compare=False, hash=False)
    blockers: tuple[str, ...] = ()
    display_processes: tuple[GpuProcess, ...] = ()
    logind_holds_drm: bool = False
    container_engine: dict | None = field(default=None, compare=False, hash=False)  # name, version, live_restore
    failed_services: tuple[str, ...] = ()  # enabled units already failed: reported, never started
    consoles: tuple[str, ...] = ()  # VT consoles bound to a framebuffer (nvidia_drm modeset=1/fbdev)
    own_unit: str | None = None  # the systemd unit this nvreload runs in: never stopped by the plan
    # read only when nvidia is not loaded at all: what to load from nothing
    available_modules: tuple[str, ...] = ()  # NVIDIA modules modprobe finds for the running kernel
    configured_modules: frozenset[str] = frozenset()  # /etc/modules, modules-load.d
    driver_flavor: str | None = None  # "open" | "proprietary": the flavour a .run must install
    loaded_version: str | None = None  # the nvidia module's version before the run
    fabric_manager_version: str | None = None  # nv-fabricmanager's: it starts only with its own driver version
    gpus: tuple[GpuRef, ...] = ()  # for --reset: which GPU is which
    nvswitch: bool = False  # an NVSwitch (HGX) node: its GPUs cannot be reset one by one
    nvml_status: str = "ok"  # a GPU reset goes through NVML: refused while it cannot answer
    mig: dict[str, tuple[MigInstance, ...]] = field(
        default_factory=dict, compare=False, hash=False
    )  # per GPU with instances
    mig_pending: tuple[str, ...] = ()  # GPUs (bus ids) whose MIG mode changes at their next reset
    # MIG GPU instances (count per bus id) that exist but could not be recorded: NVML did not answer
    mig_unrecorded: dict[str, int] = field(default_factory=dict, compare=False, hash=False)
    # the diagnosis's: a package hook reloads only a node whose diagnosis asks for a reload
    recommended_action: str = "reload"
    userspace_version: str | None = None
    container_engine_error: str | None = None  # why an engine's containers could not be listed
    hostname: str | None = None  # kubelet's node name, as a rule: the commands of a pod refusal name it

    def with_display_servers_ended(self) -> ReloadView:
        """--force-display: the display servers are ended like any other holder (the view keeps
        them apart only so that a reload without it is refused)."""
        return replace(self, processes=self.processes + self.display_processes, display_processes=())


def reload_view(
    node: NodeState,
    diagnosis: Diagnosis,
    consoles: tuple[str, ...] = (),
    container_engine: dict | None = None,
    own_unit: str | None = None,
    available_modules: tuple[str, ...] = (),
    configured_modules: frozenset[str] = frozenset(),
) -> ReloadView:
    """The planner's view of a node read by the read model (pure)."""
    modules = tuple(
        LoadedModule(m.name, tuple(m.holders), dict(m.parameters))
        for m in node.modules
        if m.state in ("live", "coming") and m.name not in NOT_RELOADED
    )
    display = tuple(p for p in node.consumers.processes if p.comm in DISPLAY_SERVERS)
    return ReloadView(
        modules=modules,
        processes=tuple(p for p in node.consumers.processes if p not in display),
        services=tuple(s for s in node.consumers.services if s.active == "active"),
        failed_services=tuple(s.name for s in node.consumers.services if s.active == "failed"),
        containers=tuple(c for c in node.consumers.containers if c.running),
        mps_active=any(p.comm == MPS_COMM for p in node.consumers.processes),
        persistence={d.pci_bus_id: bool(d.persistence_mode) for d in node.nvml.devices if d.pci_bus_id},
        blockers=diagnosis.reload_blockers,
        display_processes=display,
        logind_holds_drm=any(p.comm == LOGIND_COMM for p in node.consumers.processes),
        consoles=consoles,
        container_engine=container_engine,
        own_unit=own_unit,
        available_modules=available_modules,
        configured_modules=configured_modules,
        driver_flavor=node.resident.flavor or (node.on_disk.flavor if node.on_disk else None),
        loaded_version=node.resident.version if node.loaded("nvidia") else None,
        fabric_manager_version=node.fabric_manager_version,
        recommended_action=diagnosis.recommended_action,
        userspace_version=node.userspace.version,
        hostname=node.hostname,
        container_engine_error=node.consumers.container_engine_error,
        gpus=_gpu_refs(node),
        nvml_status=node.nvml.status,
        mig_pending=tuple(
            sorted(
                normalize_bus_id(d.pci_bus_id)
                for d in node.nvml.devices
                if d.pci_bus_id and d.mig_pending is not None and d.mig_mode is not None and d.mig_pending != d.mig_mode
            )
        ),
        mig_unrecorded=dict(node.mig_gpu_instances) if node.nvml.status != "ok" else {},
        nvswitch=node.fabric_manager_version is not None
        or any(s.name == "nvidia-fabricmanager.service" and s.active == "active" for s in node.consumers.services),
    )


def _gpu_refs(node: NodeState) -> tuple[GpuRef, ...]:
    """The GPUs the driver has, numbered as nvidia-smi numbers them (NVML's index, else PCI order)."""
    nvml_index = {normalize_bus_id(d.pci_bus_id): d.index for d in node.nvml.devices if d.pci_bus_id}
    refs = []
    for order, gpu in enumerate(sorted(node.proc_gpus, key=lambda g: normalize_bus_id(g.bus_id))):
        bus = normalize_bus_id(gpu.bus_id)
        refs.append(GpuRef(nvml_index.get(bus, order), bus, gpu.minor, gpu.uuid))
    return tuple(sorted(refs, key=lambda r: r.index))


@dataclass(frozen=True)
class FinalState:
    """What is up after a run (the narrow questions asked once it is over)."""

    modules_loaded: tuple[str, ...]
    services_active: tuple[str, ...]
    containers_running: tuple[str, ...]

    def document(self) -> dict:
        return {
            "modules_loaded": list(self.modules_loaded),
            "services_active": list(self.services_active),
            "containers_running": list(self.containers_running),
        }
