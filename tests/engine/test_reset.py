"""--reset [GPU,...] on the simulated node: only the chosen GPUs' consumers stop, persistence is
off for the reset and back after, what stopped comes back either way, and it is refused where a
single-GPU reset is not allowed (NVSwitch) or cannot run (NVML down). The simulated GPU refuses a
reset while anything holds it, as nvidia-smi does."""

import json
import time

import pytest
from helpers import run_cli, start_cli
from plan_helpers import DRM_STACK, LOGIND_ON_DRM
from sim_helpers import assert_consistent, node_state, write_scenario

from nvreload.engine.plan import GpuRef, LoadedModule, ReloadView
from nvreload.engine.reset_planner import build_reset_plan
from nvreload.engine.sim import default_scenario
from nvreload.errors import ExitCode, HostError, RefusedError

CURRENT = {"loaded_version": "550.127.08", "installed_version": "550.127.08"}  # a healthy node: NVML answers


def healthy(tmp_path, **changes):
    processes = default_scenario()["processes"]
    for process in processes:
        if process["pid"] == 4242:
            process["gpus"] = [2]  # the plain holder uses GPU 2 only
    containers = default_scenario()["containers"]
    containers[1]["gpus"] = [5]  # triton-infer is given GPU 5; train-llm, every GPU
    return write_scenario(tmp_path, **({"driver": CURRENT, "processes": processes, "containers": containers} | changes))


def reset(tmp_path, scenario, *selector):
    state = tmp_path / "state"
    proc = run_cli(
        "--reset", *selector, "--simulate", scenario, "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(state)}
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, state


def gpu(state, index):
    return node_state(state)["gpus"][index]


def test_resetting_one_gpu_stops_only_its_consumers_and_brings_them_back(tmp_path):
    proc, state = reset(tmp_path, healthy(tmp_path), "5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["result"] == "reset"
    # triton-infer (GPU 5) and the node-wide services stop; the plain holder on GPU 2 is left alone
    assert "triton-infer" in report["stopped"] and "nvidia-persistenced.service" in report["stopped"]
    assert report["killed"] == []
    assert gpu(state, 5)["resets"] == 1 and "resets" not in gpu(state, 2)
    assert gpu(state, 5)["persistence_now"] is True  # off for the reset, on again after
    assert next(p for p in node_state(state)["processes"] if p["pid"] == 4242).get("alive", True)
    assert_consistent(node_state(state))
    assert json.loads((state / "journal.json").read_text())["state"] == "reset"


def test_a_gpu_is_named_by_index_pci_address_or_uuid(tmp_path):
    proc, state = reset(tmp_path, healthy(tmp_path), "0000:2A:00.0,GPU-5a1e0000-0000-0000-0000-000000000007")
    assert proc.returncode == 0, proc.stdout
    assert [g.get("resets", 0) for g in node_state(state)["gpus"]] == [0, 1, 0, 0, 0, 0, 0, 1]


def test_reset_without_a_gpu_resets_every_gpu_ending_every_holder(tmp_path):
    proc, state = reset(tmp_path, healthy(tmp_path))
    assert proc.returncode == 0, proc.stdout
    assert all(g["resets"] == 1 for g in node_state(state)["gpus"])
    assert [k["pid"] for k in json.loads(proc.stdout)["killed"]] == [4242]


def test_an_unknown_gpu_is_a_usage_error_listing_the_gpus(tmp_path):
    proc, state = reset(tmp_path, healthy(tmp_path), "9")
    assert proc.returncode == ExitCode.USAGE
    assert "no GPU '9' on this node (GPUs: 0 (0000:18:00.0)" in proc.stderr
    assert not (state / "journal.json").exists()


def test_a_reset_refused_by_the_gpu_puts_persistence_and_the_consumers_back(tmp_path):
    proc, state = reset(
        tmp_path,
        healthy(tmp_path, faults=[{"at": "reset_gpus", "error": "GPU 0000:AB:00.0: Insufficient Permissions"}]),
        "5",
    )
    assert proc.returncode == ExitCode.ROLLED_BACK, proc.stdout
    report = json.loads(proc.stdout)
    assert report["result"] == "rolled_back" and "Insufficient Permissions" in report["error"]
    assert gpu(state, 5)["persistence_now"] is True
    assert_consistent(node_state(state))


def test_a_gpu_that_does_not_come_back_from_its_reset_says_reboot_after_the_consumers_are_back(tmp_path):
    gpus = default_scenario()["gpus"]
    gpus[5]["lost_on_reset"] = True
    proc, state = reset(tmp_path, healthy(tmp_path, gpus=gpus), "5")
    assert proc.returncode == ExitCode.NEEDS_REBOOT, proc.stdout
    report = json.loads(proc.stdout)
    assert report["remaining_action"] == "reboot" and "missing 0000:ab:00.0" in report["error"]
    assert_consistent(node_state(state))


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"nvswitch": True, "fabric_manager_version": "550.127.08"}, "on an NVSwitch (HGX) node"),
        (
            {"driver": {"loaded_version": "550.90.07", "installed_version": "550.127.08"}},
            "NVML does not answer (version_mismatch), and nvidia-smi resets GPUs through it; nvreload --reload fixes",
        ),
    ],
)
def test_a_reset_is_refused_before_anything_stops_where_it_cannot_work(tmp_path, change, reason):
    proc, state = reset(tmp_path, healthy(tmp_path, **change), "0")
    assert proc.returncode == ExitCode.REFUSED, proc.stdout + proc.stderr
    assert reason in proc.stderr
    assert not (state / "journal.json").exists()
    assert_consistent(node_state(state))


