"""Real incidents, one snapshot each (tests/fixtures/incidents/<kind>/snapshot.tar.gz, built from a public report's
own kernel log lines; each README.md names the report): the finding that explains it, the action
that fixes it, whether a reload can, and the evidence line that shows why."""

import json
import re
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from helpers import status_of

INCIDENTS = Path(__file__).resolve().parents[1] / "fixtures" / "incidents"
SCHEMA = json.loads(resources.files("nvreload").joinpath("schema/status.schema.json").read_text())


def diagnosed(kind: str) -> dict:
    document = status_of(INCIDENTS / kind / "snapshot.tar.gz")
    jsonschema.validate(document, SCHEMA)
    return document


def finding(document: dict, code: str) -> dict:
    found = [f for f in document["findings"] if f["code"] == code]
    assert len(found) == 1, f"{code}: {[f['code'] for f in document['findings']]}"
    return found[0]


def test_every_incident_snapshot_names_the_report_it_was_built_from_and_what_fixed_it():
    kinds = [d for d in INCIDENTS.iterdir() if d.is_dir()]
    assert len(kinds) >= 20
    repositories = set()
    for kind in kinds:
        text = (kind / "README.md").read_text()
        (report,) = re.findall(r"^Report: https://github\.com/([^/\s]+/[^/\s]+)/\S+$", text, re.MULTILINE)
        repositories.add(report.lower())
        assert "**What fixed it.**" in text, kind.name
    assert len(repositories) >= 4, repositories


def test_a_gpu_that_fell_off_the_bus_while_this_driver_loaded_needs_a_reboot():
    # the probe's three-line message comes just before that same load's "NVRM: loading" line
    doc = diagnosed("fallen-off-bus-at-load")
    fallen = finding(doc, "gpu_fallen_off_bus")
    assert fallen["action"] == "reboot"
    assert fallen["evidence"]["pci_bus_ids"] == ["0000:b3:00.0"]
    assert fallen["evidence"]["lines"] == [
        "[ 1843.308145] NVRM: The NVIDIA GPU 0000:b3:00.0 (PCI ID: 10de:26b5) installed in this system has "
        "fallen off the bus and is not responding to commands."
    ]
    assert doc["recommended_action"] == "reboot"
    assert doc["reload"] == {"feasible": False, "blockers": ["gpu_fallen_off_bus"]}
    assert "gpu_driver_unbound" not in [f["code"] for f in doc["findings"]]  # the log says why it is unbound


def test_secure_boot_refusing_the_module_asks_for_a_signed_module_not_a_reload():
    doc = diagnosed("secure-boot-unsigned-module")
    refused = finding(doc, "module_signature_rejected")
    assert refused["action"] == "sign_module"
    assert refused["evidence"]["lines"][-1] == "[  412.520937] Loading of unsigned module is rejected"
    assert doc["recommended_action"] == "sign_module"
    assert doc["reload"] == {"feasible": False, "blockers": ["module_signature_rejected"]}


def test_gpus_nouveau_owns_while_nvidia_is_not_loaded_are_one_finding_and_no_reload():
    doc = diagnosed("nouveau-owns-gpus")
    other = finding(doc, "gpu_bound_to_other_driver")
    assert other["evidence"]["gpus"] == [
        {"pci_bus_id": bus, "driver": "nouveau"} for bus in ("0000:5a:00.0", "0000:5e:00.0", "0000:62:00.0")
    ]
    assert other["evidence"]["lines"] == [
        "[188549.976351] NVRM: The NVIDIA probe routine was not called for 3 device(s)."
    ]
    assert other["action"] == "reboot" and "nouveau" in other["message"]
    assert doc["recommended_action"] == "reboot"
    assert doc["reload"] == {"feasible": False, "blockers": ["gpu_bound_to_other_driver"]}


def test_debians_nvidia_current_module_is_the_one_modprobe_nvidia_loads():
    doc = diagnosed("debian-nvidia-current")
    assert doc["driver"]["on_disk_module_path"] == "/lib/modules/6.5.10-x64v3-xanmod1/updates/dkms/nvidia-current.ko"
    assert doc["driver"]["on_disk_module_version"] == "525.125.06"
    assert doc["findings"] == []
    assert (doc["recommended_action"], doc["reload"]["feasible"]) == ("none", True)


def test_nvidia_peermem_built_against_another_ib_core_is_named_with_its_symbols():
    doc = diagnosed("peermem-ib-core-mismatch")
    failed = finding(doc, "dependent_module_load_failed")
    (module,) = failed["evidence"]["modules"]
    assert module["module"] == "nvidia_peermem"
    assert module["reasons"] == ["symbol_version", "unknown_symbol"]
    assert module["symbols"] == ["ib_register_peer_memory_client", "ib_unregister_peer_memory_client"]
    assert (
        "[Tue Sep  8 17:21:18 2026] nvidia_peermem: disagrees about version of symbol ib_register_peer_memory_client"
        in module["lines"]
    )
    assert failed["action"] == "rebuild_module" and "ib_core" in failed["message"]
    assert "module_load_failed" not in [f["code"] for f in doc["findings"]]  # nvidia itself loaded fine
    assert doc["reload"] == {"feasible": True, "blockers": []}


