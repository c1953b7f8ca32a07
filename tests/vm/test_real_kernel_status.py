"""`nvreload --status --json` on a real kernel: what it reads from /proc/modules, /sys/module,
/proc/devices, /proc/driver/nvidia and the PCI bus matches what the kernel has."""

import pytest

pytestmark = pytest.mark.realkernel

A, B = "580.95.05", "580.105.08"


def test_status_on_a_real_kernel_reads_versions_holders_refcounts_majors_and_consumers(run_vm):
    run = run_vm(f"""
install_driver {A}
load_stack
persistenced_unit
start_holder
holder=$!
sleep 0.5
echo "holder=$holder" > /job/holder
grep -E '^nvidia' /proc/modules > /job/proc_modules
grep -E 'nvidia' /proc/devices > /job/proc_devices
record status --status --json
""")
    assert run.rc == 0, run.explain()
    status = run.json("status.json")
    assert status["driver"]["loaded"] and status["driver"]["kernel_module_version"] == A
    assert status["driver"]["on_disk_module_version"] == A and status["driver"]["userspace_version"] == A
    assert status["driver"]["nvml"] == "ok", status["driver"]
    modules = {m["name"]: m for m in status["modules"]}
    # holders and refcounts as the kernel keeps them, read back from /proc/modules
    kernel = {line.split()[0]: line.split() for line in run.text("proc_modules").splitlines()}
    for name in ("nvidia", "nvidia_uvm", "nvidia_modeset", "nvidia_drm"):
        assert modules[name]["version"] == A
        assert modules[name]["refcount"] == int(kernel[name][2]), (name, kernel[name])
    assert set(modules["nvidia"]["holders"]) == {"nvidia_uvm", "nvidia_modeset"}
    assert modules["nvidia_modeset"]["holders"] == ["nvidia_drm"]
    # the two stand-in GPUs on the PCI bus, bound to nvidia
    assert len(status["gpus"]) == 2 and all(g["driver_bound"] and g["in_nvml"] for g in status["gpus"])
    # consumers: the plain holder and the unit's process, found through the device majors
    holder = int(run.text("holder").split("=")[1])
    processes = {p["pid"]: p for p in status["consumers"]["processes"]}
    assert holder in processes and any(d.startswith("195:") for d in processes[holder]["devices"])
    assert any(p.get("systemd_unit") == "nvidia-persistenced.service" for p in processes.values())
    assert "195 nvidia-frontend" in run.text("proc_devices")
    assert status["recommended_action"] == "none" and status["reload"]["feasible"], status["findings"]
