"""The one door to NVIDIA's own command-line tools that change the driver's state: nvidia-smi's
persistence mode, the MPS control daemon and the container toolkit's CDI specs; and nvidia-smi's
view of the NVLink fabric while a reload waits for it."""

from __future__ import annotations

import re

from nvreload.errors import HostError
from nvreload.host.commands import CommandRunner


def set_persistence(runner: CommandRunner, bus_id: str) -> None:
    """Persistence mode on for one GPU (the legacy flag does not survive a reload)."""
    runner.run(["nvidia-smi", "-i", bus_id, "-pm", "1"], timeout=60)


def disable_persistence(runner: CommandRunner, bus_id: str) -> None:
    """Persistence mode off for one GPU: a GPU in persistence mode refuses to be reset."""
    result = runner.run(["nvidia-smi", "-i", bus_id, "-pm", "0"], timeout=60)
    if not result.ok:
        raise HostError(f"nvidia-smi -i {bus_id} -pm 0: {_last_line(result)}")


def reset_gpu(runner: CommandRunner, bus_id: str) -> None:
    """nvidia-smi --gpu-reset of one GPU. It refuses while anything has the GPU open ("in use by
    another client"); its own message is the error."""
    result = runner.run(["nvidia-smi", "--gpu-reset", "-i", bus_id], timeout=300)
    if not result.ok:
        raise HostError(f"nvidia-smi --gpu-reset -i {bus_id}: {_refusal(result)}")


def _refusal(result) -> str:
    """Why nvidia-smi did not reset: its per-GPU line ("GPU 00000000:3B:00.0: In use by another
    client") under "The following GPUs could not be reset:", rather than the advice that follows it."""
    lines = [line.strip() for line in (result.stdout + "\n" + result.stderr).splitlines()]
    named = [line for line in lines if re.match(r"GPU [0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+\.[0-7]: \S", line)]
    return "; ".join(named) if named else _last_line(result)


def _last_line(result) -> str:
    lines = [line.strip() for line in (result.stdout + "\n" + result.stderr).splitlines() if line.strip()]
    meaningful = [line for line in lines if line != "All done."]
    return meaningful[-1] if meaningful else f"exit {result.returncode}"


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


# Where nvidia-ctk writes the CDI spec (the toolkit's defaults: static, and generated at boot).
CDI_SPECS = ("etc/cdi/nvidia.yaml", "etc/cdi/nvidia.json", "var/run/cdi/nvidia.yaml", "var/run/cdi/nvidia.json")


def refresh_cdi_specs(runner: CommandRunner, root: str = "/") -> list[str]:
    """Generate again each NVIDIA CDI spec the node has: a spec names the driver's libraries by
    version (libcuda.so.550.90.07), so after a version change every CDI container start fails on
    files the upgrade removed. Returns the specs written; [] where there are none."""
    import os

    specs = [os.path.join(root, spec) for spec in CDI_SPECS if os.path.isfile(os.path.join(root, spec))]
    if not specs:
        return []
    if runner.which("nvidia-ctk") is None:
        raise HostError(
            "CDI specs "
            + ", ".join(specs)
            + " name the old driver's files, and nvidia-ctk is not installed to write them again"
        )
    for spec in specs:
        result = runner.run(["nvidia-ctk", "cdi", "generate", f"--output={spec}"], timeout=120)
        if not result.ok:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise HostError(
                f"nvidia-ctk cdi generate --output={spec}: {detail[-1] if detail else f'exit {result.returncode}'}"
            )
    return specs
