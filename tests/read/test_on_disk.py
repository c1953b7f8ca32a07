import pytest
from snapshot_builder import Snapshot

from nvreload.read.on_disk import newer_kernels, read_dkms, read_on_disk_module
from nvreload.rootfs import open_root


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


# hostile module files ---------------------------------------------------------------------------

import os  # noqa: E402
import threading  # noqa: E402
import tracemalloc  # noqa: E402

from hostile_builder import status_capped, xz_module_bomb  # noqa: E402


def test_a_fifo_named_like_the_module_is_unreadable_not_missing_and_not_a_hang(tmp_path):
    snap = Snapshot(tmp_path)
    fifo = tmp_path / f"lib/modules/{snap.release}/updates/dkms/nvidia.ko"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    fs = open_root(str(tmp_path))
    found = []
    reader = threading.Thread(target=lambda: found.append(read_on_disk_module(fs, snap.release)), daemon=True)
    reader.start()
    reader.join(60)  # a guard against a hang, not a timing: the read takes milliseconds
    assert found, "reading the module blocked on the FIFO"
    assert found[0].error == "unreadable"
    assert fs.denied == [f"/lib/modules/{snap.release}/updates/dkms/nvidia.ko"]


def test_a_plain_module_is_read_by_its_parts_not_whole(tmp_path):
    snap = Snapshot(tmp_path)
    module = snap.on_disk_module("550.127.08")
    with open(module, "r+b") as handle:
        handle.truncate(64 << 20)  # a module of 64 MiB (a sparse tail): its headers lie at the start
    tracemalloc.start()
    try:
        found = read_on_disk_module(open_root(str(tmp_path)), snap.release)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found.version == "550.127.08"
    assert peak < 4 << 20, f"{peak >> 20} MiB held to read a 64 MiB module's .modinfo"


def test_an_xz_bomb_as_the_module_is_an_unreadable_module_finding_not_a_crash(tmp_path):
    root, path = xz_module_bomb(tmp_path, expands_to=1 << 30)
    code, doc = status_capped(root)
    assert code in (0, 1, 2, 3), f"exit {code}: not a status"
    unreadable = [f for f in doc["findings"] if f["code"] == "on_disk_module_unreadable"]
    assert unreadable and unreadable[0]["evidence"]["path"] == path
    assert "256 MiB" in unreadable[0]["evidence"]["error"]


def test_ubuntus_branch_named_module_is_found_through_its_modprobe_alias(tmp_path):
    # Ubuntu's nvidia-384 packages: updates/dkms/nvidia_384.ko, and `alias nvidia nvidia_384` in modprobe.d
    # (canonical/nvidia-graphics-drivers issue 13, Bumblebee-Project/Bumblebee pull 751)
    snap = Snapshot(tmp_path, release="4.10.0-37-generic")
    snap.on_disk_module("384.90", name="nvidia_384")
    snap.write(
        "etc/modprobe.d/nvidia-graphics-drivers.conf", "blacklist nouveau\nalias nvidia nvidia_384\nalias nouveau off\n"
    )
    found = read_on_disk_module(open_root(str(tmp_path)), snap.release)
    assert (found.path, found.version) == ("/lib/modules/4.10.0-37-generic/updates/dkms/nvidia_384.ko", "384.90")


def test_modules_dep_entries_match_by_module_name_so_dashes_and_aliases_count(tmp_path):
    snap = Snapshot(tmp_path)
    snap.on_disk_module("535.183.01", name="nvidia")  # a stale plain file that modprobe would not pick
    snap.on_disk_module("550.127.08", name="nvidia-current", subdir="updates/dkms/debian")
    snap.write(f"lib/modules/{snap.release}/modules.dep", "updates/dkms/debian/nvidia-current.ko:\n")
    snap.write("lib/modprobe.d/nvidia.conf", "alias nvidia nvidia-current  # Debian's\n")
    assert read_on_disk_module(open_root(str(tmp_path)), snap.release).version == "550.127.08"


def test_an_alias_of_another_module_changes_nothing(tmp_path):
    snap = Snapshot(tmp_path)
    snap.on_disk_module("550.127.08")
    snap.write("etc/modprobe.d/x.conf", "alias nvidia-uvm nvidia-current-uvm\nalias char-major-195* nvidia\n")
    assert read_on_disk_module(open_root(str(tmp_path)), snap.release).path.endswith("/updates/dkms/nvidia.ko")


def test_kernel_releases_compare_by_their_numbers_not_as_text(tmp_path):
    # 6.1.0-28 is newer than 6.1.0-9 although "28" sorts before "9"
    snap = Snapshot(tmp_path, release="6.1.0-9-amd64")
    for release in ("6.1.0-9-amd64", "6.1.0-28-amd64", "6.1.0-10-amd64", "5.10.0-30-amd64"):
        snap.write(f"lib/modules/{release}/modules.dep", "")
        snap.write(f"boot/vmlinuz-{release}", "")
    assert newer_kernels(open_root(str(tmp_path)), "6.1.0-9-amd64") == ["6.1.0-10-amd64", "6.1.0-28-amd64"]


def test_a_release_named_with_a_superscript_digit_is_compared_not_a_crash(tmp_path):
    # str.isdigit() accepts '²', int() refuses it: a snapshot's /lib/modules may name anything
    snap = Snapshot(tmp_path, release="6.1.0-9-amd64")
    for release in ("6.1.0-9-amd64", "6.1.0²", "6.2.0-1-amd64"):
        snap.write(f"lib/modules/{release}/modules.dep", "")
        snap.write(f"boot/vmlinuz-{release}", "")
    assert newer_kernels(open_root(str(tmp_path)), "6.1.0-9-amd64") == ["6.1.0²", "6.2.0-1-amd64"]
