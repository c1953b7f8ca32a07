"""Findings: each names the runbook failure mode it recognised, its severity, the action that fixes
it, and the evidence (the strings read off the node) that produced it."""

from __future__ import annotations

from nvreload.catalog import DISPLAY_SERVERS
from nvreload.diagnosis import xid_catalog
from nvreload.model import NextKernel, NodeState
from nvreload.read.nvidia_proc import normalize_bus_id
from nvreload.records import field, record

TYPE_CHECKING = False  # not typing's: importing typing costs the --status path 3-4 ms
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# The one recommended action is the most drastic one any finding needs. Seeing the node comes first:
# an action drawn from part of it may be the wrong one.
ACTION_PRIORITY = (
    "check_access",
    "service_hardware",
    "fix_platform",  # firmware, BIOS or hypervisor settings (PCI BAR/MMIO space): neither reboot nor reload helps
    "reboot",
    "rebuild_module",
    "sign_module",  # Secure Boot refuses the module: sign it with an enrolled key (MOK), then load
    "install_driver",
    "reload",
    "reset_gpu",
    "restart_application",
    "none",
)


@record
class Finding:
    """One thing wrong (or worth knowing) about a node, with the evidence that shows it."""

    code: str
    severity: str  # "info" | "warning" | "critical" | "unknown" (the node could not be seen)
    message: str
    action: str  # one of ACTION_PRIORITY
    blocks_reload: bool = False
    evidence: dict = field(default_factory=dict, compare=False)


@record
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
    fix = (
        "run it as root, or find what denies access"
        if node.live
        else "take the snapshot again with nvreload --collect (files copied out of /proc with cp or tar are empty)"
    )
    return [
        Finding(
            "node_unreadable",
            "unknown",
            f"too little of the node could be read ({where}): its driver state is unknown, so neither a reload "
            f"nor a reboot can be recommended; {fix}",
            "check_access",
            blocks_reload=True,
            evidence={"inputs": [{"paths": list(i.paths), "state": i.state} for i in missing], "live": node.live},
        )
    ]


def _version_findings(node: NodeState) -> list[Finding]:
    out = []
    listed_nvidia = node.module("nvidia")
    resident = node.resident.version or (listed_nvidia.version if listed_nvidia else None)
    userspace = node.userspace.version
    on_disk = node.on_disk.version if node.on_disk else None
    if node.loaded("nvidia") and resident:
        differs = {k: v for k, v in (("userspace", userspace), ("on_disk", on_disk)) if v and v != resident}
        if differs:
            out.append(
                Finding(
                    "version_mismatch",
                    "critical",
                    f"resident nvidia module {resident} differs from "
                    + " and ".join(f"{k.replace('_', '-')} {v}" for k, v in differs.items())
                    + ": reload the module to pick up the installed driver",
                    "reload",
                    evidence={
                        "kernel_module_version": resident,
                        "userspace_version": userspace,
                        "on_disk_module_version": on_disk,
                        "nvml": node.nvml.status,
                        "userspace_library": node.userspace.path,
                        "on_disk_module": node.on_disk.path if node.on_disk else None,
                    },
                )
            )
    if userspace and on_disk and userspace != on_disk:
        out.append(
            Finding(
                "on_disk_module_differs_from_userspace",
                "critical",
                f"the nvidia module that would load next ({on_disk}) does not match userspace ({userspace}): "
                "a reload alone cannot fix this; reinstall one driver version",
                "install_driver",
                evidence={
                    "on_disk_module_version": on_disk,
                    "userspace_version": userspace,
                    "on_disk_module": node.on_disk.path if node.on_disk else None,
                },
            )
        )
    if node.pci_gpus and node.userspace.link is None:
        out.append(
            Finding(
                "userspace_library_missing",
                "critical",
                "libnvidia-ml.so.1 is not installed in any library directory",
                "install_driver",
                evidence={"searched": "ld.so.conf directories and the standard library directories"},
            )
        )
    return out


