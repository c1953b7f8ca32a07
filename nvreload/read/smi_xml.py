"""`nvidia-smi -q -x` output captured in a snapshot: what NVML said when the snapshot was taken."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from nvreload.model import NvmlDevice, NvmlReport


def _flag(value: str | None) -> bool | None:
    if value is None:
        return None
    value = value.strip().lower()
    if value == "enabled":
        return True
    if value == "disabled":
        return False
    return None


def _fabric(value: str | None) -> str | None:
    """A <fabric> field as nvidia-smi prints it; None for "N/A" (no NVSwitch fabric) or nothing."""
    value = (value or "").strip()
    return value if value and value.lower() != "n/a" else None


def _smi_log(text: str | None) -> ET.Element | None:
    """The <nvidia_smi_log> root of `nvidia-smi -q -x` output; None for anything else."""
    if not text:
        return None
    try:
        tree = ET.fromstring(text)
    except ET.ParseError:
        return None
    return tree if tree.tag == "nvidia_smi_log" else None


def parse_smi_xml(text: str | None) -> NvmlReport | None:
    tree = _smi_log(text)
    if tree is None:
        return None
    devices = []
    for index, gpu in enumerate(tree.findall("gpu")):
        # isascii: str.isdigit() also accepts '²', which int() refuses
        texts = (p.findtext("pid") or "" for p in gpu.findall("processes/process_info"))
        pids = tuple(int(pid) for pid in texts if pid.isascii() and pid.isdigit())
        devices.append(
            NvmlDevice(
                index=index,
                name=gpu.findtext("product_name"),
                uuid=gpu.findtext("uuid"),
                pci_bus_id=gpu.findtext("pci/pci_bus_id") or gpu.get("id"),
                persistence_mode=_flag(gpu.findtext("persistence_mode")),
                mig_mode=_flag(gpu.findtext("mig_mode/current_mig")),
                compute_pids=pids,
                mig_pending=_flag(gpu.findtext("mig_mode/pending_mig")),
                fabric_state=_fabric(gpu.findtext("fabric/state")),
                fabric_status=_fabric(gpu.findtext("fabric/status")),
            )
        )
    return NvmlReport(
        status="ok",
        source="nvidia-smi-xml",
        driver_version=tree.findtext("driver_version"),
        devices=tuple(devices),
    )


def fabric_ready(text: str | None) -> bool | None:
    """Whether the NVLink fabric is up, from `nvidia-smi -q -x`: every GPU's <fabric><state> is
    "Completed" (the fabric manager has set the GPU up for this driver instance). None when no GPU
    has a fabric state ("N/A": no NVSwitch), False while any is "Not Started"/"In Progress" or the
    output is not nvidia-smi's."""
    tree = _smi_log(text)
    if tree is None:
        return False
    states = [(gpu.findtext("fabric/state") or "").strip().lower() for gpu in tree.findall("gpu")]
    states = [state for state in states if state not in ("", "n/a")]
    if not states:
        return None
    return all(state == "completed" for state in states)
