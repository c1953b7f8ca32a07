"""NVIDIA's tools as nvreload runs them for --reset: the exact argv (a logging stub nvidia-smi
first on PATH) and nvidia-smi's own refusal as the error."""

import os
import stat

import pytest

from nvreload.errors import HostError
from nvreload.host import nvidia_tools
from nvreload.host.commands import CommandRunner


@pytest.fixture
def nvidia_smi(tmp_path, monkeypatch):
    """A stub nvidia-smi that logs its argv and answers as told through $STUB_SMI_EXIT/_SAY."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "argv.log"
    stub = bin_dir / "nvidia-smi"
    stub.write_text(
        f'#!/bin/sh\necho "$@" >> {log}\n[ -n "$STUB_SMI_SAY" ] && echo "$STUB_SMI_SAY"\nexit ${{STUB_SMI_EXIT:-0}}\n'
    )
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert CommandRunner().which("nvidia-smi") == str(stub)
    return log


def test_a_gpu_reset_is_one_gpu_by_its_pci_address(nvidia_smi):
    nvidia_tools.disable_persistence(CommandRunner(), "0000:3b:00.0")
    nvidia_tools.reset_gpu(CommandRunner(), "0000:3b:00.0")
    assert nvidia_smi.read_text().splitlines() == ["-i 0000:3b:00.0 -pm 0", "--gpu-reset -i 0000:3b:00.0"]


def test_a_reset_nvidia_smi_refuses_fails_with_its_own_words(nvidia_smi, monkeypatch):
    monkeypatch.setenv("STUB_SMI_EXIT", "255")
    monkeypatch.setenv("STUB_SMI_SAY", "GPU 00000000:3B:00.0 is currently in use by another process.")
    with pytest.raises(
        HostError, match=r"--gpu-reset -i 0000:3b:00.0: GPU 00000000:3B:00.0 is currently in use by another process\."
    ):
        nvidia_tools.reset_gpu(CommandRunner(), "0000:3b:00.0")


def test_a_reset_refused_for_a_gpu_fails_with_nvidia_smis_line_for_that_gpu_not_its_advice(nvidia_smi, monkeypatch):
    # nvidia-smi's form of a refusal (NVIDIA/mig-parted#181): the reason per GPU, then generic advice
    monkeypatch.setenv("STUB_SMI_EXIT", "255")
    monkeypatch.setenv(
        "STUB_SMI_SAY",
        "The following GPUs could not be reset:\n  GPU 00000000:3B:00.0: In use by another client\n\n"
        "1 device is currently being used by one or more other processes (e.g., Fabric Manager, CUDA "
        "application, graphics application such as an X server, or a monitoring application such as another "
        "instance of nvidia-smi). Please first kill all processes using this device and all compute "
        "applications running in the system.",
    )
    with pytest.raises(HostError) as refused:
        nvidia_tools.reset_gpu(CommandRunner(), "0000:3b:00.0")
    assert refused.value.message == (
        "nvidia-smi --gpu-reset -i 0000:3b:00.0: GPU 00000000:3B:00.0: In use by another client"
    )
