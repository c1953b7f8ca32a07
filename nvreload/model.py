"""Typed values that cross the seams: what the read model found on a node.

Treat them as immutable: readers build them and nothing changes them afterwards (a changed copy is
made with dataclasses.replace). They are records (nvreload.records), dataclasses as a type checker
sees them, built without dataclasses' cost on every `nvreload --status --json`.
"""

from __future__ import annotations

from nvreload.records import field, fields, record


@record
class KernelModule:
    """One kernel module as /proc/modules and /sys/module/<name> describe it."""

    name: str
    state: str  # "live" | "coming" | "going" | "builtin"
    refcount: int | None  # None: the kernel cannot unload, or a built-in module
    holders: tuple[str, ...]
    version: str | None
    parameters: dict[str, str] = field(default_factory=dict, compare=False)
    size: int | None = None


@record
class KernelInfo:
    """The running kernel: its release and whether it lets modules load and unload at all."""

    release: str | None
    modules_supported: bool
    module_unload_supported: bool
    module_loading_disabled: bool
    modules_tree_present: bool = True  # lib/modules/<release> exists


@record
class ResidentDriver:
    """What /proc/driver/nvidia/version says about the module in memory."""

    version: str | None
    flavor: str | None  # "open" | "proprietary" | None
    banner: str | None


@record
class OnDiskModule:
    """The nvidia module modprobe would load for the running kernel, read from its ELF .modinfo."""

    path: str  # inside the root, e.g. /lib/modules/6.1.0-26-amd64/updates/dkms/nvidia.ko.zst
    version: str | None
    vermagic: str | None
    license: str | None
    error: str | None = None

    @property
    def flavor(self) -> str | None:
        if self.license is None:
            return None
        return "open" if "GPL" in self.license else "proprietary"


@record
class DkmsEntry:
    """One DKMS build (var/lib/dkms): which module version is built, and installed, for which kernel."""

    module: str
    version: str
    kernel: str
    arch: str
    installed: bool


@record
class UserspaceLibrary:
    """The userspace driver, as the file libnvidia-ml.so.1 resolves to."""

    version: str | None
    path: str | None  # the file libnvidia-ml.so.1 resolves to, inside the root
    link: str | None  # the libnvidia-ml.so.1 that was found


@record
class PciGpu:
    """One NVIDIA display-class PCI function (/sys/bus/pci/devices) and the driver bound to it."""

    bus_id: str
    vendor: str
    device: str
    pci_class: str
    driver: str | None


@record
class ProcGpu:
    """One entry of /proc/driver/nvidia/gpus/<bdf>/information."""

    bus_id: str
    model: str | None
    uuid: str | None
    minor: int | None


@record
class NvmlDevice:
    """One GPU as NVML enumerates it."""

    index: int
    name: str | None
    uuid: str | None
    pci_bus_id: str | None
    persistence_mode: bool | None
    mig_mode: bool | None
    compute_pids: tuple[int, ...] = ()
    mig_pending: bool | None = None  # the MIG mode the next GPU reset applies (<pending_mig>)
    # NVSwitch systems: "Not Started" | "In Progress" | "Completed"; None where the GPU has no fabric
    # (nvidia-smi's "N/A", NVML's NOT_SUPPORTED). The status says why a setup failed.
    fabric_state: str | None = None
    fabric_status: str | None = None


@record
class NvmlReport:
    """What NVML said: its status (the classified init failure, or ok) and the GPUs it sees."""

    status: str  # "ok" | "version_mismatch" | "driver_not_loaded" | "library_not_found" | "unavailable" | "error"
    source: str  # "nvml" (live) | "nvidia-smi-xml" (snapshot) | "none"
    driver_version: str | None = None
    cuda_driver_version: int | None = None
    devices: tuple[NvmlDevice, ...] = ()
    error: str | None = None


@record
class XidEvent:
    """One NVRM XID line from the kernel log."""

    xid: int
    pci_bus_id: str | None
    message: str
    since_driver_load: bool
    line: str


@record
class GpuInitFailure:
    """A GPU the driver's probe or initialisation gave up on, and the log line that says why."""

    pci_bus_id: str | None
    # "fallen_off_bus" | "unsupported" (needs another driver branch) | "bar_unassigned" (platform/VM
    # MMIO) | "init_failed" (RmInitAdapter) | "other_driver" (probe not called: nouveau & co. own it)
    kind: str
    line: str


