"""--verify's checks as pure functions of a node."""

from dataclasses import replace

from helpers import node_of

from nvreload.diagnosis.health import run_checks, verify_exit_code
from nvreload.errors import ExitCode
from nvreload.model import NvmlDevice, NvmlReport

LOAD = "[ 5.100000] NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  550.127.08  Release Build"
H100_IN_NVML = NvmlDevice(0, "NVIDIA H100 80GB HBM3", "GPU-1", "00000000:3B:00.0", True, False)


def nvml_ok(version="550.127.08", devices=(H100_IN_NVML,)) -> NvmlReport:
    return NvmlReport(status="ok", source="nvml", driver_version=version, devices=devices)


def node_with(snapshot, nvml: NvmlReport):
    return replace(node_of(snapshot), nvml=nvml)


def by_name(checks):
    return {c.name: c for c in checks}


def test_a_healthy_node_passes_every_check_and_exits_zero(snapshot):
    checks = run_checks(node_with(snapshot, nvml_ok()), cuda=None)
    assert all(c.ok for c in checks), checks
    assert verify_exit_code(checks) == ExitCode.OK


def test_nvml_refusing_with_a_version_mismatch_fails_critically_and_names_the_versions(snapshot):
    snapshot.userspace("550.144.03")
    mismatch = NvmlReport(
        status="version_mismatch", source="nvml", error="RM has detected an NVML/RM version mismatch."
    )
    checks = by_name(run_checks(node_with(snapshot, mismatch), cuda=None))
    assert not checks["nvml"].ok and "version mismatch" in checks["nvml"].detail
    assert not checks["versions_agree"].ok
    assert "kernel module 550.127.08" in checks["versions_agree"].detail
    assert "userspace 550.144.03" in checks["versions_agree"].detail
    assert verify_exit_code(list(checks.values())) == ExitCode.CRITICAL


def test_a_pci_gpu_missing_from_nvml_is_named(snapshot):
    snapshot.gpu("0000:86:00.0", minor=1)
    check = by_name(run_checks(node_with(snapshot, nvml_ok()), cuda=None))["gpus_enumerate"]
    assert not check.ok
    assert check.detail == "1 of 2 PCI GPU(s) in NVML; missing 0000:86:00.0"


def test_an_xid_since_the_driver_loaded_fails_critically_but_an_application_xid_only_warns(snapshot):
    snapshot.dmesg([LOAD, "[ 700.1] NVRM: Xid (PCI:0000:3b:00): 13, pid=77, name=python3, Graphics Exception"])
    checks = run_checks(node_with(snapshot, nvml_ok()), cuda=None)
    assert by_name(checks)["no_new_xids"].severity == "warning"
    assert verify_exit_code(checks) == ExitCode.WARNING
    snapshot.dmesg([LOAD, "[ 700.1] NVRM: Xid (PCI:0000:3b:00): 48, pid='<unknown>', name=<unknown>, DBE"])
    checks = run_checks(node_with(snapshot, nvml_ok()), cuda=None)
    assert not by_name(checks)["no_new_xids"].ok
    assert verify_exit_code(checks) == ExitCode.CRITICAL


def test_an_xid_from_before_the_driver_loaded_does_not_count(snapshot):
    snapshot.dmesg(["[ 1.0] NVRM: Xid (PCI:0000:3b:00): 48, pid='<unknown>', name=<unknown>, DBE", LOAD])
    assert by_name(run_checks(node_with(snapshot, nvml_ok()), cuda=None))["no_new_xids"].ok
