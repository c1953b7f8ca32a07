"""One rule of a reload step each, on the simulated node run in-process (or through the CLI where the
rule lives in the command): verify's failed checks, a refused kill, the MOFED wait, --force-display,
the archive check before anything stops, the journal of what was killed."""

import json

import pytest
from helpers import run_cli
from sim_helpers import assert_consistent, node_state, write_scenario

import nvreload.engine.engine as engine_module
from nvreload.engine.engine import Engine
from nvreload.engine.journal import Journal, JournalContext
from nvreload.engine.planner import build_plan
from nvreload.engine.sim import SimulatedNode, default_scenario
from nvreload.errors import ExitCode
from nvreload.host.processes import Termination
from nvreload.model import Check


def reload_in_process(tmp_path, node, peermem_wait=300.0):
    view = node.observe()
    plan = build_plan(view, node.configured_parameters())
    journal = Journal.start(
        str(tmp_path / "journal.json"), "reload", [], JournalContext(node.name, None, None, view.loaded_version)
    )
    return Engine(node, journal, peermem_wait=peermem_wait).reload(plan), journal


def scenario(**changes) -> dict:
    data = default_scenario()
    data.update(changes)
    return data


# verify ------------------------------------------------------------------------------------------
class VerifyAnswers(SimulatedNode):
    """A node whose verify returns these checks (it does not raise: a failed check is a value)."""

    checks: list[Check] = []

    def verify(self, expected_persistence):
        return list(self.checks)


def test_a_failed_critical_check_fails_the_verify_step_and_the_run_says_which(tmp_path):
    node = VerifyAnswers(scenario(), str(tmp_path))
    node.checks = [
        Check("nvml", True, "NVML ok"),
        Check("cuda_context", False, "cuInit failed: CUDA_ERROR_NO_DEVICE (100)"),
    ]
    report, journal = reload_in_process(tmp_path, node)
    assert report.result == "failed" and report.exit_code == ExitCode.NEEDS_REBOOT
    assert report.error == "verify: cuda_context: cuInit failed: CUDA_ERROR_NO_DEVICE (100)"
    assert [(s["name"], s["status"]) for s in report.steps][-1] == ("verify", "failed")
    assert journal.state == "failed"


def test_a_failed_warning_check_does_not_fail_the_verify_step(tmp_path):
    node = VerifyAnswers(scenario(), str(tmp_path))
    node.checks = [Check("persistence", False, "0000:3b:00.0: persistence mode off (was on)", severity="warning")]
    report, _ = reload_in_process(tmp_path, node)
    assert report.result == "reloaded", report.error


# a kill that may not be sent -------------------------------------------------------------------------
def test_a_gpu_holder_that_may_not_be_signalled_fails_the_step_with_the_reason_and_nothing_is_unloaded(tmp_path):
    processes = default_scenario()["processes"] + [{"pid": 1, "start_time": 1, "comm": "init", "holds": ["nvidia"]}]
    node = SimulatedNode(scenario(processes=processes), str(tmp_path))
    report, journal = reload_in_process(tmp_path, node)
    assert report.result == "rolled_back" and report.exit_code == ExitCode.ROLLED_BACK
    assert report.error == "stop_consumers: pid 1 (init): refused: never signal PID 1 (or lower)"
    assert [s["name"] for s in report.steps] == ["stop_consumers"]
    assert not journal.outstanding("unload_module") and not [r for r in journal.undo if r.kind == "unload_module"]
    assert_consistent(node.s)


class KernelThreadHolder(SimulatedNode):
    def terminate_process(self, pid, start_time):
        if pid == 4242:
            return Termination(4242, "refused", "pid 4242 (nv_queue) is a kernel thread", holds_on=True)
        return super().terminate_process(pid, start_time)


def test_a_kernel_thread_among_the_holders_fails_the_step_with_the_reason(tmp_path):
    node = KernelThreadHolder(scenario(), str(tmp_path))
    report, _ = reload_in_process(tmp_path, node)
    assert report.result == "rolled_back"
    assert report.error == "stop_consumers: pid 4242 (python3): refused: pid 4242 (nv_queue) is a kernel thread"


