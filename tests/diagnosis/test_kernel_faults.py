"""A kernel fault whose report runs through an NVIDIA module since the driver loaded: a reboot, and
a reload refused (unloading a module whose state is unknown can hang or crash the kernel)."""

from helpers import node_of

from nvreload.diagnosis.findings import diagnose
from nvreload.read.kernel_log import parse_kernel_log

LOAD = "[    5.100000] NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  550.127.08  Release Build"
MODULES = "[ 7001.000010] Modules linked in: nvidia_uvm(POE) nvidia_drm(POE) nvidia_modeset(POE) nvidia(POE) xfs"
OOPS = [
    "[ 7001.000000] BUG: kernel NULL pointer dereference, address: 0000000000000008",
    "[ 7001.000001] #PF: supervisor read access in kernel mode",
    "[ 7001.000002] Oops: 0000 [#1] PREEMPT SMP NOPTI",
    "[ 7001.000003] CPU: 17 PID: 48211 Comm: nvidia-smi Tainted: P           OE      6.8.0-45-generic #45-Ubuntu",
    "[ 7001.000004] RIP: 0010:_nv044150rm+0x1d/0x40 [nvidia]",
    MODULES,
    "[ 7001.000011] Call Trace:",
    "[ 7001.000012]  <TASK>",
    "[ 7001.000013]  ? _nv044151rm+0x52/0x90 [nvidia]",
    "[ 7001.000014]  rm_ioctl+0x63/0xe0 [nvidia]",
    "[ 7001.000015]  nvidia_unlocked_ioctl+0x55f/0x920 [nvidia]",
    "[ 7001.000016]  __x64_sys_ioctl+0xa3/0xf0",
    "[ 7001.000017]  </TASK>",
    "[ 7001.000018] ---[ end trace 0000000000000000 ]---",
]
XFS_LOCKUP = [
    "[ 8001.000000] watchdog: BUG: soft lockup - CPU#3 stuck for 26s! [kworker/3:1:211]",
    MODULES,
    "[ 8001.000011] RIP: 0010:xfs_buf_find+0x1f/0x40 [xfs]",
    "[ 8001.000012] Call Trace:",
    "[ 8001.000013]  xfs_buf_get_map+0x52/0x90 [xfs]",
]


def test_an_oops_with_its_trace_in_nvidia_since_the_load_needs_a_reboot_and_refuses_a_reload(snapshot):
    snapshot.dmesg([LOAD, *OOPS])
    diagnosis = diagnose(node_of(snapshot))
    (fault,) = [f for f in diagnosis.findings if f.code == "kernel_fault_in_nvidia_module"]
    assert (fault.action, fault.severity, fault.blocks_reload) == ("reboot", "critical", True)
    assert diagnosis.recommended_action == "reboot" and "kernel_fault_in_nvidia_module" in diagnosis.reload_blockers
    (report,) = fault.evidence["faults"]  # the BUG line opens it; its own "Oops:" line is the same report
    assert report["kind"] == "kernel_bug" and report["line"] == OOPS[0]
    assert report["modules"] == ["nvidia"]
    assert report["frames"][0] == "[ 7001.000004] RIP: 0010:_nv044150rm+0x1d/0x40 [nvidia]"


def test_the_modules_linked_in_line_does_not_make_a_fault_nvidias(snapshot):
    snapshot.dmesg([LOAD, *XFS_LOCKUP])  # every loaded module is listed there, nvidia among them
    assert diagnose(node_of(snapshot)).findings == ()


def test_a_fault_of_the_previous_driver_instance_is_history(snapshot):
    snapshot.dmesg([*OOPS, LOAD.replace("    5.1", " 9000.1")])
    assert diagnose(node_of(snapshot)).findings == ()


def test_a_report_ends_where_the_next_one_starts():
    log = parse_kernel_log("\n".join([LOAD, *XFS_LOCKUP, *OOPS[2:]]), "dmesg")
    (fault,) = log.kernel_faults  # the lockup's report (xfs) stops at the Oops line that follows
    assert fault.kind == "kernel_oops" and fault.line == OOPS[2]


def test_a_hung_task_waiting_in_nvidia_uvm_names_that_module():
    log = parse_kernel_log(
        "\n".join(
            [
                LOAD,
                "[ 9001.0] INFO: task python3:5112 blocked for more than 122 seconds.",
                "[ 9001.1]       Tainted: P           OE      6.8.0-45-generic #45-Ubuntu",
                "[ 9001.2] Call Trace:",
                "[ 9001.3]  uvm_va_space_destroy+0x3a1/0x4a0 [nvidia_uvm]",
                "[ 9001.4]  uvm_release.constprop.0+0x93/0xc0 [nvidia_uvm]",
            ]
        ),
        "dmesg",
    )
    (fault,) = log.kernel_faults
    assert (fault.kind, fault.modules) == ("hung_task", ("nvidia_uvm",))


def test_a_warning_in_nvidia_is_a_fault_from_its_own_line():
    line = "[ 9001.0] WARNING: CPU: 3 PID: 1422 at nvidia/nv.c:5100 nv_pci_remove+0x2d1/0x330 [nvidia]"
    (fault,) = parse_kernel_log("\n".join([LOAD, line]), "dmesg").kernel_faults
    assert (fault.kind, fault.frames) == ("kernel_warning", (line,))
