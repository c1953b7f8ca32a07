"""The rolling reload for real: a real `ansible-playbook` runs packaging/ansible/rolling_reload.yml
over SSH against nodes this test session creates (tests/realengine/fleet.py: each node its own
network namespace, host name, sshd and slurmd of one slurmctld cluster), each node running
nvreload on its own simulated node (its own state directory)."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from importlib import resources
from pathlib import Path

import jsonschema
import pytest

pytestmark = pytest.mark.fleet

PLAYBOOK = Path(__file__).resolve().parents[2] / "packaging" / "ansible" / "rolling_reload.yml"
SCHEMA = json.loads(resources.files("nvreload").joinpath("schema/fleet-report.schema.json").read_text())
DEFAULT_SCENARIO = json.loads(resources.files("nvreload").joinpath("scenarios/default.json").read_text())
NODES = ["fleet1", "fleet2", "fleet3", "fleet4"]
UNLOAD_FAILS = [{"at": "unload_modules", "error": "rmmod: ERROR: Module nvidia is in use", "times": -1}]


@pytest.fixture
def fleet(fleet_testbed):
    fleet_testbed.reset()
    return fleet_testbed


class Rollout:
    """One fleet's inventory and its rollouts' records, under the test's temp dir."""

    def __init__(self, testbed, tmp_path: Path, hosts: list[str] = NODES, **policy) -> None:
        self.testbed = testbed
        self.tmp_path = tmp_path
        self.run_root = tmp_path / "runs"
        self.hosts = hosts
        self.policy = {"nvreload_max_unavailable": "50%", "nvreload_drain_timeout": 120, **policy}
        self.host_vars: dict[str, dict] = {h: {} for h in hosts}

    def fail_on(self, host: str, faults: list) -> None:
        data = json.loads(json.dumps(DEFAULT_SCENARIO))
        data["faults"] = faults
        path = self.tmp_path / f"scenario-{host}.json"
        path.write_text(json.dumps(data))
        self.host_vars[host]["nvreload_simulate_scenario"] = str(path)

    def inventory(self) -> Path:
        python = [sys.executable, "-m", "nvreload.fleet"]
        group_vars = {
            "nvreload_become": False,
            "nvreload_simulate": True,
            "nvreload_fleet_command": python,
            "nvreload_fleet_controller_command": python,
        }
        host_vars = {
            node.name: {**self.host_vars[node.name], "nvreload_environment": node.env}
            for node in self.testbed.nodes
            if node.name in self.hosts
        }
        return self.testbed.write_inventory(
            self.tmp_path / "inventory.yml", hosts=self.hosts, group_vars=group_vars, host_vars=host_vars
        )

    def args(self) -> list[str]:
        return ["-e", json.dumps({**self.policy, "nvreload_run_root": str(self.run_root)})]

    def run(self):
        return self.testbed.ansible_playbook(PLAYBOOK, self.inventory(), *self.args(), timeout=600)

    def start(self, output: Path | None = None):
        return self.testbed.start_playbook(PLAYBOOK, self.inventory(), *self.args(), output=output)

    def plans(self) -> list[dict]:
        """The plans made so far, oldest first."""
        paths = sorted(self.run_root.glob("*/plan.json"), key=lambda p: p.stat().st_mtime)
        return [json.loads(p.read_text()) for p in paths]

    def report(self) -> dict:
        reports = sorted(self.run_root.glob("*/fleet-report.json"), key=lambda p: p.stat().st_mtime)
        assert reports, f"no fleet report under {self.run_root}"
        report = json.loads(reports[-1].read_text())
        jsonschema.validate(report, SCHEMA)
        return report

    def states(self) -> dict[str, str]:
        return {n["host"]: n["state"] for n in self.report()["nodes"]}

    def node(self, host: str) -> dict:
        return next(n for n in self.report()["nodes"] if n["host"] == host)