@record
class ModuleLoadFailure:
    """A module the kernel refused to load, and why, from the kernel log."""

    module: str | None  # None when the kernel does not name it ("Loading of unsigned module is rejected")
    # "signature" | "symbol_version" | "unknown_symbol" | "format" | "version_magic" | "api_mismatch"
    kind: str
    line: str
    symbol: str | None = None


@record
class DriverMessage:
    """A kernel log line of a family of nvreload/read/driver_messages.py, from the current driver
    instance (since its load, or its own probe just before)."""

    family: str
    finding: str | None  # the family's finding code; None: the line does not mean the stack is broken
    line: str


@record
class KernelFault:
    """An oops, BUG, general protection fault, soft lockup, hung task or WARNING whose report (its
    RIP, WARNING line or call trace) runs through an NVIDIA module, since the driver loaded."""

    kind: str  # the family: kernel_bug | kernel_oops | general_protection_fault | soft_lockup | hung_task | kernel_warning
    line: str  # the report's first line
    modules: tuple[str, ...]  # the NVIDIA modules its trace names
    frames: tuple[str, ...]  # the trace lines that name them (a few)


@record
class KernelLog:
    """The kernel log's NVIDIA lines that matter: the last driver load, XIDs, load errors."""

    source: str | None  # "dmesg" | "/dev/kmsg" | "journalctl" | "snapshot" | None
    lines: int
    last_driver_load: str | None  # the last "NVRM: loading NVIDIA ..." line
    xids: tuple[XidEvent, ...]
    load_errors: tuple[str, ...]  # "Invalid module format", "disagrees about version of symbol", ...
    fallen_off_bus: tuple[str, ...]  # "GPU has fallen off the bus" lines since the driver loaded
    # what the current driver instance's own load said about each GPU it could not take (its probe
    # lines come just before its "NVRM: loading" line), and what failed to load since
    gpu_init_failures: tuple[GpuInitFailure, ...] = ()
    module_failures: tuple[ModuleLoadFailure, ...] = ()
    driver_messages: tuple[DriverMessage, ...] = ()
    kernel_faults: tuple[KernelFault, ...] = ()


@record(frozen=True)
class KubePod:
    """The Kubernetes pod a process runs in, as kubelet's cgroup and the runtime's bundle show it."""

    uid: str
    runtime: str  # containerd | cri-o | docker | unknown
    container_id: str
    namespace: str | None = None
    name: str | None = None
    container: str | None = None

    def describe(self) -> str:
        """As an operator finds it: pod NS/NAME container C (containerd 0123456789ab)."""
        pod = f"pod {self.namespace}/{self.name}" if self.name else f"pod uid {self.uid}"
        container = f"container {self.container} " if self.container else "container "
        return f"{pod} {container}({self.runtime} {self.container_id[:12]})"


@record
class GpuProcess:
    """A process holding a GPU device node (or listed by NVML), and what owns it."""

    pid: int
    start_time: int | None  # clock ticks since boot (/proc/<pid>/stat field 22): the PID-reuse guard
    comm: str
    cmdline: str
    devices: tuple[str, ...]  # the /dev nodes it holds
    container_id: str | None
    systemd_unit: str | None
    source: str  # "procfs" | "nvml" | "procfs+nvml"
    process_group: int | None = None  # what ties a late child to the holder it came from
    pod: KubePod | None = None  # kubelet's: never stopped behind its back
    uid: int | None = None  # who runs it (a rootless container's user)


@record
class ServiceState:
    """A GPU service (systemd unit, or a daemon by name where systemd is not PID 1)."""

    name: str
    active: str  # "active" | "inactive" | "failed" | "activating" | "unknown" | "not-found"
    enabled: str | None = None
    command: tuple[str, ...] | None = None  # without systemd: the command line that started it


@record
class ContainerState:
    """A container that uses a GPU, with the markers that say so."""

    id: str
    name: str
    running: bool
    markers: tuple[str, ...]
    restart_policy: str | None = None
    stop_timeout: int | None = None
    engine: str = "docker"  # docker, podman, or podman (user NAME, uid N): the socket that runs it
    unit: str | None = None  # the systemd unit that owns it (Quadlet, podman generate systemd)
    pod: KubePod | None = None  # a Kubernetes pod's container (cri-dockerd's labels): kubelet's

    @property
    def short_name(self) -> str:
        """As `docker ps` names it: its name, with a short id."""
        return f"{self.name} ({self.id[:12]})" if self.name else self.id[:12]