def _module_presence_findings(node: NodeState) -> list[Finding]:
    """No driver loaded, or no module for the running kernel to load."""
    out = []
    release = node.kernel.release
    # "not loaded" is only known from a /proc/modules that was read (or that the live kernel lacks):
    # a module absent from one never read proves nothing
    listed = node.readable.proc_modules.known
    if (
        listed
        and node.pci_gpus
        and not node.loaded("nvidia")
        and not ((nvidia := node.module("nvidia")) and nvidia.state == "builtin")
    ):
        out.append(
            Finding(
                "driver_not_loaded",
                "critical",
                f"{len(node.pci_gpus)} NVIDIA GPU(s) on the PCI bus but no nvidia module is loaded",
                "reload",
                evidence={"pci_bus_ids": [g.bus_id for g in node.pci_gpus], "nvml": node.nvml.status},
            )
        )
    # Without a lib/modules/<release> tree at all (a kernel that loads modules from elsewhere, or a
    # snapshot without it) absence proves nothing while the driver runs; with the tree present, or
    # with no driver loaded, it is the "kernel upgrade, GPU missing" runbook.
    modules_tree = node.kernel.modules_tree_present
    if node.pci_gpus and release and node.on_disk is None and (modules_tree or (listed and not node.loaded("nvidia"))):
        other = sorted({e.kernel for e in node.dkms if e.kernel != release})
        out.append(
            Finding(
                "no_module_for_running_kernel",
                "critical",
                f"no nvidia module under /lib/modules/{release}"
                + (f"; DKMS built it for {', '.join(other)} only" if other else "")
                + ": rebuild it for the running kernel (dkms autoinstall)",
                "rebuild_module",
                evidence={
                    "kernel_release": release,
                    "dkms": [
                        f"{e.module}/{e.version}, {e.kernel}, {e.arch}: {'installed' if e.installed else 'built'}"
                        for e in node.dkms
                    ],
                },
            )
        )
    return out


def _module_file_findings(node: NodeState) -> list[Finding]:
    """The module on disk: unreadable, built for another kernel, or refused by the kernel."""
    out = []
    release = node.kernel.release
    listed = node.readable.proc_modules.known
    if node.on_disk is not None and node.on_disk.error:
        out.append(
            Finding(
                "on_disk_module_unreadable",
                "critical",
                f"{node.on_disk.path} cannot be read as a kernel module: {node.on_disk.error}",
                "rebuild_module",
                evidence={"path": node.on_disk.path, "error": node.on_disk.error},
            )
        )
    if node.on_disk is not None and node.on_disk.vermagic and release:
        if node.on_disk.vermagic.split()[0] != release:
            out.append(
                Finding(
                    "module_built_for_other_kernel",
                    "critical",
                    f"{node.on_disk.path} was built for {node.on_disk.vermagic.split()[0]}, the running kernel is {release}",
                    "rebuild_module",
                    evidence={"vermagic": node.on_disk.vermagic, "kernel_release": release, "path": node.on_disk.path},
                )
            )
    # another module's refusal (nvidia_peermem against ib_core) is not nvidia's
    others = {f.line for f in node.kernel_log.module_failures if f.module not in (None, "nvidia")}
    nvidia_errors = [line for line in node.kernel_log.load_errors if line not in others]
    if nvidia_errors and listed and not node.loaded("nvidia"):
        out.append(
            Finding(
                "module_load_failed",
                "critical",
                "the kernel refused the nvidia module: " + nvidia_errors[-1],
                "rebuild_module",
                evidence={"lines": nvidia_errors[-5:]},
            )
        )
    return out


def _module_switch_findings(node: NodeState) -> list[Finding]:
    """The kernel's module switches: no unloading, or no loading at all, until a reboot."""
    out = []
    listed = node.readable.proc_modules.known
    if listed and not node.kernel.module_unload_supported:
        out.append(
            Finding(
                "module_unload_unsupported",
                "info",
                "this kernel cannot unload modules (no CONFIG_MODULE_UNLOAD): only a reboot changes the driver",
                "none",
                blocks_reload=True,
                evidence={
                    "proc_modules": "refcount column is '-'"
                    if node.kernel.modules_supported
                    else "no /proc/modules: no module support"
                },
            )
        )
    # kernel.module_loading_disabled is "modules_disabled says 1, or no module support": say it only
    # from a modules_disabled that was read, or from the live kernel's lack of /proc/modules
    no_modules = node.readable.proc_modules.state == "not_in_kernel"
    if listed and (node.readable.modules_disabled.read or no_modules) and node.kernel.module_loading_disabled:
        out.append(
            Finding(
                "module_loading_disabled",
                "info",
                (
                    "this kernel has no module support: nothing can be loaded"
                    if no_modules
                    else "module loading is disabled (kernel.modules_disabled=1): nothing can be loaded until reboot"
                ),
                "none",
                blocks_reload=True,
                evidence={"modules_disabled": "no module support" if no_modules else "1"},
            )
        )
    return out


def _signature_findings(node: NodeState) -> list[Finding]:
    """Secure Boot (or lockdown) refused an NVIDIA module: loading it again fails the same way."""
    listed = node.readable.proc_modules.known
    refused = [
        f
        for f in node.kernel_log.module_failures
        if f.kind == "signature" and (f.module is None or f.module.startswith("nvidia"))
    ]
    if not refused or not listed or node.loaded("nvidia"):
        return []
    return [
        Finding(
            "module_signature_rejected",
            "critical",
            "the kernel refuses the nvidia module because it is not signed by a key it trusts (Secure Boot): "
            "a reload would be refused the same way; sign the module with a key enrolled as a MOK "
            "(mokutil --import, then reboot to enroll), or install signed precompiled modules",
            "sign_module",
            blocks_reload=True,
            evidence={
                "lines": [f.line for f in refused[-5:]],
                "modules": sorted({f.module for f in refused if f.module}),
            },
        )
    ]