def journal_of(testbed, host: str) -> Path:
    return Path(next(n for n in testbed.nodes if n.name == host).state_dir) / "journal.json"


def idle_and_not_drained(testbed, host: str) -> bool:
    state, _ = testbed.node_state(host)
    return "DRAIN" not in state and state.startswith(("IDLE", "MIXED", "ALLOCATED"))


def test_every_node_is_reloaded_the_canary_first_and_each_is_resumed(fleet, tmp_path):
    rollout = Rollout(fleet, tmp_path)
    started = time.monotonic()
    done = rollout.run()
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert rollout.states() == {h: "reloaded" for h in NODES}
    for host in NODES:
        node = rollout.node(host)
        assert (node["driver_before"], node["driver_after"]) == ("550.90.07", "550.127.08")
        assert node["drained_by_run"] is True and node["journal"] == str(journal_of(fleet, host))
        assert idle_and_not_drained(fleet, host), fleet.node_state(host)
    # the canary ran alone: its batch held one node (Ansible prints each batch as its own play run)
    assert done.stdout.count("PLAY [Reload, the canary first, then batch after batch]") == 4
    print(f"\n4-node rolling run: {elapsed:.1f} s")


def test_a_failed_canary_halts_the_rollout_and_no_other_node_is_touched(fleet, tmp_path):
    rollout = Rollout(fleet, tmp_path)
    rollout.fail_on("fleet1", UNLOAD_FAILS)
    done = rollout.run()
    assert done.returncode != 0
    report = rollout.report()
    assert report["result"] == "failed" and "the canary failed (fleet1)" in report["halted"]
    assert rollout.states() == {
        "fleet1": "rolled_back",
        "fleet2": "not_attempted",
        "fleet3": "not_attempted",
        "fleet4": "not_attempted",
    }
    for host in ("fleet2", "fleet3", "fleet4"):
        assert not journal_of(fleet, host).exists(), f"{host} was touched"
        assert idle_and_not_drained(fleet, host)
    state, reason = fleet.node_state("fleet1")
    assert "DRAIN" in state and reason.startswith("nvreload: driver reload failed, rolled back (run ")


def test_a_failure_in_batch_two_halts_later_batches_and_leaves_only_that_node_drained(fleet, tmp_path):
    rollout = Rollout(fleet, tmp_path)
    rollout.fail_on("fleet2", UNLOAD_FAILS)
    done = rollout.run()
    assert done.returncode != 0
    report = rollout.report()
    print("\n" + done.stdout[done.stdout.rfind('"NODE') :][:2000])
    assert rollout.states() == {
        "fleet1": "reloaded",
        "fleet2": "rolled_back",
        "fleet3": "not_attempted",
        "fleet4": "not_attempted",
    }
    assert "fleet2" in report["halted"] and report["totals"]["not_attempted"] == 2
    failed = rollout.node("fleet2")
    assert "Module nvidia is in use" in failed["error"]
    state, reason = fleet.node_state("fleet2")
    assert "DRAIN" in state and reason.startswith("nvreload: driver reload failed") and failed["run_id"] in reason
    assert idle_and_not_drained(fleet, "fleet1")
    for host in ("fleet3", "fleet4"):
        assert not journal_of(fleet, host).exists() and idle_and_not_drained(fleet, host)


def test_a_node_running_a_job_waits_for_it_and_then_reloads(fleet, tmp_path):
    job = fleet.submit("fleet1", 20)  # still running when the canary's turn comes
    fleet.wait_job(job, {"RUNNING"})
    rollout = Rollout(fleet, tmp_path, hosts=["fleet1", "fleet2"])
    done = rollout.run()
    assert done.returncode == 0, done.stdout[-4000:]
    assert fleet.job_state(job) == "COMPLETED"  # it ran to its end: nothing killed it
    node = rollout.node("fleet1")
    assert node["state"] == "reloaded" and any(job in note for note in node["notes"]), node
    assert idle_and_not_drained(fleet, "fleet1")


