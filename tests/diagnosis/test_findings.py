"""The diagnosis layer as pure functions: node state in, findings and one recommended action out."""

import shutil
from dataclasses import replace

from helpers import node_of

from nvreload.diagnosis.findings import ACTION_PRIORITY, diagnose
from nvreload.model import GpuProcess, NodeInput, NvmlDevice, NvmlReport

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
    assert ACTION_PRIORITY == (
        "check_access",
        "service_hardware",
        "fix_platform",
        "reboot",
        "rebuild_module",
        "sign_module",
        "install_driver",
        "reload",
        "reset_gpu",
        "restart_application",
        "none",
    )


def test_every_finding_carries_the_evidence_that_produced_it(snapshot):
    upgraded_userspace(snapshot)
    snapshot.dmesg([LOAD, XID48, XID13, XID79])
    snapshot.gpu("0000:86:00.0", driver=None, minor=1)
    diagnosis = diagnose(node_of(snapshot))
    assert len(diagnosis.findings) >= 5
    for finding in diagnosis.findings:
        assert finding.evidence, finding.code
    mismatch = next(f for f in diagnosis.findings if f.code == "version_mismatch")
    assert (mismatch.evidence["kernel_module_version"], mismatch.evidence["userspace_version"]) == (
        "550.127.08",
        "550.144.03",
    )
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


def test_mig_is_reported_saying_the_reload_records_and_recreates_its_instances(snapshot):
    node = node_of(snapshot)
    mig_gpu = NvmlDevice(0, "NVIDIA H100 80GB HBM3", "GPU-1", "00000000:3B:00.0", True, True)
    node = replace(node, nvml=NvmlReport(status="ok", source="nvml", driver_version="550.127.08", devices=(mig_gpu,)))
    finding = next(f for f in diagnose(node).findings if f.code == "mig_enabled")
    assert finding.severity == "info" and finding.action == "none"
    assert "loses the GPU/compute instances" in finding.message
    assert "records them before the unload and creates them again after the load" in finding.message
    assert finding.evidence == {"gpus": ["00000000:3B:00.0"]}


def test_a_gpu_bound_to_vfio_is_left_to_its_owner_but_nouveau_blocks(snapshot):
    snapshot.gpu("0000:86:00.0", driver="vfio-pci", minor=1)
    diagnosis = diagnose(node_of(snapshot))
    vfio = next(f for f in diagnosis.findings if f.code == "gpu_bound_to_other_driver")
    assert (vfio.severity, vfio.action) == ("warning", "none")
    assert diagnosis.reload_blockers == ()
    snapshot.gpu("0000:af:00.0", driver="nouveau", minor=2)
    assert "gpu_bound_to_other_driver" in diagnose(node_of(snapshot)).reload_blockers


XID64 = "[ 950.2] NVRM: Xid (PCI:0000:3b:00): 64, pid='<unknown>', name=<unknown>, Row Remapper Error"


def test_an_xid_64_is_a_reset_that_says_a_remap_failing_again_needs_the_gpu_serviced(snapshot):
    snapshot.dmesg([LOAD, XID64])
    remap = next(f for f in diagnose(node_of(snapshot)).findings if f.code == "row_remap_pending")
    assert (remap.severity, remap.action) == ("warning", "reset_gpu")
    assert "XID 64 is a remap that could not be recorded: if it comes back after the reset, the GPU needs service" in (
        remap.message
    )
    snapshot.dmesg([LOAD, XID64.replace(": 64,", ": 63,")])
    pending = next(f for f in diagnose(node_of(snapshot)).findings if f.code == "row_remap_pending")
    assert "needs service" not in pending.message  # a row marked for remapping is not a failure


FALLEN = "[ 9001.0] NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus."


def test_the_fallen_off_the_bus_line_without_an_xid_79_is_a_reboot_that_blocks_the_reload(snapshot):
    snapshot.dmesg([LOAD, FALLEN])
    diagnosis = diagnose(node_of(snapshot))
    finding = next(f for f in diagnosis.findings if f.code == "gpu_fallen_off_bus")
    assert finding.evidence["lines"] == [FALLEN]
    assert diagnosis.recommended_action == "reboot" and "gpu_fallen_off_bus" in diagnosis.reload_blockers