# modules that come with the NVIDIA stack and load after nvidia
_DEPENDENT_MODULES = ("nvidia_", "gdrdrv")


def _dependent_module_findings(node: NodeState) -> list[Finding]:
    """An NVIDIA module other than nvidia that failed to load since the driver did (nvidia_peermem
    built against another ib_core than the one loaded), and is still not loaded."""
    by_module: dict[str, list] = {}
    for failure in node.kernel_log.module_failures:
        module = failure.module
        if module and module != "nvidia" and module.startswith(_DEPENDENT_MODULES) and not node.loaded(module):
            by_module.setdefault(module, []).append(failure)
    if not by_module:
        return []
    modules = []
    for module, failures in sorted(by_module.items()):
        modules.append(
            {
                "module": module,
                "reasons": sorted({f.kind for f in failures}),
                "symbols": sorted({f.symbol for f in failures if f.symbol}),
                "lines": [f.line for f in failures[-4:]],
            }
        )
    peer = [m for m in modules if "ib_register_peer_memory_client" in m["symbols"] or m["module"] == "nvidia_peermem"]
    return [
        Finding(
            "dependent_module_load_failed",
            "warning",
            "; ".join(
                f"{m['module']} failed to load ({', '.join(m['reasons'])}"
                + (f": {', '.join(m['symbols'])}" if m["symbols"] else "")
                + ")"
                for m in modules
            )
            + (
                ": nvidia_peermem was built against another ib_core than the one loaded (MOFED installed or "
                "upgraded after the driver); rebuild it against the running MOFED (reinstall the driver or its DKMS "
                "build after MOFED)"
                if peer
                else ": rebuild it for the modules it depends on"
            ),
            "rebuild_module",
            evidence={"modules": modules},
        )
    ]


# An RmInitAdapter failure the driver explains, worst first: (kind, code, action, blocks a reload, message),
# the rows of the table below
_FIRMWARE_CAUSES = (
    (
        "gfw_boot_incomplete",
        "gpu_firmware_boot_incomplete",
        "reboot",
        True,
        "the boot firmware of {gpus} (GFW, from the VBIOS) never finished, so the driver cannot initialise it: "
        "power-cycle the node cold (a warm reboot or a reload meets the same GPU); if it persists, service the GPU",
    ),
    (
        "gsp_wpr2_up",
        "gpu_gsp_boot_failed",
        "reset_gpu",
        True,
        "GSP firmware could not boot on {gpus}: the GPU still holds an earlier driver instance's protected region "
        "(WPR2 already up), so every load fails until the GPU is reset (nvidia-smi -r with the module loaded, or a "
        "reboot)",
    ),
    (
        "gsp_init_failed",
        "gpu_gsp_init_failed",
        "install_driver",
        False,
        "the GSP firmware of {gpus} could not start (RmInitAdapter: Cannot initialize GSP firmware RM), so the "
        "driver cannot initialise it; a reload loads the same driver and firmware: install another driver version, "
        "or where the proprietary module supports the GPU, load it with GSP firmware off (NVreg_EnableGpuFirmware=0)",
    ),
)


def _init_failure_findings(node: NodeState) -> list[Finding]:
    """What the driver's own load said about GPUs it did not take, sorted by what can fix it."""
    out = []
    kinds = (
        (
            "bar_unassigned",
            "gpu_bar_unassigned",
            "fix_platform",
            False,
            "the firmware or hypervisor gave {gpus} no usable PCI BAR (memory-mapped I/O space): enlarge the MMIO "
            "window (VM: 64-bit MMIO of at least the GPUs' memory; bare metal: Above 4G Decoding, or pci=realloc); "
            "neither a reload nor a reboot alone fixes it",
        ),
        (
            "unsupported",
            "gpu_unsupported_by_driver",
            "install_driver",
            False,
            "the installed driver does not support {gpus}: install a driver branch that does (a reload loads the same one)",
        ),
        (
            "init_failed",
            "gpu_init_failed",
            "reload",
            False,
            "the driver failed to initialise {gpus} (RmInitAdapter): a reload retries it; if it fails again the GPU "
            "needs a reset or service",
        ),
    )
    seen = {f.kind for f in node.kernel_log.gpu_init_failures}
    cause = next((row for row in _FIRMWARE_CAUSES if row[0] in seen), None)
    for kind, code, action, blocks, text in kinds:
        failures = [f for f in node.kernel_log.gpu_init_failures if f.kind == kind]
        if not failures:
            continue
        if kind == "init_failed" and cause is not None:
            # the driver said why: its firmware could not start, which a reload does not change
            _, code, action, blocks, text = cause
            failures += [f for f in node.kernel_log.gpu_init_failures if f.kind == cause[0]]
        gpus = sorted({f.pci_bus_id for f in failures if f.pci_bus_id})
        out.append(
            Finding(
                code,
                "critical",
                text.format(gpus=", ".join(gpus) or "a GPU"),
                action,
                blocks_reload=blocks,
                evidence={"pci_bus_ids": gpus, "lines": list(dict.fromkeys(f.line for f in failures))[-8:]},
            )
        )
    return out


