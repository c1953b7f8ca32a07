"""This machine (or a snapshot of one) as the read model sees it: files through a root, commands
through one runner, NVML through one probe, the container engine through one client.

A snapshot (--root) is the same object with `live=False`: every probe that would need the live
machine reads what `--collect` captured under nvreload-snapshot/ instead.
"""

from __future__ import annotations

import json
import os
import re

from nvreload.host.commands import CommandRunner
from nvreload.host.modinfo_cache import ModinfoCache
from nvreload.model import Consumers, ContainerState, EngineState, GpuProcess, NvmlReport, ServiceState
from nvreload.records import replace
from nvreload.rootfs import RootFS

TYPE_CHECKING = False  # not typing's: importing typing costs the --status path; mypy and pyright read this name as True
if TYPE_CHECKING:
    from nvreload.host.containers import ContainerEngine
    from nvreload.host.nvml import NvmlProbe

SNAPSHOT_DIR = "nvreload-snapshot"
_FM_VERSION = r"(\d+\.\d+\.\d+)"  # compiled at its first use: most nodes have no fabric manager
# what a captured nvml.json may say, as the status schema lists them
_NVML_STATUSES = ("ok", "version_mismatch", "driver_not_loaded", "library_not_found", "unavailable", "error")


class Machine:
    def __init__(
        self,
        fs: RootFS,
        runner: CommandRunner | None = None,
        nvml_probe: NvmlProbe | None = None,
        modinfo_cache_path: str | None = None,
    ) -> None:
        self.fs = fs
        self.live = fs.is_live
        self.runner = runner or CommandRunner()
        self._container_engines: tuple[ContainerEngine, ...] | None = None
        self._engine_errors: tuple[str, ...] = ()
        # started by the caller before the heavy imports, so NVML answers while we read files;
        # used by the first nvml() call only (a later read must see the driver as it is then)
        self._nvml_probe = nvml_probe
        # live only: a snapshot's files have no identity on this machine worth remembering
        self.modinfo_cache = ModinfoCache(modinfo_cache_path) if self.live and modinfo_cache_path else None

    # identity -----------------------------------------------------------------------------
    def hostname(self) -> str | None:
        if self.live:
            return os.uname().nodename
        return self.fs.read_line("proc/sys/kernel/hostname") or self.fs.read_line("etc/hostname") or None

    def systemd_is_pid1(self) -> bool:
        if not self.live:
            return False
        return bool(os.environ.get("NVRELOAD_SYSTEMCTL")) or self.fs.read_line("proc/1/comm") == "systemd"

    # kernel log ---------------------------------------------------------------------------
    def kernel_log(self) -> tuple[str | None, str | None]:
        if not self.live:
            text = self.fs.read_text(f"{SNAPSHOT_DIR}/dmesg.txt")
            return text, ("snapshot" if text is not None else None)
        # /dev/kmsg first: no process to start (root, or dmesg_restrict=0, can read it)
        text = _read_kmsg()
        if text:
            return text, "/dev/kmsg"
        result = self.runner.run(["dmesg"], timeout=10)
        if result.ok and result.stdout:
            return result.stdout, "dmesg"
        result = self.runner.run(["journalctl", "-k", "-b", "--no-pager", "-o", "short-monotonic"], timeout=15)
        if result.ok and result.stdout:
            return result.stdout, "journalctl"
        return None, None

    # NVML ---------------------------------------------------------------------------------
    def nvml(self, module_live: bool, userspace_found: bool) -> NvmlReport:
        if not self.live:
            captured = self.fs.read_text(f"{SNAPSHOT_DIR}/nvml.json")
            if captured:
                try:
                    data = json.loads(captured)
                    status, error = data.get("status", "error"), data.get("error")
                except (ValueError, AttributeError):
                    status, error = None, None
                # anything else is as unreadable as broken JSON: the XML capture, if any, speaks instead
                if status in _NVML_STATUSES and (error is None or isinstance(error, str)):
                    return NvmlReport(status=status, source="snapshot", error=error)
            from nvreload.read.smi_xml import parse_smi_xml

            parsed = parse_smi_xml(self.fs.read_text(f"{SNAPSHOT_DIR}/nvidia-smi-q.xml"))
            return parsed or NvmlReport(status="unavailable", source="none", error="not captured in this snapshot")
        probe, self._nvml_probe = self._nvml_probe, None
        if not userspace_found or not module_live:
            # NVML would only say the same thing after loading a library and opening devices.
            if probe is not None:
                probe.abandon()
            if not userspace_found:
                return NvmlReport(status="library_not_found", source="nvml", error="libnvidia-ml.so.1 not found")
            return NvmlReport(status="driver_not_loaded", source="nvml", error="nvidia module not loaded")
        if probe is None:
            from nvreload.host.nvml import NvmlProbe

            probe = NvmlProbe.start(self.runner)
        return probe.report()

    # consumers ----------------------------------------------------------------------------
    def gpu_processes(
        self, majors: frozenset[int], drm_minors: frozenset[int], nvml_pids: tuple[int, ...]
    ) -> tuple[GpuProcess, ...]:
        if not self.live:
            return ()
        from nvreload.host.processes import scan_gpu_holders
        from nvreload.read.devices import gpu_matcher

        return scan_gpu_holders(gpu_matcher(majors, drm_minors), extra_pids=nvml_pids)

    def services(self) -> tuple[ServiceState, ...]:
        if not self.live:
            return ()
        if self.systemd_is_pid1():
            from nvreload.host.systemd import systemctl_states

            return tuple(systemctl_states(self.runner))
        from nvreload.host.processes import find_daemons

        seen: dict[str, ServiceState] = {}
        for daemon in find_daemons():
            seen.setdefault(daemon.name, ServiceState(daemon.name, "active", None, daemon.command))
        return tuple(seen.values())

    def container_engines(self) -> tuple[ContainerEngine, ...]:
        """A client of each container engine whose socket exists here (Docker, rootful Podman, each
        user's rootless Podman), made once; none where no socket exists (then the docker SDK is
        never imported). One that cannot even be made is left out and named by containers()."""
        if self._container_engines is None:
            self._container_engines, self._engine_errors = (), ()
            if self.live:
                from nvreload.errors import HostError
                from nvreload.host.containers import ContainerEngine, engine_sockets

                engines, errors = [], []
                for socket in engine_sockets():
                    try:
                        # 30 s per request; a stop adds the container's own stop timeout to it
                        engines.append(ContainerEngine(socket.url, 30, socket.owner_uid, socket.owner))
                    except HostError as exc:
                        errors.append(exc.message)
                self._container_engines, self._engine_errors = tuple(engines), tuple(errors)
        return self._container_engines

    def container_engine(self) -> ContainerEngine | None:
        """Docker's engine where there is one, else the first (--restart-docker, the journal's record
        of live-restore)."""
        from nvreload.errors import HostError

        engines = self.container_engines()
        for engine in engines:
            try:
                if engine.info().name == "docker":
                    return engine
            except HostError:
                continue
        return engines[0] if engines else None

    def containers(self, holder_ids: tuple[str, ...] = ()) -> tuple[tuple[ContainerState, ...], str | None]:
        """(GPU containers of every engine, why an engine's could not be listed). No socket: none."""
        from nvreload.errors import HostError

        found: list[ContainerState] = []
        engines = self.container_engines()
        errors = list(self._engine_errors)
        for engine in engines:
            try:
                found += engine.gpu_containers(holder_ids)
            except HostError as exc:
                errors.append(exc.message)
        if found and not self.systemd_is_pid1():
            # a unit's label with no systemd to run the unit: the container is stopped by itself
            found = [replace(c, unit=None) if c.unit else c for c in found]
        elif any(c.unit is None and c.engine == "docker" for c in found):
            from nvreload.host.processes import docker_client_units

            clients = docker_client_units()
            found = [replace(c, unit=_client_unit(c, clients)) if c.engine == "docker" else c for c in found]
        return tuple(found), ("; ".join(errors) if errors else None)

    def engine_states(self, containers: tuple[ContainerState, ...]) -> tuple[EngineState, ...]:
        """Each engine that answered, with how many of these GPU containers it runs (--status)."""
        from nvreload.errors import HostError

        states = []
        for engine in self.container_engines():
            try:
                label = engine.label
            except HostError:
                continue
            states.append(EngineState(label, engine.url, sum(1 for c in containers if c.engine == label)))
        return tuple(states)

    def recorded_consumers(self) -> Consumers | None:
        """A snapshot's record of the live consumer scan (--collect's consumers.json); None live,
        or where the snapshot has none."""
        if self.live:
            return None
        from nvreload.read.recorded_consumers import FILE, parse_record

        return parse_record(self.fs.read_text(f"{SNAPSHOT_DIR}/{FILE}"))

    def fabric_manager_version(self) -> str | None:
        if not self.live:
            text = self.fs.read_text(f"{SNAPSHOT_DIR}/nv-fabricmanager-version.txt")
        else:
            if self.runner.which("nv-fabricmanager") is None:
                return None
            text = self.runner.run(["nv-fabricmanager", "--version"], timeout=10).stdout
        match = re.search(_FM_VERSION, text) if text else None
        return match.group(1) if match else None


def _client_unit(container: ContainerState, clients: dict[str, str]) -> str | None:
    """The unit whose docker client runs this container: named by its name, or by its id (12+ hex)."""
    if container.unit is not None or container.name in clients:
        return container.unit or clients[container.name]
    return next(
        (unit for key, unit in clients.items() if len(key) >= 12 and container.id.startswith(key.lower())), None
    )


def _read_kmsg() -> str | None:
    """Drain /dev/kmsg without blocking (each read returns one record)."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    records = []
    try:
        while True:
            try:
                chunk = os.read(fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:
                # EPIPE: the ring buffer overwrote records we had not read yet; the next read goes on
                continue
            except OSError:
                break
            if not chunk:
                break
            records.append(chunk.decode("utf-8", "replace").split("\n", 1)[0])
    finally:
        os.close(fd)
    return "\n".join(records) if records else None
