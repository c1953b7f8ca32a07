"""The live machine as a ReloadTarget: a thin adapter from the engine's port to the doors in host/
(kmod, systemd, processes, consoles, containers, the installer, NVIDIA's tools).

The whole node is read twice per reload at most: observe() before the plan, verify() after the
load. Everything else asks a narrow question: which modules are loaded, is MOFED ready, is
nvidia-persistenced running, what is up at the end.
"""

from __future__ import annotations

import time

from nvreload.diagnosis.health import run_checks
from nvreload.engine.observation import observed_view
from nvreload.engine.plan import (
    BOOT_MODULES,
    NOT_RELOADED,
    OPTIONAL_MODULES,
    FinalState,
    MigInstance,
    ReloadView,
    mig_geometry,
)
from nvreload.errors import HostError
from nvreload.host import nvidia_tools
from nvreload.host.consoles import bind_console, framebuffer_consoles
from nvreload.host.containers import DOCKER_UNIT
from nvreload.host.cuda import cuda_context_check
from nvreload.host.device_nodes import remake_device_node
from nvreload.host.installer import run_installer
from nvreload.host.kmod import ModuleLoader, modprobe_options
from nvreload.host.machine import Machine
from nvreload.host.mig import create_geometry, read_geometry
from nvreload.host.processes import (
    ProcessReaper,
    Termination,
    find_daemons,
    own_unit,
    scan_gpu_holders,
    start_daemon,
    stop_daemon,
)
from nvreload.host.systemd import Systemd
from nvreload.model import Check, GpuProcess
from nvreload.read.devices import DeviceMatcher, node_gpu_matcher
from nvreload.read.kernel_modules import mofed_ready, read_loaded_modules
from nvreload.read.node import configured_modules, no_open_handles, read_node
from nvreload.read.nvidia_proc import normalize_bus_id
from nvreload.read.on_disk import available_modules


