"""MIG across a reload: the module reload loses every GPU and compute instance (MIG mode stays), so
the geometry is recorded in the journal before the unload and created again after the load,
before the CUDA check and before the consumers; where it cannot be recorded the reload is
refused, and where it cannot be recreated the run says so and --start tries again."""

import json

from helpers import run_cli
from sim_helpers import assert_consistent, node_state, with_fabric_manager, write_scenario

from nvreload.engine.sim import default_scenario
from nvreload.errors import ExitCode

# an H100 split 3g.40gb + 2 x 2g.20gb, compute instances on each (profile ids as NVML gives them)
GEOMETRY = [
    {"profile_id": 9, "start": 4, "size": 4, "compute": [[2, 0, 3]]},
    {"profile_id": 14, "start": 0, "size": 2, "compute": [[1, 0, 2]]},
    {"profile_id": 14, "start": 2, "size": 2, "compute": [[0, 0, 1], [0, 1, 1]]},
]


# NVML answers on this node (the driver loaded is the library's version): the geometry is read
# through NVML, on a simulated node as on a live one. Where it cannot answer (a version mismatch),
# neither can record the instances.
CURRENT = {"loaded_version": "550.127.08", "installed_version": "550.127.08", "flavor": "open"}


def mig_node(tmp_path, **gpu_changes):
    gpus = default_scenario()["gpus"]
    gpus[0].update({"mig": True, "mig_instances": GEOMETRY, **gpu_changes})
    return write_scenario(tmp_path, gpus=gpus, driver=CURRENT)


