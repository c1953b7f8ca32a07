"""Where a simulation keeps its node, and what it does with a scenario, a state directory or a
setting it cannot use: one line naming the path or the key, exit 66 or 77, never 70 and never a
silent fallback."""

import json
import os

import pytest
from helpers import run_cli

from nvreload.errors import ExitCode
from nvreload.state_files import StatePaths

SIM_NODE = "sim-node.json"


def _env_without_state_dir(xdg) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NVRELOAD_STATE_DIR"}
    env["XDG_STATE_HOME"] = str(xdg)
    return env


def run_without_state_dir(xdg, *args):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "nvreload", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env_without_state_dir(xdg),
    )


def test_a_simulation_without_a_state_dir_uses_one_documented_directory_per_user(tmp_path):
    paths = StatePaths.for_simulation({"XDG_STATE_HOME": str(tmp_path)})
    assert paths.state_dir == paths.runtime_dir == str(tmp_path / "nvreload" / "simulated")
    assert (
        StatePaths.for_simulation({"NVRELOAD_STATE_DIR": "/x", "XDG_STATE_HOME": str(tmp_path)}).journal
        == "/x/journal.json"
    )


def test_stop_then_start_without_a_state_dir_find_each_other_and_leave_no_temp_dirs(tmp_path):
    xdg = tmp_path / "xdg"
    stop = run_without_state_dir(xdg, "--stop", "--simulate", "--yes", "--json")
    assert stop.returncode == 0, stop.stderr
    start = run_without_state_dir(xdg, "--start", "--simulate", "--yes", "--json")
    assert start.returncode == 0, start.stderr
    assert json.loads(start.stdout)["result"] == "started"
    assert sorted(os.listdir(xdg / "nvreload" / "simulated")) == ["journal.json", "lock", SIM_NODE]


def _scenario(tmp_path, name, **changes):
    from nvreload.engine.sim import default_scenario

    scenario = default_scenario() | changes
    path = tmp_path / name
    path.write_text(json.dumps(scenario))
    return str(path)


