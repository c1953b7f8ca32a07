"""The reload state machine on the simulated node: success, a fault at every step, a crash at
every step boundary, the lock, the journal, the dry run."""

import json
import os
import shutil
import time

import pytest
from helpers import run_cli, start_cli
from sim_helpers import assert_consistent, node_state, write_scenario

from nvreload.errors import ExitCode

STEPS = ["stop_consumers", "unload_modules", "install_driver", "load_modules", "verify", "restart_consumers"]


def reload(tmp_path, *extra, scenario=None, env=None):
    state = tmp_path / "state"
    args = ["--reload", "--simulate"] + ([scenario] if scenario else []) + ["--yes", "--json", *extra]
    proc = run_cli(*args, env={"NVRELOAD_STATE_DIR": str(state), **(env or {})})
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, state


def test_the_default_simulated_reload_fixes_the_mismatch_and_brings_everything_back(tmp_path):
    proc, state = reload(tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["result"] == "reloaded"
    assert [s["name"] for s in report["steps"]] == [
        "stop_consumers",
        "unload_modules",
        "load_modules",
        "verify",
        "restart_consumers",
    ]
    assert set(report["final"]["modules_loaded"]) == {
        "nvidia",
        "nvidia_uvm",
        "nvidia_modeset",
        "nvidia_drm",
        "nvidia_peermem",
    }
    assert set(report["final"]["containers_running"]) == {"train-llm", "triton-infer"}
    node = node_state(state)
    assert_consistent(node, reloaded=True)
    assert node["loaded"]["nvidia_drm"] == {"modeset": "1"}  # modeset came back although modprobe.d is silent
    plain = next(c for c in node["containers"] if c["name"] == "nginx-proxy")
    assert "starts" not in plain  # the plain container was never touched
    assert all(g["persistence_now"] for g in node["gpus"])
    assert node["consoles_bound"] == ["vtcon1"]  # unbound before nvidia_drm went out, bound again after
    journal = json.loads((state / "journal.json").read_text())
    assert journal["state"] == "reloaded" and journal["schema_version"] == 2


# Only the install_driver case needs a real .run archive (makeself): only it skips without one.
FAULT_STEPS = [
    pytest.param(
        step,
        marks=pytest.mark.skipif(
            shutil.which("makeself") is None, reason="makeself is not installed (apt-get install makeself)"
        ),
    )
    if step == "install_driver"
    else step
    for step in STEPS
]


@pytest.mark.parametrize("step", FAULT_STEPS)
def test_a_fault_at_each_step_ends_consistent_with_a_journal_that_says_how(tmp_path, step, request):
    # The default node is mid-upgrade: its old modules (550.90.07) are no longer on disk. A fault
    # before anything is unloaded is undone; one after the unload can only be finished forward
    # (the real kernel loads what is on disk), and the report says so instead of "rolled back".
    scenario = write_scenario(tmp_path, faults=[{"at": step, "error": f"injected failure in {step}"}])
    driver = ["--driver", str(request.getfixturevalue("installer"))] if step == "install_driver" else []
    proc, state = reload(tmp_path, *driver, scenario=scenario)
    report = json.loads(proc.stdout)
    assert f"injected failure in {step}" in report["error"]
    if step in ("stop_consumers", "unload_modules"):
        assert report["result"] == "rolled_back" and proc.returncode == ExitCode.ROLLED_BACK
        assert node_state(state)["loaded_version"] == "550.90.07"
    elif step == "restart_consumers":
        # the consumer that failed is named; the rest came back; --start retries it from the journal
        assert report["result"] == "failed" and proc.returncode == ExitCode.PARTIAL
        # the first consumer restarted in this step (the fabric manager came back before verify)
        assert [f["target"] for f in report["restart_failures"]] == ["nvidia-persistenced.service"]
        assert run_cli("--start", "--simulate", "--yes", env={"NVRELOAD_STATE_DIR": str(state)}).returncode == 0
    else:
        assert report["result"] == "reloaded" and proc.returncode == ExitCode.OK
        assert "550.90.07 could not come back" in report["warnings"][-1]["warning"]
        assert node_state(state)["loaded_version"] != "550.90.07"
    node = node_state(state)
    assert_consistent(node)
    journal = json.loads((state / "journal.json").read_text())
    assert journal["state"] in ("rolled_back", "failed", "reloaded", "started")


def test_a_failed_load_of_the_same_version_is_rolled_back_to_the_node_as_it_was(tmp_path):
    scenario = write_scenario(
        tmp_path,
        driver={"loaded_version": "550.127.08", "installed_version": "550.127.08"},
        faults=[{"at": "load_modules", "error": "injected failure in load_modules"}],
    )
    proc, state = reload(tmp_path, scenario=scenario)
    assert proc.returncode == ExitCode.ROLLED_BACK, proc.stdout
    assert json.loads(proc.stdout)["warnings"] == []
    assert_consistent(node_state(state))


def test_a_module_that_never_loads_again_ends_failed_needing_a_reboot(tmp_path):
    scenario = write_scenario(
        tmp_path, faults=[{"at": "load_modules", "error": "could not insert 'nvidia': No such device", "times": -1}]
    )
    proc, state = reload(tmp_path, scenario=scenario)
    report = json.loads(proc.stdout)
    assert proc.returncode == ExitCode.NEEDS_REBOOT
    assert report["result"] == "failed" and report["remaining_action"] == "reboot"
    assert json.loads((state / "journal.json").read_text())["state"] == "failed"


def test_a_container_that_will_not_start_is_reported_by_name_and_the_rest_comes_back(tmp_path):
    scenario = write_scenario(tmp_path, faults=[{"at": "restart_consumers", "error": "image not found", "times": 2}])
    proc, state = reload(tmp_path, scenario=scenario)
    report = json.loads(proc.stdout)
    assert proc.returncode == ExitCode.PARTIAL
    assert report["restart_failures"] and report["remaining_action"] == "nvreload --start"
    # --start retries what did not come back
    again = run_cli("--start", "--simulate", "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    assert again.returncode == 0, again.stdout + again.stderr
    assert_consistent(node_state(state), reloaded=True)


# What --rollback makes of a run killed at each boundary of the default (mid-upgrade) node: before
# anything is unloaded it is undone; once the unload is done, the old version is gone from disk and
# loading back what is there finishes the reload (the engine's roll-forward rule), reported as such.
BOUNDARIES = {
    ("stop_consumers", "before"): "rolled_back",
    ("stop_consumers", "after"): "rolled_back",
    ("unload_modules", "before"): "rolled_back",
    ("unload_modules", "after"): "reloaded",
    ("load_modules", "before"): "reloaded",
    ("load_modules", "after"): "reloaded",
    ("verify", "before"): "reloaded",
    ("verify", "after"): "reloaded",
    ("restart_consumers", "before"): "reloaded",
    ("restart_consumers", "after"): "reloaded",
}


@pytest.mark.parametrize("step,phase", list(BOUNDARIES))
def test_sigkill_between_any_two_steps_then_rollback_leaves_the_node_consistent(tmp_path, step, phase):
    scenario = write_scenario(tmp_path, faults=[{"at": step, "crash": phase}])
    proc, state = reload(tmp_path, scenario=scenario)
    assert proc.returncode == -9, (proc.returncode, proc.stdout, proc.stderr)
    journal = json.loads((state / "journal.json").read_text())
    assert journal["state"] == "running"
    # a new reload refuses while the journal is unfinished
    refused = run_cli("--reload", "--simulate", "--yes", env={"NVRELOAD_STATE_DIR": str(state)})
    assert refused.returncode == ExitCode.REFUSED and "--rollback" in refused.stderr
    back = run_cli("--rollback", "--simulate", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    assert "Traceback" not in back.stderr
    result = json.loads(back.stdout)
    expected = BOUNDARIES[(step, phase)]
    assert result["result"] == expected, result
    assert back.returncode == (ExitCode.OK if expected == "reloaded" else ExitCode.ROLLED_BACK)
    node = node_state(state)
    assert_consistent(node, reloaded=expected == "reloaded")
    assert node["loaded_version"] == ("550.90.07" if expected == "rolled_back" else node["installed_version"])
    assert json.loads((state / "journal.json").read_text())["state"] == expected


def test_sigterm_during_a_run_rolls_back(tmp_path):
    scenario = write_scenario(tmp_path, latency={"stop_container": 1.5})
    state = tmp_path / "state"
    proc = start_cli("--reload", "--simulate", scenario, "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    deadline = time.time() + 20
    while time.time() < deadline and not (state / "journal.json").exists():
        time.sleep(0.05)
    time.sleep(0.5)
    proc.terminate()
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err
    report = json.loads(out)
    assert report["result"] == "rolled_back" and "SIGTERM" in report["error"]
    assert proc.returncode == ExitCode.ROLLED_BACK
    assert_consistent(node_state(state))


def test_two_concurrent_reloads_one_proceeds_the_other_is_busy_naming_the_holder(tmp_path):
    scenario = write_scenario(tmp_path, latency={"unload_module": 0.5})
    state = tmp_path / "state"
    first = start_cli("--reload", "--simulate", scenario, "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    deadline = time.time() + 20
    while time.time() < deadline and not (state / "journal.json").exists():
        time.sleep(0.02)
    started = time.monotonic()
    second = run_cli("--reload", "--simulate", scenario, "--yes", env={"NVRELOAD_STATE_DIR": str(state)})
    assert time.monotonic() - started < 10  # at once, not after the first finishes
    assert second.returncode == ExitCode.BUSY
    assert f"pid {first.pid}" in second.stderr
    first.communicate(timeout=60)
    assert first.returncode == 0


def test_a_dead_lock_holder_never_blocks(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "lock").write_text("999999\n")  # a stale pid in the file, no flock held
    proc, _ = reload(tmp_path)
    assert proc.returncode == 0


def test_rollback_without_a_journal_is_one_line_and_bad_input(tmp_path):
    proc = run_cli("--rollback", "--simulate", env={"NVRELOAD_STATE_DIR": str(tmp_path)})
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "no journal" in proc.stderr and "Traceback" not in proc.stderr


def test_a_corrupt_journal_is_one_line_and_bad_input(tmp_path):
    (tmp_path / "journal.json").write_text('{"schema_version": 1, "undo": {')
    proc = run_cli("--rollback", "--simulate", env={"NVRELOAD_STATE_DIR": str(tmp_path)})
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "not a readable journal" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_dry_run_prints_the_plan_and_writes_nothing_anywhere(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    proc = run_cli("--reload", "--simulate", "--dry-run", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)["plan"]
    unloads = [p["target"] for p in plan if p["action"] == "unload_module"]
    loads = [p["target"] for p in plan if p["action"] == "load_module"]
    assert unloads.index("nvidia_drm") < unloads.index("nvidia_modeset") < unloads.index("nvidia")
    actions = [p["action"] for p in plan]
    assert actions.index("unbind_console") < actions.index("unload_module")
    assert actions.index("rebind_console") > max(i for i, a in enumerate(actions) if a == "load_module")
    assert loads == list(reversed(unloads))
    assert [p["action"] for p in plan].count("stop_container") == 2
    # the simulated node's file is the only thing a simulation creates; a dry run on an existing
    # state dir adds no journal and no lock
    assert not (state / "journal.json").exists() and not (state / "lock").exists()


def test_dry_run_on_a_snapshot_plans_the_module_cycle(tmp_path, snapshot):
    proc = run_cli("--reload", "--dry-run", "--json", "--root", str(snapshot.root))
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)["plan"]
    assert [p["target"] for p in plan if p["action"] == "unload_module"] == [
        "nvidia_drm",
        "nvidia_modeset",
        "nvidia_uvm",
        "nvidia",
    ]


def test_stop_then_start_brings_back_exactly_what_was_stopped(tmp_path):
    env = {"NVRELOAD_STATE_DIR": str(tmp_path / "state")}
    stop = run_cli("--stop", "--simulate", "--yes", "--json", env=env)
    assert stop.returncode == 0, stop.stderr
    node = node_state(tmp_path / "state")
    assert not any(sv["active"] for sv in node["services"])
    assert [c["name"] for c in node["containers"] if c["running"]] == ["nginx-proxy"]
    start = run_cli("--start", "--simulate", "--yes", "--json", env=env)
    assert start.returncode == 0, start.stderr
    assert json.loads(start.stdout)["result"] == "started"
    assert_consistent(node_state(tmp_path / "state"))


def test_a_blocked_node_refuses_the_reload(tmp_path):
    scenario = write_scenario(
        tmp_path, kernel={"release": "6.18", "module_unload_supported": False, "modules_disabled": True}
    )
    proc, _ = reload(tmp_path, scenario=scenario)
    assert proc.returncode == ExitCode.REFUSED
    assert "module_unload_unsupported" in proc.stderr


@pytest.mark.parametrize("comm", ["Xorg", "kwin_wayland", "sway"])
def test_a_display_server_refuses_unless_forced(tmp_path, comm):
    """Every display server the catalog names, as the live path knows them (the simulated node once
    had a list of five of its own, and a KDE or sway desktop was signalled like any holder)."""
    scenario_data = json.loads(open(write_scenario(tmp_path)).read())
    scenario_data["processes"].append(
        {"pid": 900, "start_time": 5, "comm": comm, "holds": ["nvidia", "nvidia_modeset"]}
    )
    path = tmp_path / "display.json"
    path.write_text(json.dumps(scenario_data))
    proc, _ = reload(tmp_path, scenario=str(path))
    assert proc.returncode == ExitCode.REFUSED and "display_server_active" in proc.stderr


def test_an_installer_writable_by_others_is_refused(tmp_path, installer):
    os.chmod(installer, 0o777)
    proc, _ = reload(tmp_path, "--driver", str(installer))
    assert proc.returncode == ExitCode.BAD_INPUT and "writable by group or others" in proc.stderr


def test_a_run_file_that_is_not_an_nvidia_installer_is_refused(tmp_path):
    fake = tmp_path / "evil.run"
    fake.write_text("#!/bin/sh\nrm -rf /\n")
    os.chmod(fake, 0o755)
    proc, _ = reload(tmp_path, "--driver", str(fake))
    assert proc.returncode == ExitCode.BAD_INPUT and "not an NVIDIA driver installer" in proc.stderr


def test_installing_a_driver_during_the_reload_moves_everything_to_its_version(tmp_path, installer):
    proc, state = reload(tmp_path, "--driver", str(installer))
    assert proc.returncode == 0, proc.stdout
    node = node_state(state)
    assert node["loaded_version"] == node["installed_version"] == "550.144.03"


def test_a_scenario_that_is_not_one_is_bad_input(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2, 3]")
    proc, _ = reload(tmp_path, scenario=str(bad))
    assert proc.returncode == ExitCode.BAD_INPUT


def test_restart_docker_puts_the_engine_restart_before_the_first_container_start(tmp_path):
    proc = run_cli(
        "--reload", "--simulate", "--dry-run", "--json", "--restart-docker", env={"NVRELOAD_STATE_DIR": str(tmp_path)}
    )
    assert proc.returncode == 0, proc.stderr
    actions = [p["action"] for p in json.loads(proc.stdout)["plan"]]
    assert actions.index("restart_container_engine") < actions.index("start_container")
    assert actions.index("restart_container_engine") > actions.index("start_service")


def test_restart_docker_without_reload_is_a_usage_error():
    assert run_cli("--stop", "--restart-docker").returncode == ExitCode.USAGE


def test_a_signal_that_arrives_during_rollback_is_held_until_the_node_is_restored_then_acted_on(tmp_path):
    scenario = write_scenario(tmp_path, latency={"stop_container": 1.0, "start_container": 1.5})
    state = tmp_path / "state"
    proc = start_cli("--reload", "--simulate", scenario, "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    journal = state / "journal.json"
    deadline = time.time() + 20
    while time.time() < deadline and not journal.exists():
        time.sleep(0.05)
    time.sleep(0.3)
    proc.terminate()  # the first SIGTERM starts the rollback
    while time.time() < deadline and json.loads(journal.read_text())["state"] != "rolling_back":
        time.sleep(0.02)
    proc.terminate()  # the second arrives while containers start again
    out, err = proc.communicate(timeout=60)
    assert "Traceback" not in err
    assert proc.returncode == -15  # acted on: the process ended by the deferred SIGTERM...
    assert json.loads(out)["result"] == "rolled_back"  # ...after the report was out
    assert json.loads(journal.read_text())["state"] == "rolled_back"
    assert_consistent(node_state(state))


def test_an_unload_that_stops_at_nvidia_after_an_upgrade_is_finished_forward_not_left_half_done(tmp_path):
    # The dependents are out, nvidia is "in use"; the modules on disk are the new version, which the
    # kernel refuses to load next to the old nvidia (tests/vm showed it): the reload is finished.
    scenario = write_scenario(
        tmp_path, faults=[{"at": "unload_modules", "error": "rmmod: ERROR: Module nvidia is in use", "skip": 4}]
    )
    proc, state = reload(tmp_path, scenario=scenario)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report["result"] == "reloaded" and "in use" in report["error"]
    assert "finished instead of undone" in report["warnings"][0]["warning"]
    assert_consistent(node_state(state), reloaded=True)


def test_an_unload_that_stops_at_nvidia_without_an_upgrade_puts_the_dependents_back(tmp_path):
    scenario = write_scenario(
        tmp_path,
        driver={"loaded_version": "550.127.08", "installed_version": "550.127.08"},
        faults=[{"at": "unload_modules", "error": "rmmod: ERROR: Module nvidia is in use", "skip": 4}],
    )
    proc, state = reload(tmp_path, scenario=scenario)
    assert proc.returncode == ExitCode.ROLLED_BACK, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["warnings"] == []
    assert_consistent(node_state(state))


def test_a_node_with_nothing_loaded_is_loaded_from_what_is_on_disk(tmp_path):
    scenario = write_scenario(
        tmp_path,
        modules=[],
        on_disk_modules=["nvidia", "nvidia_uvm", "nvidia_modeset", "nvidia_drm", "nvidia_peermem"],
        driver={"loaded_version": None, "installed_version": "550.144.03"},
        processes=[],
        services=[],
        containers=[],
        consoles=[],
    )
    proc, state = reload(tmp_path, scenario=scenario)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # peermem is on disk but not configured in modules-load.d: a boot would not load it either
    assert set(node_state(state)["loaded"]) == {"nvidia", "nvidia_uvm", "nvidia_modeset", "nvidia_drm"}


def test_peermem_that_cannot_load_is_a_warning_and_mofed_is_waited_for_once(tmp_path):
    scenario = write_scenario(tmp_path, mofed_ready=False)
    started = time.monotonic()
    proc, state = reload(tmp_path, "--peermem-wait", "0.5", scenario=scenario)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["result"] == "reloaded" and [w["module"] for w in report["warnings"]] == ["nvidia_peermem"]
    assert "nvidia_peermem" not in node_state(state)["loaded"]
    assert time.monotonic() - started < 30


def test_a_dry_run_of_a_refused_reload_shows_the_plan_then_the_refusal_and_its_exit_code(tmp_path, snapshot):
    snapshot.write("proc/sys/kernel/modules_disabled", "1\n")
    proc = run_cli("--reload", "--dry-run", "--json", "--root", str(snapshot.root))
    assert proc.returncode == ExitCode.REFUSED, proc.stderr
    document = json.loads(proc.stdout)
    assert any(p["action"] == "unload_module" for p in document["plan"])
    assert "module_loading_disabled" in document["refused"] and "module_loading_disabled" in proc.stderr


def _with_holder_child(child: dict) -> list[dict]:
    """The default processes, the plain holder (pid 4242) forking `child` just before its signal."""
    from nvreload.engine.sim import default_scenario

    processes = default_scenario()["processes"]
    next(p for p in processes if p["pid"] == 4242)["spawns_on_kill"] = child
    return processes


def test_a_child_that_inherited_a_killed_holders_descriptors_is_ended_before_the_unload(tmp_path):
    # the VM's stubborn shell loop: its `sleep` still held /dev/nvidia-uvm when rmmod ran
    scenario = write_scenario(
        tmp_path, processes=_with_holder_child({"pid": 4250, "start_time": 99900, "comm": "sleep"})
    )
    proc, state = reload(tmp_path, scenario=scenario)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    late = [k for k in report["killed"] if k.get("late")]
    assert [(k["pid"], k["comm"]) for k in late] == [(4250, "sleep")]
    assert late[0]["outcome"].startswith("terminated")
    node = node_state(state)
    assert not next(p for p in node["processes"] if p["pid"] == 4250)["alive"]
    assert_consistent(node, reloaded=True)


def test_a_process_that_began_holding_the_gpu_after_the_plan_is_not_signalled_and_nothing_is_unloaded(tmp_path):
    # a child in a process group of its own (setsid) is no part of what the operator confirmed
    scenario = write_scenario(
        tmp_path, processes=_with_holder_child({"pid": 4250, "start_time": 99900, "comm": "job", "pgrp": 4250})
    )
    proc, state = reload(tmp_path, scenario=scenario)
    assert proc.returncode == ExitCode.ROLLED_BACK, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert "after the plan was made, not signalled: pid 4250 (job)" in report["error"]
    assert [s["name"] for s in report["steps"]] == ["stop_consumers"]
    node = node_state(state)
    assert next(p for p in node["processes"] if p["pid"] == 4250).get("alive", True)
    assert_consistent(node)
    journal = json.loads((state / "journal.json").read_text())
    assert journal["state"] == "rolled_back"
    assert not [r for r in journal["undo"] if r["kind"] == "unload_module"]


def test_a_late_holder_in_process_group_1_is_never_taken_for_a_killed_holders_child(tmp_path):
    # a holder started straight from init shares pgrp 1 with every other orphan: the group says
    # nothing about who forked whom, so a late holder there is a stranger
    processes = _with_holder_child({"pid": 4250, "start_time": 99900, "comm": "orphan", "pgrp": 1})
    next(p for p in processes if p["pid"] == 4242)["pgrp"] = 1
    proc, state = reload(tmp_path, scenario=write_scenario(tmp_path, processes=processes))
    assert proc.returncode == ExitCode.ROLLED_BACK, proc.stdout + proc.stderr
    assert "after the plan was made, not signalled: pid 4250 (orphan)" in json.loads(proc.stdout)["error"]
    assert next(p for p in node_state(state)["processes"] if p["pid"] == 4250).get("alive", True)
    assert_consistent(node_state(state))


def _forking_generations(count: int) -> dict:
    """A child that, when killed, forks the next generation, `count` generations deep."""
    child: dict = {}
    for generation in reversed(range(count)):
        pid = 4300 + generation
        child = {
            "pid": pid,
            "start_time": 99000 + pid,
            "comm": f"gen{generation}",
            **({"spawns_on_kill": child} if child else {}),
        }
    return child


def test_late_holders_that_keep_forking_are_ended_for_five_rounds(tmp_path):
    scenario = write_scenario(tmp_path, processes=_with_holder_child(_forking_generations(5)))
    proc, state = reload(tmp_path, scenario=scenario)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    late = [k["comm"] for k in json.loads(proc.stdout)["killed"] if k.get("late")]
    assert late == [f"gen{n}" for n in range(5)]
    assert_consistent(node_state(state), reloaded=True)


def test_a_sixth_generation_of_late_holders_fails_the_step_before_any_unload(tmp_path):
    scenario = write_scenario(tmp_path, processes=_with_holder_child(_forking_generations(6)))
    proc, state = reload(tmp_path, scenario=scenario)
    assert proc.returncode == ExitCode.ROLLED_BACK, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert "still holding the GPU after 5 rounds of ending late holders: pid 4305 (gen5)" in report["error"]
    assert [s["name"] for s in report["steps"]] == ["stop_consumers"]
    journal = json.loads((state / "journal.json").read_text())
    assert not [r for r in journal["undo"] if r["kind"] == "unload_module"]
    assert_consistent(node_state(state))


def test_checks_that_cannot_run_after_a_rollback_finished_forward_fail_the_run_not_nvreload(tmp_path):
    # every verify errors: the run's own check, then the one after the rollback loaded the new
    # driver (the old one is not on disk): a failed run that says why, never an internal error
    scenario = write_scenario(tmp_path, faults=[{"at": "verify", "error": "nvidia-smi timed out", "times": -1}])
    proc, state = reload(tmp_path, scenario=scenario)
    assert proc.returncode == ExitCode.NEEDS_REBOOT, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["result"] == "failed"
    assert {"action": "verify", "target": "driver", "error": "nvidia-smi timed out"} in report["restart_failures"]


def test_mps_is_told_by_its_server_process_and_is_quit_before_the_services_and_started_after(tmp_path):
    proc, state = reload(tmp_path, scenario=write_scenario(tmp_path, mps_active=True))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    plan = [(p["action"], p["target"]) for p in json.loads((state / "journal.json").read_text())["plan"]]
    quit_mps = plan.index(("quit_mps", "nvidia-cuda-mps-control"))
    assert quit_mps < plan.index(("stop_service", "nvidia-persistenced.service"))
    assert plan.index(("start_mps", "nvidia-cuda-mps-control")) > plan.index(("load_module", "nvidia"))
    assert node_state(state)["mps_active"] is True
