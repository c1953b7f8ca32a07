"""Reloads on a real kernel: rmmod and modprobe for real, a real systemd unit and a real process
holding /dev/nvidia*, the journal on the guest's disk."""

import pytest

pytestmark = pytest.mark.realkernel

A, B, C = "580.95.05", "580.105.08", "580.119.02"

# Version A loaded and in use by nvidia-persistenced (a unit) and a plain process; then an upgrade
# puts version B's modules and libraries on disk, and NVML says "version mismatch".
MISMATCHED_NODE = f"""
install_driver {A}
echo "options nvidia NVreg_EnableGpuFirmware=0" > /etc/modprobe.d/nvidia.conf
modprobe nvidia_drm modeset=1 && modprobe nvidia_uvm
persistenced_unit
start_holder
echo $! > /job/holder.pid
install_driver {B}
"""


def state_of(run, name: str) -> dict:
    return dict(line.split("=", 1) for line in run.text(f"{name}.state").splitlines())


def test_a_version_mismatch_reload_ends_with_the_new_module_and_the_unit_back(run_vm):
    run = run_vm(
        MISMATCHED_NODE
        + """
record before --status --json
record reload --reload --yes --json
snapshot_state after
record verify --verify --json
"""
    )
    assert run.rc == 0, run.explain()
    before = run.json("before.json")
    assert before["driver"]["nvml"] == "version_mismatch" and before["recommended_action"] == "reload", before[
        "findings"
    ]
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
    # modeset=1 was given by hand, not in modprobe.d: it comes back; modprobe.d's own options apply
    assert (after["drm_modeset"], after["gpu_firmware"]) == ("Y", "0")
    assert run.text("verify.rc").strip() == "0", run.text("verify.json")


def test_a_driver_run_installs_the_new_version_between_unload_and_load(run_vm, vm_image, tmp_path):
    from installer import build_installer

    run_file = build_installer(tmp_path, vm_image.cache / "share", C)
    run = run_vm(
        MISMATCHED_NODE
        + f"""
record reload --reload --yes --json --driver /job/{run_file.name}
snapshot_state after
cp /var/log/nvidia-installer.log /job/installer.log
""",
        files={run_file.name: run_file.read_bytes()},
    )
    assert run.rc == 0, run.explain()
    assert run.text("reload.rc").strip() == "0", run.explain()
    assert [s["name"] for s in run.json("reload.json")["steps"]][1:4] == [
        "unload_modules",
        "install_driver",
        "load_modules",
    ]
    after = state_of(run, "after")
    assert after["loaded_version"] == C and after["persistenced"] == "active" and after["journal_state"] == "reloaded"
    # unattended, the module left for nvreload to load, the flavour the node ran
    assert run.text("installer.log").split() == [
        "nvidia-installer",
        "--silent",
        "--no-questions",
        "--ui=none",
        "--skip-module-load",
        "--kernel-module-type=open",
    ]


def reload_with_driver(run_vm, name: str, archive: bytes):
    """Version A loaded, on disk and in use by a unit; `--reload --driver` with this archive."""
    return run_vm(
        f"""
install_driver {A}
load_stack
persistenced_unit
record reload --reload --yes --json --driver /job/{name}
snapshot_state after
""",
        files={name: archive},
    )


def test_an_installer_that_fails_rolls_back_to_the_old_version_for_real(run_vm, vm_image, tmp_path):
    from installer import BUILD_FAILURE, build_installer

    run_file = build_installer(tmp_path, vm_image.cache / "share", C, failure=BUILD_FAILURE)
    run = reload_with_driver(run_vm, run_file.name, run_file.read_bytes())
    assert run.rc == 0, run.explain()
    assert run.text("reload.rc").strip() == "10", run.explain()
    report = run.json("reload.json")
    assert report["result"] == "rolled_back" and "Unable to build the NVIDIA kernel module" in report["error"]
    after = state_of(run, "after")
    assert after["loaded_version"] == A
    assert after["modules"].split() == ["nvidia", "nvidia_drm", "nvidia_modeset", "nvidia_uvm"]
    assert after["persistenced"] == "active" and after["journal_state"] == "rolled_back"


def test_a_corrupt_run_is_refused_before_any_consumer_stops(run_vm, vm_image, tmp_path):
    from installer import build_installer

    run_file = build_installer(tmp_path, vm_image.cache / "share", C)
    data = bytearray(run_file.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte in the payload: its checksum no longer matches
    run = reload_with_driver(run_vm, run_file.name, bytes(data))
    assert run.rc == 0, run.explain()
    assert run.text("reload.rc").strip() == "66", run.explain()
    assert "fails its integrity check" in run.text("reload.err")
    after = state_of(run, "after")
    assert after["loaded_version"] == A and after["persistenced"] == "active" and after["journal_state"] == "none"


def test_a_reset_takes_nvidia_drm_out_for_the_resets_and_loads_it_back_as_it_was(run_vm):
    # the driver (here its nvidia-smi stand-in) refuses a GPU reset while nvidia_drm is loaded
    run = run_vm(
        f"""
install_driver {A}
modprobe nvidia_drm modeset=1 && modprobe nvidia_uvm
persistenced_unit
record reset --reset --yes --json
snapshot_state after
cp /run/nvidia-smi.log /job/nvidia-smi.log
"""
    )
    assert run.rc == 0, run.explain()
    assert run.text("reset.rc").strip() == "0", run.text("reset.err") + run.text("nvidia-smi.log")
    assert run.json("reset.json")["result"] == "reset"
    planned = [a for a in run.json("nvreload-journal.json")["plan"] if a["step"] == "reset_gpus"]
    gpus = [a["target"] for a in planned if a["action"] == "reset_gpu"]
    assert [a["action"] for a in planned] == ["unload_module", *["reset_gpu"] * len(gpus), "load_module"] and gpus
    done = [line for line in run.text("nvidia-smi.log").splitlines() if "--gpu-reset" in line]
    assert done == [f"nvidia-smi --gpu-reset -i {bus}" for bus in gpus], run.text("nvidia-smi.log")
    after = state_of(run, "after")
    assert after["modules"].split() == ["nvidia", "nvidia_drm", "nvidia_modeset", "nvidia_uvm"]
    assert (after["drm_modeset"], after["persistenced"], after["journal_state"]) == ("Y", "active", "reset")