def test_xids_in_a_log_that_lost_its_load_line_still_drive_the_diagnosis(snapshot):
    snapshot.dmesg([XID48])  # no `NVRM: loading` line left in the ring buffer
    diagnosis = diagnose(node_of(snapshot))
    assert "xid_reset_required" in codes(diagnosis) and diagnosis.recommended_action == "reset_gpu"
    snapshot.dmesg([FALLEN])
    assert "gpu_fallen_off_bus" in codes(diagnose(node_of(snapshot)))


def test_a_resident_module_newer_than_userspace_is_a_mismatch_too(snapshot):
    # a downgrade (or a rollback of the packages): "550.90.07" < "550.127.08" as strings, but not equal
    snapshot.userspace("550.90.07")
    snapshot.on_disk_module("550.90.07")
    finding = next(f for f in diagnose(node_of(snapshot)).findings if f.code == "version_mismatch")
    assert (
        finding.evidence["userspace_version"] == "550.90.07"
        and finding.evidence["kernel_module_version"] == "550.127.08"
    )


def unread(node, **states):
    """`node` as if the named inputs (Readability fields) had not been read, in the given states."""
    inputs = {name: NodeInput(getattr(node.readable, name).paths, state) for name, state in states.items()}
    return replace(node, readable=replace(node.readable, **inputs))


def test_an_unreadable_proc_modules_gives_no_finding_drawn_from_it_only_node_unreadable(snapshot):
    snapshot.gpu("0000:86:00.0", minor=1)
    node = node_of(snapshot)
    # what read_kernel and read_modules make of a /proc/modules they could not read: nothing listed,
    # no unloading, loading "disabled" -- exactly the guesses no finding may repeat
    blind = replace(
        node,
        modules=(),
        kernel=replace(
            node.kernel, module_unload_supported=False, module_loading_disabled=True, modules_supported=False
        ),
    )
    diagnosis = diagnose(unread(blind, proc_modules="unreadable"))
    assert codes(diagnosis) == ["node_unreadable"]
    finding = diagnosis.findings[0]
    assert finding.severity == "unknown" and finding.action == "check_access"
    assert "/proc/modules: unreadable" in finding.message and "run it as root" not in finding.message  # a snapshot
    assert finding.evidence["inputs"] == [{"paths": ["/proc/modules"], "state": "unreadable"}]
    assert diagnosis.recommended_action == "check_access" and diagnosis.reload_blockers == ("node_unreadable",)


def test_without_the_kernel_release_the_node_is_unknown_even_beside_a_critical_finding(snapshot):
    snapshot.dmesg([LOAD, XID79])  # read from the log: still reported, but it cannot be the verdict
    diagnosis = diagnose(unread(node_of(snapshot), kernel_release="empty"))
    assert {"node_unreadable", "gpu_fallen_off_bus"} <= set(codes(diagnosis))
    node_unreadable = diagnosis.findings[0]
    assert "/proc/sys/kernel/osrelease: empty" in node_unreadable.message
    assert diagnosis.recommended_action == "check_access"  # not "reboot"


def test_on_the_live_node_the_unreadable_finding_says_to_run_as_root(snapshot):
    node = replace(unread(node_of(snapshot), proc_modules="unreadable"), live=True)
    finding = diagnose(node).findings[0]
    assert finding.code == "node_unreadable" and "run it as root" in finding.message


def test_module_unload_unsupported_comes_only_from_the_dash_refcount_of_a_proc_modules_that_was_read(snapshot):
    snapshot.module("nvidia_peermem", "550.127.08", refcount="-")
    assert "module_unload_unsupported" in codes(diagnose(node_of(snapshot)))
    snapshot.write("proc/modules", "")  # what `cp /proc/modules` gives: procfs says size 0
    assert "module_unload_unsupported" not in codes(diagnose(node_of(snapshot)))


def test_module_loading_disabled_comes_only_from_a_modules_disabled_that_was_read_and_says_1(snapshot):
    snapshot.write("proc/sys/kernel/modules_disabled", "1\n")
    finding = next(f for f in diagnose(node_of(snapshot)).findings if f.code == "module_loading_disabled")
    assert finding.evidence == {"modules_disabled": "1"}
    snapshot.write("proc/sys/kernel/modules_disabled", "")
    assert codes(diagnose(node_of(snapshot))) == []
    (snapshot.root / "proc/sys/kernel/modules_disabled").unlink()
    assert codes(diagnose(node_of(snapshot))) == []  # not essential: the node is still known, just not this


