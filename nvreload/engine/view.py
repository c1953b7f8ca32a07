"""What the engine needs to know about a node before and during a reload (typed, host-agnostic)."""

from __future__ import annotations

from dataclasses import dataclass, field

from nvreload.model import ContainerState, GpuProcess, ServiceState

STEP_NAMES = ("stop_consumers", "unload_modules", "install_driver", "load_modules", "verify", "restart_consumers")


@dataclass(frozen=True)
class LoadedModule:
    """A module that was loaded before the reload, to be loaded back with its parameters."""

    name: str
    holders: tuple[str, ...]
    parameters: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class ReloadView:
    """What the planner needs to know of a node to plan a reload: what is loaded and who uses it."""

    modules: tuple[LoadedModule, ...]  # loaded NVIDIA modules and whatever holds them
    processes: tuple[GpuProcess, ...]
    services: tuple[ServiceState, ...]  # GPU services that are active now
    containers: tuple[ContainerState, ...]  # running GPU containers
    mps_active: bool = False
    persistence: dict[str, bool] = field(default_factory=dict, compare=False, hash=False)
    blockers: tuple[str, ...] = ()
    display_processes: tuple[GpuProcess, ...] = ()
    logind_holds_drm: bool = False
    container_engine: dict | None = field(default=None, compare=False, hash=False)  # name, version, live_restore
    failed_services: tuple[str, ...] = ()  # enabled units already failed: reported, never started
    consoles: tuple[str, ...] = ()  # VT consoles bound to a framebuffer (nvidia_drm modeset=1/fbdev)


@dataclass(frozen=True)
class Action:
    """One thing the engine does to the node, with what it needs to undo it."""

    action: str  # stop_container, stop_service, quit_mps, kill_process, restart_logind, unload_module, ...
    target: str
    detail: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Step:
    """A named step of the state machine: its actions run together."""

    name: str
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class Plan:
    """The ordered steps of a run."""

    steps: tuple[Step, ...]

    def actions(self) -> list[Action]:
        return [a for step in self.steps for a in step.actions]

    def step(self, name: str) -> Step | None:
        return next((s for s in self.steps if s.name == name), None)
