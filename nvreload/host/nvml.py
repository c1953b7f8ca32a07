"""One door to NVML: a probe that runs the NVML session (nvml_session.py) in a child process.

Why a child and not pynvml in our own process:
- a wedged GPU can hang nvmlInit inside an ioctl for minutes; the parent keeps its deadline and
  reports "NVML did not answer" instead of hanging with it;
- a crash inside libnvidia-ml (a half-upgraded node) is a finding, not the end of nvreload;
- NVML's /dev/nvidia* descriptors never live in the process that unloads the module;
- importing pynvml and initialising NVML (about 40 ms on an H100 node) run beside our own file
  reads instead of before them, which keeps `--status --json` fast.
"""

from __future__ import annotations

import json
import os
import sys

from nvreload.host.commands import TIMED_OUT, CommandResult, CommandRunner, RunningCommand

TYPE_CHECKING = False  # not typing's: importing typing costs the --status path; mypy and pyright read this name as True
if TYPE_CHECKING:
    from nvreload.model import NvmlReport

# Long enough for nvmlInit on an 8-GPU node without persistence mode, where the driver initialises
# every GPU on first open; a GPU that takes longer than this is wedged. NVRELOAD_NVML_TIMEOUT overrides.
DEFAULT_TIMEOUT_S = 30.0


# An override past an hour is a typo, not a slow GPU: nvreload would hang the caller that long.
MAX_TIMEOUT_S = 3600.0


def configured_timeout() -> float:
    """NVRELOAD_NVML_TIMEOUT, or the default. A value that is not a number of seconds in
    (0, MAX_TIMEOUT_S] is refused: nan would never time out, inf and -1 would hang or never wait."""
    raw = os.environ.get("NVRELOAD_NVML_TIMEOUT")
    if raw is None or raw.strip() == "":
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds <= MAX_TIMEOUT_S:  # false for nan too
        from nvreload.errors import BadInputError

        raise BadInputError(f"NVRELOAD_NVML_TIMEOUT={raw!r}: not a number of seconds in (0, {MAX_TIMEOUT_S:g}]")
    return seconds


def child_env() -> dict[str, str]:
    """The child runs with -S (no site: a .pth that imports things at start-up would cost every
    probe), so it gets our own import path instead: this very nvreload first (a source checkout, an
    editable install), then every directory we import from (where pynvml is)."""
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(p for p in (package_parent, *sys.path) if p))
    return env


# -c rather than -m: runpy's imports are a tenth of the child's start-up
_CHILD = [sys.executable, "-S", "-c", "from nvreload.host.nvml_session import main; main()"]


class NvmlProbe:
    """An NVML session running in a child process; report() collects it (once)."""

    def __init__(self, command: RunningCommand, timeout: float) -> None:
        self._command = command
        self._timeout = timeout

    @classmethod
    def start(cls, runner: CommandRunner | None = None, timeout: float | None = None) -> NvmlProbe:
        runner = runner or CommandRunner()
        command = runner.start(_CHILD, env=child_env())
        return cls(command, configured_timeout() if timeout is None else timeout)

    @property
    def running(self) -> bool:
        return self._command.running

    def abandon(self) -> None:
        self._command.abandon()

    def report(self) -> NvmlReport:
        return report_from_result(self._command.result(self._timeout), self._timeout)


def report_from_result(result: CommandResult, timeout: float) -> NvmlReport:
    # nvreload.model is imported here, not at the top: the probe starts before the model is loaded
    from nvreload.model import NvmlDevice, NvmlReport

    if result.returncode == TIMED_OUT:
        return NvmlReport(
            status="error",
            source="nvml",
            error=f"NVML did not answer within {timeout:g} s: a GPU may be wedged (see the kernel log's XIDs)",
        )
    if result.returncode != 0:
        why = f"killed by signal {-result.returncode}" if result.returncode < 0 else f"exit status {result.returncode}"
        last = result.stderr.strip().splitlines()[-1:] or [""]
        return NvmlReport(status="error", source="nvml", error=f"the NVML probe failed ({why}) {last[0]}".strip())
    try:
        data = json.loads(result.stdout)
        devices = tuple(
            NvmlDevice(
                index=int(d["index"]),
                name=d.get("name"),
                uuid=d.get("uuid"),
                pci_bus_id=d.get("pci_bus_id"),
                persistence_mode=d.get("persistence_mode"),
                mig_mode=d.get("mig_mode"),
                mig_pending=d.get("mig_pending"),
                fabric_state=d.get("fabric_state") if isinstance(d.get("fabric_state"), str) else None,
                fabric_status=d.get("fabric_status") if isinstance(d.get("fabric_status"), str) else None,
                compute_pids=tuple(int(p) for p in d.get("compute_pids", ())),
            )
            for d in data.get("devices", ())
        )
        cuda = data.get("cuda_driver_version")
        return NvmlReport(
            status=str(data["status"]),
            source="nvml",
            driver_version=data.get("driver_version"),
            cuda_driver_version=int(cuda) if cuda is not None else None,
            devices=devices,
            error=data.get("error"),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return NvmlReport(status="error", source="nvml", error=f"the NVML probe's answer was unreadable: {exc}")


def probe_nvml(runner: CommandRunner | None = None, timeout: float | None = None) -> NvmlReport:
    return NvmlProbe.start(runner, timeout).report()
