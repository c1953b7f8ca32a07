"""/proc/driver/nvidia: the resident module's version banner and per-GPU information."""

from __future__ import annotations

import re

from nvreload.model import ProcGpu, ResidentDriver
from nvreload.rootfs import RootFS

# a bus id as normalize_bus_id writes it (and the status schema requires)
_NORMAL_BUS_ID = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_VERSION = re.compile(r"NVRM version:\s*(?P<banner>NVIDIA UNIX.*?Kernel Module.*?)\s+(?P<version>\d+\.\d+(?:\.\d+)?)\s")


def parse_version_banner(text: str | None) -> ResidentDriver:
    if not text:
        return ResidentDriver(None, None, None)
    first = text.splitlines()[0] if text.splitlines() else ""
    match = _VERSION.search(first + " ")
    if not match:
        return ResidentDriver(None, None, first.strip() or None)
    banner = match.group("banner")
    # "NVIDIA UNIX Open Kernel Module for x86_64" vs "NVIDIA UNIX x86_64 Kernel Module"
    flavor = "open" if "Open Kernel Module" in banner else "proprietary"
    return ResidentDriver(match.group("version"), flavor, first.strip())


def normalize_bus_id(raw: str) -> str:
    """'00000000:3B:00.0', '0000:3b:00' and '3b:00.0' all become '0000:3b:00.0'."""
    raw = raw.strip().lower()
    match = re.match(r"^(?:([0-9a-f]+):)?([0-9a-f]{1,2}):([0-9a-f]{1,2})(?:\.([0-7]))?$", raw)
    if not match:
        return raw
    domain, bus, dev, fn = match.groups()
    domain = int(domain, 16) if domain else 0
    return f"{domain:04x}:{int(bus, 16):02x}:{int(dev, 16):02x}.{int(fn or 0)}"


def parse_gpu_information(bus_dir: str, text: str) -> ProcGpu:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    minor = fields.get("Device Minor")
    bus_id = normalize_bus_id(fields.get("Bus Location", bus_dir))
    if not _NORMAL_BUS_ID.match(bus_id):
        bus_id = normalize_bus_id(bus_dir)  # a damaged line: the kernel named the directory by the bus id
    return ProcGpu(
        bus_id=bus_id,
        model=fields.get("Model") or None,
        uuid=fields.get("GPU UUID") or None,
        # isascii: str.isdigit() also accepts '²', which int() refuses
        minor=int(minor) if minor and minor.isascii() and minor.isdigit() else None,
    )


def read_resident(root: RootFS) -> ResidentDriver:
    return parse_version_banner(root.read_text("proc/driver/nvidia/version"))


def read_mig_gpu_instances(root: RootFS, gpus: tuple[ProcGpu, ...]) -> dict[str, int]:
    """The MIG GPU instances the driver holds, per GPU (bus id) that has any, counted by the
    capability directories it makes for each (/proc/driver/nvidia/capabilities/gpu<minor>/mig/gi<id>):
    known without NVML, which cannot answer through a version mismatch."""
    instances = {}
    for gpu in gpus:
        if gpu.minor is None:
            continue
        names = root.listdir(f"proc/driver/nvidia/capabilities/gpu{gpu.minor}/mig")
        count = sum(1 for name in names if name.startswith("gi") and name[2:].isdigit())
        if count:
            instances[normalize_bus_id(gpu.bus_id)] = count
    return instances


def read_proc_gpus(root: RootFS) -> tuple[ProcGpu, ...]:
    gpus = []
    for bus_dir in root.listdir("proc/driver/nvidia/gpus"):
        text = root.read_text(f"proc/driver/nvidia/gpus/{bus_dir}/information")
        if text is not None:
            gpus.append(parse_gpu_information(bus_dir, text))
    return tuple(gpus)
