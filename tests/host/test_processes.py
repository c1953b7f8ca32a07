"""Real processes holding a real character device (/dev/zero, 1:5) are found, classified and ended
with the grace period and the PID-reuse guard; PID 1 and unrelated processes are never signalled.
Daemons on a node without systemd are found by their executable (root's processes only), stopped,
and started again from the command line recorded when they were stopped, if root alone controls it. Real processes, not mocks."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from nvreload.errors import HostError
from nvreload.host.commands import CommandRunner
from nvreload.host.processes import (
    ProcessReaper,
    find_daemons,
    held_devices,
    read_identity,
    refusal,
    scan_gpu_holders,
    start_daemon,
    stop_daemon,
)
from nvreload.read.devices import DeviceMatcher

ZERO = DeviceMatcher(
    exact=frozenset({(os.major(os.stat("/dev/zero").st_rdev), os.minor(os.stat("/dev/zero").st_rdev))})
)

HOLDER = "import time; f = open('/dev/zero', 'rb'); print('ready', flush=True); time.sleep(600)"
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); f = open('/dev/zero', 'rb'); "
    "print('ready', flush=True); time.sleep(600)"
)
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


def test_a_holder_is_described_with_its_process_group_which_its_children_share(procs):
    # the engine ends a late child that inherited a killed holder's descriptors by this group
    group_leader = subprocess.Popen(
        [sys.executable, "-c", HOLDER],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert group_leader.stdout.readline().strip() == "ready"
        plain = procs(HOLDER)
        found = {p.pid: p for p in scan_gpu_holders(ZERO)}
        assert found[group_leader.pid].process_group == group_leader.pid
        assert found[plain.pid].process_group == os.getpgrp()
    finally:
        group_leader.kill()
        group_leader.wait()


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
    assert not result.holds_on  # what we meant to end is gone: the unload can go on
    assert holder.poll() is None


def test_a_process_that_no_longer_holds_the_device_is_left_alone(procs):
    unrelated = procs(UNRELATED)
    result = ProcessReaper(ZERO, grace=0.5).terminate(unrelated.pid, read_identity(unrelated.pid).start_time)
    assert result.outcome == "refused" and "no longer holds" in result.reason
    assert not result.holds_on
    assert unrelated.poll() is None


def fake_proc(root, pid: int, comm: str, flags: int = 4194304, holds: str = "/dev/zero"):
    """A /proc entry for `pid` (stat, and an fd that is a real device) under `root`: what the reaper
    reads, so that its refusals are tested where the machine's own /proc/1/fd may be unreadable."""
    entry = root / str(pid)
    (entry / "fd").mkdir(parents=True)
    fields = ["S", "0", str(pid), str(pid), "0", "-1", str(flags)] + ["0"] * 12 + ["4242"] + ["0"] * 10
    (entry / "stat").write_text(f"{pid} ({comm}) " + " ".join(fields) + "\n")
    os.symlink(holds, entry / "fd" / "3")
    return str(root)


@pytest.fixture
def no_real_signals(monkeypatch):
    """os.kill recorded instead of sent: a broken refusal must fail the test, not signal PID 1 or us."""
    sent = []
    monkeypatch.setattr(os, "kill", lambda pid, signum: sent.append((pid, signum)))
    return sent


def test_pid_1_holding_the_gpu_is_refused_with_its_reason_and_never_signalled(tmp_path, no_real_signals):
    proc = fake_proc(tmp_path, 1, "init")
    assert held_devices(1, ZERO, proc)  # it does hold the device: only the PID-1 rule stops the reaper
    result = ProcessReaper(ZERO, proc=proc, grace=0.01, poll=0.001).terminate(1, 4242)
    assert (result.outcome, result.reason) == ("refused", "never signal PID 1 (or lower)")
    assert result.holds_on  # it still holds the GPU: the engine must not go on to the unload
    assert refusal(1, proc) == "never signal PID 1 (or lower)"
    assert no_real_signals == []


def test_nvreload_itself_is_refused_with_its_reason_and_never_signalled(no_real_signals):
    result = ProcessReaper(DeviceMatcher(majors=frozenset(range(0, 512))), grace=0.01).terminate(os.getpid(), None)
    assert (result.outcome, result.reason) == ("refused", "never signal nvreload itself or its parent")
    assert no_real_signals == []