@pytest.mark.parametrize(
    "step,phase,result",
    [
        ("stop_consumers", "after", "rolled_back"),
        ("reset_gpus", "after", "reset"),
        ("verify", "after", "reset"),
    ],
)
def test_a_reset_killed_at_a_boundary_is_finished_by_rollback(tmp_path, step, phase, result):
    proc, state = reset(tmp_path, healthy(tmp_path, faults=[{"at": step, "crash": phase}]), "5")
    assert proc.returncode == -9, proc.stdout
    rollback = run_cli("--rollback", "--simulate", "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    assert json.loads(rollback.stdout)["result"] == result, rollback.stdout
    assert rollback.returncode == (ExitCode.ROLLED_BACK if result == "rolled_back" else ExitCode.OK)
    assert json.loads((state / "journal.json").read_text())["state"] == result
    assert gpu(state, 5)["persistence_now"] is True
    assert_consistent(node_state(state))


def test_a_holder_of_gpu_10_does_not_keep_gpu_1_from_being_reset(tmp_path):
    # /dev/nvidia1 is a prefix of /dev/nvidia10: the user of one GPU is not the other's
    gpus = [
        dict(default_scenario()["gpus"][0], pci_bus_id=f"0000:{0x18 + i:02x}:00.0", uuid=f"GPU-{i}") for i in range(12)
    ]
    processes = [{"pid": 4242, "start_time": 99120, "comm": "python3", "holds": ["nvidia", "nvidia_uvm"], "gpus": [10]}]
    scenario = write_scenario(tmp_path, driver=CURRENT, gpus=gpus, processes=processes, services=[], containers=[])
    proc, state = reset(tmp_path, scenario, "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["killed"] == []
    assert node_state(state)["gpus"][1]["resets"] == 1


# The driver refuses a GPU reset while nvidia_drm is loaded ("In use by another client",
# NVIDIA/mig-parted#181): it goes out for the resets and comes back with its parameters and consoles.
def test_nvidia_drm_goes_out_for_the_reset_and_comes_back_with_its_parameters_and_console(tmp_path):
    proc, state = reset(tmp_path, healthy(tmp_path), "5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    journal = json.loads((state / "journal.json").read_text())
    order = [(p["action"], p["target"]) for p in journal["plan"] if p["step"] == "reset_gpus"]
    assert order == [
        ("unbind_console", "vtcon1"),
        ("unload_module", "nvidia_drm"),
        ("reset_gpu", "0000:ab:00.0"),
        ("load_module", "nvidia_drm"),
        ("rebind_console", "vtcon1"),
    ]
    node = node_state(state)
    assert node["loaded"]["nvidia_drm"] == {"modeset": "1"} and node["consoles_bound"] == ["vtcon1"]
    assert gpu(state, 5)["resets"] == 1
    assert_consistent(node)


def test_the_simulated_gpu_refuses_a_reset_while_nvidia_drm_is_loaded_as_the_driver_does(tmp_path):
    from nvreload.engine.sim import SimulatedNode

    gpus = [dict(g, persistence=False) for g in default_scenario()["gpus"]]
    scenario = default_scenario() | {"gpus": gpus, "processes": [], "services": [], "containers": []}
    node = SimulatedNode(scenario, str(tmp_path / "state"))
    with pytest.raises(HostError, match=r"in use by another process \(nvidia_drm\)"):
        node.reset_gpu("0000:ab:00.0")  # nothing else holds it
    node.bind_console("vtcon1", False)
    node.unload_module("nvidia_drm")
    node.reset_gpu("0000:ab:00.0")
    assert node.s["gpus"][5]["resets"] == 1


def test_a_process_on_a_dri_node_of_nvidia_drm_stops_for_the_reset_though_it_uses_no_chosen_gpu(tmp_path):
    scenario = json.loads(open(healthy(tmp_path)).read())
    scenario["processes"].append({"pid": 6001, "start_time": 99800, "comm": "eglinfo", "holds": ["nvidia_drm"]})
    proc, state = reset(tmp_path, write_scenario(tmp_path, **scenario), "5")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    killed = json.loads(proc.stdout)["killed"]
    assert [k["pid"] for k in killed] == [6001]  # not 4242: it uses GPU 2 only
    assert gpu(state, 5)["resets"] == 1


def test_a_display_server_on_nvidia_drm_refuses_the_reset_before_anything_stops(tmp_path):
    processes = default_scenario()["processes"] + [
        {"pid": 1888, "start_time": 4242, "comm": "Xorg", "holds": ["nvidia_drm"]}
    ]
    proc, state = reset(tmp_path, healthy(tmp_path, processes=processes), "5")
    assert proc.returncode == ExitCode.REFUSED, proc.stdout + proc.stderr
    assert "a display server (Xorg, pid 1888) uses the GPU" in proc.stderr
    assert not (state / "journal.json").exists()


def test_nvidia_drm_that_will_not_load_back_leaves_the_gpu_reset_and_start_loads_it(tmp_path):
    faults = [{"at": "load_modules", "error": "modprobe: ERROR: could not insert 'nvidia_drm': Invalid argument"}]
    faults[0]["times"] = 2  # the reset step's load and the finish's retry
    proc, state = reset(tmp_path, healthy(tmp_path, faults=faults), "5")
    assert proc.returncode == ExitCode.PARTIAL, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["remaining_action"] == "nvreload --start"
    assert report["restart_failures"] == [
        {
            "action": "load_module",
            "target": "nvidia_drm",
            "error": "modprobe: ERROR: could not insert 'nvidia_drm': Invalid argument",
        }
    ]
    assert gpu(state, 5)["resets"] == 1 and "nvidia_drm" not in node_state(state)["loaded"]
    again = run_cli("--start", "--simulate", "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    assert again.returncode == 0, again.stdout + again.stderr
    assert_consistent(node_state(state))


def test_a_reset_killed_with_nvidia_drm_out_is_finished_by_rollback_loading_it_back(tmp_path):
    scenario = healthy(tmp_path, latency={"reset_gpu": 30})
    state = tmp_path / "state"
    run = start_cli("--reset", "5", "--simulate", scenario, "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if "nvidia_drm" not in node_state(state)["loaded"]:
                    break
            except (OSError, ValueError):
                pass  # not written yet, or being replaced
            time.sleep(0.05)
        else:
            pytest.fail("nvidia_drm never went out")
    finally:
        run.kill()  # the run this test started
        run.communicate(timeout=60)
    rollback = run_cli("--rollback", "--simulate", "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    assert "Traceback" not in rollback.stderr, rollback.stderr
    assert node_state(state)["loaded"]["nvidia_drm"] == {"modeset": "1"}
    assert_consistent(node_state(state))


def drm_view(**changes) -> ReloadView:
    """A healthy node (pure view) with nvidia_drm loaded and one GPU."""
    return ReloadView(
        **({"modules": DRM_STACK, "processes": (), "services": (), "containers": ()} | changes),
        gpus=(GpuRef(0, "0000:3b:00.0", 0),),
    )


def test_logind_on_nvidia_drm_is_restarted_for_the_reset_and_never_stopped():
    plan = build_reset_plan(drm_view(processes=(LOGIND_ON_DRM,), logind_holds_drm=True), drm_view().gpus)
    assert [(a.kind, a.target) for a in plan.step("stop_consumers").actions] == [
        ("restart_service", "systemd-logind.service")
    ]
    assert plan.step("restart_consumers").actions == ()


def test_a_module_that_holds_nvidia_drm_refuses_the_reset_before_anything_stops():
    modules = drm_view().modules[:2] + (LoadedModule("nvidia_drm", ("vendor_kms",)), LoadedModule("vendor_kms", ()))
    with pytest.raises(RefusedError, match="nvidia_drm is loaded, and vendor_kms holds it; use nvreload --reload"):
        build_reset_plan(drm_view(modules=modules), drm_view().gpus)
