"""Daemons on a node without systemd: found by name, stopped, and started again from the command
line recorded when they were stopped. Real processes, not mocks."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from nvreload.engine.live import start_recorded_command
from nvreload.errors import HostError
from nvreload.host.daemons import find_daemons, stop_daemon

NAME = "nvidia-persistenced"


def launch(argv0: str, *command: str) -> subprocess.Popen:
    """Start `command` with argv[0] set to `argv0`, the way a daemon shows in /proc/<pid>/cmdline."""
    return subprocess.Popen(["bash", "-c", 'exec -a "$0" "$@"', argv0, *command], stdin=subprocess.DEVNULL)


def wait_for(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def cleanup():
    started = []
    yield started
    for daemon in find_daemons((NAME,)):
        if daemon.command[-1] in ("600", "nvreload-test-daemon"):
            os.kill(daemon.pid, 9)
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_daemon_is_found_by_name_with_its_command_line(cleanup):
    proc = launch(NAME, shutil.which("sleep"), "600")
    cleanup.append(proc)
    assert wait_for(lambda: any(d.pid == proc.pid for d in find_daemons((NAME,))))
    daemon = next(d for d in find_daemons((NAME,)) if d.pid == proc.pid)
    assert daemon.command == (NAME, "600")


def test_stop_then_start_by_recorded_command_brings_the_daemon_back(cleanup, tmp_path):
    binary = tmp_path / NAME
    shutil.copy(shutil.which("sleep"), binary)
    proc = subprocess.Popen([str(binary), "600"], stdin=subprocess.DEVNULL)
    cleanup.append(proc)
    assert wait_for(lambda: any(d.pid == proc.pid for d in find_daemons((NAME,))))
    stopped = stop_daemon(NAME, grace=2)
    recorded = next(d.command for d in stopped if d.pid == proc.pid)
    assert proc.wait(timeout=5) == -15
    start_recorded_command(NAME, list(recorded), settle=0.2)
    again = [d for d in find_daemons((NAME,)) if d.command == recorded]
    assert again and again[0].pid != proc.pid


def test_a_daemon_that_ignores_sigterm_is_killed_after_the_grace(cleanup):
    proc = launch(NAME, sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)",
                  "nvreload-test-daemon")
    cleanup.append(proc)
    assert wait_for(lambda: any(d.pid == proc.pid for d in find_daemons((NAME,))))
    time.sleep(0.3)  # let python install its handler
    stop_daemon(NAME, grace=0.5)
    assert proc.wait(timeout=5) == -9


def test_a_daemon_that_exits_at_once_did_not_come_back(tmp_path):
    binary = tmp_path / NAME
    shutil.copy(shutil.which("true"), binary)
    with pytest.raises(HostError, match="exited right after start"):
        start_recorded_command(NAME, [str(binary)], settle=0.3)


def test_no_recorded_command_is_an_error_not_a_guess():
    with pytest.raises(HostError, match="no recorded command line"):
        start_recorded_command(NAME, None)
