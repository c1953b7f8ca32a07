"""Findings: each names the runbook failure mode it recognised, its severity, the action that fixes
it, and the evidence (the strings read off the node) that produced it."""

from __future__ import annotations

from dataclasses import dataclass, field

from nvreload.diagnosis import xid_catalog
from nvreload.catalog import DISPLAY_SERVERS
from nvreload.model import NodeState

# The one recommended action is the most drastic one any finding needs. Seeing the node comes first:
# an action drawn from part of it may be the wrong one.
ACTION_PRIORITY = (
    "check_access",
    "service_hardware",
    "reboot",
    "rebuild_module",
    "install_driver",
    "reload",
    "reset_gpu",
    "restart_application",
    "none",
)


@dataclass
class Finding:
    """One thing wrong (or worth knowing) about a node, with the evidence that shows it."""

    code: str
    severity: str  # "info" | "warning" | "critical" | "unknown" (the node could not be seen)
    message: str
    action: str  # one of ACTION_PRIORITY
    blocks_reload: bool = False
    evidence: dict = field(default_factory=dict, compare=False)


@dataclass
class Diagnosis:
    """All findings of a node and the one action recommended for them."""

    findings: tuple[Finding, ...]
    recommended_action: str
    reload_blockers: tuple[str, ...]


def _readability_findings(node: NodeState) -> list[Finding]:
    missing = node.readable.essential_missing()
    if not missing:
        return []
    where = "; ".join(f"{' or '.join(i.paths)}: {i.state}" for i in missing)
    fix = ("run it as root, or find what denies access" if node.live else
           "take the snapshot again with nvreload --collect (files copied out of /proc with cp or tar are empty)")
    return [Finding(
        "node_unreadable", "unknown",
        f"too little of the node could be read ({where}): its driver state is unknown, so neither a reload "
        f"nor a reboot can be recommended; {fix}",
        "check_access", blocks_reload=True,
        evidence={"inputs": [{"paths": list(i.paths), "state": i.state} for i in missing], "live": node.live},
    )]


def _version_findings(node: NodeState) -> list[Finding]:
    out = []
    resident = node.resident.version or (node.module("nvidia").version if node.module("nvidia") else None)
    userspace = node.userspace.version
    on_disk = node.on_disk.version if node.on_disk else None
    if node.loaded("nvidia") and resident:
        differs = {k: v for k, v in (("userspace", userspace), ("on_disk", on_disk)) if v and v != resident}
        if differs:
            out.append(Finding(
                "version_mismatch", "critical",
                f"resident nvidia module {resident} differs from "
                + " and ".join(f"{k.replace('_', '-')} {v}" for k, v in differs.items())
                + ": reload the module to pick up the installed driver",
                "reload",
                evidence={"kernel_module_version": resident, "userspace_version": userspace,
                          "on_disk_module_version": on_disk, "nvml": node.nvml.status,
                          "userspace_library": node.userspace.path, "on_disk_module": node.on_disk.path if node.on_disk else None},
            ))
    if userspace and on_disk and userspace != on_disk:
        out.append(Finding(
            "on_disk_module_differs_from_userspace", "critical",
            f"the nvidia module that would load next ({on_disk}) does not match userspace ({userspace}): "
            "a reload alone cannot fix this; reinstall one driver version",
            "install_driver",
            evidence={"on_disk_module_version": on_disk, "userspace_version": userspace,
                      "on_disk_module": node.on_disk.path if node.on_disk else None},
        ))
    if node.pci_gpus and node.userspace.link is None:
        out.append(Finding(
            "userspace_library_missing", "critical",
            "libnvidia-ml.so.1 is not installed in any library directory",
            "install_driver",
            evidence={"searched": "ld.so.conf directories and the standard library directories"},
        ))
    return out


