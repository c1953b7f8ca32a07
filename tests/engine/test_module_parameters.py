"""A module loaded with parameters other than modprobe.d's (modprobe.d edited since, a tuning script,
a load by hand) comes back with its own after a reload and after --reset: every module, not only
nvidia_drm's modeset. modprobe.d here says something else for each of them, so a load that fell
back to modprobe.d would show. (A parameter modprobe.d does not name is passed only where its
default is known, as nvidia_drm's modeset: the sysfs value of any other may be just the old
driver's default, which must not be pinned onto a new driver.)"""

import json

import pytest
from helpers import run_cli
from sim_helpers import assert_consistent, node_state, write_scenario

from nvreload.engine.sim import default_scenario

OWN = {
    "nvidia": {"NVreg_EnableGpuFirmware": "0", "NVreg_DeviceFileMode": "432"},
    "nvidia_uvm": {"uvm_perf_prefetch_enable": "0"},
    "nvidia_modeset": {"hdmi_deepcolor": "0"},
    "nvidia_drm": {"modeset": "Y", "fbdev": "Y"},
    "nvidia_peermem": {"peerdirect_support": "1"},
}
MODPROBE_D = {
    "nvidia": {"NVreg_EnableGpuFirmware": "1", "NVreg_DeviceFileMode": "438"},
    "nvidia_uvm": {"uvm_perf_prefetch_enable": "1"},
    "nvidia_modeset": {"hdmi_deepcolor": "1"},
    "nvidia_drm": {"modeset": "N", "fbdev": "N"},
    "nvidia_peermem": {"peerdirect_support": "0"},
}
HEALTHY = {"loaded_version": "550.127.08", "installed_version": "550.127.08"}


def tuned(tmp_path, **changes):
    modules = [{"name": m["name"], "parameters": OWN[m["name"]]} for m in default_scenario()["modules"]]
    assert {m["name"] for m in modules} == set(OWN)  # every module of the node has parameters of its own
    return write_scenario(tmp_path, modules=modules, modprobe_d=MODPROBE_D, **changes)


@pytest.mark.parametrize("action", ["reload", "reset"])
def test_every_module_comes_back_with_its_own_parameters_not_modprobe_ds(tmp_path, action):
    scenario = tuned(tmp_path, **({"driver": HEALTHY} if action == "reset" else {}))
    state = tmp_path / "state"
    proc = run_cli(f"--{action}", "--simulate", scenario, "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    node = node_state(state)
    assert_consistent(node)
    for name, own in OWN.items():
        loaded = node["loaded"][name]
        assert {k: loaded.get(k) for k in own} == own, (name, loaded)
    if action == "reset":  # nvidia_drm went out for the resets: what came back is a new load
        assert node["gpus"][0].get("resets") == 1


def test_a_module_crashed_out_mid_unload_comes_back_with_its_own_parameters_from_rollback(tmp_path):
    scenario = tuned(tmp_path, driver=HEALTHY, faults=[{"at": "unload_modules", "crash": "during", "skip": 3}])
    env = {"NVRELOAD_STATE_DIR": str(tmp_path / "state")}
    assert run_cli("--reload", "--simulate", scenario, "--yes", env=env).returncode == -9
    back = run_cli("--rollback", "--simulate", "--json", env=env)
    assert json.loads(back.stdout)["result"] == "rolled_back", back.stdout + back.stderr
    node = node_state(tmp_path / "state")
    for name, own in OWN.items():
        assert {k: node["loaded"][name].get(k) for k in own} == own, name
