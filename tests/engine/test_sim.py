"""The simulated node enforces the kernel's rules, so ordering bugs fail."""

import pytest

from nvreload.engine.sim import SimulatedNode, default_scenario
from nvreload.errors import HostError


@pytest.fixture
def node(tmp_path):
    return SimulatedNode(default_scenario(), str(tmp_path))


def test_a_module_with_holders_refuses_to_unload_with_the_real_error_text(node):
    with pytest.raises(
        HostError, match=r"rmmod: ERROR: Module nvidia is in use by: nvidia_modeset nvidia_peermem nvidia_uvm"
    ):
        node.unload_module("nvidia")


def test_a_module_with_open_handles_refuses_to_unload(node):
    node.bind_console("vtcon1", False)
    for name in ("nvidia_drm", "nvidia_modeset", "nvidia_peermem"):
        node.unload_module(name)
    with pytest.raises(HostError, match=r"Module nvidia_uvm is in use$"):
        node.unload_module("nvidia_uvm")


def test_nvml_reports_mismatch_until_the_new_module_loads_and_fails_while_it_is_out(node):
    assert node.nvml_status() == "version_mismatch"
    node.s["processes"].clear()
    node.s["services"].clear()
    node.s["containers"].clear()
    node.bind_console("vtcon1", False)
    for name in ("nvidia_drm", "nvidia_modeset", "nvidia_peermem", "nvidia_uvm", "nvidia"):
        node.unload_module(name)
    assert node.nvml_status() == "driver_not_loaded"
    node.load_module("nvidia", {})
    assert node.nvml_status() == "ok"


def test_a_module_cannot_load_before_what_it_depends_on(node):
    node.s["loaded"].clear()
    with pytest.raises(HostError, match="could not insert 'nvidia_drm'"):
        node.load_module("nvidia_drm", {})


def test_peermem_will_not_load_without_mofed(node):
    node.s["mofed_ready"] = False
    node.s["loaded"].pop("nvidia_peermem")
    with pytest.raises(HostError, match="could not insert 'nvidia_peermem': Invalid argument"):
        node.load_module("nvidia_peermem", {})


def test_stopping_a_container_releases_its_processes(node):
    train = next(c["id"] for c in node.s["containers"] if c["name"] == "train-llm")
    assert any(p.container_id == train for p in node.observe().processes)
    node.stop_container("train-llm", 10)
    assert not any(p.container_id == train for p in node.observe().processes)


def test_a_bound_framebuffer_console_pins_nvidia_drm(node):
    with pytest.raises(HostError, match="Module nvidia_drm is in use$"):
        node.unload_module("nvidia_drm")
    node.bind_console("vtcon1", False)
    node.unload_module("nvidia_drm")