def test_a_node_an_admin_drained_is_reloaded_and_stays_drained(fleet, tmp_path):
    fleet.drain("fleet3", "admin: PSU swap")
    rollout = Rollout(fleet, tmp_path)
    done = rollout.run()
    assert done.returncode == 0, done.stdout[-4000:]
    node = rollout.node("fleet3")
    assert node["state"] == "left_drained" and node["drained_by_run"] is False
    state, reason = fleet.node_state("fleet3")
    assert "DRAIN" in state and reason.startswith("admin: PSU swap")
    assert all(idle_and_not_drained(fleet, h) for h in ("fleet1", "fleet2", "fleet4"))


def test_an_unreachable_node_is_counted_and_listed_and_the_others_are_reloaded(fleet, tmp_path):
    fleet.make_unreachable("fleet4")
    rollout = Rollout(fleet, tmp_path)
    done = rollout.run()
    assert done.returncode != 0  # Ansible says a host was unreachable
    report = rollout.report()
    assert rollout.states()["fleet4"] == "unreachable" and report["result"] == "incomplete"
    assert [rollout.states()[h] for h in ("fleet1", "fleet2", "fleet3")] == ["reloaded"] * 3


def test_a_rerun_after_the_controller_was_killed_mid_batch_finishes_and_a_second_rerun_changes_nothing(fleet, tmp_path):
    job = fleet.submit("fleet2", 600)  # ends when this test cancels it: fleet2's reload waits for it until then
    fleet.wait_job(job, {"RUNNING"})
    rollout = Rollout(fleet, tmp_path)
    controller = rollout.start()
    deadline = time.monotonic() + 180
    while "DRAIN" not in fleet.node_state("fleet2")[0]:  # fleet2's reload began: it waits for the job
        assert controller.poll() is None and time.monotonic() < deadline, "the rollout never reached fleet2"
        time.sleep(0.5)
    os.killpg(controller.pid, signal.SIGKILL)  # the controller dies; the node's reload goes on
    controller.wait()

    output = tmp_path / "rerun.log"
    rerun = rollout.start(output)
    deadline = time.monotonic() + 180
    while len(rollout.plans()) < 2:  # the rerun's preflight is done once it has planned
        assert rerun.poll() is None and time.monotonic() < deadline, output.read_text()[-4000:]
        time.sleep(0.5)
    planned = rollout.plans()[-1]["nodes"]["fleet2"]
    # the rerun found fleet2 still held by the dead controller's reload, drained by nvreload
    assert (planned["verdict"], planned["busy"], planned["drained_by"]) == ("reload", True, "nvreload")
    assert planned["earlier_run"]  # the dead controller's reload, by its journal's run id
    fleet.cancel(job)  # the job ends: the orphaned reload goes on while the rerun waits for it
    assert rerun.wait(timeout=600) == 0, output.read_text()[-4000:]
    assert rollout.states() == {
        "fleet1": "skipped_healthy",
        "fleet2": "reloaded",
        "fleet3": "reloaded",
        "fleet4": "reloaded",
    }
    # the report counts that reload, by its journal: its run id, its figures
    fleet2 = rollout.node("fleet2")
    assert f"the earlier run {planned['earlier_run']} finished the reload" in fleet2["notes"]
    assert (fleet2["driver_before"], fleet2["driver_after"]) == ("550.90.07", "550.127.08")
    assert fleet2["drained_by_run"] is True and fleet2["journal"] == str(journal_of(fleet, "fleet2"))
    assert all(idle_and_not_drained(fleet, h) for h in NODES)
    journals = {h: journal_of(fleet, h).read_bytes() for h in NODES}

    again = rollout.run()
    assert again.returncode == 0, again.stdout[-4000:]
    assert rollout.states() == {h: "skipped_healthy" for h in NODES}
    assert {h: journal_of(fleet, h).read_bytes() for h in NODES} == journals  # no node was acted on
