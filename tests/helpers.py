import os
import subprocess
import sys

from nvreload.app import App


def status_of(root) -> dict:
    return App(root=str(root)).status().document


def node_of(snapshot):
    """The read model of a built snapshot, for tests that change one fact of it (dataclasses.replace)."""
    from nvreload.host.machine import Machine
    from nvreload.host.rootfs import open_root
    from nvreload.read.node import read_node

    return read_node(Machine(open_root(str(snapshot.root))))


def codes(document: dict) -> list[str]:
    return [f["code"] for f in document["findings"]]


def run_cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the real console entry point in a subprocess, as an operator would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "nvreload", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env)
