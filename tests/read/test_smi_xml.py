"""`nvidia-smi -q -x` captured in a snapshot stands in for NVML there."""

from nvreload.read.smi_xml import parse_smi_xml


def test_the_h100_captures_xml_gives_what_nvml_said(h100_root):
    report = parse_smi_xml((h100_root / "nvreload-snapshot/nvidia-smi-q.xml").read_text())
    assert (report.status, report.source, report.driver_version) == ("ok", "nvidia-smi-xml", "580.159.04")
    (gpu,) = report.devices
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.pci_bus_id == "00000000:00:06.0"
    assert gpu.persistence_mode is True and gpu.mig_mode is False
    assert gpu.uuid.startswith("GPU-")


def test_garbage_truncated_or_foreign_xml_is_no_report():
    assert parse_smi_xml(None) is None
    assert parse_smi_xml("<nvidia_smi_log><gpu>") is None
    assert parse_smi_xml("<html><body>not nvidia-smi</body></html>") is None


def test_a_pid_in_superscript_digits_is_skipped_not_a_crash():
    # found by tests/fuzz: str.isdigit() accepts '²', int() refuses it
    xml = (
        "<nvidia_smi_log><gpu><processes><process_info><pid>²</pid></process_info>"
        "<process_info><pid>532</pid></process_info></processes></gpu></nvidia_smi_log>"
    )
    (gpu,) = parse_smi_xml(xml).devices
    assert gpu.compute_pids == (532,)
