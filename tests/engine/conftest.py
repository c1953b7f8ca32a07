import os
import shutil
import subprocess

import pytest

DRIVER_NAME = "NVIDIA-Linux-x86_64-550.144.03.run"


@pytest.fixture
def installer(tmp_path):
    """A real makeself archive labelled as NVIDIA's, with safe permissions."""
    if shutil.which("makeself") is None:
        pytest.skip("makeself is not installed (apt-get install makeself)")
    content = tmp_path / "payload"
    content.mkdir()
    (content / "nvidia-installer").write_text("#!/bin/sh\nexit 0\n")
    os.chmod(content / "nvidia-installer", 0o755)
    run = tmp_path / DRIVER_NAME
    subprocess.run(
        [
            "makeself",
            "--quiet",
            str(content),
            str(run),
            "NVIDIA Accelerated Graphics Driver for Linux-x86_64 550.144.03",
            "./nvidia-installer",
        ],
        check=True,
        capture_output=True,
    )
    os.chmod(run, 0o755)
    return run