class LiveTarget:
    name = "live"

    def __init__(
        self, machine: Machine, grace: float = 10.0, service_timeout: float = 120.0, settle: float = 0.5
    ) -> None:
        self.machine = machine
        self.fs = machine.fs
        self.runner = machine.runner
        self.grace = grace
        self.settle = settle
        self.systemd = Systemd(self.runner, timeout=service_timeout, settle=settle)
        self.loader = ModuleLoader(self.runner)
        self.node_reads = 0  # whole-node reads of this run: observe and verify, nothing else
        self._matcher: DeviceMatcher | None = None

    # reading --------------------------------------------------------------------------------
    def observe(self) -> ReloadView:
        node = read_node(self.machine)
        self.node_reads += 1
        # the GPU devices as they are before the run: every pre-signal re-check uses this matcher
        self._matcher = node_gpu_matcher(self.fs)
        consoles = framebuffer_consoles(self.fs) if node.loaded("nvidia_drm") else ()
        unit = own_unit() if self.machine.live else None
        available: tuple[str, ...] = ()
        configured: frozenset[str] = frozenset()
        if not node.loaded("nvidia"):  # a reload from nothing loads what is on disk
            available = available_modules(self.fs, node.kernel.release, BOOT_MODULES + OPTIONAL_MODULES)
            configured = configured_modules(self.fs)
        return observed_view(
            node, self.mig_geometry, consoles, self.container_engine_info(), unit, available, configured
        )

    def container_engine_info(self) -> dict | None:
        """What the reload relies on from the engine (recorded in the journal): with live-restore
        off, a dockerd restart while the modules are out would also stop every other container."""
        try:
            engine = self.machine.container_engine()
            if engine is None:
                return None
            info = engine.info()
        except HostError as exc:
            return {"error": exc.message}
        return {"name": info.name, "version": info.version, "live_restore": info.live_restore}

    def configured_parameters(self) -> dict[str, dict[str, str]]:
        return modprobe_options(self.fs)

    def loaded_modules(self) -> frozenset[str]:
        return frozenset(
            m.name for m in read_loaded_modules(self.fs) if m.state in ("live", "coming") and m.name not in NOT_RELOADED
        )

    def loaded_driver_version(self) -> str | None:
        return self.fs.read_line("sys/module/nvidia/version") or None

    def final_state(self) -> FinalState:
        services = self.machine.services()
        containers, _error = self.machine.containers()
        return FinalState(
            modules_loaded=tuple(sorted(self.loaded_modules())),
            services_active=tuple(s.name for s in services if s.active == "active"),
            containers_running=tuple(c.name for c in containers if c.running),
        )

    def gpu_holders(self) -> tuple[GpuProcess, ...]:
        """Who holds a GPU device now, by the matcher of observe(): /proc only (NVML would start
        a process of its own, and no new context can be made while the stack is stopping)."""
        if not self.machine.live or no_open_handles(read_loaded_modules(self.fs)):
            return ()  # every reference on the modules is another module's: no descriptor is open
        matcher = self._matcher if self._matcher is not None else node_gpu_matcher(self.fs)
        return scan_gpu_holders(matcher)

    # consumers --------------------------------------------------------------------------------
    def _engine(self):
        engine = self.machine.container_engine()
        if engine is None:
            raise HostError("no container engine socket on this node")
        return engine

    def _engine_of(self, container_id: str):
        """The engine that runs this container (Docker, rootful or a user's rootless Podman): asked
        of each, as a run resumed from its journal knows only the id."""
        engines = self.machine.container_engines()
        if not engines:
            raise HostError("no container engine socket on this node")
        if len(engines) == 1:
            return engines[0]
        for engine in engines:
            if engine.has(container_id):
                return engine
        raise HostError(f"container {container_id[:12]}: no container engine on this node knows it")

    def stop_container(self, container_id: str, timeout: int | None) -> None:
        self._engine_of(container_id).stop(container_id, timeout)

    def start_container(self, container_id: str, restart_policy: str | None = None) -> None:
        # stop() relaxed `always` to `unless-stopped` for the window; put it back once started
        policy = restart_policy if restart_policy == "always" else None
        self._engine_of(container_id).start(container_id, restore_policy=policy)

    def restart_container_engine(self) -> None:
        """For toolkits that need it (nvidia-container-toolkit issue 169): restart dockerd through
        systemd and wait until it answers again."""
        if not self.machine.systemd_is_pid1():
            raise HostError("--restart-docker needs systemd to restart the container engine")
        self.systemd.restart(DOCKER_UNIT, timeout=300)
        self._engine().wait_ready(120)

    def stop_service(self, name: str) -> None:
        if not self.machine.systemd_is_pid1():
            stop_daemon(name, grace=self.grace)
            return
        self.systemd.stop(name)

    def start_service(self, name: str, command: list[str] | None = None) -> None:
        if not self.machine.systemd_is_pid1():
            start_daemon(self.runner, name, command, settle=self.settle)
            return
        self.systemd.start(name)

    def restart_service(self, name: str) -> None:
        self.systemd.restart(name)

    def quit_mps(self) -> None:
        nvidia_tools.quit_mps(self.runner)

    def start_mps(self) -> None:
        nvidia_tools.start_mps(self.runner)

    def terminate_process(self, pid: int, start_time: int | None) -> Termination:
        matcher = self._matcher if self._matcher is not None else node_gpu_matcher(self.fs)
        return ProcessReaper(matcher, grace=self.grace).terminate(pid, start_time)

    def bind_console(self, vtcon: str, bind: bool) -> None:
        bind_console(self.fs, vtcon, bind)

    # modules ----------------------------------------------------------------------------------
    def unload_module(self, name: str) -> None:
        self.loader.unload(name)

    def load_module(self, name: str, parameters: dict[str, str]) -> None:
        self.loader.load(name, parameters)
        remake_device_node(name)  # gdrdrv: its dynamic major changed with the reload

    def fabric_ready(self) -> bool | None:
        return nvidia_tools.fabric_ready(self.runner)

    def refresh_cdi_specs(self) -> list[str]:
        return nvidia_tools.refresh_cdi_specs(self.runner)

    def mofed_ready(self) -> bool:
        return mofed_ready(self.fs, read_loaded_modules(self.fs))

    def install_driver(self, path: str, module_type: str | None) -> None:
        run_installer(self.runner, path, module_type)

    def verify(self, expected_persistence: dict[str, bool]) -> list[Check]:
        node = read_node(self.machine, with_consumers=False)
        self.node_reads += 1
        checks = run_checks(node, cuda_context_check(self.runner) if node.nvml.status == "ok" else None)
        for device in node.nvml.devices:
            if expected_persistence.get(device.pci_bus_id or "") and device.persistence_mode is False:
                checks.append(
                    Check(
                        "persistence", False, f"{device.pci_bus_id}: persistence mode off (was on)", severity="warning"
                    )
                )
        return checks

    def restore_persistence(self, expected: dict[str, bool]) -> None:
        # nvidia-persistenced (restarted with the services) restores it; the legacy -pm flag does
        # not survive a reload, so set it back where it was on and persistenced is not managing it.
        if find_daemons(("nvidia-persistenced",)):
            return
        for bus_id, on in expected.items():
            if on:
                nvidia_tools.set_persistence(self.runner, bus_id)

    def mig_geometry(self) -> dict[str, tuple[MigInstance, ...]]:
        return mig_geometry({normalize_bus_id(bus): instances for bus, instances in read_geometry(self.runner).items()})

    def create_mig(self, bus_id: str, instances: tuple[MigInstance, ...]) -> None:
        create_geometry(self.runner, bus_id, [i.document() for i in instances])

    def disable_persistence(self, bus_id: str) -> None:
        nvidia_tools.disable_persistence(self.runner, bus_id)

    def reset_gpu(self, bus_id: str) -> None:
        nvidia_tools.reset_gpu(self.runner, bus_id)

    def at_boundary(self, step: str, phase: str) -> None:
        pass

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