def test_a_kernel_thread_is_refused_with_its_reason_and_never_signalled(tmp_path, no_real_signals):
    pf_kthread = 0x00200000
    proc = fake_proc(tmp_path, 4000, "nv_queue", flags=pf_kthread)
    result = ProcessReaper(ZERO, proc=proc, grace=0.01, poll=0.001).terminate(4000, 4242)
    assert (result.outcome, result.reason) == ("refused", "pid 4000 (nv_queue) is a kernel thread")
    assert result.holds_on
    assert no_real_signals == []


def test_a_scan_split_over_forked_workers_finds_the_same_holders(procs):
    holders = [procs(HOLDER) for _ in range(3)]
    single = {p.pid for p in scan_gpu_holders(ZERO, workers=1)}
    forked = {p.pid for p in scan_gpu_holders(ZERO, workers=3)}
    assert {h.pid for h in holders} <= single
    assert forked == single


def test_a_failing_scan_worker_has_its_share_rescanned(procs, monkeypatch):
    import nvreload.host.processes as gp

    holders = [procs(HOLDER) for _ in range(4)]

    def broken(*args, **kwargs):
        raise RuntimeError("worker broke")

    monkeypatch.setattr(gp.json, "dumps", broken)  # every worker dies before writing its result
    found = {p.pid for p in scan_gpu_holders(ZERO, workers=2)}
    assert {h.pid for h in holders} <= found


def test_the_bulk_scan_with_its_path_cache_agrees_with_a_stat_of_every_descriptor(procs):
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
    holder = procs(
        f"import os, time; f = open({str(node)!r}, 'rb'); os.unlink({str(node)!r}); print('ready', flush=True); time.sleep(600)"
    )
    found = {p.pid: p.devices for p in scan_gpu_holders(ZERO, workers=1)}
    assert holder.pid in found and "(deleted)" in found[holder.pid][0]


# A name no other process on this machine has: stop_daemon signals every process of the name it is
# given, and a test must never signal a real nvidia-persistenced (or anyone else's process).
NAME = f"nvreload-test-daemon-{uuid.uuid4().hex[:8]}"
# ignores SIGTERM, then says so by creating the file named by its argument (the test waits for it:
# found in /proc right after exec, it has not yet set its handler)
IGNORES_SIGTERM_C = (
    "#include <fcntl.h>\n#include <signal.h>\n#include <unistd.h>\n"
    "int main(int c, char **v){signal(SIGTERM,SIG_IGN);if(c>1)close(open(v[1],O_CREAT|O_WRONLY,0600));for(;;)pause();}\n"
)


def daemon_binary(tmp_path, source=None):
    """A root-owned executable named like the daemon, in root's own directories: a copy of sleep,
    or a C program built from `source`."""
    directory = tmp_path / "sbin"
    directory.mkdir(mode=0o755, exist_ok=True)
    binary = directory / NAME
    if source is None:
        shutil.copy(shutil.which("sleep"), binary)
    else:
        (tmp_path / "daemon.c").write_text(source)
        subprocess.run(["gcc", "-o", str(binary), str(tmp_path / "daemon.c")], check=True)
    binary.chmod(0o755)
    return binary


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
    for daemon in find_daemons((NAME,)):  # only ours carry this name: what start_daemon started
        os.kill(daemon.pid, 9)
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_daemon_is_found_by_its_executable_with_its_command_line(cleanup, tmp_path):
    binary = daemon_binary(tmp_path)
    # argv[0] says something else: the executable, not the name a process gives itself, decides
    proc = subprocess.Popen(["bash", "-c", 'exec -a whatever "$0" 600', str(binary)], stdin=subprocess.DEVNULL)
    cleanup.append(proc)
    assert wait_for(lambda: any(d.pid == proc.pid for d in find_daemons((NAME,))))
    daemon = next(d for d in find_daemons((NAME,)) if d.pid == proc.pid)
    assert daemon.command == (str(binary), "600")


def fake_daemon_proc(root, pid, exe, cmdline):
    """A /proc tree holding one process of root's that runs `exe`, with the given cmdline bytes."""
    entry = root / str(pid)
    entry.mkdir(parents=True)
    (entry / "exe").symlink_to(exe)
    (entry / "status").write_text("Name:\tdaemon\nUid:\t0\t0\t0\t0\n")
    (entry / "stat").write_text(f"{pid} (daemon) S 1 {pid} {pid} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0\n")
    (entry / "cmdline").write_bytes(cmdline)
    return entry


