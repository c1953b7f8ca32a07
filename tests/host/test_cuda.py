"""The CUDA probe in a child process, against a stand-in libcuda with NVIDIA's ABI."""

import pytest

from nvreload.host.cuda import cuda_context_check


@pytest.fixture
def cuda_env(monkeypatch, stub_library_dir):
    for name in ("STUB_CUDA_INIT", "STUB_CUDA_DEVICES", "STUB_CUDA_RETAIN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LD_LIBRARY_PATH", str(stub_library_dir))
    return monkeypatch


def test_the_cuda_probe_opens_a_context_on_every_device(cuda_env):
    cuda_env.setenv("STUB_CUDA_DEVICES", "8")
    check = cuda_context_check()
    assert check.ok and check.detail == "CUDA context opened on 8 device(s)"


def test_a_cuda_init_failure_is_reported_by_its_error_name(cuda_env):
    cuda_env.setenv("STUB_CUDA_INIT", "803")
    check = cuda_context_check()
    assert not check.ok
    assert check.detail == "cuInit failed: CUDA_ERROR_SYSTEM_DRIVER_MISMATCH (803)"


def test_a_context_that_cannot_be_created_names_the_device(cuda_env):
    cuda_env.setenv("STUB_CUDA_DEVICES", "2")
    cuda_env.setenv("STUB_CUDA_RETAIN", "2")
    check = cuda_context_check()
    assert not check.ok and check.detail.startswith("cuDevicePrimaryCtxRetain(0) failed: CUDA_ERROR_OUT_OF_MEMORY")


def test_a_missing_libcuda_is_a_failed_check_not_a_crash(cuda_env, tmp_path):
    import ctypes.util

    if ctypes.util.find_library("cuda"):
        pytest.skip("this machine has a real libcuda: it cannot be made to go missing")
    cuda_env.setenv("LD_LIBRARY_PATH", str(tmp_path))
    check = cuda_context_check()
    assert not check.ok and check.detail.startswith("libcuda.so.1 not loadable")