def _other_driver_findings(node: NodeState) -> list[Finding]:
    """GPUs another driver owns (nouveau, vfio-pci), whether or not nvidia is loaded."""
    other = [g for g in node.pci_gpus if g.driver and g.driver != "nvidia"]
    if not other:
        return []
    bound = [g.driver for g in other if g.driver]
    lines = [f.line for f in node.kernel_log.gpu_init_failures if f.kind == "other_driver"]
    passthrough = all(driver.startswith("vfio") for driver in bound)
    drivers = sorted(set(bound))
    return [
        Finding(
            "gpu_bound_to_other_driver",
            "warning" if passthrough else "critical",
            f"{', '.join(g.bus_id for g in other)} bound to {', '.join(drivers)}, not nvidia"
            + (
                ""
                if passthrough
                else ": nvidia cannot take a GPU another driver owns, so a reload would not bring it back; blacklist "
                f"{', '.join(d for d in drivers if not d.startswith('vfio'))} (and rebuild the initramfs), then reboot"
            ),
            "none" if passthrough else "reboot",
            blocks_reload=not passthrough,
            evidence={"gpus": [{"pci_bus_id": g.bus_id, "driver": g.driver} for g in other], "lines": lines[-3:]},
        )
    ]


def _mig_pending_findings(node: NodeState) -> list[Finding]:
    """A MIG mode change that waits for a GPU reset; whatever holds the GPU keeps it waiting."""
    pending = [
        d
        for d in node.nvml.devices
        if d.mig_pending is not None and d.mig_mode is not None and d.mig_pending != d.mig_mode
    ]
    if not pending:
        return []
    mode = {True: "Enabled", False: "Disabled"}
    holders = [
        {
            "pid": p.pid,
            "comm": p.comm,
            "devices": list(p.devices),
            "container_id": p.container_id,
            "systemd_unit": p.systemd_unit,
        }
        for p in node.consumers.processes
    ]
    gpus: list[dict[str, Any]] = [
        {
            "pci_bus_id": normalize_bus_id(d.pci_bus_id) if d.pci_bus_id else None,
            "current": mode[bool(d.mig_mode)],
            "pending": mode[bool(d.mig_pending)],
            "nvml_pids": list(d.compute_pids),
        }
        for d in pending
    ]
    named = ", ".join(f"{p['comm']} (pid {p['pid']})" for p in holders) or ", ".join(
        f"pid {pid}" for g in gpus for pid in g["nvml_pids"]
    )
    # The driver refuses a reset while nvidia_drm is loaded, nothing else holding the GPU ("In use
    # by another client": NVIDIA/mig-parted#181): a module holds it too, which no process scan shows.
    drm = node.loaded("nvidia_drm")
    return [
        Finding(
            "mig_mode_change_pending",
            "warning",
            "MIG mode change pending on "
            + ", ".join(f"{g['pci_bus_id']} ({g['current']} -> {g['pending']})" for g in gpus)
            + ": it takes effect at the next GPU reset; "
            + (f"held by {named}" if named else "stop what holds the GPU (nvidia-persistenced and DCGM hold every GPU)")
            + (
                "; nvidia_drm is loaded, and the driver can refuse a reset while it is ('In use by another client')"
                if drm
                else ""
            )
            + ", then nvreload --reset"
            + (" (it unloads nvidia_drm for the reset and loads it again)" if drm else ""),
            "reset_gpu",
            evidence={
                "gpus": gpus,
                "holders": holders,
                "consumers_scanned": node.consumers.scanned,
                "nvidia_drm_loaded": drm,
            },
        )
    ]


# XID buckets beyond reset and restart: (catalog bucket as nvreload's action, code, action, severity,
# what to do); a reboot blocks a reload (it does not clear it), the others do not
_XID_ACTIONS = (
    (
        "reboot",
        "xid_reboot_required",
        "reboot",
        "critical",
        "NVIDIA's catalog (or the driver's own Xid 154) asks for a reboot of the node (or VM); a reload does not "
        "clear it",
    ),
    (
        "service_hardware",
        "xid_hardware_service",
        "service_hardware",
        "critical",
        "check the hardware (auxiliary power connected, seating) or contact support, as NVIDIA's catalog says",
    ),
    (
        "install_driver",
        "xid_driver_update",
        "install_driver",
        "warning",
        "update the driver (and the vGPU software or firmware), as NVIDIA's catalog says",
    ),
)


