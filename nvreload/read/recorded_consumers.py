"""What the live consumer scan saw, as --collect records it in a snapshot (consumers.json), so that
--status --root on the snapshot draws the same findings as --status did on the node: the GPU
holders (pid, program name, device nodes, container, unit), the GPU services' states, the GPU
containers and whether the container engine answered.

Nothing secret goes in: no environment, no command line beyond the program's name, no service's
command line, and a container's markers without their values (env:NVIDIA_VISIBLE_DEVICES, not
what it was set to). A snapshot is input from elsewhere: anything malformed is read as no record
at all (the consumers stay unknown), never as an error.
"""

from __future__ import annotations

import json

from nvreload.model import Consumers, ContainerState, GpuProcess, ServiceState

FILE = "consumers.json"
_MAX = 4096  # entries of each list kept from a record: a hostile snapshot cannot make the read unbounded


def _program(cmdline: str, comm: str) -> str:
    first = cmdline.split("\0")[0].split(" ")[0] if cmdline else ""
    return first.rsplit("/", 1)[-1] or comm


def to_record(consumers: Consumers) -> dict:
    return {
        "processes": [
            {
                "pid": p.pid,
                "comm": p.comm,
                "program": _program(p.cmdline, p.comm),
                "devices": list(p.devices),
                "container_id": p.container_id,
                "systemd_unit": p.systemd_unit,
                "source": p.source,
            }
            for p in consumers.processes
        ],
        "services": [{"name": s.name, "active": s.active, "enabled": s.enabled} for s in consumers.services],
        "containers": [
            {"id": c.id, "name": c.name, "running": c.running, "markers": sorted({m.split("=")[0] for m in c.markers})}
            for c in consumers.containers
        ],
        "container_engine_error": consumers.container_engine_error,
    }


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _process(entry: dict) -> GpuProcess | None:
    pid, comm = entry.get("pid"), _text(entry.get("comm"))
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not comm:
        return None
    devices = entry.get("devices")
    return GpuProcess(
        pid=pid,
        start_time=None,  # a recorded pid names no process on this machine
        comm=comm,
        cmdline=_text(entry.get("program")) or comm,
        devices=tuple(d for d in devices if isinstance(d, str)) if isinstance(devices, list) else (),
        container_id=_text(entry.get("container_id")),
        systemd_unit=_text(entry.get("systemd_unit")),
        source=_text(entry.get("source")) or "procfs",
    )


def _service(entry: dict) -> ServiceState | None:
    name, active = _text(entry.get("name")), _text(entry.get("active"))
    return ServiceState(name, active, _text(entry.get("enabled"))) if name and active else None


def _container(entry: dict) -> ContainerState | None:
    ident, name = _text(entry.get("id")), _text(entry.get("name"))
    markers = entry.get("markers")
    if not ident or not isinstance(entry.get("running"), bool):
        return None
    kept = tuple(m for m in markers if isinstance(m, str)) if isinstance(markers, list) else ()
    return ContainerState(ident, name or ident, entry["running"], kept)


def _entries(record: dict, key: str, parse) -> tuple:
    items = record.get(key)
    if not isinstance(items, list):
        return ()
    parsed = (parse(item) for item in items[:_MAX] if isinstance(item, dict))
    return tuple(p for p in parsed if p is not None)


def parse_record(text: str | None) -> Consumers | None:
    """The recorded consumers, or None where the snapshot has no (readable) record."""
    if not text:
        return None
    try:
        record = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    return Consumers(
        processes=_entries(record, "processes", _process),
        services=_entries(record, "services", _service),
        containers=_entries(record, "containers", _container),
        scanned=True,
        container_engine_error=_text(record.get("container_engine_error")),
    )
