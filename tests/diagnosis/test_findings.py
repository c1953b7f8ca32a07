"""The diagnosis layer as pure functions: node state in, findings and one recommended action out."""

from dataclasses import replace

from helpers import node_of

from nvreload.diagnosis.findings import ACTION_PRIORITY, diagnose
from nvreload.model import GpuProcess, NvmlDevice, NvmlReport

LOAD = "[ 5.100000] NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  550.127.08  Release Build"
XID79 = "[ 9001.0] NVRM: Xid (PCI:0000:3b:00): 79, pid=2311, name=python3, GPU has fallen off the bus."
XID48 = "[ 700.1] NVRM: Xid (PCI:0000:3b:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error"
XID13 = "[ 800.1] NVRM: Xid (PCI:0000:3b:00): 13, pid=77, name=python3, Graphics SM Warp Exception"


def codes(diagnosis):
    return [f.code for f in diagnosis.findings]


def upgraded_userspace(snapshot):
    """The classic: an upgrade replaced userspace and the on-disk module; the old module stays resident."""
    snapshot.userspace("550.144.03")
    snapshot.on_disk_module("550.144.03")




def test_the_recommended_action_is_the_most_drastic_one_any_finding_needs(snapshot):
    upgraded_userspace(snapshot)  # version_mismatch -> reload
    snapshot.dmesg([LOAD, XID48])  # -> reset_gpu
    assert diagnose(node_of(snapshot)).recommended_action == "reload"
    snapshot.dmesg([LOAD, XID48, XID79])  # -> reboot outranks both
    diagnosis = diagnose(node_of(snapshot))
    assert {"version_mismatch", "xid_reset_required", "gpu_fallen_off_bus"} <= set(codes(diagnosis))
    assert diagnosis.recommended_action == "reboot"


def test_the_action_order_is_the_one_the_issue_fixes():
    assert ACTION_PRIORITY == ("service_hardware", "reboot", "rebuild_module", "install_driver", "reload",
                               "reset_gpu", "restart_application", "none")


def test_every_finding_carries_the_evidence_that_produced_it(snapshot):
    upgraded_userspace(snapshot)
    snapshot.dmesg([LOAD, XID48, XID13, XID79])
    snapshot.gpu("0000:86:00.0", driver=None, minor=1)
    diagnosis = diagnose(node_of(snapshot))
    assert len(diagnosis.findings) >= 5
    for finding in diagnosis.findings:
        assert finding.evidence, finding.code
    mismatch = next(f for f in diagnosis.findings if f.code == "version_mismatch")
    assert (mismatch.evidence["kernel_module_version"], mismatch.evidence["userspace_version"]) == ("550.127.08", "550.144.03")
    reset = next(f for f in diagnosis.findings if f.code == "xid_reset_required")
    assert reset.evidence["lines"] == [XID48]


def test_a_mismatch_against_userspace_alone_names_only_userspace(snapshot):
    snapshot.userspace("550.144.03")
    snapshot.on_disk_module("550.127.08")
    finding = next(f for f in diagnose(node_of(snapshot)).findings if f.code == "version_mismatch")
    assert "userspace 550.144.03" in finding.message and "on-disk" not in finding.message


def test_only_blocking_findings_make_the_reload_infeasible(snapshot):
    upgraded_userspace(snapshot)
    assert diagnose(node_of(snapshot)).reload_blockers == ()
    snapshot.dmesg([LOAD, XID79])
    assert diagnose(node_of(snapshot)).reload_blockers == ("gpu_fallen_off_bus",)


def test_a_display_server_holding_the_gpu_blocks_the_reload_and_is_named(snapshot):
    xorg = GpuProcess(1888, 4242, "Xorg", "/usr/lib/xorg/Xorg :0", ("/dev/nvidia0",), None, "gdm.service", "procfs")
    node = node_of(snapshot)
    node = replace(node, consumers=replace(node.consumers, processes=(xorg,), scanned=True))
    diagnosis = diagnose(node)
    finding = next(f for f in diagnosis.findings if f.code == "display_server_active")
    assert "Xorg (pid 1888)" in finding.message
    assert "display_server_active" in diagnosis.reload_blockers


def test_mig_is_reported_without_promising_to_restore_its_instances(snapshot):
    node = node_of(snapshot)
    mig_gpu = NvmlDevice(0, "NVIDIA H100 80GB HBM3", "GPU-1", "00000000:3B:00.0", True, True)
    node = replace(node, nvml=NvmlReport(status="ok", source="nvml", driver_version="550.127.08", devices=(mig_gpu,)))
    finding = next(f for f in diagnose(node).findings if f.code == "mig_enabled")
    assert finding.severity == "info" and finding.action == "none"
    assert "not the GPU/compute instances" in finding.message
    assert finding.evidence == {"gpus": ["00000000:3B:00.0"]}


def test_a_gpu_bound_to_vfio_is_left_to_its_owner_but_nouveau_blocks(snapshot):
    snapshot.gpu("0000:86:00.0", driver="vfio-pci", minor=1)
    diagnosis = diagnose(node_of(snapshot))
    vfio = next(f for f in diagnosis.findings if f.code == "gpu_bound_to_other_driver")
    assert (vfio.severity, vfio.action) == ("warning", "none")
    assert diagnosis.reload_blockers == ()
    snapshot.gpu("0000:af:00.0", driver="nouveau", minor=2)
    assert "gpu_bound_to_other_driver" in diagnose(node_of(snapshot)).reload_blockers
