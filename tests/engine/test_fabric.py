"""An NVSwitch (HGX) node: CUDA fails until the fabric manager is up for the new driver instance,
so the fabric comes up between the load and the verify step, and a reload that would leave the
fabric manager on another driver version is refused before anything is stopped."""

import json

from helpers import run_cli
from sim_helpers import assert_consistent, node_state, with_fabric_manager, write_scenario

from nvreload.engine.engine import Engine
from nvreload.engine.journal import Journal, JournalContext
from nvreload.engine.planner import build_plan
from nvreload.engine.sim import SimulatedNode, default_scenario
from nvreload.errors import ExitCode

NEW = "550.127.08"  # the default scenario's installed (userspace and on-disk) version


def hgx(tmp_path, **changes):
    fabric = {
        "nvswitch": True,
        "fabric_manager_version": NEW,
        "fabric_training_polls": 3,
        "services": with_fabric_manager(default_scenario()["services"]),
    }
    return write_scenario(tmp_path, **(fabric | changes))


def reload(tmp_path, scenario, *extra):
    state = tmp_path / "state"
    proc = run_cli(
        "--reload", "--simulate", scenario, "--yes", "--json", *extra, env={"NVRELOAD_STATE_DIR": str(state)}
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, state


def test_an_hgx_node_reloads_with_the_fabric_up_before_the_cuda_check(tmp_path):
    proc, state = reload(tmp_path, hgx(tmp_path))
    assert proc.returncode == 0, proc.stdout
    report = json.loads(proc.stdout)
    assert report["result"] == "reloaded" and report["restart_failures"] == []
    # verified on the first try: not a failed CUDA check that a rollback then finished forward
    assert [(s["name"], s["status"]) for s in report["steps"]] == [
        ("stop_consumers", "done"),
        ("unload_modules", "done"),
        ("load_modules", "done"),
        ("verify", "done"),
        ("restart_consumers", "done"),
    ]
    assert report["error"] is None and report["warnings"] == []
    node = node_state(state)
    assert node["fabric_up"] and node["loaded_version"] == NEW
    assert_consistent(node, reloaded=True)


def test_the_dry_run_of_an_hgx_reload_starts_the_fabric_manager_before_verify(tmp_path):
    proc = run_cli(
        "--reload", "--simulate", hgx(tmp_path), "--dry-run", "--json", env={"NVRELOAD_STATE_DIR": str(tmp_path / "s")}
    )
    actions = [(p["action"], p["target"]) for p in json.loads(proc.stdout)["plan"]]
    fabric = actions.index(("start_service", "nvidia-fabricmanager.service"))
    assert actions.index(("load_module", "nvidia")) < fabric < actions.index(("verify", "driver"))
    assert fabric < actions.index(("start_service", "nvidia-persistenced.service"))


def test_a_fabric_that_never_comes_up_fails_verify_saying_so(tmp_path):
    scenario = json.loads(open(hgx(tmp_path, fabric_training_polls=1000)).read())
    node = SimulatedNode(scenario, str(tmp_path / "state"))
    journal = Journal.start(str(tmp_path / "state" / "journal.json"), "reload", [], JournalContext("simulated"))
    report = Engine(node, journal, fabric_wait=0.2).reload(build_plan(node.observe(), node.configured_parameters()))
    assert "the NVLink fabric was not up 0.2 s after nvidia-fabricmanager.service started" in report.error
    assert report.outcome.exit_code != 0


def test_a_fabric_manager_left_at_another_version_refuses_the_reload_before_anything_stops(tmp_path):
    proc, state = reload(tmp_path, hgx(tmp_path, fabric_manager_version="550.90.07"))
    assert proc.returncode == ExitCode.REFUSED, proc.stdout + proc.stderr
    assert "fabric_manager_version_mismatch" in proc.stderr
    assert not (state / "journal.json").exists()
    assert_consistent(node_state(state))


def test_a_driver_run_of_another_version_than_the_fabric_manager_is_refused_naming_both(tmp_path, installer):
    # the .run installs 550.144.03; the fabric manager (matching the userspace on disk) is 550.127.08
    proc, state = reload(tmp_path, hgx(tmp_path), "--driver", str(installer))
    assert proc.returncode == ExitCode.REFUSED, proc.stdout + proc.stderr
    assert "installs driver 550.144.03, but nvidia-fabricmanager is 550.127.08" in proc.stderr
    assert not (state / "journal.json").exists()
    assert_consistent(node_state(state))


def test_without_nvswitch_the_fabric_is_not_waited_for(tmp_path):
    node = SimulatedNode(default_scenario(), str(tmp_path / "state"))
    assert node.fabric_ready() is None