def test_a_daemon_caught_mid_exec_is_recorded_with_the_arguments_it_gets_a_moment_later(tmp_path):
    """The kernel shows the new exe before it lays out the argument pages: cmdline reads empty for
    a moment. A command recorded then would start the daemon again without its arguments."""
    binary = f"/usr/bin/{NAME}"
    entry = fake_daemon_proc(tmp_path, 4242, binary, b"")
    import threading

    later = threading.Timer(0.03, lambda: (entry / "cmdline").write_bytes(f"{binary}\0--verbose\0".encode()))
    later.start()
    try:
        (daemon,) = find_daemons((NAME,), proc=str(tmp_path))
    finally:
        later.join()
    assert daemon.command == (binary, "--verbose")


def test_a_daemon_exec_d_with_no_arguments_at_all_is_recorded_by_its_executable(tmp_path):
    binary = f"/usr/bin/{NAME}"
    fake_daemon_proc(tmp_path, 4242, binary, b"")
    (daemon,) = find_daemons((NAME,), proc=str(tmp_path))
    assert daemon.command == (binary,)


def test_a_process_that_only_calls_itself_a_daemon_is_not_one(cleanup, tmp_path):
    # root's own sleep with argv[0] set to a daemon's path: /proc/<pid>/exe says sleep
    proc = subprocess.Popen(["bash", "-c", 'exec -a "$0" sleep 600', f"{tmp_path}/x/{NAME}"], stdin=subprocess.DEVNULL)
    cleanup.append(proc)
    assert wait_for(lambda: read_identity(proc.pid) is not None and read_identity(proc.pid).comm == "sleep")
    assert not any(d.pid == proc.pid for d in find_daemons((NAME,)))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another user")
def test_another_users_process_running_the_daemons_executable_is_never_one(cleanup, tmp_path):
    """An unprivileged user can run the real executable with arguments of their choosing: --start
    would run those as root. Only root's processes are daemons."""
    from helpers import as_nobody

    binary = daemon_binary(tmp_path)
    tmp_path.chmod(0o755)
    proc = subprocess.Popen([*as_nobody(), str(binary), "600"], stdin=subprocess.DEVNULL)
    cleanup.append(proc)
    assert wait_for(lambda: read_identity(proc.pid) is not None and read_identity(proc.pid).comm == NAME[:15])
    assert wait_for(lambda: open(f"/proc/{proc.pid}/status").read().count("65534") >= 2)
    assert not any(d.pid == proc.pid for d in find_daemons((NAME,)))
    assert stop_daemon(NAME, grace=0.5) == [] and proc.poll() is None  # and never signalled


def test_stop_then_start_by_recorded_command_brings_the_daemon_back(cleanup, tmp_path):
    binary = daemon_binary(tmp_path)
    proc = subprocess.Popen([str(binary), "600"], stdin=subprocess.DEVNULL)
    cleanup.append(proc)
    assert wait_for(lambda: any(d.pid == proc.pid for d in find_daemons((NAME,))))
    stopped = stop_daemon(NAME, grace=2)
    recorded = next(d.command for d in stopped if d.pid == proc.pid)
    assert proc.wait(timeout=5) == -15
    start_daemon(CommandRunner(), NAME, list(recorded), settle=0.2)
    again = [d for d in find_daemons((NAME,)) if d.command == recorded]
    assert again and again[0].pid != proc.pid


def test_a_daemon_that_ignores_sigterm_is_killed_after_the_grace(cleanup, tmp_path):
    binary = daemon_binary(tmp_path, IGNORES_SIGTERM_C)
    proc = subprocess.Popen([str(binary), str(tmp_path / "ready")], stdin=subprocess.DEVNULL)
    cleanup.append(proc)
    assert wait_for(lambda: (tmp_path / "ready").exists())
    assert wait_for(lambda: any(d.pid == proc.pid for d in find_daemons((NAME,))))
    stop_daemon(NAME, grace=0.5)
    assert proc.wait(timeout=5) == -9


def test_a_daemon_that_exits_at_once_did_not_come_back(tmp_path):
    binary = tmp_path / "sbin" / NAME
    binary.parent.mkdir(mode=0o755)
    shutil.copy(shutil.which("true"), binary)
    with pytest.raises(HostError, match="exited right after start"):
        start_daemon(CommandRunner(), NAME, [str(binary)], settle=0.3)


