"""The engine's vocabulary: every kind of action, defined once.

A kind is a frozen dataclass that holds what its action needs (typed fields, not a dict read by
`.get`), and says in one place
- its door: `perform(target)`, the one ReloadTarget call that does it;
- its undo: the undo record the journal writes before it (`undo_record`), the action that puts it
  back (`undone_by`), and how a stop is rebuilt from its record after a crash (`from_record`);
- its plan document: `detail()`, the `detail` object of the --json plan (the contract);
- its typed result where it has one (`KillProcess` -> `Termination`).

The planner builds these, the engine runs them, the targets implement their doors, the renderers
print `kind` and `target`. A new kind is one class here plus its door on the targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

from nvreload.host.processes import Termination
from nvreload.names import (
    is_bus_id,
    is_container_id,
    is_module_name,
    is_slurm_node_name,
    is_unit_name,
    is_vt_console,
)

if TYPE_CHECKING:
    from nvreload.engine.target import ReloadTarget


class UndoRecord(Protocol):
    """The journal's undo record, as far as a stop rebuilt from it needs (engine/journal.py has it)."""

    target: str
    detail: dict


MPS_CONTROL = "nvidia-cuda-mps-control"


@dataclass(frozen=True)
class Action:
    """One thing the engine does to the node."""

    kind: ClassVar[str] = ""
    # the undo record it leaves (one of UNDO_KINDS) before it acts; None: nothing to put back
    undo_kind: ClassVar[str | None] = None
    # what the target of that record must look like: a rollback hands it to rmmod/modprobe,
    # systemctl, the container engine's API or sysfs, so a journal (a file in a directory someone
    # could have written) names nothing a run could not have
    undo_target_shape: ClassVar[Callable[[str], bool] | None] = None
    target: str

    def detail(self) -> dict:
        """Its `detail` in the --json plan."""
        return {}

    def document(self) -> dict:
        detail = self.detail()
        return {"action": self.kind, "target": self.target, **({"detail": detail} if detail else {})}

    def undo_record(self) -> tuple[str, dict]:
        """The undo record's target and detail (written before the action, for a rollback)."""
        return self.target, {}

    def undone_by(self) -> Action | None:
        """The action that brings back what this one stops; None if nothing can (a killed process)."""
        return None

    def perform(self, target: ReloadTarget) -> object:
        raise NotImplementedError(self.kind)


# consumers ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StopContainer(Action):
    kind: ClassVar[str] = "stop_container"
    undo_kind: ClassVar[str | None] = "stop_container"
    undo_target_shape: ClassVar[Callable[[str], bool] | None] = staticmethod(is_container_id)
    id: str = ""
    timeout: int | None = None
    restart_policy: str | None = None
    reason: str | None = None  # a holder's container, not one the engine listed as a GPU container

    def detail(self) -> dict:
        if self.reason is not None:
            return {"id": self.id, "reason": self.reason}
        return {"id": self.id, "timeout": self.timeout, "restart_policy": self.restart_policy}

    def undo_record(self) -> tuple[str, dict]:
        return self.id, {"name": self.target, "restart_policy": self.restart_policy, "was_running": True}

    def undone_by(self) -> Action:
        return StartContainer(self.target, id=self.id, restart_policy=self.restart_policy)

    def perform(self, target: ReloadTarget) -> None:
        target.stop_container(self.id, self.timeout)

    @classmethod
    def from_record(cls, record: UndoRecord) -> StopContainer:
        return cls(
            record.detail.get("name", record.target),
            id=record.target,
            restart_policy=record.detail.get("restart_policy"),
        )


@dataclass(frozen=True)
class StartContainer(Action):
    kind: ClassVar[str] = "start_container"
    id: str = ""
    restart_policy: str | None = None

    def detail(self) -> dict:
        return {"id": self.id, "restart_policy": self.restart_policy}

    def undoes(self) -> tuple[str, str]:
        return StopContainer.undo_kind or "", self.id

    def perform(self, target: ReloadTarget) -> None:
        target.start_container(self.id, self.restart_policy)