def reload(tmp_path, scenario):
    state = tmp_path / "state"
    proc = run_cli("--reload", "--simulate", scenario, "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, state


def test_a_mig_gpu_comes_back_with_the_same_instances_after_a_reload(tmp_path):
    proc, state = reload(tmp_path, mig_node(tmp_path))
    assert proc.returncode == 0, proc.stdout
    node = node_state(state)
    assert node["gpus"][0]["mig_now"] == GEOMETRY and node["loaded_version"] == "550.127.08"
    assert_consistent(node, reloaded=True)
    journal = json.loads((state / "journal.json").read_text())
    assert journal["context"]["mig"] == {"0000:18:00.0": GEOMETRY}  # recorded before anything was unloaded


def test_the_instances_come_back_after_the_load_and_before_the_cuda_check(tmp_path):
    proc = run_cli(
        "--reload",
        "--simulate",
        mig_node(tmp_path),
        "--dry-run",
        "--json",
        env={"NVRELOAD_STATE_DIR": str(tmp_path / "s")},
    )
    actions = [(p["action"], p["target"]) for p in json.loads(proc.stdout)["plan"]]
    recreate = actions.index(("create_mig", "0000:18:00.0"))
    assert actions.index(("load_module", "nvidia")) < recreate < actions.index(("verify", "driver"))


def test_a_rollback_after_the_unload_brings_the_instances_back_too(tmp_path):
    scenario = json.loads(open(mig_node(tmp_path)).read())
    scenario["driver"] = {"loaded_version": "550.127.08", "installed_version": "550.127.08"}
    scenario["faults"] = [{"at": "load_modules", "error": "injected failure in load_modules", "skip": 1}]
    path = tmp_path / "rollback.json"
    path.write_text(json.dumps(scenario))
    proc, state = reload(tmp_path, str(path))
    assert proc.returncode == ExitCode.ROLLED_BACK, proc.stdout
    assert node_state(state)["gpus"][0]["mig_now"] == GEOMETRY


def test_instances_that_cannot_be_recreated_are_named_and_start_tries_again(tmp_path):
    proc, state = reload(tmp_path, mig_node(tmp_path, mig_create_fails="Insufficient Resources"))
    assert proc.returncode == ExitCode.PARTIAL, proc.stdout
    report = json.loads(proc.stdout)
    assert {
        "action": "recreate_mig",
        "target": "0000:18:00.0",
        "error": "GPU 0000:18:00.0: Insufficient Resources",
    } in report["restart_failures"]
    assert report["remaining_action"] == "nvreload --start"
    nodefile = state / "sim-node.json"
    node = json.loads(nodefile.read_text())
    del node["gpus"][0]["mig_create_fails"]  # the operator freed what was in the way
    nodefile.write_text(json.dumps(node))
    again = run_cli("--start", "--simulate", "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    assert again.returncode == 0, again.stdout
    assert node_state(state)["gpus"][0]["mig_now"] == GEOMETRY


def test_a_node_whose_instances_cannot_be_listed_refuses_the_reload_before_anything_stops(tmp_path):
    proc, state = reload(tmp_path, mig_node(tmp_path, mig_unreadable=True))
    assert proc.returncode == ExitCode.REFUSED, proc.stdout + proc.stderr
    assert "mig_geometry_unreadable" in proc.stderr
    assert not (state / "journal.json").exists()


def pending_node(tmp_path, **changes):
    gpus = default_scenario()["gpus"]
    gpus[1].update({"mig": False, "mig_pending": True})  # `nvidia-smi -i 1 -mig 1` waits for a reset
    # NVML answers: the pending mode is NVML's to tell
    return write_scenario(tmp_path, **({"gpus": gpus, "driver": CURRENT} | changes))


def test_a_pending_mig_mode_change_is_applied_while_the_reload_has_the_gpu_free(tmp_path):
    proc, state = reload(tmp_path, pending_node(tmp_path))
    assert proc.returncode == 0, proc.stdout
    gpu = node_state(state)["gpus"][1]
    assert (gpu["mig"], gpu["mig_pending"], gpu["resets"]) == (True, False, 1)
    assert json.loads(proc.stdout)["warnings"] == []


def test_the_status_of_the_simulated_node_shows_the_pending_change_until_then(tmp_path):
    scenario = pending_node(tmp_path)
    env = {"NVRELOAD_STATE_DIR": str(tmp_path / "state")}
    before = json.loads(run_cli("--status", "--simulate", scenario, "--json", env=env).stdout)
    assert "mig_mode_change_pending" in [f["code"] for f in before["findings"]]
    run_cli("--reload", "--simulate", scenario, "--yes", env=env)
    after = json.loads(run_cli("--status", "--simulate", "--json", env=env).stdout)
    assert "mig_mode_change_pending" not in [f["code"] for f in after["findings"]]


def test_a_pending_change_that_the_reset_refuses_is_a_warning_not_a_failed_reload(tmp_path):
    proc, state = reload(
        tmp_path, pending_node(tmp_path, faults=[{"at": "reset_gpus", "error": "In use by another client"}])
    )
    assert proc.returncode == 0, proc.stdout
    warning = json.loads(proc.stdout)["warnings"][0]["warning"]
    assert (
        warning.startswith("0000:2a:00.0: the pending MIG mode change was not applied")
        and "In use by another client" in warning
    )
    assert node_state(state)["gpus"][1]["mig_pending"] is True


def test_on_an_nvswitch_node_no_single_gpu_is_reset_for_a_pending_change(tmp_path):
    services = with_fabric_manager(default_scenario()["services"])
    scenario = pending_node(tmp_path, nvswitch=True, fabric_manager_version="550.127.08", services=services)
    proc, state = reload(tmp_path, scenario)
    assert proc.returncode == 0, proc.stdout
    assert "resets" not in node_state(state)["gpus"][1]


def test_instances_on_a_version_mismatch_node_cannot_be_recorded_and_the_reload_says_they_are_gone(tmp_path):
    # NVML cannot answer through the mismatch, on a live node and so on the simulated one: the
    # driver's capability files show the instances, nothing can list their geometry
    gpus = default_scenario()["gpus"]
    gpus[0].update({"mig": True, "mig_instances": GEOMETRY})
    scenario = write_scenario(tmp_path, gpus=gpus)
    env = {"NVRELOAD_STATE_DIR": str(tmp_path / "state")}
    status = json.loads(run_cli("--status", "--simulate", scenario, "--json", env=env).stdout)
    finding = next(f for f in status["findings"] if f["code"] == "mig_instances_unrecordable")
    assert "0000:18:00.0 (3)" in finding["message"]
    proc, state = reload(tmp_path, scenario)
    assert proc.returncode == 0, proc.stdout
    report = json.loads(proc.stdout)
    assert report["result"] == "reloaded"
    (warning,) = [w["warning"] for w in report["warnings"]]
    assert warning.startswith("0000:18:00.0: 3 MIG GPU instance(s) could not be recorded (NVML: version_mismatch)")
    journal = json.loads((state / "journal.json").read_text())
    assert journal["context"]["mig"] is None  # nothing recorded, so nothing made up
    assert node_state(state)["gpus"][0]["mig_now"] == []  # MIG mode stays, the instances are gone
