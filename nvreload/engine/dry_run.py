"""--dry-run: a host that reads for real and records every write instead of doing it.
The engine runs exactly as it would; the recorded actions are the plan."""

from __future__ import annotations

from dataclasses import dataclass, field

from nvreload.engine.plan import FinalState, MigInstance, ReloadView
from nvreload.host.processes import Termination
from nvreload.model import Check, ContainerState, GpuProcess


@dataclass(frozen=True)
class RecordedAction:
    """One write the engine asked of the node, as the --json plan shows it."""

    kind: str
    target: str
    detail: dict = field(default_factory=dict, compare=False, hash=False)

    def document(self) -> dict:
        return {"action": self.kind, "target": self.target, **({"detail": self.detail} if self.detail else {})}


class RecordingTarget:
    name = "dry-run"

    def __init__(self, inner) -> None:
        self.inner = inner
        self.recorded: list[RecordedAction] = []
        # what the plan names a container by (its name, as `docker ps` does, with a short id), and
        # the containers each unit owns: the target is handed ids and unit names only
        self._containers: dict[str, ContainerState] = {}
        self._owned: dict[str, list[str]] = {}

    def _rec(self, action: str, target: str, **detail: object) -> None:
        self.recorded.append(RecordedAction(action, target, dict(detail)))

    def observe(self) -> ReloadView:
        view = self.inner.observe()
        self._containers = {c.id: c for c in view.containers}
        self._owned = {}
        for c in view.containers:
            if c.unit:
                self._owned.setdefault(c.unit, []).append(c.short_name)
        return view

    def _container(self, container_id: str) -> tuple[str, dict]:
        known = self._containers.get(container_id)
        if known is None:
            return container_id[:12], {"id": container_id}
        return known.short_name, {"id": container_id, "engine": known.engine}

    def configured_parameters(self) -> dict[str, dict[str, str]]:
        return self.inner.configured_parameters()

    def loaded_modules(self) -> frozenset[str]:
        return self.inner.loaded_modules()

    def loaded_driver_version(self) -> str | None:
        return self.inner.loaded_driver_version()

    def final_state(self) -> FinalState:
        return self.inner.final_state()

    def gpu_holders(self) -> tuple[GpuProcess, ...]:
        return ()  # nothing was stopped for real: the holders seen are the ones the plan ends

    def stop_container(self, container_id: str, timeout: int | None) -> None:
        name, detail = self._container(container_id)
        self._rec("stop_container", name, timeout=timeout, **detail)

    def start_container(self, container_id: str, restart_policy: str | None = None) -> None:
        name, detail = self._container(container_id)
        self._rec("start_container", name, **detail)

    def restart_container_engine(self) -> None:
        self._rec("restart_container_engine", "docker")

    def stop_service(self, name: str) -> None:
        self._rec("stop_service", name, **({"owns_containers": self._owned[name]} if name in self._owned else {}))

    def start_service(self, name: str, command: list[str] | None = None) -> None:
        detail: dict = {"command": command} if command else {}
        if name in self._owned:
            detail["owns_containers"] = self._owned[name]
        self._rec("start_service", name, **detail)

    def restart_service(self, name: str) -> None:
        self._rec("restart_service", name)

    def quit_mps(self) -> None:
        self._rec("quit_mps", "nvidia-cuda-mps-control")

    def start_mps(self) -> None:
        self._rec("start_mps", "nvidia-cuda-mps-control")

    def terminate_process(self, pid: int, start_time: int | None) -> Termination:
        self._rec("kill_process", str(pid), start_time=start_time)
        return Termination(pid, "planned", "SIGTERM, grace, SIGKILL")

    def bind_console(self, vtcon: str, bind: bool) -> None:
        self._rec("rebind_console" if bind else "unbind_console", vtcon)

    def unload_module(self, name: str) -> None:
        self._rec("unload_module", name)

    def load_module(self, name: str, parameters: dict[str, str]) -> None:
        self._rec("load_module", name, parameters=dict(parameters))

    def mofed_ready(self) -> bool:
        return True  # a plan does not wait

    def mig_geometry(self) -> dict[str, tuple[MigInstance, ...]]:
        return {}  # nothing was unloaded: what the plan recreates is what observe() saw

    def create_mig(self, bus_id: str, instances: tuple[MigInstance, ...]) -> None:
        self._rec("create_mig", bus_id, instances=len(instances))

    def disable_persistence(self, bus_id: str) -> None:
        self._rec("disable_persistence", bus_id)

    def reset_gpu(self, bus_id: str) -> None:
        self._rec("reset_gpu", bus_id)

    def refresh_cdi_specs(self) -> list[str]:
        self._rec("refresh_cdi_specs", "nvidia-ctk")
        return []

    def fabric_ready(self) -> bool | None:
        return None  # nothing was started: nothing to wait for

    def install_driver(self, path: str, module_type: str | None) -> None:
        self._rec("install_driver", path, module_type=module_type)

    def verify(self, expected_persistence: dict[str, bool]) -> list[Check]:
        self._rec("verify", "driver")
        return []

    def restore_persistence(self, expected: dict[str, bool]) -> None:
        for bus_id, on in sorted(expected.items()):
            if on:
                self._rec("restore_persistence", bus_id)

    def at_boundary(self, step: str, phase: str) -> None:
        pass

    def sleep(self, seconds: float) -> None:
        pass