def test_a_kernel_without_module_support_is_told_by_the_live_kernel_lacking_proc_modules(snapshot):
    node = node_of(snapshot)
    node = replace(
        node,
        modules=(),
        kernel=replace(
            node.kernel, module_unload_supported=False, module_loading_disabled=True, modules_supported=False
        ),
    )
    live = unread(node, proc_modules="not_in_kernel", modules_disabled="not_in_kernel")
    diagnosis = diagnose(live)
    assert "node_unreadable" not in codes(diagnosis)
    disabled = next(f for f in diagnosis.findings if f.code == "module_loading_disabled")
    assert disabled.evidence == {"modules_disabled": "no module support"}
    assert "no module support" in disabled.message


def test_no_module_is_called_not_loaded_from_a_proc_modules_that_was_not_read(snapshot):
    for name in ("nvidia", "nvidia_uvm", "nvidia_modeset", "nvidia_drm"):
        shutil.rmtree(snapshot.root / f"sys/module/{name}")
    snapshot.dmesg([LOAD, "[ 9.0] NVRM: API mismatch: the client has the version 550.144.03"])
    snapshot.write("proc/modules", "")
    diagnosis = diagnose(node_of(snapshot))
    assert not {"driver_not_loaded", "module_load_failed"} & set(codes(diagnosis))
    assert diagnosis.recommended_action == "check_access"


def test_gpus_are_not_called_fallen_off_the_bus_when_the_bus_was_not_read(snapshot):
    shutil.rmtree(snapshot.root / "sys/bus")  # the driver still lists its GPU in /proc/driver/nvidia
    diagnosis = diagnose(node_of(snapshot))
    assert "gpu_fallen_off_bus" not in codes(diagnosis)
    assert diagnosis.recommended_action != "reboot"
    shutil.rmtree(snapshot.root / "sys/devices")
    (snapshot.root / "sys/bus/pci/devices").mkdir(parents=True)  # listed, and the GPU is not on it
    assert "gpu_fallen_off_bus" not in codes(diagnose(node_of(snapshot)))  # an empty listing in a snapshot: not read


def test_gpus_without_a_driver_are_one_finding_naming_them_all(snapshot):
    snapshot.gpu("0000:86:00.0", driver=None, minor=1)
    snapshot.gpu("0000:87:00.0", driver=None, minor=2)
    unbound = [f for f in diagnose(node_of(snapshot)).findings if f.code == "gpu_driver_unbound"]
    assert len(unbound) == 1
    assert unbound[0].evidence["pci_bus_ids"] == ["0000:86:00.0", "0000:87:00.0"]


def test_gpus_another_driver_owns_are_one_finding_and_one_blocker(snapshot):
    snapshot.gpu("0000:86:00.0", driver="nouveau", minor=1)
    snapshot.gpu("0000:87:00.0", driver="nouveau", minor=2)
    diagnosis = diagnose(node_of(snapshot))
    assert codes(diagnosis).count("gpu_bound_to_other_driver") == 1
    assert diagnosis.reload_blockers == ("gpu_bound_to_other_driver",)


def test_gpus_passed_through_to_vfio_are_reported_but_block_nothing(snapshot):
    snapshot.gpu("0000:86:00.0", driver="vfio-pci", minor=1)
    diagnosis = diagnose(node_of(snapshot))
    other = next(f for f in diagnosis.findings if f.code == "gpu_bound_to_other_driver")
    assert (other.severity, other.action, diagnosis.reload_blockers) == ("warning", "none", ())


def test_a_module_merely_tainting_the_kernel_unsigned_is_no_secure_boot_refusal(snapshot):
    snapshot.dmesg(
        ["[ 3.2] nvidia: module verification failed: signature and/or required key missing - tainting kernel", LOAD]
    )
    assert "module_signature_rejected" not in codes(diagnose(node_of(snapshot)))


def test_a_pending_mig_change_names_the_processes_that_hold_the_gpu(snapshot):
    persistenced = GpuProcess(
        1201,
        42,
        "nvidia-persistenced",
        "/usr/bin/nvidia-persistenced",
        ("/dev/nvidia0",),
        None,
        "nvidia-persistenced.service",
        "procfs",
    )
    node = node_of(snapshot)
    device = NvmlDevice(0, "NVIDIA A100", "GPU-1", "00000000:3B:00.0", True, False, (), mig_pending=True)
    node = replace(
        node,
        nvml=NvmlReport("ok", "nvml", devices=(device,)),
        consumers=replace(node.consumers, processes=(persistenced,), scanned=True),
    )
    pending = next(f for f in diagnose(node).findings if f.code == "mig_mode_change_pending")
    assert "held by nvidia-persistenced (pid 1201)" in pending.message
    assert pending.evidence["gpus"][0] == {
        "pci_bus_id": "0000:3b:00.0",
        "current": "Disabled",
        "pending": "Enabled",
        "nvml_pids": [],
    }
    assert pending.action == "reset_gpu"


