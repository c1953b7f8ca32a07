"""/proc/driver/nvidia: the resident module's version banner and per-GPU information."""

from __future__ import annotations

import re

from nvreload.model import ProcGpu, ResidentDriver
from nvreload.rootfs import RootFS

# Bus ids are taken apart with string operations, not patterns: every status normalises dozens of
# them, and compiling the patterns would be a share of its start-up.
_HEX_DIGITS = frozenset("0123456789abcdef")
_FUNCTIONS = ("0", "1", "2", "3", "4", "5", "6", "7")
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


def _hex(text: str, shortest: int, longest: int) -> bool:
    return shortest <= len(text) <= longest and _HEX_DIGITS.issuperset(text)


def _bus_id_parts(text: str) -> tuple[str | None, str, str, str] | None:
    """[domain:]bus:device[.function] taken apart (the domain None and the function '' where
    absent), or None when `text` has another shape; the parts are not checked yet."""
    address, dot, function = text.partition(".")
    parts = address.split(":")
    if dot and function not in _FUNCTIONS:
        return None
    if len(parts) == 2:
        return None, parts[0], parts[1], function
    if len(parts) == 3:
        return parts[0], parts[1], parts[2], function
    return None


def normalize_bus_id(raw: str) -> str:
    """'00000000:3B:00.0', '0000:3b:00' and '3b:00.0' all become '0000:3b:00.0'; any other text is
    returned stripped and in lower case."""
    raw = raw.strip().lower()
    parts = _bus_id_parts(raw)
    if parts is None:
        return raw
    domain, bus, device, function = parts
    if not ((domain is None or _hex(domain, 1, len(domain))) and _hex(bus, 1, 2) and _hex(device, 1, 2)):
        return raw
    return f"{int(domain or '0', 16):04x}:{int(bus, 16):02x}:{int(device, 16):02x}.{function or '0'}"


def is_normal_bus_id(text: str) -> bool:
    """`text` is a bus id as normalize_bus_id writes it (and the status schema requires):
    dddd:bb:dd.f, with a domain of 4 to 8 hex digits."""
    parts = _bus_id_parts(text)
    if parts is None:
        return False
    domain, bus, device, function = parts
    return domain is not None and function != "" and _hex(domain, 4, 8) and _hex(bus, 2, 2) and _hex(device, 2, 2)


def parse_gpu_information(bus_dir: str, text: str) -> ProcGpu:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line:
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    minor = fields.get("Device Minor")
    bus_id = normalize_bus_id(fields.get("Bus Location", bus_dir))
    if not is_normal_bus_id(bus_id):
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
