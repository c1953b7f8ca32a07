"""The live machine as a ReloadHost: rmmod/modprobe, systemctl, the docker SDK, signals."""

from __future__ import annotations

import os
import time

from nvreload.diagnosis.findings import DISPLAY_SERVERS, diagnose
from nvreload.engine.terminate import ProcessReaper
from nvreload.engine.view import LoadedModule, ReloadView
from nvreload.errors import HostError
from nvreload.host.containers import DOCKER_UNIT
from nvreload.host.local import LocalHost
from nvreload.host.services import systemctl
from nvreload.read.gpu_processes import gpu_matcher, nvidia_drm_minors, nvidia_majors
from nvreload.read.kernel_modules import MOFED_MODULES
from nvreload.read.node import MOFED_READY_MARKER, read_node
from nvreload.verify import Check, cuda_context_check, run_checks

LOGIND = "systemd-logind"
# Read for diagnosis, never part of the reload set: MOFED belongs to the network stack, and nouveau
# is another driver for the same GPUs (its presence is a finding, not something to reload).
NOT_RELOADED = frozenset(MOFED_MODULES) | {"nouveau"}


def modprobe_options(host: LocalHost) -> dict[str, dict[str, str]]:
    """`options <module> k=v` from modprobe.d, and `<module>.k=v` from the kernel command line."""
    fs = host.fs
    options: dict[str, dict[str, str]] = {}
    for directory in ("etc/modprobe.d", "usr/lib/modprobe.d", "lib/modprobe.d", "run/modprobe.d"):
        for name in fs.listdir(directory):
            if not name.endswith(".conf"):
                continue
            for line in (fs.read_text(f"{directory}/{name}") or "").splitlines():
                fields = line.split("#", 1)[0].split()
                if len(fields) >= 3 and fields[0] == "options":
                    module = fields[1].replace("-", "_")
                    for pair in fields[2:]:
                        key, _, value = pair.partition("=")
                        options.setdefault(module, {})[key] = value
    for token in (fs.read_text("proc/cmdline") or "").split():
        head, _, value = token.partition("=")
        if "." in head:
            module, _, key = head.partition(".")
            options.setdefault(module.replace("-", "_"), {})[key] = value
    return options


def framebuffer_consoles(fs) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    """VT consoles bound to a framebuffer console, when a framebuffer is nvidia's (nvidia-drmdrmfb):
    fbcon holds nvidia_drm until they are unbound."""
    nvidia_fb = any("nvidia" in (fs.read_line(f"sys/class/graphics/{fb}/name") or "")
                    for fb in fs.listdir("sys/class/graphics") if fb.startswith("fb"))
    if not nvidia_fb:
        return ()
    return tuple(
        vtcon for vtcon in fs.listdir("sys/class/vtconsole")
        if "frame buffer" in (fs.read_line(f"sys/class/vtconsole/{vtcon}/name") or "")
        and fs.read_line(f"sys/class/vtconsole/{vtcon}/bind") == "1"
    )


def start_recorded_command(name: str, command: list[str] | None, settle: float = 0.5) -> None:
    """Without systemd a daemon comes back by the command line recorded when it was stopped; one
    that exits within `settle` seconds did not come back."""
    from nvreload.host.daemons import find_daemons, start_daemon

    if not command:
        raise HostError(f"{name}: no recorded command line to start it with")
    try:
        pid = start_daemon(command)
    except OSError as exc:
        raise HostError(f"{name}: {command[0]}: {exc.strerror or exc}") from None
    time.sleep(settle)
    if not any(d.pid == pid for d in find_daemons((name,))):
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        raise HostError(f"{name}: exited right after start ({' '.join(command)})")


