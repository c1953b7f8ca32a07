"""Is the node idle enough for an unattended reload? (`--reload --when-idle`, the package hooks.)

Idle means: nothing but the known GPU services uses the GPUs. A reload stops those and brings them
back by itself (persistenced, DCGM, the fabric manager: catalog.py), so they never keep it waiting.
Everything else is somebody's work: a process holding /dev/nvidia* outside those units (a training
job, a notebook, a Slurm step), a running GPU container, a display server. Pure: a ReloadView in,
the list of what keeps the node busy out.
"""

from __future__ import annotations

from nvreload.catalog import GPU_DAEMONS, GPU_SERVICES, LOGIND_COMM, MPS_COMM
from nvreload.engine.plan import ReloadView

# A holder that is part of the stack, not a job: the GPU daemons by name (where systemd is not PID 1),
# MPS's control daemon (its clients are listed on their own), logind holding the DRM master.
_STACK_COMMS = frozenset(GPU_DAEMONS) | {MPS_COMM, LOGIND_COMM}


def busy_consumers(view: ReloadView) -> tuple[dict, ...]:
    """What keeps the node from an unattended reload: one entry per container, display process and
    other GPU process; empty when only the known services hold the GPUs."""
    busy: list[dict] = []
    containers = {c.id: c for c in view.containers}
    for container in view.containers:
        busy.append({"kind": "container", "name": container.name, "id": container.id})
    for process in view.display_processes:
        busy.append({"kind": "display", "name": process.comm, "pid": process.pid})
    for process in view.processes:
        if process.systemd_unit in GPU_SERVICES or process.comm in _STACK_COMMS:
            continue
        cid = process.container_id
        if cid and any(cid.startswith(c) or c.startswith(cid) for c in containers):
            continue  # its container is listed already
        entry = {"kind": "process", "name": process.comm, "pid": process.pid}
        if process.systemd_unit:
            entry["unit"] = process.systemd_unit
        busy.append(entry)
    return tuple(busy)


def describe(busy: tuple[dict, ...]) -> str:
    """One line's worth: 'container trainer, process python3 (pid 4242)'."""
    parts = []
    for entry in busy:
        if entry["kind"] == "container":
            parts.append(f"container {entry['name']}")
        else:
            parts.append(f"{entry['kind']} {entry['name']} (pid {entry['pid']})")
    return ", ".join(parts)
