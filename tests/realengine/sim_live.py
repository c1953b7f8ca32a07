"""A test double: a simulated node whose consumers are real. The NVIDIA modules are simulated (with
the kernel's rules), while containers and services are the machine's own, reached through the real
docker and systemctl adapters; it exercises the whole reload against a real engine and a real
systemd on machines that have no GPU.

It lives with the tests, not in the package: a simulation never touches the machine, and no
scenario can ask for this (a root `--simulate FILE` once stopped real processes through it).
Run as a script, it is nvreload's own entry point with this class as the simulated node:
`python tests/realengine/sim_live.py --reload --simulate SCENARIO --yes`."""

from __future__ import annotations

from dataclasses import replace

from nvreload.engine.live_target import LiveTarget
from nvreload.engine.plan import ReloadView
from nvreload.engine.sim import SimulatedNode
from nvreload.host.machine import Machine
from nvreload.rootfs import DirRoot


class SimulatedModulesLiveConsumers(SimulatedNode):
    name = "simulated-modules"

    def __init__(self, scenario: dict, state_dir: str, replace: bool = False, persist: bool = True) -> None:
        super().__init__(scenario, state_dir, replace, persist)
        self.local = Machine(DirRoot("/"))
        self.live = LiveTarget(self.local)

    def observe(self) -> ReloadView:
        simulated = super().observe()
        containers, _error = self.local.containers()
        units = self.local.services()
        services = tuple(s for s in units if s.active == "active")
        failed = tuple(s.name for s in units if s.active == "failed")
        return replace(
            simulated,
            processes=(),
            containers=containers,
            services=services,
            failed_services=failed,
            container_engine=self.live.container_engine_info(),
        )

    def stop_container(self, container_id: str, timeout: int | None) -> None:
        self._fault("stop_consumers")
        self.live.stop_container(container_id, timeout)

    def start_container(self, container_id: str, restart_policy: str | None = None) -> None:
        self._fault("restart_consumers")
        self.live.start_container(container_id, restart_policy)

    def restart_container_engine(self) -> None:
        self.live.restart_container_engine()

    def stop_service(self, name: str) -> None:
        self._fault("stop_consumers")
        self.live.stop_service(name)

    def start_service(self, name: str, command: list[str] | None = None) -> None:
        self._fault("restart_consumers")
        self.live.start_service(name, command)

    def restart_service(self, name: str) -> None:
        self.live.restart_service(name)


if __name__ == "__main__":
    import sys

    import nvreload.actions
    from nvreload.entry import main

    nvreload.actions.SIMULATED_NODE = SimulatedModulesLiveConsumers
    main(sys.argv[1:])
