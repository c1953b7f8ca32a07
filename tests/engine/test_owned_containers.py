"""Containers a systemd unit owns (Quadlet, podman generate systemd) on the simulated node, which
has systemd's rule: a container stopped behind its unit's back is started again at once."""

import json

from helpers import run_cli
from sim_helpers import assert_consistent, node_state, write_scenario

from nvreload.engine.sim import SimulatedNode, default_scenario, load_scenario

OWNED = {
    "id": "d0d0" + "0" * 60,
    "name": "q-train",
    "running": True,
    "markers": ["cdi:nvidia.com/gpu=0"],
    "engine": "podman",
    "unit": "q-train.service",
    "holds": ["nvidia", "nvidia_uvm"],
}


def scenario(tmp_path):
    base = default_scenario()
    return write_scenario(
        tmp_path,
        containers=base["containers"] + [OWNED],
        services=base["services"] + [{"name": "q-train.service", "active": True}],
    )


def test_the_simulated_systemd_starts_an_owned_container_stopped_behind_its_unit_again(tmp_path):
    node = SimulatedNode(load_scenario(scenario(tmp_path)), str(tmp_path / "state"))
    node.stop_container(OWNED["id"], 5)
    (box,) = [c for c in node.s["containers"] if c["name"] == "q-train"]
    assert box["running"] and box["starts"] == 1


def test_a_reload_stops_an_owned_container_through_its_unit_once_and_brings_both_back(tmp_path):
    env = {"NVRELOAD_STATE_DIR": str(tmp_path / "state")}
    proc = run_cli("--reload", "--simulate", scenario(tmp_path), "--yes", "--json", env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert "q-train.service" in report["stopped"] and "q-train" not in report["stopped"]
    state = node_state(tmp_path / "state")
    assert_consistent(state, reloaded=True)
    (unit,) = [s for s in state["services"] if s["name"] == "q-train.service"]
    (box,) = [c for c in state["containers"] if c["name"] == "q-train"]
    assert unit["starts"] == 1 and box["starts"] == 1  # once, through the unit


def test_simulated_status_counts_the_gpu_containers_of_each_engine(tmp_path):
    env = {"NVRELOAD_STATE_DIR": str(tmp_path / "state")}
    proc = run_cli("--status", "--simulate", scenario(tmp_path), "--json", env=env)
    engines = json.loads(proc.stdout)["consumers"]["engines"]
    assert engines == [
        {"name": "docker", "url": "simulated://docker", "gpu_containers": 2},
        {"name": "podman", "url": "simulated://podman", "gpu_containers": 1},
    ]