@dataclass(frozen=True)
class StopService(Action):
    kind: ClassVar[str] = "stop_service"
    undo_kind: ClassVar[str | None] = "stop_service"
    undo_target_shape: ClassVar[Callable[[str], bool] | None] = staticmethod(is_unit_name)
    # where PID 1 is not systemd: the daemon's own command line, to start it again
    command: tuple[str, ...] | None = None
    owns_containers: tuple[str, ...] = ()
    reason: str | None = None

    def detail(self) -> dict:
        detail: dict = {}
        if self.owns_containers:
            detail["owns_containers"] = list(self.owns_containers)
        if self.command:
            detail["command"] = list(self.command)
        if self.reason is not None:
            detail["reason"] = self.reason
        return detail

    def undo_record(self) -> tuple[str, dict]:
        return self.target, {"command": list(self.command)} if self.command else {}

    def undone_by(self) -> Action:
        return StartService(self.target, command=self.command, owns_containers=self.owns_containers)

    def perform(self, target: ReloadTarget) -> None:
        target.stop_service(self.target)

    @classmethod
    def from_record(cls, record: UndoRecord) -> StopService:
        command = record.detail.get("command")
        return cls(record.target, command=tuple(command) if command else None)


@dataclass(frozen=True)
class StartService(Action):
    kind: ClassVar[str] = "start_service"
    command: tuple[str, ...] | None = None
    owns_containers: tuple[str, ...] = ()

    def detail(self) -> dict:
        detail: dict = {}
        if self.owns_containers:
            detail["owns_containers"] = list(self.owns_containers)
        if self.command:
            detail["command"] = list(self.command)
        return detail

    def undoes(self) -> tuple[str, str]:
        return StopService.undo_kind or "", self.target

    def perform(self, target: ReloadTarget) -> None:
        target.start_service(self.target, list(self.command) if self.command else None)


@dataclass(frozen=True)
class RestartService(Action):
    """logind: restarted, which releases the DRM nodes of its sessions; never stopped."""

    kind: ClassVar[str] = "restart_service"
    reason: str | None = None

    def detail(self) -> dict:
        return {"reason": self.reason} if self.reason else {}

    def perform(self, target: ReloadTarget) -> None:
        target.restart_service(self.target)


@dataclass(frozen=True)
class QuitMps(Action):
    kind: ClassVar[str] = "quit_mps"
    undo_kind: ClassVar[str | None] = "quit_mps"
    undo_target_shape: ClassVar[Callable[[str], bool] | None] = staticmethod(lambda target: target == MPS_CONTROL)
    target: str = MPS_CONTROL

    def undone_by(self) -> Action:
        return StartMps()

    def perform(self, target: ReloadTarget) -> None:
        target.quit_mps()

    @classmethod
    def from_record(cls, record: UndoRecord) -> QuitMps:
        return cls(record.target)


@dataclass(frozen=True)
class StartMps(Action):
    kind: ClassVar[str] = "start_mps"
    target: str = MPS_CONTROL

    def undoes(self) -> tuple[str, str]:
        return QuitMps.undo_kind or "", self.target

    def perform(self, target: ReloadTarget) -> None:
        target.start_mps()


@dataclass(frozen=True)
class KillProcess(Action):
    """A GPU holder owned by nothing that can stop it: SIGTERM, the grace, SIGKILL. Its result is a
    Termination, which says whether the process still holds the GPU (then the unload cannot go on)."""

    kind: ClassVar[str] = "kill_process"
    pid: int = 0
    start_time: int | None = None
    comm: str | None = None
    process_group: int | None = None
    late: bool = False  # a child that inherited a killed holder's descriptors after the plan

    def detail(self) -> dict:
        detail: dict = {"pid": self.pid, "start_time": self.start_time, "comm": self.comm}
        if self.late:
            detail["late"] = True
        else:
            detail["process_group"] = self.process_group
        return detail

    def perform(self, target: ReloadTarget) -> Termination:
        return target.terminate_process(self.pid, self.start_time)

    def killed_record(self, result: Termination) -> dict:
        """Its line in the journal's `killed` list."""
        record: dict = {"pid": self.pid, "comm": self.comm, "outcome": result.text}
        if self.late:
            record["late"] = True
        return record


@dataclass(frozen=True)
class RestartContainerEngine(Action):
    kind: ClassVar[str] = "restart_container_engine"
    target: str = "docker"

    def perform(self, target: ReloadTarget) -> None:
        target.restart_container_engine()


# modules ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UnbindConsole(Action):
    kind: ClassVar[str] = "unbind_console"
    undo_kind: ClassVar[str | None] = "unbind_console"
    undo_target_shape: ClassVar[Callable[[str], bool] | None] = staticmethod(is_vt_console)

    def perform(self, target: ReloadTarget) -> None:
        target.bind_console(self.target, False)


