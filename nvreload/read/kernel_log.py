"""The kernel log: XID events, the last driver load, and module load errors.

Only lines after the last `NVRM: loading NVIDIA ...` belong to the driver instance now in memory;
older XIDs happened to a previous instance and must not drive today's diagnosis.
"""

from __future__ import annotations

import re

from nvreload.model import KernelLog, XidEvent
from nvreload.read.nvidia_proc import normalize_bus_id

_KMSG_PREFIX = re.compile(r"^\d+,\d+,\d+,[^;]*;")
_LOAD = re.compile(r"NVRM: loading NVIDIA")
# NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.
_XID = re.compile(r"NVRM: Xid \((?:PCI:)?(?P<bus>[0-9A-Fa-f:.]+)\):\s*(?P<xid>\d+)\s*,?\s*(?P<msg>.*)$")
_FALLEN = re.compile(r"NVRM: GPU (?P<bus>[0-9A-Fa-f:.]+): GPU has fallen off the bus")
LOAD_ERROR_MARKERS = (
    "Invalid module format",
    "disagrees about version of symbol",
    "Unknown symbol",
    "Exec format error",
    "version magic",
    "NVRM: API mismatch",
    "NVRM: RmInitAdapter failed",
)


def _strip(line: str) -> str:
    return _KMSG_PREFIX.sub("", line.rstrip("\n"))


def parse_kernel_log(text: str | None, source: str | None) -> KernelLog:
    if text is None:
        return KernelLog(source, 0, None, (), (), ())
    lines = [_strip(line) for line in text.splitlines()]
    last_load = None
    for index, line in enumerate(lines):
        if _LOAD.search(line):
            last_load = index
    xids = []
    load_errors = []
    fallen = []
    for index, line in enumerate(lines):
        since = last_load is not None and index > last_load
        match = _XID.search(line)
        if match:
            try:
                xid = int(match.group("xid"))
            except ValueError:
                continue
            xids.append(
                XidEvent(
                    xid=xid,
                    pci_bus_id=normalize_bus_id(match.group("bus")),
                    message=match.group("msg").strip(),
                    since_driver_load=since if last_load is not None else True,
                    line=line.strip(),
                )
            )
            continue
        if (last_load is None or since) and _FALLEN.search(line):
            fallen.append(line.strip())
        if (last_load is None or since) and any(marker in line for marker in LOAD_ERROR_MARKERS):
            if "nvidia" in line.lower() or "NVRM" in line:
                load_errors.append(line.strip())
    return KernelLog(
        source=source,
        lines=len(lines),
        last_driver_load=lines[last_load].strip() if last_load is not None else None,
        xids=tuple(xids),
        load_errors=tuple(load_errors[-20:]),
        fallen_off_bus=tuple(fallen),
    )
