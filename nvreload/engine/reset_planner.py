"""--reset [GPU,...]: which GPUs, and the plan that resets them (pure, like the reload's planner).

Only the chosen GPUs' consumers stop: the processes that hold their /dev/nvidia<minor>, through
what owns them (a container, a unit: persistenced and DCGM hold every GPU, so they stop too). The
driver refuses a reset while nvidia_drm is loaded, whatever else holds the GPU ("In use by another
client": NVIDIA/mig-parted#181, ComputeCanada/puppet-magic_castle#387), so where it is loaded it
goes out for the resets and comes back right after with its parameters, and what uses it stops
too: the users of its /dev/dri nodes, the VT consoles on its framebuffer (unbound and rebound),
logind (restarted). A GPU reset cannot be undone; what stopped comes back either way, and the
journal says whether the GPUs came back too."""

from __future__ import annotations

import re

from nvreload.engine.kinds import (
    Action,
    LoadModule,
    Plan,
    RebindConsole,
    ResetGpu,
    Step,
    UnbindConsole,
    UnloadModule,
    Verify,
    restart_actions,
)
from nvreload.engine.kube_refusal import refuse_kube_pods
from nvreload.engine.plan import GpuRef, ReloadView
from nvreload.engine.planner import consumer_stops, logind_apart, parameters_to_restore, refuse_unlisted_containers
from nvreload.errors import RefusedError, UsageError
from nvreload.model import GpuProcess
from nvreload.read.nvidia_proc import normalize_bus_id

ALL = "all"
_GPU_NODE = re.compile(r"/dev/nvidia(\d+)$")


def select_gpus(view: ReloadView, selector: str) -> tuple[GpuRef, ...]:
    """The GPUs `selector` names: "all", or a comma list of nvidia-smi indexes, PCI addresses or UUIDs."""
    if not view.gpus:
        raise RefusedError("--reset: the driver has no GPU to reset (is the nvidia module loaded?)")
    if selector == ALL:
        return view.gpus
    chosen: list[GpuRef] = []
    for name in (part.strip() for part in selector.split(",")):
        match = next(
            (
                g
                for g in view.gpus
                if name == str(g.index)
                or (g.uuid and name.lower() == g.uuid.lower())
                or normalize_bus_id(name) == g.bus_id
            ),
            None,
        )
        if match is None:
            known = ", ".join(f"{g.index} ({g.bus_id})" for g in view.gpus)
            raise UsageError(f"--reset {selector}: no GPU '{name}' on this node (GPUs: {known})")
        if match not in chosen:
            chosen.append(match)
    return tuple(chosen)


def gpu_minors(process: GpuProcess) -> set[int]:
    """The GPUs (their /dev/nvidia<minor>) a process holds."""
    minors = set()
    for device in process.devices:
        match = _GPU_NODE.search(device.split(" ", 1)[-1])
        if match:
            minors.add(int(match.group(1)))
    return minors


def holds_drm(process: GpuProcess) -> bool:
    """Whether a process has a DRM node (/dev/dri/card*, renderD*) of nvidia_drm open."""
    return any(device.split(" ", 1)[-1].startswith("/dev/dri/") for device in process.devices)


def refuse_reset(view: ReloadView, gpus: tuple[GpuRef, ...]) -> None:
    """RefusedError where these GPUs cannot be reset one by one on this node."""
    if view.nvml_status != "ok":
        hint = "; nvreload --reload fixes a version mismatch" if view.nvml_status == "version_mismatch" else ""
        raise RefusedError(
            f"--reset refused: NVML does not answer ({view.nvml_status}), and nvidia-smi resets GPUs through it{hint}"
        )
    if view.nvswitch:
        raise RefusedError(
            "--reset refused: on an NVSwitch (HGX) node the GPUs and NVSwitches are reset together "
            "with the fabric manager stopped, never one GPU alone; use nvreload --reload"
        )
    if any(g.minor is None for g in gpus):
        raise RefusedError(
            "--reset refused: the device minor of "
            + ", ".join(g.bus_id for g in gpus if g.minor is None)
            + " is unknown, so its users cannot be found"
        )
    drm = next((m for m in view.modules if m.name == "nvidia_drm"), None)
    if drm is not None and drm.holders:
        raise RefusedError(
            "--reset refused: the driver refuses a GPU reset while nvidia_drm is loaded, and "
            f"{', '.join(drm.holders)} holds it; use nvreload --reload"
        )


def build_reset_plan(
    view: ReloadView, gpus: tuple[GpuRef, ...], configured_parameters: dict[str, dict[str, str]] | None = None
) -> Plan:
    refuse_reset(view, gpus)
    minors = {g.minor for g in gpus}
    drm = next((m for m in view.modules if m.name == "nvidia_drm"), None)

    def uses(process: GpuProcess) -> bool:
        return bool(gpu_minors(process) & minors) or (drm is not None and holds_drm(process))

    holders = tuple(p for p in view.processes if uses(p))
    refuse_kube_pods(view, holders, "--reset")
    refuse_unlisted_containers(view, holders, "--reset")
    restart_logind: list[Action] = []
    if drm is not None:
        holders, restart_logind = logind_apart(view, holders)
    display = [p for p in view.display_processes if uses(p)]
    if display:
        raise RefusedError(f"--reset refused: a display server ({display[0].comm}, pid {display[0].pid}) uses the GPU")
    owners = {p.systemd_unit for p in holders if p.systemd_unit}
    containers = {p.container_id for p in holders if p.container_id}
    services = tuple(s for s in view.services if s.name in owners)
    running = tuple(
        c for c in view.containers if any(c.id.startswith(cid) or cid.startswith(c.id) for cid in containers)
    )
    stop = consumer_stops(view, running, services, holders, mps_active=False) + restart_logind
    persistence = {normalize_bus_id(bus): on for bus, on in view.persistence.items()}
    resets: tuple[Action, ...] = tuple(
        ResetGpu(g.bus_id, index=g.index, minor=g.minor, persistence=persistence.get(g.bus_id, False)) for g in gpus
    )
    if drm is not None:
        configured = (configured_parameters or {}).get("nvidia_drm", {})
        parameters = parameters_to_restore("nvidia_drm", drm.parameters, configured)
        resets = (
            tuple(UnbindConsole(vtcon) for vtcon in view.consoles)
            + (UnloadModule("nvidia_drm"),)
            + resets
            + (LoadModule("nvidia_drm", parameters=parameters),)
            + tuple(RebindConsole(vtcon) for vtcon in view.consoles)
        )
    return Plan(
        (
            Step("stop_consumers", tuple(stop)),
            Step("reset_gpus", resets),
            Step(
                "verify",
                (Verify(persistence={g.bus_id: persistence.get(g.bus_id, False) for g in gpus}),),
            ),
            Step("restart_consumers", tuple(restart_actions(stop))),
        )
    )