def _xid_action_findings(node: NodeState) -> list[Finding]:
    """XIDs since the driver loaded whose catalog action is neither a GPU reset nor an application
    restart (those have findings of their own), one finding per action, every GPU in its evidence."""
    out = []
    for catalog_action, code, action, severity, advice in _XID_ACTIONS:
        xids = [
            x
            for x in node.kernel_log.xids
            if x.since_driver_load
            and x.xid != xid_catalog.FALLEN_OFF_BUS
            and xid_catalog.bucket(x.xid, x.message) == catalog_action
        ]
        if xids:
            out.append(
                Finding(
                    code,
                    severity,
                    f"XID {', '.join(str(n) for n in sorted({x.xid for x in xids}))} since the driver loaded: {advice}",
                    action,
                    blocks_reload=action == "reboot",
                    evidence={
                        "lines": [x.line for x in xids[-5:]],
                        "pci_bus_ids": sorted({x.pci_bus_id for x in xids if x.pci_bus_id}),
                    },
                )
            )
    return out


def _fallen_off_bus_findings(node: NodeState) -> list[Finding]:
    """A GPU that left the bus: only a reboot brings it back."""
    out = []
    pci = {g.bus_id for g in node.pci_gpus}
    # a GPU the driver lists has left the bus only when the bus could be listed
    vanished = (
        sorted(g.bus_id for g in node.proc_gpus if g.bus_id not in pci) if node.readable.pci_devices.known else []
    )
    fallen_xids = [x for x in node.kernel_log.xids if x.since_driver_load and x.xid == xid_catalog.FALLEN_OFF_BUS]
    fallen_at_load = [f for f in node.kernel_log.gpu_init_failures if f.kind == "fallen_off_bus"]
    if fallen_xids or node.kernel_log.fallen_off_bus or vanished:
        lines = list(dict.fromkeys([x.line for x in fallen_xids] + list(node.kernel_log.fallen_off_bus)))
        gpus = sorted(
            {x.pci_bus_id for x in fallen_xids if x.pci_bus_id}
            | {f.pci_bus_id for f in fallen_at_load if f.pci_bus_id}
            | set(vanished)
        )
        out.append(
            Finding(
                "gpu_fallen_off_bus",
                "critical",
                "a GPU fell off the bus while or since the driver loaded"
                + (f" ({', '.join(vanished)} no longer on the PCI bus)" if vanished else "")
                + ": a reload cannot bring it back; reboot",
                "reboot",
                blocks_reload=True,
                evidence={"lines": lines[-5:], "vanished": vanished, "pci_bus_ids": gpus},
            )
        )
    return out


def _xid_reset_findings(node: NodeState) -> list[Finding]:
    """XIDs since the driver loaded that a GPU reset clears: rows to remap, faults that need a reset."""
    out = []
    remap = [x for x in node.kernel_log.xids if x.since_driver_load and x.xid in xid_catalog.REMAP_XIDS]
    if remap:
        out.append(
            Finding(
                "row_remap_pending",
                "warning",
                f"XID {', '.join(str(x) for x in sorted({x.xid for x in remap}))}: GPU memory rows (or pages) wait to be "
                "remapped (retired); that happens only at the next GPU reset or reboot"
                # 64: the remap (retirement) could not be recorded, which NVIDIA's memory error
                # management counts toward an RMA; the catalog's immediate action is still a reset
                + (
                    "; XID 64 is a remap that could not be recorded: if it comes back after the reset, "
                    "the GPU needs service (NVIDIA counts a row-remapping failure toward an RMA)"
                    if any(x.xid == 64 for x in remap)
                    else ""
                ),
                "reset_gpu",
                evidence={
                    "lines": [x.line for x in remap[-5:]],
                    "pci_bus_ids": sorted({x.pci_bus_id for x in remap if x.pci_bus_id}),
                },
            )
        )
    reset = [
        x
        for x in node.kernel_log.xids
        if x.since_driver_load
        and x.xid not in xid_catalog.REMAP_XIDS
        and xid_catalog.bucket(x.xid, x.message) == "reset_gpu"
    ]
    if reset:
        out.append(
            Finding(
                "xid_reset_required",
                "critical",
                f"XID {', '.join(str(x) for x in sorted({x.xid for x in reset}))} since the driver loaded: reset the GPU",
                "reset_gpu",
                evidence={
                    "lines": [x.line for x in reset[-5:]],
                    "pci_bus_ids": sorted({x.pci_bus_id for x in reset if x.pci_bus_id}),
                },
            )
        )
    return out


def _xid_application_findings(node: NodeState) -> list[Finding]:
    out = []
    app = [
        x
        for x in node.kernel_log.xids
        if x.since_driver_load and xid_catalog.bucket(x.xid, x.message) == "restart_application"
    ]
    if app:
        out.append(
            Finding(
                "xid_application_fault",
                "warning",
                f"XID {', '.join(str(x) for x in sorted({x.xid for x in app}))}: an application faulted; restart it",
                "restart_application",
                evidence={"lines": [x.line for x in app[-5:]]},
            )
        )
    return out


