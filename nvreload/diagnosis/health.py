"""The driver's health as checks: pure functions over the read model (`--verify`, and the reload's
verify step). The worst failure decides the exit code."""

from __future__ import annotations

from nvreload.diagnosis import xid_catalog
from nvreload.errors import ExitCode
from nvreload.model import Check, NodeState
from nvreload.read.nvidia_proc import normalize_bus_id


def run_checks(node: NodeState, cuda: Check | None) -> list[Check]:
    checks = []
    nvml = node.nvml
    checks.append(Check("nvml", nvml.status == "ok", f"NVML {nvml.status}" + (f": {nvml.error}" if nvml.error else "")))
    versions = {
        "kernel module": node.resident.version,
        "userspace": node.userspace.version,
        "NVML": nvml.driver_version,
        "on-disk module": node.on_disk.version if node.on_disk else None,
    }
    known = {k: v for k, v in versions.items() if v}
    agree = len(set(known.values())) == 1 and bool(node.resident.version)
    checks.append(Check("versions_agree", agree, ", ".join(f"{k} {v}" for k, v in versions.items())))
    enumerated = {normalize_bus_id(d.pci_bus_id) for d in nvml.devices if d.pci_bus_id}
    missing = [g.bus_id for g in node.pci_gpus if g.bus_id not in enumerated]
    checks.append(
        Check(
            "gpus_enumerate",
            bool(node.pci_gpus) and not missing,
            f"{len(enumerated)} of {len(node.pci_gpus)} PCI GPU(s) in NVML"
            + (f"; missing {', '.join(missing)}" if missing else ""),
        )
    )
    new_xids = [x for x in node.kernel_log.xids if x.since_driver_load and xid_catalog.bucket(x.xid, x.message)]
    checks.append(
        Check(
            "no_new_xids",
            not new_xids,
            "no actionable XID since the driver loaded" if not new_xids else "; ".join(x.line for x in new_xids[-3:]),
            severity="critical"
            if any(xid_catalog.bucket(x.xid, x.message) != "restart_application" for x in new_xids)
            else "warning",
        )
    )
    fabric = [d for d in nvml.devices if d.fabric_state]
    if fabric:
        # an NVSwitch node: CUDA fails ("system not yet initialized") on a GPU whose fabric is not set up
        waiting = [d for d in fabric if d.fabric_state and d.fabric_state.lower() != "completed"]
        checks.append(
            Check(
                "fabric_completed",
                not waiting,
                f"NVLink fabric Completed on {len(fabric)} GPU(s)"
                if not waiting
                else "NVLink fabric not set up: "
                + ", ".join(f"{d.pci_bus_id or d.index}: {d.fabric_state}" for d in waiting),
            )
        )
    if cuda is not None:
        checks.append(cuda)
    return checks


def verify_exit_code(checks: list[Check]) -> int:
    failed = [c for c in checks if not c.ok]
    if any(c.severity == "critical" for c in failed):
        return ExitCode.CRITICAL
    if failed:
        return ExitCode.WARNING
    return ExitCode.OK