@record(frozen=True)
class EngineState:
    """A container engine found on the node and how many GPU containers it runs."""

    name: str  # docker, podman, podman (user NAME, uid N)
    url: str
    gpu_containers: int


@record
class Consumers:
    """Everything that holds or uses the GPUs: processes, services, containers."""

    processes: tuple[GpuProcess, ...] = ()
    services: tuple[ServiceState, ...] = ()
    containers: tuple[ContainerState, ...] = ()
    scanned: bool = False  # False on snapshots: consumers cannot be known there
    container_engine_error: str | None = None  # an engine socket exists but the engine did not answer
    engines: tuple[EngineState, ...] = ()  # each engine that answered


@record
class NodeInput:
    """One file or directory of the node that findings are drawn from, and whether it was read."""

    paths: tuple[str, ...]  # where it was looked for, as on the node ("/proc/modules"), in order
    # "read"; "not_in_kernel": the live kernel has no such file, which is its answer (no module support);
    # "empty": there with nothing in it; "unreadable": there, or behind a directory, but denied;
    # "absent": not in the snapshot, which proves nothing about the node
    state: str = "read"

    @property
    def read(self) -> bool:
        return self.state == "read"

    @property
    def known(self) -> bool:
        """What the node says here is known: it was read, or the live kernel itself lacks it."""
        return self.state in ("read", "not_in_kernel")


def _input(*paths: str) -> NodeInput:
    return field(default_factory=lambda: NodeInput(paths))


@record
class Readability:
    """What of the node could be read. A finding is drawn only from inputs that were read (an absent
    file proves nothing about the node when the snapshot or the permissions left it out), and without
    the essential ones the node's state is unknown. The defaults say "read": read_node sets each."""

    proc_modules: NodeInput = _input("/proc/modules")
    kernel_release: NodeInput = _input("/proc/sys/kernel/osrelease", "/proc/version")
    modules_disabled: NodeInput = _input("/proc/sys/kernel/modules_disabled")
    proc_devices: NodeInput = _input("/proc/devices")
    sys_module: NodeInput = _input("/sys/module")
    pci_devices: NodeInput = _input("/sys/bus/pci/devices")

    def inputs(self) -> dict[str, NodeInput]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def essential_missing(self) -> tuple[NodeInput, ...]:
        """The inputs without which no state of the node can be told, that were not read."""
        return tuple(i for i in (self.proc_modules, self.kernel_release) if not i.known)


@record(frozen=True)
class NextKernel:
    """An installed kernel newer than the running one (it has a boot image): what boots next, and
    the nvidia module modprobe would load there (None: there is none, the GPUs would come up dark)."""

    release: str
    module: OnDiskModule | None


@record
class NodeState:
    """The whole read model of one node, live or from a snapshot."""

    hostname: str | None
    kernel: KernelInfo
    modules: tuple[KernelModule, ...]
    resident: ResidentDriver
    on_disk: OnDiskModule | None
    dkms: tuple[DkmsEntry, ...]
    userspace: UserspaceLibrary
    pci_gpus: tuple[PciGpu, ...]
    proc_gpus: tuple[ProcGpu, ...]
    nvml: NvmlReport
    kernel_log: KernelLog
    mofed_ready: bool
    peermem_wanted: bool
    fabric_manager_version: str | None
    consumers: Consumers
    unreadable: tuple[str, ...] = ()
    live: bool = False
    readable: Readability = field(default_factory=Readability)
    next_kernels: tuple[NextKernel, ...] = ()
    fabric_modules: tuple[str, ...] = ()  # of read/kernel_modules.py's FABRIC_MODULES, those listed in /proc/modules
    # MIG GPU instances per GPU (bus id) by the driver's capability files: NVML's view of them
    # (nvml.devices) is empty while it cannot answer, these are not
    mig_gpu_instances: dict[str, int] = field(default_factory=dict, compare=False)

    def module(self, name: str) -> KernelModule | None:
        for module in self.modules:
            if module.name == name:
                return module
        return None

    def module_state(self, name: str) -> str | None:
        """The listed state of a module (live, loading, builtin...), None when it is not listed."""
        module = self.module(name)
        return module.state if module else None

    def loaded(self, name: str) -> bool:
        module = self.module(name)
        return module is not None and module.state in ("live", "coming")


@record
class Check:
    """One health check (--verify, and the engine's verify step) and whether it passed."""

    name: str
    ok: bool
    detail: str
    severity: str = "critical"  # what a failure of this check means