def test_each_planned_kill_is_journaled_and_reported_with_its_outcome(tmp_path):
    node = SimulatedNode(scenario(), str(tmp_path))
    report, journal = reload_in_process(tmp_path, node)
    assert report.result == "reloaded", report.error
    expected = [{"pid": 4242, "comm": "python3", "outcome": "terminated: exited after SIGTERM"}]
    assert journal.killed == expected and report.killed == expected
    assert json.loads((tmp_path / "journal.json").read_text())["killed"] == expected


# MOFED -------------------------------------------------------------------------------------------------
class Clock:
    """The engine's clock, moved only by the node's sleep: waits are counted, never timed."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


class MofedLater(SimulatedNode):
    """MOFED becomes ready after `ready_after` one-second polls (never, with None)."""

    ready_after: int | None = None
    clock: Clock

    def mofed_ready(self):
        return self.ready_after is not None and self.polls >= self.ready_after

    def sleep(self, seconds):
        self.polls = getattr(self, "polls", 0) + 1
        self.clock.now += seconds


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(engine_module, "time", clock)
    return clock


def test_peermem_waits_for_mofed_up_to_the_limit_once_per_run(tmp_path, clock):
    # verify fails, so the rollback loads the set again: peermem must not wait a second time
    node = MofedLater(scenario(faults=[{"at": "verify", "error": "injected failure in verify"}]), str(tmp_path))
    node.clock, node.ready_after, node.polls = clock, None, 0
    report, _ = reload_in_process(tmp_path, node, peermem_wait=5)
    assert node.polls == 5  # 5 one-second polls: the whole --peermem-wait, and only once
    peermem = [w["warning"] for w in report.warnings if w["module"] == "nvidia_peermem"]
    assert peermem and all("MOFED not ready after 5 s" in w for w in peermem)


def test_peermem_loads_once_mofed_becomes_ready_within_the_wait(tmp_path, clock):
    node = MofedLater(scenario(), str(tmp_path))
    node.clock, node.ready_after, node.polls = clock, 3, 0
    report, _ = reload_in_process(tmp_path, node, peermem_wait=300)
    assert report.result == "reloaded" and report.warnings == []
    assert node.polls == 3 and "nvidia_peermem" in node.s["loaded"]


# the command: --force-display, the archive check --------------------------------------------------------
def with_display_server(tmp_path) -> str:
    data = json.loads(open(write_scenario(tmp_path)).read())
    data["processes"].append({"pid": 900, "start_time": 5, "comm": "Xorg", "holds": ["nvidia", "nvidia_modeset"]})
    path = tmp_path / "display.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_a_display_server_is_refused_without_force_display_and_nothing_is_touched(tmp_path):
    state = tmp_path / "state"
    proc = run_cli(
        "--reload",
        "--simulate",
        with_display_server(tmp_path),
        "--yes",
        "--json",
        env={"NVRELOAD_STATE_DIR": str(state)},
    )
    assert proc.returncode == ExitCode.REFUSED and "display_server_active" in proc.stderr
    assert not (state / "journal.json").exists()
    assert all(sv["active"] for sv in node_state(state)["services"])


def test_force_display_reloads_despite_the_display_server_and_ends_it_like_any_holder(tmp_path):
    state = tmp_path / "state"
    proc = run_cli(
        "--reload",
        "--simulate",
        with_display_server(tmp_path),
        "--yes",
        "--json",
        "--force-display",
        env={"NVRELOAD_STATE_DIR": str(state)},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["result"] == "reloaded"
    assert {"pid": 900, "comm": "Xorg", "outcome": "terminated: exited after SIGTERM"} in report["killed"]


def test_a_truncated_installer_is_refused_before_anything_is_stopped(tmp_path, installer):
    data = installer.read_bytes()
    installer.write_bytes(data[: len(data) - 64])  # a download cut short: makeself's checksum fails
    state = tmp_path / "state"
    proc = run_cli(
        "--reload", "--simulate", "--yes", "--json", "--driver", str(installer), env={"NVRELOAD_STATE_DIR": str(state)}
    )
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stdout + proc.stderr
    assert "fails its integrity check" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (state / "journal.json").exists()