def test_a_new_scenario_file_replaces_a_node_made_from_another(tmp_path):
    env = {"NVRELOAD_STATE_DIR": str(tmp_path / "state")}
    first = _scenario(tmp_path, "first.json")
    second = _scenario(
        tmp_path, "second.json", driver={"loaded_version": "550.90.07", "installed_version": "570.86.15"}
    )
    assert run_cli("--reload", "--simulate", first, "--yes", "--json", env=env).returncode == 0
    proc = run_cli("--reload", "--simulate", second, "--yes", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    node = json.loads((tmp_path / "state" / SIM_NODE).read_text())
    assert node["loaded_version"] == "570.86.15"  # the second scenario's node, not the first one's


def test_a_new_scenario_file_is_refused_while_a_run_on_the_old_node_is_unfinished(tmp_path):
    env = {"NVRELOAD_STATE_DIR": str(tmp_path / "state")}
    first = _scenario(tmp_path, "first.json")
    second = _scenario(tmp_path, "second.json", mofed_ready=False)
    assert run_cli("--stop", "--simulate", first, "--yes", "--json", env=env).returncode == 0
    before = (tmp_path / "state" / SIM_NODE).read_text()
    proc = run_cli("--reload", "--simulate", second, "--yes", "--json", env=env)
    assert proc.returncode == ExitCode.REFUSED, proc.stderr
    assert "made from another scenario" in proc.stderr and "state stopped" in proc.stderr
    assert (tmp_path / "state" / SIM_NODE).read_text() == before
    assert run_cli("--start", "--simulate", "--yes", "--json", env=env).returncode == 0  # the old node comes back


@pytest.mark.parametrize(
    "change,where",
    [
        ({"processes": [{"pid": "abc", "holds": ["nvidia"]}]}, "processes[0].pid: 'abc' is not of type 'integer'"),
        ({"processes": [{"pid": 0}]}, "processes[0].pid: 0 is less than the minimum of 1"),
        ({"faults": [{"at": "reboot", "error": "x"}]}, "faults[0].at: 'reboot' is not one of"),
        ({"faults": [{"at": "verify"}]}, "faults[0]"),
        ({"modules": {"nvidia": {}}}, "modules: {'nvidia': {}} is not of type 'array'"),
        (
            {"modules": [{"name": "nvidia", "parameters": {"NVreg_X": 1}}]},
            "modules[0].parameters.NVreg_X: 1 is not of type 'string'",
        ),
        ({"gpus": [{"pci_bus_id": 7}]}, "gpus[0].pci_bus_id: 7 is not of type 'string'"),
        ({"services": [{"name": "x.service", "active": "yes"}]}, "services[0].active: 'yes' is not of type 'boolean'"),
        ({"containers": [{"id": "zz", "name": "c"}]}, "containers[0].id: 'zz' does not match"),
        ({"latency": {"stop_container": -1}}, "latency.stop_container: -1 is less than the minimum of 0"),
        ({"kernel": "6.1"}, "kernel: '6.1' is not of type 'object'"),
        ({"mofed_ready": "no"}, "mofed_ready: 'no' is not of type 'boolean'"),
        ({"unknown_key": 1}, "Additional properties are not allowed ('unknown_key' was unexpected)"),
    ],
)
def test_a_scenario_of_the_wrong_type_is_bad_input_naming_the_key(tmp_path, change, where):
    path = _scenario(tmp_path, "bad.json", **change)
    proc = run_cli(
        "--reload", "--simulate", path, "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(tmp_path / "state")}
    )
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and f"{path}: " in proc.stderr and where in proc.stderr, (
        proc.stderr
    )
    assert not (tmp_path / "state" / "journal.json").exists()


def test_a_corrupt_simulated_node_is_bad_input_naming_its_file(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / SIM_NODE).write_text('{"loaded": ')
    proc = run_cli("--reload", "--simulate", "--yes", env={"NVRELOAD_STATE_DIR": str(state)})
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
    assert (
        f"{state / SIM_NODE}: not a simulated node's state" in proc.stderr
        and len(proc.stderr.strip().splitlines()) == 1
    )


def test_a_state_dir_that_is_a_file_is_bad_input_naming_it(tmp_path):
    state = tmp_path / "state"
    state.write_text("")
    proc = run_cli("--reload", "--simulate", "--yes", env={"NVRELOAD_STATE_DIR": str(state)})
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
    assert proc.stderr.strip() == f"nvreload: state directory {state} is not a directory"


def test_a_state_dir_that_cannot_be_written_is_bad_input_naming_it(tmp_path):
    if os.geteuid() == 0:
        # root writes through mode bits: a read-only bind mount would need privileges the suite does
        # not take, so a directory under a file stands for a path nothing can be created in
        state = tmp_path / "a-file" / "state"
        (tmp_path / "a-file").write_text("")
        expected = f"{tmp_path / 'a-file'}: Not a directory"
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        state = tmp_path / "ro" / "state"
        expected = "cannot be made: Permission denied"
    proc = run_cli("--stop", "--simulate", "--yes", env={"NVRELOAD_STATE_DIR": str(state)})
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
    assert (
        f"state directory {state}" in proc.stderr
        and expected in proc.stderr
        and len(proc.stderr.strip().splitlines()) == 1
    )


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "abc", "0"])
def test_an_nvml_timeout_that_is_not_a_number_of_seconds_is_bad_input_naming_the_variable(tmp_path, value):
    for args in (["--status", "--json"], ["--reload", "--simulate", "--yes"]):
        proc = run_cli(*args, env={"NVRELOAD_NVML_TIMEOUT": value, "NVRELOAD_STATE_DIR": str(tmp_path / "state")})
        assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
        assert proc.stderr.strip().startswith(f"nvreload: NVRELOAD_NVML_TIMEOUT={value!r}: not a number of seconds")


def test_status_and_verify_on_simulate_read_the_simulated_node_not_this_machine(tmp_path):
    from importlib import resources

    import jsonschema

    schema = json.loads(resources.files("nvreload").joinpath("schema/status.schema.json").read_text())
    env = {"NVRELOAD_STATE_DIR": str(tmp_path / "state")}
    scenario = _scenario(tmp_path, "node.json", kernel={"release": "6.8.0-sim-kernel", "module_unload_supported": True})
    before = run_cli("--status", "--simulate", scenario, "--json", env=env)
    assert before.returncode == ExitCode.CRITICAL, before.stderr
    document = json.loads(before.stdout)
    jsonschema.validate(document, schema)
    assert document["node"]["hostname"] == "simulated" and document["node"]["kernel_release"] == "6.8.0-sim-kernel"
    assert [f["code"] for f in document["findings"]] == ["version_mismatch"]
    assert not (tmp_path / "state" / SIM_NODE).exists()  # reading writes nothing
    assert run_cli("--verify", "--simulate", scenario, "--json", env=env).returncode == ExitCode.CRITICAL
    assert run_cli("--reload", "--simulate", scenario, "--yes", "--json", env=env).returncode == 0
    after = run_cli("--status", "--simulate", "--json", env=env)
    assert after.returncode == 0, after.stdout
    assert json.loads(after.stdout)["findings"] == []
    verify = run_cli("--verify", "--simulate", "--json", env=env)
    assert verify.returncode == 0 and json.loads(verify.stdout)["healthy"] is True


def test_collect_on_simulate_is_a_usage_error(tmp_path):
    proc = run_cli("--collect", str(tmp_path / "x.tgz"), "--simulate")
    assert proc.returncode == ExitCode.USAGE and "nothing to collect from --simulate" in proc.stderr
