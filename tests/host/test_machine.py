"""Machine's NVML door: a probe started early is used once, and given up when NVML cannot answer."""

import shutil
import time

import pytest

from nvreload.host.machine import Machine
from nvreload.host.nvml import NvmlProbe
from nvreload.rootfs import open_root


def live_host(snapshot, probe=None) -> Machine:
    """A Machine that takes the NVML path of a live node (the files come from a snapshot tree)."""
    fs = open_root(str(snapshot.root))
    fs.is_live = True
    return Machine(fs, nvml_probe=probe)


def test_a_probe_started_early_answers_the_first_nvml_call_and_only_that_one(snapshot, stub_nvml, monkeypatch):
    probe = NvmlProbe.start()
    host = live_host(snapshot, probe)
    first = host.nvml(module_live=True, userspace_found=True)
    assert first.status == "ok" and first.devices[0].pci_bus_id == "00000000:00:06.0"
    monkeypatch.setenv("STUB_NVML_INIT", "18")  # the driver changed since: a later read must see it
    assert host.nvml(module_live=True, userspace_found=True).status == "version_mismatch"


def test_with_no_module_loaded_an_early_probe_is_killed_not_waited_for(snapshot, stub_nvml, monkeypatch):
    monkeypatch.setenv("STUB_NVML_INIT_SLEEP", "120")
    probe = NvmlProbe.start()
    started = time.monotonic()
    report = live_host(snapshot, probe).nvml(module_live=False, userspace_found=True)
    assert report.status == "driver_not_loaded"
    assert time.monotonic() - started < 30  # a correctness bound: the child sleeps 120 s
    deadline = time.monotonic() + 30
    while probe.running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not probe.running


def test_without_the_userspace_library_nvml_is_not_asked(snapshot, stub_nvml):
    report = live_host(snapshot).nvml(module_live=True, userspace_found=False)
    assert report.status == "library_not_found"


def test_a_snapshot_answers_from_what_was_captured_never_from_this_machines_nvml(h100_root, stub_nvml):
    report = Machine(open_root(str(h100_root))).nvml(module_live=True, userspace_found=True)
    assert (report.source, report.driver_version) == ("nvidia-smi-xml", "580.159.04")


def test_a_snapshots_nvml_json_speaks_for_nvml_there(tmp_path, h100_root):
    shutil.copytree(h100_root, tmp_path / "node")
    (tmp_path / "node/nvreload-snapshot/nvml.json").write_text(
        '{"status": "version_mismatch", "error": "Driver/library version mismatch"}'
    )
    report = Machine(open_root(str(tmp_path / "node"))).nvml(module_live=True, userspace_found=True)
    assert (report.status, report.source, report.error) == (
        "version_mismatch",
        "snapshot",
        "Driver/library version mismatch",
    )


@pytest.mark.parametrize(
    "captured", ['{"status": "error", "error": 5}', '{"status": ["ok"]}', '{"status": "bogus"}', "[]"]
)
def test_an_nvml_json_of_the_wrong_shape_is_unreadable_and_the_xml_capture_speaks(tmp_path, h100_root, captured):
    # found by tests/fuzz: {"error": 5} reached the human status as a number and crashed it (exit 70)
    shutil.copytree(h100_root, tmp_path / "node")
    (tmp_path / "node/nvreload-snapshot/nvml.json").write_text(captured)
    report = Machine(open_root(str(tmp_path / "node"))).nvml(module_live=True, userspace_found=True)
    assert (report.status, report.source, report.driver_version) == ("ok", "nvidia-smi-xml", "580.159.04")


def test_an_empty_hostname_file_names_no_host(tmp_path):
    # found by tests/fuzz: hostname "" reached the status document, whose schema wants null or a name
    for name in ("proc/sys/kernel/hostname", "etc/hostname"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("\n")
    assert Machine(open_root(str(tmp_path))).hostname() is None