def _module_findings(node: NodeState) -> list[Finding]:
    out = []
    release = node.kernel.release
    # "not loaded" is only known from a /proc/modules that was read (or that the live kernel lacks):
    # a module absent from one never read proves nothing
    listed = node.readable.proc_modules.known
    if listed and node.pci_gpus and not node.loaded("nvidia") and not (node.module("nvidia") and node.module("nvidia").state == "builtin"):
        out.append(Finding(
            "driver_not_loaded", "critical",
            f"{len(node.pci_gpus)} NVIDIA GPU(s) on the PCI bus but no nvidia module is loaded",
            "reload",
            evidence={"pci_bus_ids": [g.bus_id for g in node.pci_gpus], "nvml": node.nvml.status},
        ))
    # Without a lib/modules/<release> tree at all (a kernel that loads modules from elsewhere, or a
    # snapshot without it) absence proves nothing while the driver runs; with the tree present, or
    # with no driver loaded, it is the "kernel upgrade, GPU missing" runbook.
    modules_tree = node.kernel.modules_tree_present
    if node.pci_gpus and release and node.on_disk is None and (modules_tree or (listed and not node.loaded("nvidia"))):
        other = sorted({e.kernel for e in node.dkms if e.kernel != release})
        out.append(Finding(
            "no_module_for_running_kernel", "critical",
            f"no nvidia module under /lib/modules/{release}"
            + (f"; DKMS built it for {', '.join(other)} only" if other else "")
            + ": rebuild it for the running kernel (dkms autoinstall)",
            "rebuild_module",
            evidence={"kernel_release": release, "dkms": [f"{e.module}/{e.version}, {e.kernel}, {e.arch}: {'installed' if e.installed else 'built'}" for e in node.dkms]},
        ))
    if node.on_disk is not None and node.on_disk.error:
        out.append(Finding(
            "on_disk_module_unreadable", "critical",
            f"{node.on_disk.path} cannot be read as a kernel module: {node.on_disk.error}",
            "rebuild_module",
            evidence={"path": node.on_disk.path, "error": node.on_disk.error},
        ))
    if node.on_disk is not None and node.on_disk.vermagic and release:
        if node.on_disk.vermagic.split()[0] != release:
            out.append(Finding(
                "module_built_for_other_kernel", "critical",
                f"{node.on_disk.path} was built for {node.on_disk.vermagic.split()[0]}, the running kernel is {release}",
                "rebuild_module",
                evidence={"vermagic": node.on_disk.vermagic, "kernel_release": release, "path": node.on_disk.path},
            ))
    if node.kernel_log.load_errors and listed and not node.loaded("nvidia"):
        out.append(Finding(
            "module_load_failed", "critical",
            "the kernel refused the nvidia module: " + node.kernel_log.load_errors[-1],
            "rebuild_module",
            evidence={"lines": list(node.kernel_log.load_errors[-5:])},
        ))
    if listed and not node.kernel.module_unload_supported:
        out.append(Finding(
            "module_unload_unsupported", "info",
            "this kernel cannot unload modules (no CONFIG_MODULE_UNLOAD): only a reboot changes the driver",
            "none", blocks_reload=True,
            evidence={"proc_modules": "refcount column is '-'" if node.kernel.modules_supported else "no /proc/modules: no module support"},
        ))
    # kernel.module_loading_disabled is "modules_disabled says 1, or no module support": say it only
    # from a modules_disabled that was read, or from the live kernel's lack of /proc/modules
    no_modules = node.readable.proc_modules.state == "not_in_kernel"
    if listed and (node.readable.modules_disabled.read or no_modules) and node.kernel.module_loading_disabled:
        out.append(Finding(
            "module_loading_disabled", "info",
            ("this kernel has no module support: nothing can be loaded" if no_modules else
             "module loading is disabled (kernel.modules_disabled=1): nothing can be loaded until reboot"),
            "none", blocks_reload=True,
            evidence={"modules_disabled": "no module support" if no_modules else "1"},
        ))
    return out