def _unbound_gpu_findings(node: NodeState) -> list[Finding]:
    out = []
    explained = {f.pci_bus_id for f in node.kernel_log.gpu_init_failures}
    unbound = [g for g in node.pci_gpus if g.driver is None and g.bus_id not in explained]
    if node.loaded("nvidia") and unbound:
        out.append(
            Finding(
                "gpu_driver_unbound",
                "critical",
                f"{', '.join(g.bus_id for g in unbound)}: no driver bound although nvidia is loaded (probe failed or excluded)",
                "reload",
                evidence={
                    "pci_bus_ids": [g.bus_id for g in unbound],
                    "devices": [g.device for g in unbound],
                    "load_errors": list(node.kernel_log.load_errors[-3:]),
                },
            )
        )
    return out


def _mig_unrecordable_findings(node: NodeState) -> list[Finding]:
    """MIG instances the driver holds while NVML cannot list them: a reload (like a reboot) loses
    them, and nothing can record them to create them again."""
    if node.nvml.status == "ok" or not node.mig_gpu_instances:
        return []
    held = ", ".join(f"{bus} ({count})" for bus, count in sorted(node.mig_gpu_instances.items()))
    return [
        Finding(
            "mig_instances_unrecordable",
            "warning",
            f"MIG GPU instances on {held}, and NVML cannot list them ({node.nvml.status}): a reload "
            "cannot record them, so it leaves these GPUs in MIG mode without instances; create them "
            "again after it (nvidia-mig-parted apply, or nvidia-smi mig -cgi ... -C)",
            "none",
            evidence={"gpu_instances": dict(sorted(node.mig_gpu_instances.items())), "nvml": node.nvml.status},
        )
    ]


def _mig_enabled_findings(node: NodeState) -> list[Finding]:
    out = []
    if any(d.mig_mode for d in node.nvml.devices):
        out.append(
            Finding(
                "mig_enabled",
                "info",
                # MIG mode itself survives a reload; GPU and compute instances do not: the reload records
                # them before the unload and creates them again after the load (engine: recreate_mig).
                "MIG is enabled: a module reload keeps MIG mode but loses the GPU/compute instances; "
                "nvreload --reload records them before the unload and creates them again after the load",
                "none",
                evidence={"gpus": [d.pci_bus_id for d in node.nvml.devices if d.mig_mode]},
            )
        )
    return out


def _consumer_findings(node: NodeState) -> list[Finding]:
    out = []
    display = [p for p in node.consumers.processes if p.comm in DISPLAY_SERVERS]
    if display:
        out.append(
            Finding(
                "display_server_active",
                "warning",
                "a display server holds the GPU: " + ", ".join(f"{p.comm} (pid {p.pid})" for p in display),
                "none",
                blocks_reload=True,
                evidence={"processes": [{"pid": p.pid, "comm": p.comm, "devices": list(p.devices)} for p in display]},
            )
        )
    if node.peermem_wanted and not node.mofed_ready:
        out.append(
            Finding(
                "peermem_without_mofed",
                "warning",
                "nvidia_peermem is wanted but MOFED is not ready (no run/mellanox/drivers/.driver-ready, "
                "ib_core/mlx5_core not loaded): loading it now fails with 'Invalid argument'",
                "none",
                evidence={
                    "driver_ready_marker": False,
                    "ib_core": node.module_state("ib_core"),
                    "mlx5_core": node.module_state("mlx5_core"),
                },
            )
        )
    if node.consumers.container_engine_error:
        out.append(
            Finding(
                "container_engine_unreachable",
                "warning",
                "a container engine socket exists but the engine did not answer: GPU containers cannot be known",
                "none",
                blocks_reload=True,
                evidence={"error": node.consumers.container_engine_error},
            )
        )
    # The fabric manager starts only for a driver of its exact version: what matters is the driver
    # a reload would load (the one on disk), not the one resident now. After an upgrade that
    # replaced both, the reload itself fixes the mismatch with the resident module.
    driver = (node.on_disk.version if node.on_disk else None) or node.resident.version or node.userspace.version
    if node.fabric_manager_version and driver and node.fabric_manager_version != driver:
        out.append(
            Finding(
                "fabric_manager_version_mismatch",
                "critical",
                f"nv-fabricmanager {node.fabric_manager_version} does not match driver {driver}"
                f"{' (the one a reload would load)' if node.on_disk and node.on_disk.version == driver else ''}: "
                "install the fabric manager of the driver's exact version; a reload would leave the NVLink fabric down",
                "install_driver",
                blocks_reload=True,
                evidence={"fabric_manager_version": node.fabric_manager_version, "driver_version": driver},
            )
        )
    return out


