"""XIDs sorted into NVIDIA's Xid catalog buckets (Resolution Bucket, Immediate Action), one row per
bucket and the edges between them, with the catalog's own mnemonic as the case id; and what each
bucket becomes in the diagnosis."""

import pytest
from helpers import codes, status_of
from snapshot_builder import healthy_node

from nvreload.diagnosis.xid_catalog import bucket

CATALOG = [
    # (xid, mnemonic in the catalog, its immediate-action bucket, nvreload's action)
    (8, "ROBUST_CHANNEL_FIFO_ERROR_IDLE_TIMEOUT", "RESTART_APP", "restart_application"),
    (13, "ROBUST_CHANNEL_GR_EXCEPTION", "RESTART_APP", "restart_application"),
    (31, "ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT", "RESTART_APP", "restart_application"),
    (32, "ROBUST_CHANNEL_PBDMA_ERROR", "RESTART_APP", "restart_application"),
    (94, "ROBUST_CHANNEL_CONTAINED_ERROR", "RESTART_APP", "restart_application"),
    (105, "ROBUST_CHANNEL_NVJPG7_ERROR", "RESTART_APP", "restart_application"),
    (135, "ROBUST_CHANNEL_CE19_ERROR", "RESTART_APP", "restart_application"),
    (139, "ROBUST_CHANNEL_OFA1_ERROR", "RESTART_APP", "restart_application"),
    (43, "ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR", "IGNORE", None),
    (45, "ROBUST_CHANNEL_PREEMPTIVE_REMOVAL", "WORKFLOW_XID_45", None),
    (92, "EXCESSIVE_SBE_INTERRUPTS", "IGNORE", None),
    (121, "C2C_ERROR", "IGNORE", None),
    (157, "RESOURCE_RETIREMENT_FAILURE", "IGNORE", None),
    (1, "ROBUST_CHANNEL_FIFO_ERROR_FIFO_METHOD", "unused", None),
    (144, "NVLINK_SAW_ERROR", "WORKFLOW_NVLINK5_ERR", None),
    (163, "PSHC_DISENGAGED", "no bucket", None),
    (46, "ROBUST_CHANNEL_GPU_TIMEOUT_ERROR", "RESET_GPU", "reset_gpu"),
    (48, "ROBUST_CHANNEL_GPU_ECC_DBE", "WORKFLOW_XID_48", "reset_gpu"),
    (62, "PMU_HALT_ERROR", "RESET_GPU", "reset_gpu"),
    (64, "INFOROM_DRAM_RETIREMENT_FAILURE", "RESET_GPU", "reset_gpu"),
    (74, "NVLINK_ERROR", "WORKFLOW_NVLINK_ERR", "reset_gpu"),
    (95, "ROBUST_CHANNEL_UNCONTAINED_ERROR", "RESET_GPU", "reset_gpu"),
    (119, "GSP_RPC_TIMEOUT", "RESET_GPU", "reset_gpu"),
    (120, "GSP_ERROR", "RESET_GPU", "reset_gpu"),
    (143, "GPU_INIT_ERROR", "RESET_GPU", "reset_gpu"),
    (155, "NVLINK_SW_DEFINED_ERROR", "RESET_GPU", "reset_gpu"),
    (158, "GPU_FATAL_TIMEOUT", "RESET_GPU", "reset_gpu"),
    (79, "ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS", "RESTART_BM", "reboot"),
    (151, "ROBUST_CHANNEL_KEY_ROTATION_ERROR", "RESTART_VM", "reboot"),
    (54, "SILENT_RUNNING_PWR_REDUCED_CLOCKING", "CHECK_MECHANICALS", "service_hardware"),
    (142, "ROBUST_CHANNEL_NVENC3_ERROR", "CONTACT_SUPPORT", "service_hardware"),
    (78, "VGPU_START_ERROR", "UPDATE_SWFW", "install_driver"),
    # the one deliberate difference: the row waits for a GPU reset, as the driver's own line says
    (63, "INFOROM_DRAM_RETIREMENT_EVENT", "IGNORE", "reset_gpu"),
]


@pytest.mark.parametrize("xid, mnemonic, catalog_bucket, action", CATALOG, ids=[f"{r[0]}-{r[1]}" for r in CATALOG])
def test_xids_fall_into_the_catalogs_buckets(xid, mnemonic, catalog_bucket, action):
    assert bucket(xid) == action, f"Xid {xid} {mnemonic}: the catalog says {catalog_bucket}"


@pytest.mark.parametrize(
    "message, expected",
    [
        ("GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)", "reset_gpu"),
        ("GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)", "reboot"),
        ("GPU recovery action changed from 0x0 (None) to 0x4 (Drain and Reset)", "reset_gpu"),
        ("GPU recovery action changed from 0x1 (GPU Reset Required) to 0x0 (None)", None),
        ("something else entirely", None),
    ],
)
def test_xid_154_says_its_own_recovery_action(message, expected):
    assert bucket(154, message) == expected


LOAD = "[    5.100000] NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  550.127.08  Release Build"


def diagnosed_with(tmp_path, *lines: str) -> dict:
    snap = healthy_node(tmp_path / "node")
    snap.dmesg([LOAD, *lines])
    return status_of(snap.root)


def test_a_reboot_the_driver_asks_for_is_not_a_gpu_that_fell_off_the_bus(tmp_path):
    doc = diagnosed_with(
        tmp_path,
        "[ 900.1] NVRM: Xid (PCI:0000:3b:00): 154, GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)",
    )
    assert "xid_reboot_required" in codes(doc) and "gpu_fallen_off_bus" not in codes(doc)
    assert doc["recommended_action"] == "reboot" and "xid_reboot_required" in doc["reload"]["blockers"]


def test_aux_power_not_connected_asks_for_the_hardware_to_be_checked(tmp_path):
    doc = diagnosed_with(tmp_path, "[ 900.1] NVRM: Xid (PCI:0000:3b:00): 54, pid=0, Auxiliary power is not connected")
    service = next(f for f in doc["findings"] if f["code"] == "xid_hardware_service")
    assert service["action"] == "service_hardware" and service["evidence"]["pci_bus_ids"] == ["0000:3b:00.0"]


def test_a_vgpu_start_error_asks_for_a_driver_update(tmp_path):
    doc = diagnosed_with(tmp_path, "[ 900.1] NVRM: Xid (PCI:0000:3b:00): 78, pid=0, vGPU Start Error")
    assert next(f for f in doc["findings"] if f["code"] == "xid_driver_update")["action"] == "install_driver"


def test_an_xid_the_catalog_says_to_ignore_draws_no_finding(tmp_path):
    doc = diagnosed_with(tmp_path, "[ 900.1] NVRM: Xid (PCI:0000:3b:00): 43, pid=4242, name=python3, Ch 00000010")
    assert not [c for c in codes(doc) if c.startswith("xid_")] and doc["recommended_action"] == "none"