def test_a_pending_mig_mode_change_asks_for_a_gpu_reset():
    doc = diagnosed("mig-pending-disable")
    pending = finding(doc, "mig_mode_change_pending")
    assert pending["evidence"]["gpus"] == [
        {"pci_bus_id": "0000:c1:00.0", "current": "Enabled", "pending": "Disabled", "nvml_pids": []}
    ]
    assert pending["action"] == "reset_gpu"
    assert "nvidia-persistenced" in pending["message"]  # nothing scanned in a snapshot: say who usually holds it
    assert pending["evidence"]["nvidia_drm_loaded"] is False and "nvidia_drm" not in pending["message"]
    assert doc["recommended_action"] == "reset_gpu"
    assert doc["reload"]["feasible"] is True


def test_gpus_without_a_bar_in_a_vm_need_the_platform_fixed_not_a_reload():
    doc = diagnosed("vm-bar1-unassigned")
    bar = finding(doc, "gpu_bar_unassigned")
    assert bar["evidence"]["pci_bus_ids"] == ["0000:14:00.0", "0000:1c:00.0"]
    assert (
        "[83260.063553] NVRM: This PCI I/O region assigned to your NVIDIA device is invalid: BAR1 is 0M @ 0x0 "
        "(PCI:0000:14:00.0)"
    ) in bar["evidence"]["lines"]
    assert bar["action"] == "fix_platform"
    assert doc["recommended_action"] == "fix_platform"
    assert "gpu_driver_unbound" not in [f["code"] for f in doc["findings"]]


def test_a_gpu_whose_boot_firmware_never_finished_needs_a_cold_power_cycle_not_a_reload():
    doc = diagnosed("rm-init-adapter-failed")
    firmware = finding(doc, "gpu_firmware_boot_incomplete")
    assert firmware["evidence"]["pci_bus_ids"] == ["0000:98:00.0"]
    assert (
        firmware["evidence"]["lines"][0]
        == "[  903.610907] NVRM: GPU 0000:98:00.0: RmInitAdapter failed! (0x62:0x65:1792)"
    )
    assert "failed to wait for GFW_BOOT" in firmware["evidence"]["lines"][1]
    assert (firmware["action"], doc["recommended_action"], doc["reload"]["feasible"]) == ("reboot", "reboot", False)
    assert "gpu_init_failed" not in [f["code"] for f in doc["findings"]]


def test_a_gpu_holding_a_stale_gsp_region_needs_a_reset_before_any_load():
    doc = diagnosed("gsp-wpr2-already-up")
    gsp = finding(doc, "gpu_gsp_boot_failed")
    assert gsp["evidence"]["pci_bus_ids"] == ["0000:a1:00.0"]
    assert any("unexpected WPR2 already up" in line for line in gsp["evidence"]["lines"])
    assert (gsp["action"], doc["recommended_action"], doc["reload"]["feasible"]) == ("reset_gpu", "reset_gpu", False)
    assert "gpu_init_failed" not in [f["code"] for f in doc["findings"]]


def test_a_gpu_whose_gsp_firmware_cannot_start_needs_another_driver_not_the_same_one_reloaded():
    doc = diagnosed("gsp-init-failed")
    gsp = finding(doc, "gpu_gsp_init_failed")
    assert gsp["evidence"]["pci_bus_ids"] == ["0000:05:00.0"]
    assert gsp["evidence"]["lines"] == [
        "[  217.545832] NVRM: GPU 0000:05:00.0: RmInitAdapter failed! (0x62:0xffff:1622)",
        "[  217.545145] NVRM RmInitAdapter: Cannot initialize GSP firmware RM",
    ]
    assert "NVreg_EnableGpuFirmware=0" in gsp["message"]
    # a reload may be tried, but it is not what is recommended: it loads the same driver and firmware
    assert (gsp["action"], doc["recommended_action"], doc["reload"]["feasible"]) == ("install_driver",) * 2 + (True,)
    assert "gpu_init_failed" not in [f["code"] for f in doc["findings"]]


def test_xid_63_is_a_remap_pending_until_the_next_gpu_reset():
    doc = diagnosed("xid63-row-remap")
    remap = finding(doc, "row_remap_pending")
    assert remap["evidence"]["pci_bus_ids"] == ["0000:10:1c.0"]
    assert remap["evidence"]["lines"][0].endswith(
        "63, pid=1896, Row Remapper: New row marked for remapping, reset gpu to activate."
    )
    assert (remap["action"], doc["recommended_action"], doc["reload"]["feasible"]) == ("reset_gpu", "reset_gpu", True)


def test_an_api_mismatch_after_an_upgrade_is_the_version_mismatch_a_reload_fixes():
    doc = diagnosed("api-mismatch-userspace-upgraded")
    mismatch = finding(doc, "version_mismatch")
    assert "the client has the version 535.54.03" in mismatch["evidence"]["driver_lines"][0]
    assert "client_version_mismatch" not in [f["code"] for f in doc["findings"]]  # the node's versions explain it
    assert (doc["recommended_action"], doc["reload"]["feasible"]) == ("reload", True)


