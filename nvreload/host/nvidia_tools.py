"""The one door to NVIDIA's own command-line tools that change the driver's state: nvidia-smi's
persistence mode and the MPS control daemon; and nvidia-smi's view of the NVLink fabric while a
reload waits for it."""

from __future__ import annotations

from nvreload.errors import HostError
from nvreload.host.commands import CommandRunner


def set_persistence(runner: CommandRunner, bus_id: str) -> None:
    """Persistence mode on for one GPU (the legacy flag does not survive a reload)."""
    runner.run(["nvidia-smi", "-i", bus_id, "-pm", "1"], timeout=60)


def quit_mps(runner: CommandRunner) -> None:
    result = runner.run(["nvidia-cuda-mps-control"], timeout=30, input_text="quit\n")
    if not result.ok:
        raise HostError(f"nvidia-cuda-mps-control quit: {result.stderr.strip() or result.returncode}")


def start_mps(runner: CommandRunner) -> None:
    runner.check(["nvidia-cuda-mps-control", "-d"], timeout=30)


def fabric_ready(runner: CommandRunner) -> bool | None:
    """The NVLink fabric's state as nvidia-smi reports it (read/smi_xml.py); False while nvidia-smi
    cannot answer (the driver instance is still coming up)."""
    from nvreload.read.smi_xml import fabric_ready as parse

    result = runner.run(["nvidia-smi", "-q", "-x"], timeout=60)
    return parse(result.stdout) if result.ok else False