@dataclass(frozen=True)
class RebindConsole(Action):
    kind: ClassVar[str] = "rebind_console"

    def undoes(self) -> tuple[str, str]:
        return UnbindConsole.undo_kind or "", self.target

    def perform(self, target: ReloadTarget) -> None:
        target.bind_console(self.target, True)


@dataclass(frozen=True)
class UnloadModule(Action):
    kind: ClassVar[str] = "unload_module"
    undo_kind: ClassVar[str | None] = "unload_module"
    undo_target_shape: ClassVar[Callable[[str], bool] | None] = staticmethod(is_module_name)

    def perform(self, target: ReloadTarget) -> None:
        target.unload_module(self.target)


@dataclass(frozen=True)
class LoadModule(Action):
    kind: ClassVar[str] = "load_module"
    parameters: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def detail(self) -> dict:
        return {"parameters": dict(self.parameters)}

    def undoes(self) -> tuple[str, str]:
        return UnloadModule.undo_kind or "", self.target

    def perform(self, target: ReloadTarget) -> None:
        target.load_module(self.target, self.parameters)


@dataclass(frozen=True)
class InstallDriver(Action):
    kind: ClassVar[str] = "install_driver"
    module_type: str | None = None  # "open" | "proprietary": the flavour the node had

    def detail(self) -> dict:
        return {"module_type": self.module_type}

    def perform(self, target: ReloadTarget) -> None:
        target.install_driver(self.target, self.module_type)


# GPUs ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ApplyMigMode(Action):
    """A reset that applies a GPU's pending MIG mode change, while the GPU is free."""

    kind: ClassVar[str] = "apply_mig_mode"

    def perform(self, target: ReloadTarget) -> None:
        target.reset_gpu(self.target)


@dataclass(frozen=True)
class RecreateMig(Action):
    kind: ClassVar[str] = "recreate_mig"
    instances: tuple[dict, ...] = field(default=(), compare=False, hash=False)  # MigInstance documents

    def detail(self) -> dict:
        return {"instances": list(self.instances)}


@dataclass(frozen=True)
class ResetGpu(Action):
    """--reset: one GPU; persistence off first where it was on (journaled, put back after)."""

    kind: ClassVar[str] = "reset_gpu"
    index: int | None = None
    minor: int | None = None
    persistence: bool = False

    def detail(self) -> dict:
        return {"index": self.index, "minor": self.minor, "persistence": self.persistence}

    def perform(self, target: ReloadTarget) -> None:
        target.reset_gpu(self.target)


@dataclass(frozen=True)
class Verify(Action):
    kind: ClassVar[str] = "verify"
    target: str = "driver"
    persistence: dict[str, bool] = field(default_factory=dict, compare=False, hash=False)

    def detail(self) -> dict:
        return {"persistence": dict(self.persistence)}


# Every undo record a journal may hold, with the shape of its target: the journaled kinds', the
# persistence mode a --reset turns off before a GPU's reset (put back after it, not an action of its
# own), and the Slurm drain around a run.
UNDO_TARGET_SHAPES: dict[str, Callable[[str], bool]] = {
    **{
        k.undo_kind: k.undo_target_shape
        for k in (StopContainer, StopService, QuitMps, UnbindConsole, UnloadModule)
        if k.undo_kind and k.undo_target_shape
    },
    "disable_persistence": is_bus_id,
    # --drain slurm: the node nvreload drained for the run (slurm_drain.py), resumed after it
    "drain_slurm": is_slurm_node_name,
}

# the stops a consumer step leaves in the undo log, by their undo kind: how a crashed run's stops
# are rebuilt from its journal
STOPS: dict[str, type[StopContainer] | type[StopService] | type[QuitMps]] = {
    k.undo_kind or "": k for k in (StopContainer, StopService, QuitMps)
}
STOP_KINDS = tuple(STOPS)


def restart_actions(stop_actions: list[Action] | tuple[Action, ...]) -> list[Action]:
    """What brings back what `stop_actions` stopped: services in reverse (fabric manager first), then
    MPS, then containers in their original order. Killed processes cannot be restarted and are
    reported."""
    services = [a.undone_by() for a in reversed(stop_actions) if isinstance(a, StopService)]
    mps = [a.undone_by() for a in stop_actions if isinstance(a, QuitMps)][:1]
    containers = [a.undone_by() for a in stop_actions if isinstance(a, StopContainer)]
    return [a for a in services + mps + containers if a is not None]


def undo_key(action: Action) -> tuple[str, str] | None:
    """The undo record a restart action puts back: (undo kind, target)."""
    undoes = getattr(action, "undoes", None)
    return undoes() if undoes is not None else None


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