def next_kernel_findings(kernels: tuple[NextKernel, ...], userspace_version: str | None) -> list[Finding]:
    """A kernel that boots next without an nvidia module (DKMS did not build one), or with one of
    another version than the userspace: a finding before the reboot, not a dark node after it. Its
    action is "none": it is not what the running driver needs, and must not hide that (a reload)."""
    missing = [k for k in kernels if k.module is None]
    differs = [
        k
        for k in kernels
        if k.module is not None and k.module.version and userspace_version and k.module.version != userspace_version
    ]
    out = []
    if missing:
        releases = ", ".join(k.release for k in missing)
        out.append(
            Finding(
                "no_module_for_next_kernel",
                "warning",
                f"kernel {releases} is installed but has no nvidia module: after a reboot into it the GPUs have no "
                f"driver; build it first (dkms autoinstall -k {missing[-1].release}) or reinstall the driver",
                "none",
                evidence={"kernels": [k.release for k in missing]},
            )
        )
    if differs:
        out.append(
            Finding(
                "next_kernel_module_version_differs",
                "warning",
                "; ".join(
                    f"kernel {k.release} would load nvidia {k.module.version if k.module else '-'}" for k in differs
                )
                + f", the userspace is {userspace_version}: after a reboot NVML fails with a version mismatch; "
                "rebuild the module for that kernel",
                "none",
                evidence={
                    "kernels": [
                        {
                            "release": k.release,
                            "module": k.module.path if k.module else None,
                            "version": k.module.version if k.module else None,
                        }
                        for k in differs
                    ],
                    "userspace_version": userspace_version,
                },
            )
        )
    return out


# NVLink 5 (HGX B200/B300, GB200/GB300): the NVLink Subnet Manager (nvlsm) manages the switches
# through InfiniBand management datagrams, so the fabric manager needs ib_umad loaded
_NVLINK5_GPUS = ("B200", "B300")
_FABRIC_MANAGER = "nvidia-fabricmanager.service"


def _fabric_cause(node: NodeState) -> tuple[str, str, str]:
    """(cause, action, what to do) for a fabric that is not Completed, from what the node shows."""
    driver = node.resident.version or (m.version if (m := node.module("nvidia")) else None)
    fm = next((s for s in node.consumers.services if s.name == _FABRIC_MANAGER), None)
    nvlink5 = any(d.name and any(g in d.name for g in _NVLINK5_GPUS) for d in node.nvml.devices)
    if node.fabric_manager_version and driver and node.fabric_manager_version != driver:
        return (
            "fabric_manager_other_version",
            "install_driver",
            f"nv-fabricmanager {node.fabric_manager_version} refuses driver {driver}: install the fabric manager "
            "of the driver's exact version",
        )
    if nvlink5 and node.readable.proc_modules.known and "ib_umad" not in node.fabric_modules:
        return (
            "ib_umad_not_loaded",
            "fix_platform",
            "ib_umad is not loaded: the NVLink subnet manager (nvlsm) and the fabric manager of an NVLink 5 "
            "system reach the switches through it; load it (and at boot: modules-load.d), then start them",
        )
    if fm is not None and fm.active == "failed":
        return (
            "fabric_manager_failed",
            "reload",
            "nvidia-fabricmanager failed to start (journalctl -u nvidia-fabricmanager says why): nvreload --reload "
            "stops it, loads the driver again and starts it for the new instance",
        )
    if fm is not None and fm.active in ("inactive", "not-found", "deactivating"):
        return (
            "fabric_manager_not_running",
            "reload",
            "nvidia-fabricmanager is not running: start it (nvreload --reload starts it for a new driver instance)",
        )
    if (
        fm is not None
        and fm.active in ("active", "activating")
        and all((d.fabric_state or "").lower() in ("in progress", "completed") for d in node.nvml.devices)
    ):
        return (
            "fabric_training",
            "none",
            "the fabric manager is running and the fabric is being set up (In Progress): it takes about a minute",
        )
    return (
        "unknown",
        "reload",
        "the node does not show why (a snapshot records no services): check that nvidia-fabricmanager runs and "
        "is the driver's version; nvreload --reload starts it for a new driver instance",
    )


def _fabric_findings(node: NodeState) -> list[Finding]:
    """NVSwitch GPUs whose fabric is not set up (state not Completed) while the driver is loaded:
    CUDA fails with "system not yet initialized" on them."""
    if not node.loaded("nvidia"):
        return []
    waiting = [d for d in node.nvml.devices if d.fabric_state and d.fabric_state.lower() != "completed"]
    if not waiting:
        return []
    cause, action, advice = _fabric_cause(node)
    gpus = [
        {"pci_bus_id": normalize_bus_id(d.pci_bus_id) if d.pci_bus_id else None, "state": d.fabric_state}
        | ({"status": d.fabric_status} if d.fabric_status else {})
        for d in waiting
    ]
    return [
        Finding(
            "fabric_not_ready",
            "warning" if action == "none" else "critical",
            f"the NVLink fabric of {len(waiting)} GPU(s) is not set up ("
            + ", ".join(sorted({str(d.fabric_state) for d in waiting}))
            + f"): {advice}",
            action,
            evidence={
                "gpus": gpus,
                "cause": cause,
                "fabric_manager": next((s.active for s in node.consumers.services if s.name == _FABRIC_MANAGER), None),
                "fabric_manager_version": node.fabric_manager_version,
                "fabric_modules": list(node.fabric_modules),
            },
        )
    ]


