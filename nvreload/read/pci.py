"""NVIDIA devices on the PCI bus: /sys/bus/pci/devices/<bdf>/{vendor,device,class,driver}."""

from __future__ import annotations

import posixpath

from nvreload.model import PciGpu
from nvreload.rootfs import RootFS

NVIDIA_VENDOR = "0x10de"
# 0x0300 VGA controller, 0x0302 3D controller: GPUs. Not audio functions (0x0403) or NVSwitches (0x0680).
GPU_CLASSES = ("0x0300", "0x0302")


def read_pci_gpus(root: RootFS) -> tuple[PciGpu, ...]:
    gpus = []
    for bdf in root.listdir("sys/bus/pci/devices"):
        base = f"sys/bus/pci/devices/{bdf}"
        if root.read_line(f"{base}/vendor") != NVIDIA_VENDOR:
            continue
        pci_class = root.read_line(f"{base}/class") or ""
        if not pci_class.startswith(GPU_CLASSES):
            continue
        target = root.link_target(f"{base}/driver")
        gpus.append(
            PciGpu(
                bus_id=bdf.lower(),
                vendor=NVIDIA_VENDOR,
                device=root.read_line(f"{base}/device") or "",
                pci_class=pci_class,
                driver=posixpath.basename(target.rstrip("/")) if target else None,
            )
        )
    return tuple(gpus)
