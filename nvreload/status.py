"""The `--status --json` document (schema_version 1) and the Nagios-style exit code.

The JSON Schema in nvreload/schema/status.schema.json is the contract and is tested: keys may be
added, never removed or renamed.
"""

from __future__ import annotations

from nvreload.diagnosis.findings import Diagnosis, diagnose
from nvreload.errors import ExitCode
from nvreload.model import NodeState, NvmlDevice
from nvreload.read.nvidia_proc import normalize_bus_id

SCHEMA_VERSION = 1


def _gpus(node: NodeState) -> list[dict]:
    proc = {g.bus_id: g for g in node.proc_gpus}
    nvml: dict[str, NvmlDevice] = {}
    for dev in node.nvml.devices:
        if dev.pci_bus_id:
            nvml[normalize_bus_id(dev.pci_bus_id)] = dev
    pci = {g.bus_id: g for g in node.pci_gpus}
    bus_ids = list(pci) + [b for b in proc if b not in pci]  # GPUs the driver knows but the bus lost last
    gpus = []
    for bus_id in bus_ids:
        p, info, device = pci.get(bus_id), proc.get(bus_id), nvml.get(bus_id)
        gpus.append(
            {
                "pci_bus_id": bus_id,
                "name": (device.name if device and device.name else None) or (info.model if info else None),
                "uuid": (device.uuid if device and device.uuid else None) or (info.uuid if info else None),
                "driver_bound": bool(p and p.driver == "nvidia"),
                "driver": p.driver if p else None,
                "pci_device_id": p.device if p else None,
                "on_pci_bus": p is not None,
                "minor": info.minor if info else None,
                "in_nvml": device is not None,
                "persistence_mode": device.persistence_mode if device else None,
                "mig_mode": device.mig_mode if device else None,
            }
        )
    return gpus


def status_document(node: NodeState, diagnosis: Diagnosis | None = None) -> dict:
    diagnosis = diagnosis or diagnose(node)
    # what the kernel allows is told by /proc/modules and modules_disabled: null, not a guess, unless known
    listed = node.readable.proc_modules.known
    return {
        "schema_version": SCHEMA_VERSION,
        "node": {"hostname": node.hostname, "kernel_release": node.kernel.release, "live": node.live},
        "kernel": {
            "module_unload_supported": node.kernel.module_unload_supported if listed else None,
            "module_loading_disabled": (
                node.kernel.module_loading_disabled if listed and node.readable.modules_disabled.known else None
            ),
            "modules_supported": node.kernel.modules_supported if listed else None,
        },
        "driver": _driver(node),
        "modules": [
            {
                "name": m.name,
                "state": m.state,
                "refcount": m.refcount,
                "holders": list(m.holders),
                "version": m.version,
                "parameters": dict(m.parameters),
            }
            for m in node.modules
        ],
        "gpus": _gpus(node),
        "consumers": _consumers(node),
        "xid_events": [
            {"xid": x.xid, "pci_bus_id": x.pci_bus_id, "message": x.message, "since_driver_load": x.since_driver_load}
            for x in node.kernel_log.xids
        ],
        "kernel_log": {"source": node.kernel_log.source, "last_driver_load": node.kernel_log.last_driver_load},
        "findings": [
            {"code": f.code, "severity": f.severity, "message": f.message, "action": f.action, "evidence": f.evidence}
            for f in diagnosis.findings
        ],
        "recommended_action": diagnosis.recommended_action,
        "reload": {"feasible": not diagnosis.reload_blockers, "blockers": list(diagnosis.reload_blockers)},
        "unreadable": list(node.unreadable),
        "inputs": {name: {"paths": list(i.paths), "state": i.state} for name, i in node.readable.inputs().items()},
    }


def _driver(node: NodeState) -> dict:
    nvidia = node.module("nvidia")
    kernel_module_version = node.resident.version or (nvidia.version if nvidia and node.loaded("nvidia") else None)
    return {
        "loaded": node.loaded("nvidia"),
        "kernel_module_version": kernel_module_version,
        "kernel_module_flavor": node.resident.flavor if node.loaded("nvidia") else None,
        "on_disk_module_version": node.on_disk.version if node.on_disk else None,
        "on_disk_module_path": node.on_disk.path if node.on_disk else None,
        "on_disk_module_vermagic": node.on_disk.vermagic if node.on_disk else None,
        "on_disk_module_flavor": node.on_disk.flavor if node.on_disk else None,
        "userspace_version": node.userspace.version,
        "userspace_library": node.userspace.path,
        "nvml": node.nvml.status,
        "nvml_source": node.nvml.source,
        "nvml_error": node.nvml.error,
        "fabric_manager_version": node.fabric_manager_version,
        "dkms": [
            {"module": e.module, "version": e.version, "kernel": e.kernel, "arch": e.arch, "installed": e.installed}
            for e in node.dkms
        ],
    }


def _consumers(node: NodeState) -> dict:
    return {
        "scanned": node.consumers.scanned,
        "container_engine_error": node.consumers.container_engine_error,
        "processes": [
            {
                "pid": p.pid,
                "comm": p.comm,
                "cmdline": p.cmdline,
                "devices": list(p.devices),
                "container_id": p.container_id,
                "systemd_unit": p.systemd_unit,
                "source": p.source,
            }
            for p in node.consumers.processes
        ],
        "services": [{"name": s.name, "active": s.active, "enabled": s.enabled} for s in node.consumers.services],
        "containers": [
            {
                "id": c.id,
                "name": c.name,
                "running": c.running,
                "markers": list(c.markers),
                "engine": c.engine,
                "unit": c.unit,
            }
            for c in node.consumers.containers
        ],
        "engines": [{"name": e.name, "url": e.url, "gpu_containers": e.gpu_containers} for e in node.consumers.engines],
    }


def status_exit_code(document: dict) -> int:
    severities = {f["severity"] for f in document["findings"]}
    if "unknown" in severities:
        return ExitCode.UNKNOWN  # too little of the node was read to trust even a critical finding as the worst
    if "critical" in severities:
        return ExitCode.CRITICAL
    if "warning" in severities:
        return ExitCode.WARNING
    if document["driver"]["nvml"] == "error" and document["driver"]["nvml_source"] == "nvml":
        # NVML hung, crashed or failed in a way no finding explains: the GPUs' health is unknown,
        # and "OK" would be a lie to the monitoring that runs this
        return ExitCode.UNKNOWN
    return ExitCode.OK
