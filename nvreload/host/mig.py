"""The one door to MIG geometry: read before a reload (every instance is lost with the module) and
created again after it, through NVML in a child process (mig_session.py)."""

from __future__ import annotations

import json
import sys

from nvreload.errors import HostError
from nvreload.host.commands import CommandRunner
from nvreload.host.nvml import child_env, configured_timeout

_CHILD = [sys.executable, "-S", "-c", "from nvreload.host.mig_session import main; main()"]


def _ask(runner: CommandRunner, *args: str) -> dict:
    result = runner.start([*_CHILD, *args], env=child_env()).result(configured_timeout())
    try:
        document = json.loads(result.stdout)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        last = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        raise HostError(f"MIG through NVML: no answer ({last})")
    if "error" in document:
        raise HostError(f"MIG through NVML: {document['error']}")
    return document


def read_geometry(runner: CommandRunner) -> dict[str, list[dict]]:
    """Per PCI bus id (as NVML writes it), the MIG instances of each GPU in MIG mode that has any."""
    gpus = _ask(runner, "list").get("gpus")
    if not isinstance(gpus, dict):
        raise HostError("MIG through NVML: an answer without GPUs")
    return gpus


def create_geometry(runner: CommandRunner, bus_id: str, instances: list[dict]) -> None:
    _ask(runner, "create", bus_id, json.dumps(instances))
