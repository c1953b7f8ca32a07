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


def parse_smi_xml(text: str | None) -> NvmlReport | None:
    if not text:
        return None
    try:
        tree = ET.fromstring(text)
    except ET.ParseError:
        return None
    if tree.tag != "nvidia_smi_log":
        return None
    devices = []
    for index, gpu in enumerate(tree.findall("gpu")):
        pids = tuple(
            int(p.findtext("pid")) for p in gpu.findall("processes/process_info") if (p.findtext("pid") or "").isdigit()
        )
        devices.append(
            NvmlDevice(
                index=index,
                name=gpu.findtext("product_name"),
                uuid=gpu.findtext("uuid"),
                pci_bus_id=gpu.findtext("pci/pci_bus_id") or gpu.get("id"),
                persistence_mode=_flag(gpu.findtext("persistence_mode")),
                mig_mode=_flag(gpu.findtext("mig_mode/current_mig")),
                compute_pids=pids,
            )
        )
    return NvmlReport(
        status="ok",
        source="nvidia-smi-xml",
        driver_version=tree.findtext("driver_version"),
        devices=tuple(devices),
    )