def test_a_pending_mig_change_names_a_loaded_nvidia_drm_which_keeps_any_reset_refused(snapshot):
    # NVIDIA/mig-parted#181: "In use by another client" with nothing but nvidia_drm holding the GPU
    node = node_of(snapshot)
    device = NvmlDevice(0, "NVIDIA A100", "GPU-1", "00000000:3B:00.0", True, False, (), mig_pending=True)
    node = replace(node, nvml=NvmlReport("ok", "nvml", devices=(device,)))
    assert node.loaded("nvidia_drm")
    pending = next(f for f in diagnose(node).findings if f.code == "mig_mode_change_pending")
    assert "nvidia_drm is loaded, and the driver can refuse a reset while it is" in pending.message
    assert pending.message.endswith("then nvreload --reset (it unloads nvidia_drm for the reset and loads it again)")
    assert pending.evidence["nvidia_drm_loaded"] is True


def test_an_rminitadapter_failure_the_driver_gives_no_firmware_cause_for_is_retried_by_a_reload(snapshot):
    # the plain failure: nothing in the log says the GPU's firmware could not start
    snapshot.dmesg([LOAD, "[ 903.6] NVRM: GPU 0000:3b:00.0: RmInitAdapter failed! (0x22:0x56:667)"])
    diagnosis = diagnose(node_of(snapshot))
    failed = next(f for f in diagnosis.findings if f.code == "gpu_init_failed")
    assert failed.action == "reload" and not failed.blocks_reload
    assert diagnosis.recommended_action == "reload"
    assert not {"gpu_firmware_boot_incomplete", "gpu_gsp_boot_failed", "gpu_gsp_init_failed"} & set(codes(diagnosis))


def test_a_named_gsp_cause_outranks_the_generic_gsp_failure_printed_with_it(snapshot):
    # the WPR2 line comes with "Cannot initialize GSP firmware RM" (issue 1230): the reset it asks for wins
    snapshot.dmesg(
        [
            LOAD,
            "[ 88.669319] NVRM: GPU6 _kgspBootGspRm: unexpected WPR2 already up, cannot proceed with booting GSP",
            "[ 88.669358] NVRM: GPU6 RmInitAdapter: Cannot initialize GSP firmware RM",
            "[ 88.669932] NVRM: GPU 0000:3b:00.0: RmInitAdapter failed! (0x62:0x40:2168)",
        ]
    )
    found = codes(diagnose(node_of(snapshot)))
    assert "gpu_gsp_boot_failed" in found and "gpu_gsp_init_failed" not in found


def test_mig_instances_nvml_cannot_list_are_a_warning_that_a_reload_cannot_bring_them_back(snapshot):
    upgraded_userspace(snapshot)  # the resident module is older than the library: NVML cannot answer
    node = replace(
        node_of(snapshot),
        nvml=NvmlReport(status="version_mismatch", source="nvml", driver_version=None, devices=()),
        mig_gpu_instances={"0000:3b:00.0": 3},
    )
    diagnosis = diagnose(node)
    finding = next(f for f in diagnosis.findings if f.code == "mig_instances_unrecordable")
    assert finding.severity == "warning" and not finding.blocks_reload  # a reboot would lose them too
    assert "0000:3b:00.0 (3)" in finding.message and "version_mismatch" in finding.message
    assert "create them again after it" in finding.message
    assert diagnosis.recommended_action == "reload"


def test_mig_instances_nvml_lists_are_recorded_by_the_reload_and_raise_no_warning(snapshot):
    mig_gpu = NvmlDevice(0, "NVIDIA H100 80GB HBM3", "GPU-1", "00000000:3B:00.0", True, True)
    nvml = NvmlReport(status="ok", source="nvml", driver_version="550.127.08", devices=(mig_gpu,))
    node = replace(node_of(snapshot), nvml=nvml, mig_gpu_instances={"0000:3b:00.0": 3})
    assert "mig_instances_unrecordable" not in codes(diagnose(node))