def test_a_gpu_the_driver_branch_ignores_needs_the_legacy_branch_not_a_reload():
    doc = diagnosed("legacy-branch-gpu-ignored")
    unsupported = finding(doc, "gpu_unsupported_by_driver")
    assert unsupported["action"] == "install_driver"
    assert "supported through the NVIDIA 580.xx Legacy drivers" in unsupported["evidence"]["lines"][0]
    assert "gpu_probe_failed" not in [f["code"] for f in doc["findings"]]  # "No NVIDIA GPU found": its cause is named
    assert doc["recommended_action"] == "install_driver"


def test_missing_gsp_firmware_of_the_modules_version_needs_one_driver_version_installed():
    doc = diagnosed("gsp-firmware-missing")
    missing = finding(doc, "gsp_firmware_missing")
    assert missing["evidence"]["families"] == ["firmware_request_failed", "gsp_no_firmware_image"]
    assert any("nvidia/570.144/gsp_ga10x.bin" in line for line in missing["evidence"]["lines"])
    assert len(finding(doc, "version_mismatch")["evidence"]["driver_lines"]) == 3  # the three API mismatch messages
    assert doc["recommended_action"] == "install_driver"


def test_gsp_firmware_of_another_version_than_the_module_needs_one_driver_version_installed():
    doc = diagnosed("gsp-firmware-version-mismatch")
    mismatch = finding(doc, "gsp_firmware_missing")
    assert mismatch["evidence"]["families"] == ["gsp_firmware_version_mismatch"]
    assert doc["recommended_action"] == "install_driver"


def test_a_stale_nvidia_modeset_beside_the_installed_nvidia_needs_the_modules_rebuilt():
    doc = diagnosed("modeset-version-mismatch")
    stale = finding(doc, "module_version_mismatch")
    assert stale["evidence"]["lines"] == [
        "[    5.300000] nvidia-modeset: Version mismatch: nvidia.ko(378.13) nvidia-modeset(375.26)"
    ]
    assert (stale["action"], doc["recommended_action"]) == ("rebuild_module", "rebuild_module")


def test_an_oops_in_the_nvidia_module_needs_a_reboot_and_refuses_a_reload():
    doc = diagnosed("kernel-oops-in-nvidia")
    fault = finding(doc, "kernel_fault_in_nvidia_module")
    (report,) = fault["evidence"]["faults"]
    assert report["line"].endswith("BUG: kernel NULL pointer dereference, address: 0000000000000030")
    assert report["frames"] == ["Apr 28 10:17:39 nixos kernel: RIP: 0010:nvidia_vma_access+0x1b/0x350 [nvidia]"]
    assert doc["recommended_action"] == "reboot"
    assert doc["reload"] == {"feasible": False, "blockers": ["kernel_fault_in_nvidia_module"]}


def test_a_fabric_left_in_progress_is_a_finding_and_fails_verify():
    doc = diagnosed("fabric-manager-failed")
    fabric = finding(doc, "fabric_not_ready")
    assert len(fabric["evidence"]["gpus"]) == 8
    assert {g["state"] for g in fabric["evidence"]["gpus"]} == {"In Progress"}
    assert (fabric["action"], fabric["evidence"]["cause"]) == ("reload", "unknown")  # a snapshot shows no services
    # --verify reads only a live node; its checks are the same functions over the snapshot's read model
    from nvreload.diagnosis.health import run_checks
    from nvreload.host.machine import Machine
    from nvreload.read.node import read_node
    from nvreload.rootfs import open_root

    node = read_node(Machine(open_root(str(INCIDENTS / "fabric-manager-failed" / "snapshot.tar.gz"))))
    (check,) = [c for c in run_checks(node, None) if c.name == "fabric_completed"]
    assert not check.ok and "In Progress" in check.detail


def test_a_gpu_only_the_open_modules_drive_needs_the_other_flavor_not_a_reload():
    doc = diagnosed("blackwell-needs-open-modules")
    unsupported = finding(doc, "gpu_unsupported_by_driver")
    assert unsupported["evidence"]["pci_bus_ids"] == ["0000:01:00.0"]
    assert "requires use of the NVIDIA open kernel modules" in unsupported["evidence"]["lines"][0]
    assert doc["recommended_action"] == "install_driver"


def test_a_clients_own_libraries_of_another_version_need_the_nodes_version_not_a_reload():
    doc = diagnosed("container-api-mismatch")
    client = finding(doc, "client_version_mismatch")
    assert client["evidence"]["lines"] == [
        "[ 8957.099615] NVRM: API mismatch: the client has the version 570.148.08, but"
    ]
    assert (client["action"], doc["recommended_action"]) == ("install_driver", "install_driver")


@pytest.mark.parametrize("kind", sorted(d.name for d in INCIDENTS.iterdir() if d.is_dir()))
def test_no_incident_repeats_a_finding_code_or_a_blocker(kind):
    doc = diagnosed(kind)
    found = [f["code"] for f in doc["findings"]]
    assert len(found) == len(set(found))
    assert len(doc["reload"]["blockers"]) == len(set(doc["reload"]["blockers"]))
