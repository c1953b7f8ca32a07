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
from nvreload.host.rootfs import RootFS
from nvreload.model import Consumers, ContainerState, GpuProcess, NvmlReport, ServiceState

TYPE_CHECKING = False  # not typing's: importing typing costs the --status path; mypy and pyright read this name as True
if TYPE_CHECKING:
    from nvreload.host.containers import ContainerEngine
    from nvreload.host.nvml import NvmlProbe

SNAPSHOT_DIR = "nvreload-snapshot"
_FM_VERSION = re.compile(r"(\d+\.\d+\.\d+)")
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
        self._container_engine: ContainerEngine | None = None
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

    def container_engine(self) -> ContainerEngine | None:
        """The one client of this node's container engine, or None where no engine socket exists
        (then the docker SDK is never imported)."""
        if self._container_engine is None and self.live:
            from nvreload.host.containers import engine_url

            url = engine_url()
            if url is not None:
                from nvreload.host.containers import ContainerEngine

                # 30 s per request; a stop adds the container's own stop timeout to it
                self._container_engine = ContainerEngine(url, timeout=30)
        return self._container_engine

    def containers(self, holder_ids: tuple[str, ...] = ()) -> tuple[tuple[ContainerState, ...], str | None]:
        """(GPU containers, why they could not be listed). No engine socket: none."""
        from nvreload.errors import HostError

        try:
            engine = self.container_engine()
            return (engine.gpu_containers(holder_ids), None) if engine is not None else ((), None)
        except HostError as exc:
            return (), exc.message

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
        match = _FM_VERSION.search(text or "")
        return match.group(1) if match else None


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
