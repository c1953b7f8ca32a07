import pytest

from nvreload.host.rootfs import open_root
from nvreload.read.on_disk import read_dkms, read_on_disk_module
from snapshot_builder import Snapshot


@pytest.mark.parametrize("compression", [None, "xz", "gz", "zst"])
def test_the_module_that_would_load_next_is_found_in_each_compression(tmp_path, compression):
    snap = Snapshot(tmp_path)
    snap.on_disk_module("550.127.08", compression=compression, license="NVIDIA")
    found = read_on_disk_module(open_root(str(tmp_path)), snap.release)
    assert found.version == "550.127.08"
    assert found.flavor == "proprietary"
    assert found.path.endswith("nvidia.ko" + (f".{compression}" if compression else ""))


def test_updates_dkms_wins_over_the_kernels_own_tree(tmp_path):
    snap = Snapshot(tmp_path)
    snap.on_disk_module("535.183.01", subdir="kernel/drivers/video")
    snap.on_disk_module("550.127.08", subdir="updates/dkms")
    assert read_on_disk_module(open_root(str(tmp_path)), snap.release).version == "550.127.08"


def test_modules_dep_decides_when_present(tmp_path):
    snap = Snapshot(tmp_path)
    snap.on_disk_module("535.183.01", subdir="extra")
    snap.on_disk_module("550.127.08", subdir="updates/dkms")
    snap.write(f"lib/modules/{snap.release}/modules.dep", "extra/nvidia.ko:\nkernel/drivers/net/e1000.ko:\n")
    assert read_on_disk_module(open_root(str(tmp_path)), snap.release).version == "535.183.01"


def test_a_corrupt_module_file_is_recorded_not_raised(tmp_path):
    snap = Snapshot(tmp_path)
    snap.write(f"lib/modules/{snap.release}/updates/dkms/nvidia.ko", b"\x7fELF\x02\x01\x01" + b"\0" * 20)
    found = read_on_disk_module(open_root(str(tmp_path)), snap.release)
    assert found.version is None and found.error


def test_dkms_status_is_read_from_var_lib_dkms(tmp_path):
    snap = Snapshot(tmp_path)
    snap.dkms("550.127.08", "6.1.0-26-amd64")
    snap.dkms("550.127.08", "6.1.0-27-amd64", installed=False)
    entries = {(e.kernel, e.installed) for e in read_dkms(open_root(str(tmp_path)))}
    assert entries == {("6.1.0-26-amd64", True), ("6.1.0-27-amd64", False)}
