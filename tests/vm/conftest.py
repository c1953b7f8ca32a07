import os
import shutil

import pytest
from harness import CACHE, VmImage, run_case


def vm_required() -> bool:
    """In CI with QEMU installed a missing image is a failure, not a skip: a skip must not hide
    the real-kernel tests. NVRELOAD_REQUIRE_VM=1 asks the same anywhere."""
    if os.environ.get("NVRELOAD_REQUIRE_VM") == "1":
        return True
    return os.environ.get("CI") == "true" and shutil.which("qemu-system-x86_64") is not None


@pytest.fixture(scope="session")
def vm_image() -> VmImage:
    image = VmImage(CACHE)
    reason = image.why_not()
    if reason:
        if vm_required():
            pytest.fail(f"real-kernel tests cannot run: {reason}")
        pytest.skip(reason)
    return image


@pytest.fixture
def run_vm(vm_image, tmp_path):
    """run_case on the session's image, its /job under this test's tmp_path."""
    return lambda script, **kw: run_case(vm_image, script, workdir=tmp_path, **kw)