def test_a_recorded_command_that_is_not_the_daemons_executable_is_never_run(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(HostError, match="is not that daemon's executable"):
        start_daemon(CommandRunner(), NAME, ["/bin/sh", "-c", f"touch {marker}"], settle=0.1)
    assert not marker.exists()


@pytest.mark.parametrize("unsafe", ["writable", "foreign_directory", "foreign_link"])
def test_a_recorded_executable_that_others_control_is_never_run_as_root(tmp_path, unsafe):
    if os.geteuid() != 0:
        pytest.skip("ownership checks need root to give a file away")
    binary = daemon_binary(tmp_path)
    path = binary
    if unsafe == "writable":
        binary.chmod(0o777)
        expected = "not root's alone"
    elif unsafe == "foreign_directory":
        os.chown(binary.parent, 65534, 65534)
        expected = "is owned by uid 65534"
    else:
        links = tmp_path / "links"
        links.mkdir(mode=0o755)
        path = links / NAME
        path.symlink_to(binary)
        os.chown(path, 65534, 65534, follow_symlinks=False)
        expected = "is a symbolic link owned by uid 65534"
    with pytest.raises(HostError, match=expected):
        start_daemon(CommandRunner(), NAME, [str(path), "600"], settle=0.1)
    assert not any(d.command[0] == str(path) for d in find_daemons((NAME,)))


def test_no_recorded_command_is_an_error_not_a_guess():
    with pytest.raises(HostError, match="no recorded command line"):
        start_daemon(CommandRunner(), NAME, None)


def test_nvreloads_parent_is_refused_with_its_reason_and_never_signalled(no_real_signals):
    # the shell or sudo that started nvreload: it may well hold a GPU device (a CUDA REPL running it).
    # Asked from a forked child, whose parent is this test (a pytest started by setsid or as a
    # container's PID 1 has a parent of 1 or 0, refused for that first); the child inherits the
    # recording os.kill, and reports what it would have sent.
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            result = ProcessReaper(DeviceMatcher(majors=frozenset(range(0, 512))), grace=0.01).terminate(
                os.getppid(), None
            )
            os.write(write_end, json.dumps([result.outcome, result.reason, no_real_signals]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as report:
        outcome, reason, sent = json.loads(report.read())
    os.waitpid(child, 0)
    assert (outcome, reason) == ("refused", "never signal nvreload itself or its parent")
    assert sent == []


@pytest.mark.parametrize("pid", [0, -1, -4242])
def test_pid_0_and_negative_pids_are_refused_they_would_signal_whole_groups(pid, no_real_signals):
    # kill(0) signals our own process group, kill(-1) every process we may signal, kill(-N) group N
    result = ProcessReaper(ZERO, grace=0.01).terminate(pid, None)
    assert (result.outcome, result.reason) == ("refused", "never signal PID 1 (or lower)")
    assert no_real_signals == []


def test_a_pid_taken_by_another_process_during_the_grace_ends_the_wait_and_gets_no_sigkill(procs, monkeypatch):
    """The start time is checked again in the wait after SIGTERM, not only before it: a pid that now
    names another process (ours exited, the pid was reused) is never sent SIGKILL, and the wait ends."""
    import nvreload.host.processes as processes

    stubborn = procs(STUBBORN)
    real_identity, signalled = processes.read_identity, []
    original_kill = os.kill

    def kill(pid, signum):
        signalled.append(signum)
        original_kill(pid, signum)

    def identity(pid, proc="/proc"):
        ident = real_identity(pid, proc)
        if ident is not None and pid == stubborn.pid and signalled:  # after SIGTERM: a new process
            from dataclasses import replace

            return replace(ident, start_time=ident.start_time + 1)
        return ident

    monkeypatch.setattr(processes, "read_identity", identity)
    monkeypatch.setattr(os, "kill", kill)
    started = time.monotonic()
    result = ProcessReaper(ZERO, grace=5.0).terminate(stubborn.pid, real_identity(stubborn.pid).start_time)
    assert (result.outcome, result.reason) == ("terminated", "exited after SIGTERM")
    assert time.monotonic() - started < 4.0  # the wait saw it go; it did not sit out the grace
    assert signalled == [signal.SIGTERM] and stubborn.poll() is None  # it ignores SIGTERM: still there
