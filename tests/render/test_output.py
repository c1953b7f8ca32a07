"""A reader that leaves (a closed pipe) changes nothing but what gets printed: the exit code is the
node's, and a reload whose progress can no longer be printed still finishes."""

import json
import os
import subprocess
import sys

import pytest

from nvreload.errors import ExitCode


def run_with_closed(stream: str, args: list[str], env: dict) -> int:
    """Run nvreload with stdout, stderr or both writing into a pipe nobody reads."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    outputs = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    for name in ("stdout", "stderr") if stream == "both" else (stream,):
        outputs[name] = write_end
    try:
        return subprocess.run(
            [sys.executable, "-m", "nvreload", *args], env={**os.environ, **env}, timeout=60, **outputs
        ).returncode
    finally:
        os.close(write_end)


@pytest.mark.parametrize("stream", ["stdout", "stderr", "both"])
@pytest.mark.parametrize(
    "args",
    [["--status", "--simulate", "--json"], ["--status", "--simulate"], ["--verify", "--simulate"]],
    ids=["status-json", "status", "verify"],
)
def test_a_closed_pipe_does_not_change_the_exit_code(tmp_path, stream, args):
    env = {"NVRELOAD_STATE_DIR": str(tmp_path / "state")}
    reading = subprocess.run(
        [sys.executable, "-m", "nvreload", *args], env={**os.environ, **env}, capture_output=True, timeout=60
    ).returncode
    assert reading == ExitCode.CRITICAL  # the built-in node's version mismatch
    assert run_with_closed(stream, args, env) == reading


@pytest.mark.parametrize("stream", ["stdout", "stderr", "both"])
def test_a_reload_whose_output_nobody_reads_still_finishes_reloaded(tmp_path, stream):
    # rich's own broken-pipe handler exited 1 in the middle of stop_consumers, journal "running"
    state = tmp_path / "state"
    assert run_with_closed(stream, ["--reload", "--simulate", "--yes"], {"NVRELOAD_STATE_DIR": str(state)}) == 0
    assert json.loads((state / "journal.json").read_text())["state"] == "reloaded"