def _kernel_fault_findings(node: NodeState) -> list[Finding]:
    """A kernel fault whose trace runs through an NVIDIA module since the driver loaded: the
    module's locks and state are unknown, and unloading it can hang or crash the kernel."""
    faults = node.kernel_log.kernel_faults
    if not faults:
        return []
    modules = sorted({m for f in faults for m in f.modules})
    kinds = sorted({f.kind for f in faults})
    return [
        Finding(
            "kernel_fault_in_nvidia_module",
            "critical",
            f"the kernel reported {', '.join(k.replace('_', ' ') for k in kinds)} in {', '.join(modules)} since the "
            "driver loaded: the module's state is unknown after it, and unloading it can hang or crash the kernel; "
            "reboot (a reload is refused)",
            "reboot",
            blocks_reload=True,
            evidence={
                "faults": [
                    {"kind": f.kind, "line": f.line, "modules": list(f.modules), "frames": list(f.frames)}
                    for f in faults[-4:]
                ],
            },
        )
    ]


def _driver_message_findings(node: NodeState, found: list[Finding]) -> list[Finding]:
    """Findings the driver's own messages give by themselves (families not read by kernel_log.py's
    structured rules): one per code, its lines and families in the evidence. A code another rule
    already gave gets the lines added to its evidence instead."""
    by_code: dict[str, list] = {}
    for message in node.kernel_log.driver_messages:
        if message.finding:
            by_code.setdefault(message.finding, []).append(message)
    if not by_code:
        return []
    from nvreload.diagnosis.messages import CODES

    explained = bool(node.kernel_log.gpu_init_failures) or any(code != "gpu_probe_failed" for code in by_code)
    out = []
    for code, messages in by_code.items():
        spec = CODES.get(code)
        if spec is None or (code == "gpu_probe_failed" and explained):
            continue  # a structured family's (its rule decides), or a summary whose cause is named
        lines = list(dict.fromkeys(m.line for m in messages))[-8:]
        families = sorted({m.family for m in messages})
        same = next((f for f in found if f.code in (code, *spec.explained_by)), None)
        if same is not None:
            same.evidence["driver_lines"] = lines
            continue
        out.append(
            Finding(
                code,
                spec.severity,
                spec.advice,
                spec.action,
                blocks_reload=spec.blocks_reload,
                evidence={"families": families, "lines": lines},
            )
        )
    return out


@record(frozen=True)
class Rule:
    """One kind of finding: what it looks at is the node; what it gives, its findings."""

    name: str
    find: Callable[[NodeState], list[Finding]]


def _next_kernel_rule(node: NodeState) -> list[Finding]:
    return next_kernel_findings(node.next_kernels, node.userspace.version)


# Every rule, in the order their findings are listed (the status document's order). A new kind of
# finding is one rule here, its code in the status schema and its row in the README's table.
RULES: tuple[Rule, ...] = (
    Rule("readability", _readability_findings),
    Rule("versions", _version_findings),
    Rule("module presence", _module_presence_findings),
    Rule("module file", _module_file_findings),
    Rule("module signature", _signature_findings),
    Rule("dependent modules", _dependent_module_findings),
    Rule("module switches", _module_switch_findings),
    Rule("next kernel", _next_kernel_rule),
    Rule("fallen off the bus", _fallen_off_bus_findings),
    Rule("xid reset", _xid_reset_findings),
    Rule("xid action", _xid_action_findings),
    Rule("xid application", _xid_application_findings),
    Rule("gpu init failures", _init_failure_findings),
    Rule("unbound gpus", _unbound_gpu_findings),
    Rule("other drivers", _other_driver_findings),
    Rule("mig enabled", _mig_enabled_findings),
    Rule("mig unrecordable", _mig_unrecordable_findings),
    Rule("mig pending", _mig_pending_findings),
    Rule("consumers", _consumer_findings),
    Rule("kernel faults", _kernel_fault_findings),
    Rule("fabric", _fabric_findings),
)


def diagnose(node: NodeState) -> Diagnosis:
    findings = [finding for rule in RULES for finding in rule.find(node)]
    # the driver's own messages last: only those no rule above explained already
    findings += _driver_message_findings(node, findings)
    actions = {f.action for f in findings}
    recommended = next(a for a in ACTION_PRIORITY if a in actions or a == "none")
    blockers = tuple(dict.fromkeys(f.code for f in findings if f.blocks_reload))
    return Diagnosis(tuple(findings), recommended, blockers)
