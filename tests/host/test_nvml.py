"""The NVML probe against a real shared library loaded by the real pynvml, in a real child process.

libnvidia-ml.so.1 itself needs the NVIDIA kernel module, so the library here is a stand-in compiled
from tests/stub_libraries/libnvidia-ml.c with NVML's ABI; how it answers is set per test through
the environment, which the probe's child inherits.
"""

import ctypes.util
import time

import pytest

from nvreload.host.nvml import probe_nvml


def test_a_working_library_reports_each_gpu_with_its_processes_and_the_session_is_closed(stub_nvml):
    report = probe_nvml()
    assert report.status == "ok" and report.error is None
    assert report.driver_version == "580.159.04"
    (gpu,) = report.devices
    assert gpu.name == "NVIDIA H100 80GB HBM3"
    assert gpu.uuid == "GPU-b4bbee5f-cd5c-d140-49e0-660633cb9b84"
    assert gpu.pci_bus_id == "00000000:00:06.0"
    assert gpu.persistence_mode is True and gpu.mig_mode is False
    assert gpu.compute_pids == (17, 4242)
    assert stub_nvml.read_text().split() == ["init", "shutdown"]


def test_an_rm_version_mismatch_is_classified_in_nvmls_own_words(stub_nvml, monkeypatch):
    monkeypatch.setenv("STUB_NVML_INIT", "18")
    report = probe_nvml()
    assert report.status == "version_mismatch"
    assert "version mismatch" in report.error
    assert report.devices == ()


def test_a_driver_that_is_not_loaded_is_classified(stub_nvml, monkeypatch):
    monkeypatch.setenv("STUB_NVML_INIT", "9")
    assert probe_nvml().status == "driver_not_loaded"


def test_an_unknown_init_failure_is_an_error_with_its_text(stub_nvml, monkeypatch):
    monkeypatch.setenv("STUB_NVML_INIT", "999")
    report = probe_nvml()
    assert report.status == "error" and report.error


@pytest.mark.skipif(
    ctypes.util.find_library("nvidia-ml") is not None,
    reason="this machine has a real libnvidia-ml: the library cannot be made to go missing",
)
def test_a_missing_library_is_classified(stub_nvml, monkeypatch, tmp_path):
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))
    assert probe_nvml().status == "library_not_found"


def test_a_crash_inside_the_library_is_reported_and_nvreload_goes_on(stub_nvml, monkeypatch):
    monkeypatch.setenv("STUB_NVML_CRASH", "init")
    report = probe_nvml()
    assert report.status == "error"
    assert "signal 11" in report.error


def test_nvml_hanging_on_a_wedged_gpu_is_reported_at_the_deadline_not_waited_for(stub_nvml, monkeypatch):
    monkeypatch.setenv("STUB_NVML_INIT_SLEEP", "120")
    started = time.monotonic()
    report = probe_nvml(timeout=0.5)
    # a correctness bound, not a speed target: the child sleeps 120 s and must not be waited for
    assert time.monotonic() - started < 30
    assert report.status == "error"
    assert "did not answer within 0.5 s" in report.error


def test_a_query_the_gpu_does_not_support_leaves_that_field_unknown(stub_nvml, monkeypatch):
    monkeypatch.setenv("STUB_NVML_UNSUPPORTED", "mig")
    (gpu,) = probe_nvml().devices
    assert gpu.mig_mode is None
    assert gpu.persistence_mode is True


def test_the_deadline_can_be_set_from_the_environment(stub_nvml, monkeypatch):
    monkeypatch.setenv("STUB_NVML_INIT_SLEEP", "120")
    monkeypatch.setenv("NVRELOAD_NVML_TIMEOUT", "0.3")
    assert "within 0.3 s" in probe_nvml().error


def test_a_mig_mode_change_waiting_for_a_reset_is_read_as_pending(stub_nvml, monkeypatch):
    monkeypatch.setenv("STUB_NVML_GPUS", "NVIDIA H100 80GB HBM3|GPU-0|00000000:3B:00.0|1|0>1|")
    (gpu,) = probe_nvml().devices
    assert (gpu.mig_mode, gpu.mig_pending) == (False, True)