class LiveReloadHost:
    name = "live"

    def __init__(self, host: LocalHost, grace: float = 10.0, service_timeout: float = 120.0, settle: float = 0.5) -> None:
        self.settle = settle
        self.host = host
        self.runner = host.runner
        self.grace = grace
        self.service_timeout = service_timeout

    def _run(self, argv: list[str], timeout: float = 120) -> str:
        result = self.runner.run(argv, timeout=timeout)
        if not result.ok:
            raise HostError((result.stderr.strip() or result.stdout.strip() or f"{argv[0]} exited {result.returncode}").splitlines()[-1])
        return result.stdout

    def observe(self) -> ReloadView:
        node = read_node(self.host)
        diagnosis = diagnose(node)
        modules = tuple(
            LoadedModule(m.name, tuple(h for h in m.holders), dict(m.parameters))
            for m in node.modules
            if m.state in ("live", "coming") and m.name not in NOT_RELOADED
        )
        display = tuple(p for p in node.consumers.processes if p.comm in DISPLAY_SERVERS)
        return ReloadView(
            modules=modules,
            processes=tuple(p for p in node.consumers.processes if p not in display),
            services=tuple(s for s in node.consumers.services if s.active == "active"),
            failed_services=tuple(s.name for s in node.consumers.services if s.active == "failed"),
            containers=tuple(c for c in node.consumers.containers if c.running),
            mps_active=any(p.comm == "nvidia-cuda-mps" for p in node.consumers.processes),
            persistence={d.pci_bus_id: bool(d.persistence_mode) for d in node.nvml.devices if d.pci_bus_id},
            blockers=diagnosis.reload_blockers,
            display_processes=display,
            logind_holds_drm=any(p.comm == LOGIND for p in node.consumers.processes),
            consoles=framebuffer_consoles(self.host.fs) if node.loaded("nvidia_drm") else (),
            container_engine=self.container_engine_info(),
        )

    def container_engine_info(self) -> dict | None:
        """What the reload relies on from the engine (recorded in the journal): with live-restore
        off, a dockerd restart while the modules are out would also stop every other container."""
        try:
            engine = self.host.container_engine()
            if engine is None:
                return None
            info = engine.info()
        except HostError as exc:
            return {"error": exc.message}
        return {"name": info.name, "version": info.version, "live_restore": info.live_restore}

    def configured_parameters(self) -> dict[str, dict[str, str]]:
        return modprobe_options(self.host)

    def _engine(self):  # type: ignore[no-untyped-def]
        engine = self.host.container_engine()
        if engine is None:
            raise HostError("no container engine socket on this node")
        return engine

    def stop_container(self, container_id: str, timeout: int | None) -> None:
        self._engine().stop(container_id, timeout)

    def start_container(self, container_id: str, restart_policy: str | None = None) -> None:
        # stop() relaxed `always` to `unless-stopped` for the window; put it back once started
        self._engine().start(container_id, restore_policy=restart_policy if restart_policy == "always" else None)

    def restart_container_engine(self) -> None:
        """For toolkits that need it (nvidia-container-toolkit issue 169): restart dockerd through
        systemd and wait until it answers again."""
        if not self.host.systemd_is_pid1():
            raise HostError("--restart-docker needs systemd to restart the container engine")
        self._run([*systemctl(), "restart", DOCKER_UNIT], timeout=300)
        self._engine().wait_ready(120)

    def stop_service(self, name: str) -> None:
        if not self.host.systemd_is_pid1():
            from nvreload.host.daemons import stop_daemon

            stop_daemon(name, grace=self.grace)
            return
        # systemctl waits for the stop job; the runner's timeout bounds it
        self._run([*systemctl(), "stop", name], timeout=self.service_timeout)

    def start_service(self, name: str, command: list[str] | None = None) -> None:
        if not self.host.systemd_is_pid1():
            start_recorded_command(name, command)
            return
        result = self.runner.run([*systemctl(), "start", name], timeout=self.service_timeout)
        if not result.ok and "too often" in (result.stderr + result.stdout):
            # systemd's start limit: our own stop/start cycle can hit it; clear and try once more
            self.runner.run([*systemctl(), "reset-failed", name], timeout=30)
            result = self.runner.run([*systemctl(), "start", name], timeout=self.service_timeout)
        if not result.ok:
            raise HostError(f"{name}: " + (result.stderr.strip() or f"systemctl start exited {result.returncode}").splitlines()[0])
        # A Type=simple unit "starts" as soon as it forks; one whose ExecStart dies at once shows
        # as failed a moment later. Watch it settle before calling it back.
        deadline = time.monotonic() + self.settle
        while True:
            state = self.runner.run([*systemctl(), "is-active", name], timeout=30).stdout.strip()
            if state in ("failed", "inactive"):
                raise HostError(f"{name}: {state} right after start (see journalctl -u {name})")
            if time.monotonic() >= deadline:
                return
            time.sleep(0.1)

    def restart_service(self, name: str) -> None:
        self._run([*systemctl(), "restart", name], timeout=self.service_timeout)

    def quit_mps(self) -> None:
        result = self.runner.run(["nvidia-cuda-mps-control"], timeout=30, input_text="quit\n")
        if not result.ok:
            raise HostError(f"nvidia-cuda-mps-control quit: {result.stderr.strip() or result.returncode}")

    def start_mps(self) -> None:
        self._run(["nvidia-cuda-mps-control", "-d"], timeout=30)

    def terminate_process(self, pid: int, start_time: int | None) -> str:
        fs = self.host.fs
        reaper = ProcessReaper(gpu_matcher(nvidia_majors(fs.read_text("proc/devices")), nvidia_drm_minors(fs)), grace=self.grace)
        result = reaper.terminate(pid, start_time)
        return f"{result.outcome}: {result.reason}"

    def bind_console(self, vtcon: str, bind: bool) -> None:
        path = self.host.fs.host_path(f"sys/class/vtconsole/{vtcon}/bind")  # type: ignore[attr-defined]
        if path is None:
            raise HostError(f"/sys/class/vtconsole/{vtcon}/bind: No such file or directory")
        try:
            with open(path, "w") as handle:
                handle.write("1\n" if bind else "0\n")
        except OSError as exc:
            raise HostError(f"/sys/class/vtconsole/{vtcon}/bind: {exc.strerror or exc}") from None

    def unload_module(self, name: str) -> None:
        self._run(["rmmod", name], timeout=60)

    def load_module(self, name: str, parameters: dict[str, str]) -> None:
        self._run(["modprobe", name, *(f"{k}={v}" for k, v in sorted(parameters.items()))], timeout=300)

    def mofed_ready(self) -> bool:
        fs = self.host.fs
        if fs.exists(MOFED_READY_MARKER):
            return True
        text = fs.read_text("proc/modules") or ""
        live = {line.split()[0] for line in text.splitlines() if line.split()}
        return {"ib_core", "mlx5_core"} <= live or all(fs.is_dir(f"sys/module/{m}") for m in ("ib_core", "mlx5_core"))

    def install_driver(self, path: str) -> None:
        self._run(["sh", path, "--silent", "--no-questions", "--ui=none"], timeout=1800)

    def verify(self, expected_persistence: dict[str, bool]) -> list[Check]:
        node = read_node(self.host, with_consumers=False)
        checks = run_checks(node, cuda_context_check(self.host.runner) if node.nvml.status == "ok" else None)
        for device in node.nvml.devices:
            if expected_persistence.get(device.pci_bus_id or "") and device.persistence_mode is False:
                checks.append(Check("persistence", False, f"{device.pci_bus_id}: persistence mode off (was on)", severity="warning"))
        return checks

    def restore_persistence(self, expected: dict[str, bool]) -> None:
        # nvidia-persistenced (restarted with the services) restores it; the legacy -pm flag does
        # not survive a reload, so set it back where it was on and persistenced is not managing it.
        if any(p.comm == "nvidia-persiste" for p in read_node(self.host).consumers.processes):
            return
        for bus_id, on in expected.items():
            if on:
                self.runner.run(["nvidia-smi", "-i", bus_id, "-pm", "1"], timeout=60)

    def at_boundary(self, step: str, phase: str) -> None:
        pass

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)
