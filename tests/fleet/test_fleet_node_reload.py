"""One node's part of a rollout (`nvreload-fleet reload`) against nvreload's simulated node, with
nvreload itself run as a subprocess, as on a fleet node. Slurm's side is in the fleet cases
(tests/fleet/test_rolling_reload.py)."""

import fcntl
import hashlib
import json
import os
import threading
import time
from importlib import resources

import pytest

from nvreload.fleet.node_reload import ReloadRequest, reload_node
from nvreload.fleet.node_side import NodeTools

DEFAULT_SCENARIO = json.loads(resources.files("nvreload").joinpath("scenarios/default.json").read_text())

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="nvreload-fleet runs as root on a node")


@pytest.fixture
def node(tmp_path, monkeypatch):
    monkeypatch.setenv("NVRELOAD_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def scenario(tmp_path, faults: list) -> str:
    data = json.loads(json.dumps(DEFAULT_SCENARIO))
    data["faults"] = faults
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_a_node_with_a_version_mismatch_is_reloaded_and_verified_against_its_installed_driver(node):
    run = reload_node(NodeTools(True, None), ReloadRequest(60))
    assert run.outcome == "reloaded", run
    assert (run.driver_before, run.driver_after, run.wanted_version) == ("550.90.07", "550.127.08", "550.127.08")
    assert run.journal == str(node / "state" / "journal.json") and run.run_id


def test_a_target_version_the_node_has_not_installed_blocks_it_instead_of_a_reload_to_the_wrong_one(node):
    run = reload_node(NodeTools(True, None), ReloadRequest(60, target_version="550.127.08"))
    assert run.outcome == "reloaded"
    again = reload_node(NodeTools(True, None), ReloadRequest(60, target_version="560.35.03"))
    # 560 is not installed: blocked before anything is touched, not reloaded to the wrong version
    assert again.outcome == "skipped_blocked" and "560.35.03 wanted" in (again.error or "")


def test_a_node_that_needs_nothing_is_left_alone(node):
    reload_node(NodeTools(True, None), ReloadRequest(60))
    journal = (node / "state" / "journal.json").read_text()
    run = reload_node(NodeTools(True, None), ReloadRequest(60))
    assert run.outcome == "skipped_healthy" and run.exit_code is None
    assert (node / "state" / "journal.json").read_text() == journal  # no second run


def test_a_reload_that_fails_is_rolled_back_and_says_why(node):
    tools = NodeTools(
        True,
        None,
        scenario(node, [{"at": "unload_modules", "error": "rmmod: ERROR: Module nvidia is in use", "times": -1}]),
    )
    run = reload_node(tools, ReloadRequest(60))
    assert run.outcome == "rolled_back" and run.exit_code == 10
    assert "Module nvidia is in use" in (run.error or "")


def test_an_earlier_runs_unfinished_journal_is_finished_before_the_reload(node):
    crash = NodeTools(True, None, scenario(node, [{"at": "load_modules", "crash": "before", "times": 1}]))
    first = reload_node(crash, ReloadRequest(60))
    assert first.outcome == "failed" and first.exit_code != 0
    run = reload_node(crash, ReloadRequest(60))
    assert "finished an earlier run's journal (--rollback) first" in run.notes
    assert run.outcome == "reloaded", run


def test_a_run_that_holds_the_node_is_waited_for_and_not_raced(node):
    (node / "state").mkdir(mode=0o755)
    lock_path = node / "state" / "lock"
    holder = open(lock_path, "w")  # an earlier run's lock, held by this test
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release_later():
        time.sleep(3)
        fcntl.flock(holder, fcntl.LOCK_UN)
        holder.close()

    threading.Thread(target=release_later).start()
    run = reload_node(NodeTools(True, None), ReloadRequest(60))
    assert "waited for a run that held the node (started by an earlier controller)" in run.notes
    assert run.outcome == "reloaded"


def test_a_driver_whose_checksum_differs_is_refused_before_nvreload_sees_it(node):
    installer = node / "NVIDIA-Linux-x86_64-550.127.08.run"
    installer.write_bytes(b"#!/bin/sh\n")
    wrong = hashlib.sha256(b"another file").hexdigest()
    run = reload_node(NodeTools(True, None), ReloadRequest(60, driver=str(installer), driver_sha256=wrong))
    assert run.outcome == "failed" and f"is not {wrong}" in (run.error or "")
    assert not (node / "state" / "journal.json").exists()  # nvreload never ran


def test_the_reload_the_preflight_found_unfinished_counts_as_this_rollouts_even_if_it_ended_before_this_step(node):
    earlier = reload_node(NodeTools(True, None), ReloadRequest(60))  # a dead controller's reload, since ended
    journal = (node / "state" / "journal.json").read_text()
    run = reload_node(NodeTools(True, None), ReloadRequest(60, earlier_run=earlier.run_id))
    assert run.outcome == "reloaded" and f"the earlier run {earlier.run_id} finished the reload" in run.notes
    # that run's own figures, from its journal, and no second reload
    assert (run.driver_before, run.driver_after, run.run_id) == ("550.90.07", "550.127.08", earlier.run_id)
    assert run.gpu_unavailable_seconds == earlier.gpu_unavailable_seconds is not None
    assert (node / "state" / "journal.json").read_text() == journal


def test_a_healthy_node_whose_last_reload_is_not_the_run_the_preflight_found_is_skipped_as_healthy(node):
    reload_node(NodeTools(True, None), ReloadRequest(60))
    run = reload_node(NodeTools(True, None), ReloadRequest(60, earlier_run="20261204T000000Z-000000"))
    assert run.outcome == "skipped_healthy" and not any("earlier run" in n for n in run.notes)
