"""Known GPU services, and how to read their state through systemctl."""

from __future__ import annotations

import os
import shlex

from nvreload.host.runner import CommandRunner
from nvreload.model import ServiceState

# Stop order: consumers of the driver first, the fabric manager (which consumers depend on) last.
# Start order is the reverse: fabric manager first, then persistenced, then the rest.
GPU_SERVICES = (
    "nvidia-dcgm-exporter.service",
    "dcgm-exporter.service",
    "nvidia-dcgm.service",
    "nv-hostengine.service",
    "dcgm.service",
    "nvsm.service",
    "nvidia-persistenced.service",
    "nvidia-fabricmanager.service",
)


def parse_systemctl_show(text: str) -> list[ServiceState]:
    states = []
    for block in text.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        name = props.get("Id")
        if not name:
            continue
        if props.get("LoadState") == "not-found":
            states.append(ServiceState(name, "not-found", None))
            continue
        states.append(ServiceState(name, props.get("ActiveState", "unknown"), props.get("UnitFileState") or None))
    return states


def systemctl() -> list[str]:
    """How to reach systemd: plain `systemctl`, or $NVRELOAD_SYSTEMCTL (e.g. a wrapper that enters
    the namespaces of a systemd running in a container or a machine)."""
    return shlex.split(os.environ.get("NVRELOAD_SYSTEMCTL") or "systemctl")


def systemctl_states(runner: CommandRunner, units: tuple[str, ...] = GPU_SERVICES) -> list[ServiceState]:
    result = runner.run([*systemctl(), "show", "--property=Id,LoadState,ActiveState,UnitFileState", *units], timeout=10)
    if not result.ok and not result.stdout:
        return []
    return [s for s in parse_systemctl_show(result.stdout) if s.active != "not-found"]
