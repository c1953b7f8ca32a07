"""Reloads on a real kernel: rmmod and modprobe for real, a real systemd unit and a real process
holding /dev/nvidia*, the journal on the guest's disk."""

import pytest

from harness import run_case

pytestmark = pytest.mark.realkernel

A, B, C = "580.95.05", "580.105.08", "580.119.02"

# Version A loaded and in use by nvidia-persistenced (a unit) and a plain process; then an upgrade
# puts version B's modules and libraries on disk, and NVML says "version mismatch".
MISMATCHED_NODE = f"""
install_driver {A}
load_stack
persistenced_unit
start_holder
echo $! > /job/holder.pid
install_driver {B}
"""


def state_of(run, name: str) -> dict:
    return dict(line.split("=", 1) for line in run.text(f"{name}.state").splitlines())


def test_a_version_mismatch_reload_ends_with_the_new_module_and_the_unit_back(vm_image):
    run = run_case(vm_image, MISMATCHED_NODE + """
record before --status --json
record reload --reload --yes --json
snapshot_state after
record verify --verify --json
""")
    assert run.rc == 0, run.explain()
    before = run.json("before.json")
    assert before["driver"]["nvml"] == "version_mismatch" and before["recommended_action"] == "reload", before["findings"]
    assert run.text("reload.rc").strip() == "0", run.explain()
    report = run.json("reload.json")
    assert report["result"] == "reloaded"
    assert "nvidia-persistenced.service" in report["stopped"] and "nvidia-persistenced.service" in report["restarted"]
    holder = int(run.text("holder.pid"))
    assert [k["pid"] for k in report["killed"]] == [holder] and report["killed"][0]["outcome"].startswith("terminated")
    after = state_of(run, "after")
    assert after["loaded_version"] == B
    assert after["modules"].split() == ["nvidia", "nvidia_drm", "nvidia_modeset", "nvidia_uvm"]
    assert after["persistenced"] == "active" and after["journal_state"] == "reloaded"
    assert run.text("verify.rc").strip() == "0", run.text("verify.json")
