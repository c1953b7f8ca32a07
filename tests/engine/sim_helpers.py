import json
import os

from nvreload.engine.sim import NODE_FILE, default_scenario


def with_fabric_manager(services: list[dict]) -> list[dict]:
    """An NVSwitch (HGX) node's services: nv-fabricmanager runs there, holding the GPUs (the default
    node is PCIe, without it)."""
    return [{"name": "nvidia-fabricmanager.service", "active": True, "holds": ["nvidia"]}, *services]


def write_scenario(tmp_path, **changes) -> str:
    scenario = default_scenario()
    scenario.update(changes)
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario))
    return str(path)


def node_state(state_dir) -> dict:
    with open(os.path.join(state_dir, NODE_FILE)) as handle:
        return json.load(handle)


def assert_consistent(state: dict, reloaded: bool | None = None) -> None:
    """Every original module loaded, every GPU service active, every container running again."""
    assert set(state["loaded"]) == {m["name"] for m in state["modules"]}, state["loaded"]
    assert all(sv["active"] for sv in state["services"]), state["services"]
    assert all(c["running"] for c in state["containers"]), state["containers"]
    assert sorted(state["consoles_bound"]) == sorted(state["consoles"]), state["consoles_bound"]
    if reloaded is True:
        assert state["loaded_version"] == state["installed_version"]