def _gpu_findings(node: NodeState) -> list[Finding]:
    out = []
    pci = {g.bus_id for g in node.pci_gpus}
    # a GPU the driver lists has left the bus only when the bus could be listed
    vanished = sorted(g.bus_id for g in node.proc_gpus if g.bus_id not in pci) if node.readable.pci_devices.known else []
    fallen_xids = [x for x in node.kernel_log.xids if x.since_driver_load and xid_catalog.bucket(x.xid, x.message) == "reboot"]
    if fallen_xids or node.kernel_log.fallen_off_bus or vanished:
        lines = [x.line for x in fallen_xids] + list(node.kernel_log.fallen_off_bus)
        out.append(Finding(
            "gpu_fallen_off_bus", "critical",
            "a GPU fell off the bus since the driver loaded"
            + (f" ({', '.join(vanished)} no longer on the PCI bus)" if vanished else "")
            + ": a reload cannot bring it back; reboot",
            "reboot", blocks_reload=True,
            evidence={"lines": lines[-5:], "vanished": vanished},
        ))
    reset = [x for x in node.kernel_log.xids if x.since_driver_load and xid_catalog.bucket(x.xid, x.message) == "reset_gpu"]
    if reset:
        out.append(Finding(
            "xid_reset_required", "critical",
            f"XID {', '.join(str(x) for x in sorted({x.xid for x in reset}))} since the driver loaded: reset the GPU",
            "reset_gpu",
            evidence={"lines": [x.line for x in reset[-5:]], "pci_bus_ids": sorted({x.pci_bus_id for x in reset if x.pci_bus_id})},
        ))
    app = [x for x in node.kernel_log.xids if x.since_driver_load and xid_catalog.bucket(x.xid, x.message) == "restart_application"]
    if app:
        out.append(Finding(
            "xid_application_fault", "warning",
            f"XID {', '.join(str(x) for x in sorted({x.xid for x in app}))}: an application faulted; restart it",
            "restart_application",
            evidence={"lines": [x.line for x in app[-5:]]},
        ))
    if node.loaded("nvidia"):
        for gpu in node.pci_gpus:
            if gpu.driver == "nvidia":
                continue
            if gpu.driver is None:
                out.append(Finding(
                    "gpu_driver_unbound", "critical",
                    f"GPU {gpu.bus_id} has no driver bound although nvidia is loaded (probe failed or excluded)",
                    "reload",
                    evidence={"pci_bus_id": gpu.bus_id, "device": gpu.device, "load_errors": list(node.kernel_log.load_errors[-3:])},
                ))
            else:
                out.append(Finding(
                    "gpu_bound_to_other_driver", "warning" if gpu.driver.startswith("vfio") else "critical",
                    f"GPU {gpu.bus_id} is bound to {gpu.driver}, not nvidia",
                    "none" if gpu.driver.startswith("vfio") else "reboot",
                    blocks_reload=gpu.driver == "nouveau",
                    evidence={"pci_bus_id": gpu.bus_id, "driver": gpu.driver},
                ))
    if any(d.mig_mode for d in node.nvml.devices):
        out.append(Finding(
            "mig_enabled", "info",
            # MIG mode itself survives a reload; GPU and compute instances do not, and nvreload does
            # not recreate them yet: say so rather than let an operator find out afterwards.
            "MIG is enabled: a reload keeps MIG mode but not the GPU/compute instances, which nvreload "
            "does not recreate; list them now (nvidia-smi mig -lgi, -lci) to recreate them after",
            "none",
            evidence={"gpus": [d.pci_bus_id for d in node.nvml.devices if d.mig_mode]},
        ))
    return out


def _consumer_findings(node: NodeState) -> list[Finding]:
    out = []
    display = [p for p in node.consumers.processes if p.comm in DISPLAY_SERVERS]
    if display:
        out.append(Finding(
            "display_server_active", "warning",
            "a display server holds the GPU: " + ", ".join(f"{p.comm} (pid {p.pid})" for p in display),
            "none", blocks_reload=True,
            evidence={"processes": [{"pid": p.pid, "comm": p.comm, "devices": list(p.devices)} for p in display]},
        ))
    if node.peermem_wanted and not node.mofed_ready:
        out.append(Finding(
            "peermem_without_mofed", "warning",
            "nvidia_peermem is wanted but MOFED is not ready (no run/mellanox/drivers/.driver-ready, "
            "ib_core/mlx5_core not loaded): loading it now fails with 'Invalid argument'",
            "none",
            evidence={"driver_ready_marker": False,
                      "ib_core": node.module("ib_core").state if node.module("ib_core") else None,
                      "mlx5_core": node.module("mlx5_core").state if node.module("mlx5_core") else None},
        ))
    if node.consumers.container_engine_error:
        out.append(Finding(
            "container_engine_unreachable", "warning",
            "a container engine socket exists but the engine did not answer: GPU containers cannot be known",
            "none", blocks_reload=True,
            evidence={"error": node.consumers.container_engine_error},
        ))
    # The fabric manager starts only for a driver of its exact version: what matters is the driver
    # a reload would load (the one on disk), not the one resident now. After an upgrade that
    # replaced both, the reload itself fixes the mismatch with the resident module.
    driver = (node.on_disk.version if node.on_disk else None) or node.resident.version or node.userspace.version
    if node.fabric_manager_version and driver and node.fabric_manager_version != driver:
        out.append(Finding(
            "fabric_manager_version_mismatch", "critical",
            f"nv-fabricmanager {node.fabric_manager_version} does not match driver {driver}"
            f"{' (the one a reload would load)' if node.on_disk and node.on_disk.version == driver else ''}: "
            "install the fabric manager of the driver's exact version; a reload would leave the NVLink fabric down",
            "install_driver", blocks_reload=True,
            evidence={"fabric_manager_version": node.fabric_manager_version, "driver_version": driver},
        ))
    return out


def diagnose(node: NodeState) -> Diagnosis:
    findings = _readability_findings(node) + _version_findings(node) + _module_findings(node) + _gpu_findings(node) + _consumer_findings(node)
    actions = {f.action for f in findings}
    recommended = next(a for a in ACTION_PRIORITY if a in actions or a == "none")
    blockers = tuple(f.code for f in findings if f.blocks_reload)
    return Diagnosis(tuple(findings), recommended, blockers)
