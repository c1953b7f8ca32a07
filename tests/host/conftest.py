import pytest

# One H100 as the stand-in libnvidia-ml reports it: name|uuid|bus id|persistence|MIG|pids
STUB_H100 = "NVIDIA H100 80GB HBM3|GPU-b4bbee5f-cd5c-d140-49e0-660633cb9b84|00000000:00:06.0|1|0|4242,17"


@pytest.fixture
def stub_nvml(monkeypatch, stub_library_dir, tmp_path):
    """Point NVML probes (their child inherits the environment) at the stand-in libnvidia-ml.so.1,
    answering for one H100; returns the file it logs each nvmlInit/nvmlShutdown to. Tests change
    how it answers with monkeypatch.setenv (see tests/stub_libraries/libnvidia-ml.c)."""
    for name in ("STUB_NVML_INIT", "STUB_NVML_INIT_SLEEP", "STUB_NVML_CRASH", "STUB_NVML_UNSUPPORTED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LD_LIBRARY_PATH", str(stub_library_dir))
    monkeypatch.setenv("STUB_NVML_GPUS", STUB_H100)
    monkeypatch.setenv("STUB_NVML_DRIVER", "580.159.04")
    log = tmp_path / "nvml-calls.log"
    monkeypatch.setenv("STUB_NVML_LOG", str(log))
    return log
