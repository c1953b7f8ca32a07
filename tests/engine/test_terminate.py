"""Real processes holding a real character device (/dev/zero, 1:5) are found, classified and ended
with the grace period and the PID-reuse guard; PID 1 and unrelated processes are never signalled."""

import os
import subprocess
import sys
import time

import pytest

from nvreload.engine.terminate import ProcessReaper
from nvreload.read.gpu_processes import DeviceMatcher, read_identity, scan_gpu_holders

ZERO = DeviceMatcher(exact=frozenset({(os.major(os.stat("/dev/zero").st_rdev), os.minor(os.stat("/dev/zero").st_rdev))}))

HOLDER = "import time; f = open('/dev/zero', 'rb'); print('ready', flush=True); time.sleep(600)"
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); f = open('/dev/zero', 'rb'); "
            "print('ready', flush=True); time.sleep(600)")
UNRELATED = "import time; print('ready', flush=True); time.sleep(600)"


def spawn(code):
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def procs():
    started = []

    def make(code):
        proc = spawn(code)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_holders_of_the_device_are_found_and_others_are_not(procs):
    holder, unrelated = procs(HOLDER), procs(UNRELATED)
    found = {p.pid: p for p in scan_gpu_holders(ZERO)}
    assert holder.pid in found and unrelated.pid not in found
    assert found[holder.pid].devices and "/dev/zero" in found[holder.pid].devices[0]
    assert found[holder.pid].start_time == read_identity(holder.pid).start_time
    assert os.getpid() not in found


def test_a_holder_that_honours_sigterm_is_terminated_within_the_grace(procs):
    holder = procs(HOLDER)
    start = read_identity(holder.pid).start_time
    result = ProcessReaper(ZERO, grace=5).terminate(holder.pid, start)
    assert result.outcome == "terminated"
    assert holder.wait(timeout=5) == -15


def test_a_holder_that_ignores_sigterm_gets_sigkill_after_the_grace(procs):
    stubborn = procs(STUBBORN)
    started = time.monotonic()
    result = ProcessReaper(ZERO, grace=0.5).terminate(stubborn.pid, read_identity(stubborn.pid).start_time)
    assert result.outcome == "killed"
    assert time.monotonic() - started >= 0.5
    assert stubborn.wait(timeout=5) == -9


def test_a_reused_pid_is_never_signalled(procs):
    holder = procs(HOLDER)
    wrong_start = read_identity(holder.pid).start_time - 1  # what we saw belonged to an earlier process
    result = ProcessReaper(ZERO, grace=0.5).terminate(holder.pid, wrong_start)
    assert result.outcome == "refused" and "another process" in result.reason
    assert holder.poll() is None


def test_a_process_that_no_longer_holds_the_device_is_left_alone(procs):
    unrelated = procs(UNRELATED)
    result = ProcessReaper(ZERO, grace=0.5).terminate(unrelated.pid, read_identity(unrelated.pid).start_time)
    assert result.outcome == "refused" and "no longer holds" in result.reason
    assert unrelated.poll() is None


def test_pid_1_and_ourselves_are_never_signalled():
    reaper = ProcessReaper(DeviceMatcher(majors=frozenset(range(0, 512))), grace=0.1)
    assert reaper.terminate(1, None).outcome == "refused"
    assert reaper.terminate(os.getpid(), None).outcome == "refused"


def test_cgroup_paths_classify_containers_and_units():
    from nvreload.read.gpu_processes import classify_cgroup

    cid = "a" * 64
    assert classify_cgroup(f"0::/system.slice/docker-{cid}.scope\n") == (cid, None)
    assert classify_cgroup("0::/system.slice/nvidia-persistenced.service\n") == (None, "nvidia-persistenced.service")
    assert classify_cgroup(f"12:devices:/kubepods/besteffort/pod1234/{cid}\n") == (cid, None)
    assert classify_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n") == (None, None)


def test_a_scan_split_over_forked_workers_finds_the_same_holders(procs):
    holders = [procs(HOLDER) for _ in range(3)]
    single = {p.pid for p in scan_gpu_holders(ZERO, workers=1)}
    forked = {p.pid for p in scan_gpu_holders(ZERO, workers=3)}
    assert {h.pid for h in holders} <= single
    assert forked == single


def test_a_failing_scan_worker_has_its_share_rescanned(procs, monkeypatch):
    import nvreload.read.gpu_processes as gp

    holders = [procs(HOLDER) for _ in range(4)]

    def broken(*args, **kwargs):
        raise RuntimeError("worker broke")

    monkeypatch.setattr(gp.json, "dumps", broken)  # every worker dies before writing its result
    found = {p.pid for p in scan_gpu_holders(ZERO, workers=2)}
    assert {h.pid for h in holders} <= found


def test_the_bulk_scan_with_its_path_cache_agrees_with_a_stat_of_every_descriptor(procs):
    from nvreload.read.gpu_processes import held_devices

    holders = [procs(HOLDER) for _ in range(3)]
    bulk = {p.pid: p.devices for p in scan_gpu_holders(ZERO, workers=1)}
    for holder in holders:
        assert bulk[holder.pid] == tuple(held_devices(holder.pid, ZERO))  # no cache: stat each fd


def test_a_device_node_deleted_while_open_is_still_found(procs, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    node = tmp_path / "zero-copy"
    rdev = os.stat("/dev/zero").st_rdev
    os.mknod(node, 0o600 | __import__("stat").S_IFCHR, rdev)
    holder = procs(f"import os, time; f = open({str(node)!r}, 'rb'); os.unlink({str(node)!r}); print('ready', flush=True); time.sleep(600)")
    found = {p.pid: p.devices for p in scan_gpu_holders(ZERO, workers=1)}
    assert holder.pid in found and "(deleted)" in found[holder.pid][0]
