import os
import subprocess
import sys

from nvreload.app import App


def status_of(root) -> dict:
    return App(root=str(root)).status().document


def node_of(snapshot):
    """The read model of a built snapshot, for tests that change one fact of it (dataclasses.replace)."""
    from nvreload.host.machine import Machine
    from nvreload.read.node import read_node
    from nvreload.rootfs import open_root

    return read_node(Machine(open_root(str(snapshot.root))))


def codes(document: dict) -> list[str]:
    return [f["code"] for f in document["findings"]]


def run_cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the real console entry point in a subprocess, as an operator would."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "nvreload", *args], capture_output=True, text=True, timeout=timeout, env=full_env
    )


# SIGINT as a terminal delivers it: a test run started in the background by a non-interactive shell
# (.ci/run's `pytest ... &`) inherits SIGINT ignored, and Python keeps it ignored in its children, so
# a Ctrl-C a test sends would do nothing. coreutils' env puts it back to the default before the exec
# (the pid stays the child's: env execs it).
WITH_SIGINT = ["env", "--default-signal=INT"]


def start_cli(*args: str, env: dict | None = None) -> subprocess.Popen:
    """The real console entry point started in the background (the test signals or waits on it),
    with SIGINT delivered as from a terminal."""
    return subprocess.Popen(
        [*WITH_SIGINT, sys.executable, "-m", "nvreload", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def as_nobody() -> list[str]:
    """The command prefix that runs a command as user nobody (setpriv), or a pytest skip saying why it
    cannot: not root, no setpriv, or an interpreter or checkout nobody can reach (a venv or a
    repository under a 0700 directory such as /root)."""
    import shutil

    import pytest

    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to drop to an unprivileged user")
    nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
    probe = subprocess.run(
        nobody + [sys.executable, "-c", "import nvreload"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": "/tmp"},
    )
    if probe.returncode != 0:
        pytest.skip(
            f"user nobody cannot run {sys.executable} with nvreload (a venv or checkout under a 0700 directory?): "
            + (probe.stderr.strip().splitlines() or ["no output"])[-1][-200:]
        )
    return nobody
