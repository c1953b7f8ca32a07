"""A run stopped where an operator or a machine stops it: a signal inside any step of --reset, a
crash between an action's undo record and the action, a state directory whose disk fills up, and
persistence mode on every path that loads the modules. Each ends fully reloaded, reset or restored,
and the journal says which."""

import json
import os
import signal
import subprocess
import time

import pytest
from helpers import run_cli, start_cli
from sim_helpers import assert_consistent, node_state, write_scenario

from nvreload.engine.engine import Engine
from nvreload.engine.journal import Journal, JournalContext
from nvreload.engine.planner import build_plan
from nvreload.engine.sim import SimulatedNode, default_scenario
from nvreload.errors import ExitCode, RefusedError

HEALTHY = {"loaded_version": "550.127.08", "installed_version": "550.127.08"}


def wait_for_step(state, name, status="running", seconds=30.0):
    """Until the journal shows step `name` in `status` (the document is rewritten at boundaries)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            steps = json.loads((state / "journal.json").read_text())["steps"]
        except (OSError, ValueError, KeyError):
            steps = []
        if steps and steps[-1]["name"] == name and steps[-1]["status"] == status:
            return
        time.sleep(0.01)
    raise AssertionError(f"step {name} never reached {status}")


def persistence_as_before(node):
    return all(g.get("persistence_now") == g.get("persistence", False) for g in node["gpus"])


# 6. an interrupted --reset brings the consumers back ---------------------------------------------
@pytest.mark.parametrize(
    "step,result,code",
    [
        ("stop_consumers", "rolled_back", ExitCode.ROLLED_BACK),
        ("reset_gpus", "rolled_back", ExitCode.ROLLED_BACK),
        ("restart_consumers", "reset", ExitCode.OK),
    ],
)
def test_sigterm_inside_any_step_of_a_reset_brings_every_consumer_and_persistence_back(tmp_path, step, result, code):
    latency = {"stop_service": 0.4, "reset_gpu": 0.4, "start_service": 0.4}
    scenario = write_scenario(tmp_path, driver=HEALTHY, latency=latency)
    state = tmp_path / "state"
    proc = start_cli("--reset", "--simulate", scenario, "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    wait_for_step(state, step)
    time.sleep(0.2)  # inside the step: its first action is under way
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err, err
    report = json.loads(out)
    assert (report["result"], proc.returncode) == (result, code), report
    assert "SIGTERM" in report["error"]
    if step == "reset_gpus":
        assert report["remaining_action"] == "nvreload --reset"  # not every GPU was reset
    node = node_state(state)
    assert_consistent(node)
    assert persistence_as_before(node)
    assert json.loads((state / "journal.json").read_text())["state"] == result
    start = run_cli("--start", "--simulate", "--json", "--yes", env={"NVRELOAD_STATE_DIR": str(state)})
    assert json.loads(start.stdout)["result"] == "nothing_to_do"  # nothing was left for --start


# 10. a crash between an action's undo record and the action --------------------------------------
@pytest.mark.parametrize(
    "action,step,skip,expected",
    [
        ("reload", "stop_consumers", 2, "rolled_back"),
        ("reload", "unload_modules", 1, "reloaded"),  # the old modules are gone from disk: forward
        ("reload", "load_modules", 2, "reloaded"),
        ("reload", "restart_consumers", 1, "reloaded"),
        ("reset", "stop_consumers", 1, "rolled_back"),
        ("reset", "reset_gpus", 3, "rolled_back"),
        ("reset", "restart_consumers", 2, "reset"),
        ("stop", "stop_consumers", 2, "started"),
    ],
)
def test_a_crash_inside_a_step_after_the_undo_record_is_finished_by_rollback(tmp_path, action, step, skip, expected):
    driver = HEALTHY if action == "reset" else default_scenario()["driver"]
    scenario = write_scenario(tmp_path, driver=driver, faults=[{"at": step, "crash": "during", "skip": skip}])
    state = tmp_path / "state"
    env = {"NVRELOAD_STATE_DIR": str(state)}
    proc = run_cli(f"--{action}", "--simulate", scenario, "--yes", "--json", env=env)
    assert proc.returncode == -9, (proc.returncode, proc.stdout, proc.stderr)
    journal = json.loads((state / "journal.json").read_text())
    assert journal["steps"][-1] == {**journal["steps"][-1], "name": step, "status": "running"}
    back = run_cli("--rollback", "--simulate", "--json", env=env)
    assert "Traceback" not in back.stderr, back.stderr
    assert json.loads(back.stdout)["result"] == expected, back.stdout
    node = node_state(state)
    assert_consistent(node, reloaded=expected == "reloaded")
    assert persistence_as_before(node)
    assert json.loads((state / "journal.json").read_text())["state"] == expected


def test_a_container_stopped_by_a_killed_run_gets_its_always_restart_policy_back_from_rollback(tmp_path):
    # the stop lowers "always" to "unless-stopped" (so the engine does not start it again at once);
    # the rollback rebuilds the stop from its journal record, which must carry the policy it had
    scenario = write_scenario(tmp_path, faults=[{"at": "stop_consumers", "crash": "after"}])
    env = {"NVRELOAD_STATE_DIR": str(tmp_path / "s")}
    always = [c["name"] for c in default_scenario()["containers"] if c.get("restart_policy") == "always"]
    assert always
    assert run_cli("--reload", "--simulate", scenario, "--yes", env=env).returncode == -9
    lowered = {c["name"]: c.get("restart_policy") for c in node_state(tmp_path / "s")["containers"]}
    assert all(lowered[name] != "always" for name in always), lowered
    back = run_cli("--rollback", "--simulate", "--json", env=env)
    assert json.loads(back.stdout)["result"] == "rolled_back", back.stdout
    policies = {c["name"]: c.get("restart_policy") for c in node_state(tmp_path / "s")["containers"]}
    assert all(policies[name] == "always" for name in always), policies


# 8. persistence mode on every path that loads the modules ---------------------------------------
def legacy_persistence(tmp_path, **changes):
    """Persistence mode set with `nvidia-smi -pm 1`, no nvidia-persistenced to set it again: only the
    run can put it back, from what NVML said before the run (it answers: the versions agree)."""
    scenario = default_scenario()
    services = [s for s in scenario["services"] if s["name"] != "nvidia-persistenced.service"]
    processes = [p for p in scenario["processes"] if p.get("unit") != "nvidia-persistenced.service"]
    return write_scenario(tmp_path, **({"driver": HEALTHY, "services": services, "processes": processes} | changes))


def test_a_fault_at_load_modules_rolled_back_turns_persistence_back_on(tmp_path):
    scenario = legacy_persistence(tmp_path, faults=[{"at": "load_modules", "error": "modprobe: ERROR", "times": 1}])
    proc = run_cli(
        "--reload", "--simulate", scenario, "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(tmp_path / "s")}
    )
    report = json.loads(proc.stdout)
    assert report["result"] == "rolled_back", report
    node = node_state(tmp_path / "s")
    assert all(g["persistence_now"] for g in node["gpus"]), [g["persistence_now"] for g in node["gpus"]]


def test_a_fault_at_load_modules_finished_forward_leaves_persistence_as_the_daemon_sets_it(tmp_path):
    # the default node: a version mismatch (NVML cannot tell persistence), nvidia-persistenced running
    scenario = write_scenario(tmp_path, faults=[{"at": "load_modules", "error": "modprobe: ERROR", "times": 1}])
    proc = run_cli(
        "--reload", "--simulate", scenario, "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(tmp_path / "s")}
    )
    report = json.loads(proc.stdout)
    assert report["result"] == "reloaded", report
    node = node_state(tmp_path / "s")
    assert all(g["persistence_now"] for g in node["gpus"]), [g["persistence_now"] for g in node["gpus"]]


def test_a_failed_verify_rolled_back_to_the_same_version_turns_persistence_back_on(tmp_path):
    scenario = legacy_persistence(tmp_path, faults=[{"at": "verify", "error": "cuInit failed", "times": 1}])
    proc = run_cli(
        "--reload", "--simulate", scenario, "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(tmp_path / "s")}
    )
    report = json.loads(proc.stdout)
    assert report["result"] == "failed" and "verify" in report["error"]
    assert persistence_as_before(node_state(tmp_path / "s"))


def test_a_run_killed_after_the_load_gets_persistence_back_from_rollback(tmp_path):
    scenario = legacy_persistence(tmp_path, faults=[{"at": "load_modules", "crash": "after"}])
    env = {"NVRELOAD_STATE_DIR": str(tmp_path / "s")}
    assert run_cli("--reload", "--simulate", scenario, "--yes", env=env).returncode == -9
    assert not any(g["persistence_now"] for g in node_state(tmp_path / "s")["gpus"])  # a new driver instance
    back = run_cli("--rollback", "--simulate", "--json", env=env)
    assert json.loads(back.stdout)["result"] == "rolled_back", back.stdout
    assert persistence_as_before(node_state(tmp_path / "s"))


# 7. a full disk ---------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A real filesystem of 2 MiB (tmpfs), so that writes really fail with ENOSPC."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory, leave=0):
    """Fill the filesystem until `leave` bytes or fewer are free."""
    with open(directory / f"filler-{time.monotonic_ns()}", "wb") as handle:
        chunk = bytes(64 << 10)
        while os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize > leave + len(chunk):
            handle.write(chunk)
            handle.flush()
        try:
            while os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize > leave:
                handle.write(bytes(4096))
                handle.flush()
        except OSError:
            pass


def test_a_disk_too_full_for_the_journal_refuses_the_run_before_anything_stops(tmp_path, small_disk):
    env = {"NVRELOAD_STATE_DIR": str(small_disk)}
    fill(small_disk, leave=256 << 10)  # room for the node's own file, none for the journal's reserve
    proc = run_cli("--reload", "--simulate", "--yes", env=env)
    assert proc.returncode == ExitCode.REFUSED, proc.stderr
    assert "has no room for the run's journal" in proc.stderr and "nothing was changed" in proc.stderr
    after = node_state(small_disk)
    assert_consistent(after)
    assert after["loaded_version"] == default_scenario()["driver"]["loaded_version"]  # not reloaded
    assert not (small_disk / "journal.json").exists()


class FillsTheDisk(SimulatedNode):
    """The simulated node, whose journal lives on `disk`, which fills up at one step boundary."""

    disk = None
    at = ("stop_consumers", "after")
    take_the_reserve = False

    def at_boundary(self, step, phase):
        if (step, phase) == self.at:
            if self.take_the_reserve:  # an operator's cleanup, or another writer, took it first
                os.unlink(self.disk / "journal.json.reserve")
            fill(self.disk)
        super().at_boundary(step, phase)


def reload_with_journal_on(disk, tmp_path, **node):
    target = FillsTheDisk(default_scenario(), str(tmp_path / "node"))
    for key, value in node.items():
        setattr(target, key, value)
    target.disk = disk
    view = target.observe()
    plan = build_plan(view, target.configured_parameters())
    journal = Journal.start(
        str(disk / "journal.json"), "reload", [], JournalContext(target.name, None, None, view.loaded_version)
    )
    return Engine(target, journal).reload(plan), journal, target


def test_a_disk_that_fills_mid_run_gives_back_the_reserve_and_the_run_finishes(tmp_path, small_disk):
    report, journal, target = reload_with_journal_on(small_disk, tmp_path)
    assert report.result == "reloaded", report.error
    assert not (small_disk / "journal.json.reserve").exists()  # given back, then used
    assert json.loads((small_disk / "journal.json").read_text())["state"] == "reloaded"
    assert_consistent(target.s, reloaded=True)


def test_a_journal_write_that_fails_even_so_rolls_back_and_says_why(tmp_path, small_disk):
    report, journal, target = reload_with_journal_on(small_disk, tmp_path, take_the_reserve=True)
    assert (report.result, report.exit_code) == ("rolled_back", ExitCode.ROLLED_BACK)
    assert "cannot write the journal" in report.error and "No space left on device" in report.error
    assert_consistent(target.s)  # nothing unloaded, every consumer back
    assert journal.write_error is not None


def test_rollback_on_a_full_disk_still_puts_the_node_back(tmp_path, small_disk):
    env = {"NVRELOAD_STATE_DIR": str(small_disk)}
    scenario = write_scenario(tmp_path, faults=[{"at": "stop_consumers", "crash": "after"}])
    assert run_cli("--reload", "--simulate", scenario, "--yes", env=env).returncode == -9
    os.unlink(small_disk / "journal.json.reserve")
    fill(small_disk, leave=64 << 10)  # the simulated node's own file still fits; the journal does not
    back = run_cli("--rollback", "--simulate", "--json", env=env)
    assert "Traceback" not in back.stderr, back.stderr
    report = json.loads(back.stdout)
    assert (report["result"], back.returncode) == ("rolled_back", ExitCode.ROLLED_BACK)
    assert_consistent(node_state(small_disk))


def test_the_reserve_is_taken_before_the_journal_and_given_back_when_the_run_ends(tmp_path):
    journal = Journal.start(str(tmp_path / "journal.json"), "reload", [{"x": 1}], JournalContext("simulated"))
    assert os.path.getsize(tmp_path / "journal.json.reserve") >= 1 << 20
    journal.finish("reloaded", {})
    assert not (tmp_path / "journal.json.reserve").exists()


def test_a_reserve_that_cannot_be_taken_is_a_refusal(tmp_path, small_disk):
    fill(small_disk, leave=4096)
    with pytest.raises(RefusedError, match="has no room for the run's journal"):
        Journal.start(str(small_disk / "journal.json"), "reload", [], JournalContext("simulated"))
    assert not (small_disk / "journal.json").exists() and not (small_disk / "journal.json.reserve").exists()


def test_a_signal_while_the_stops_start_their_threads_waits_for_every_stop_under_way(tmp_path, monkeypatch):
    """SIGTERM delivered inside ThreadPoolExecutor.submit (right after a worker thread starts, before
    the pool records it): raised there, the pool would not wait for that worker, which then stopped
    a container after the rollback had restarted the others (the harness's case 88, under load)."""
    import threading

    real_start = threading.Thread.start
    sent = []

    def start_then_signal(thread):
        real_start(thread)
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)  # to this test's own process: the engine's handler

    scenario = default_scenario()
    scenario["latency"] = {"stop_container": 0.3}
    node = SimulatedNode(scenario, str(tmp_path / "node"))
    view = node.observe()
    plan = build_plan(view, node.configured_parameters())
    journal = Journal.start(
        str(tmp_path / "journal.json"), "reload", [], JournalContext(node.name, None, None, view.loaded_version)
    )
    monkeypatch.setattr(threading.Thread, "start", start_then_signal)
    report = Engine(node, journal).reload(plan)
    monkeypatch.undo()
    time.sleep(0.5)  # a worker left behind would stop its container now
    assert (report.result, report.error) == ("rolled_back", "interrupted by SIGTERM")
    assert_consistent(node.s)
    assert [c["running"] for c in node_state(tmp_path / "node")["containers"]] == [True, True, True]
    undo = Journal.load(str(tmp_path / "journal.json")).undo
    assert {r.state for r in undo if r.kind == "stop_container"} == {"undone"}
