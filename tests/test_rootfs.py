import io
import os
import tarfile

import pytest

from nvreload.errors import SnapshotError
from nvreload.rootfs import open_root


def make_tree(tmp_path):
    root = tmp_path / "snap"
    (root / "proc").mkdir(parents=True)
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/real.txt").write_text("inside\n")
    os.symlink("/usr/lib/real.txt", root / "usr/lib/absolute-link")
    os.symlink("../lib/real.txt", root / "usr/lib/relative-link")
    os.symlink("/etc/passwd", root / "usr/lib/escape")  # must NOT read this machine's /etc/passwd
    os.symlink("../../../../../../../../etc/hostname", root / "usr/lib/climb")
    return root


def test_absolute_symlinks_resolve_relative_to_the_snapshot_root(tmp_path):
    fs = open_root(str(make_tree(tmp_path)))
    assert fs.read_text("usr/lib/absolute-link") == "inside\n"
    assert fs.read_text("usr/lib/relative-link") == "inside\n"


def test_a_snapshot_cannot_make_us_read_the_hosts_files(tmp_path):
    fs = open_root(str(make_tree(tmp_path)))
    assert fs.read_text("usr/lib/escape") is None
    assert fs.read_text("usr/lib/climb") is None
    assert fs.read_text("../../../etc/passwd") is None


def test_a_link_to_a_directory_is_followed_on_every_read_not_only_the_first(tmp_path):
    # (/sys reaches a GPU's files through links: sys/bus/pci/devices/X -> ../../../devices/...)
    root = make_tree(tmp_path)
    os.symlink("lib", root / "usr/lib64")
    fs = open_root(str(root))
    assert [fs.read_text("usr/lib64/real.txt") for _ in range(2)] == ["inside\n", "inside\n"]


def test_a_directory_swapped_for_a_link_after_it_was_resolved_is_never_followed(tmp_path):
    # directories once resolved are remembered (a status reads many files from each); one that a
    # user turns into a link to this machine's files afterwards must still not be read through
    root = make_tree(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "real.txt").write_text("this machine's file\n")
    fs = open_root(str(root))
    assert fs.read_text("usr/lib/real.txt") == "inside\n"
    os.rename(root / "usr/lib", tmp_path / "moved")
    os.symlink(str(outside), root / "usr/lib")
    assert fs.read_text("usr/lib/real.txt") is None


def test_a_tar_gz_snapshot_reads_like_the_directory(tmp_path):
    root = make_tree(tmp_path)
    archive = tmp_path / "snap.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in sorted(os.listdir(root)):
            tar.add(root / name, arcname=name)
    fs = open_root(str(archive))
    assert fs.read_text("usr/lib/absolute-link") == "inside\n"
    assert fs.read_text("usr/lib/escape") is None
    assert fs.listdir("usr/lib") == ["absolute-link", "climb", "escape", "real.txt", "relative-link"]


def test_a_truncated_archive_is_a_snapshot_error(tmp_path):
    root = make_tree(tmp_path)
    archive = tmp_path / "snap.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root / "usr", arcname="usr")
        tar.add(root / "proc", arcname="proc")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(SnapshotError, match="not a readable"):
        open_root(str(archive))


def test_a_missing_root_is_a_snapshot_error(tmp_path):
    with pytest.raises(SnapshotError, match="no such file"):
        open_root(str(tmp_path / "nope"))


def test_a_directory_that_is_not_a_snapshot_is_refused(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(SnapshotError, match="not a node snapshot"):
        open_root(str(tmp_path))


def test_fixture_stand_in_files_act_as_links(h100_root):
    fs = open_root(str(h100_root))
    assert fs.link_target("sys/bus/pci/devices/0000:00:06.0/driver") == "../../../bus/pci/drivers/nvidia"
    assert fs.follow_stand_ins("lib/libnvidia-ml.so.1") == "usr/local/nvidia/lib64/libnvidia-ml.so.580.159.04"


def test_a_snapshots_value_file_is_a_value_not_a_link_to_that_name(h100_root):
    # a stand-in holds a path (a dot or a slash in it); a size or a state word is what a value holds
    fs = open_root(str(h100_root))
    for name, value in (("coresize", "14299136"), ("initstate", "live"), ("taint", "O")):
        assert fs.read_text(f"sys/module/nvidia/{name}").strip() == value
        assert fs.link_target(f"sys/module/nvidia/{name}") is None, name


# hostile snapshots: bounded work, and the file named as unreadable ---------------------------------

from hostile_builder import DMESG, fifo_dmesg, gzip_bomb_tgz, sparse_dmesg, status_capped, zero_device_dmesg  # noqa: E402

import nvreload.rootfs as rootfs  # noqa: E402


def assert_named_unreadable(result, path):
    code, doc = result
    assert code in (0, 1, 2, 3), f"exit {code}: not a status (70 is a crash, -9 a kill)"
    assert doc is not None and path in doc["unreadable"], doc and doc["unreadable"]


def test_a_fifo_in_a_snapshot_is_unreadable_not_a_hang(tmp_path):
    root, path = fifo_dmesg(tmp_path)
    assert_named_unreadable(status_capped(root, timeout=60), path)


def test_a_device_node_in_a_snapshot_is_unreadable_not_read_until_memory_runs_out(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mknod of a character device needs root")
    root, path = zero_device_dmesg(tmp_path)
    assert_named_unreadable(status_capped(root), path)


def test_a_sparse_two_gib_kernel_log_is_too_large_not_loaded(tmp_path):
    root, path = sparse_dmesg(tmp_path)
    assert_named_unreadable(status_capped(root), path)


def test_a_gzip_bomb_snapshot_is_inflated_only_up_to_its_cap(tmp_path):
    archive, path = gzip_bomb_tgz(tmp_path, expands_to=1 << 30)
    assert_named_unreadable(status_capped(archive), path)


def test_a_file_one_byte_over_the_cap_is_unreadable_but_a_limited_read_still_gets_its_start(tmp_path):
    root, _ = sparse_dmesg(tmp_path, size=rootfs.MAX_FILE_BYTES + 1)
    fs = open_root(str(root))
    assert fs.read_bytes(DMESG) is None
    assert fs.denied == ["/" + DMESG]
    start = fs.read_bytes(DMESG, 4096)  # read_line and link stand-ins read a prefix
    assert len(start) == 4096 and start.startswith(b"[    5.100000] NVRM: loading")


def test_a_file_at_the_cap_is_read_whole(tmp_path):
    root, _ = sparse_dmesg(tmp_path, size=rootfs.MAX_FILE_BYTES)
    assert len(open_root(str(root)).read_bytes(DMESG)) == rootfs.MAX_FILE_BYTES


def tar_of(tmp_path, files, **tar_options):
    archive = tmp_path / "snap.tgz"
    with tarfile.open(archive, "w:gz", **tar_options) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def test_an_archive_member_over_the_cap_is_unreadable_and_the_rest_still_reads(tmp_path):
    archive = tar_of(tmp_path, {"proc/modules": b"", DMESG: bytes(rootfs.MAX_FILE_BYTES + 1), "proc/devices": b"x\n"})
    fs = open_root(str(archive))
    assert fs.read_bytes(DMESG) is None and fs.denied == ["/" + DMESG]
    assert fs.read_text("proc/devices") == "x\n"


def test_an_archive_with_more_members_than_the_cap_keeps_the_first_and_names_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(rootfs, "MAX_ARCHIVE_MEMBERS", 3)
    archive = tar_of(tmp_path, {f"proc/{n}": b"%d\n" % n for n in range(10)})
    fs = open_root(str(archive))
    assert fs.listdir("proc") == ["0", "1", "2"]
    assert fs.denied == [str(archive)]


def test_an_archive_whose_extended_header_is_megabytes_is_not_read_past_it(tmp_path):
    archive = tmp_path / "snap.tgz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name, extra in (("proc/modules", {}), ("proc/devices", {"comment": "x" * (2 << 20)})):
            info = tarfile.TarInfo(name)
            info.pax_headers = extra
            tar.addfile(info, io.BytesIO(b""))
    fs = open_root(str(archive))
    assert fs.exists("proc/modules") and not fs.exists("proc/devices")
    assert fs.denied == [str(archive)]


def test_an_archive_lists_each_directory_from_its_index(tmp_path):
    archive = tar_of(
        tmp_path,
        {
            "proc/modules": b"",
            "var/lib/dkms/nvidia/1.0/k/x86_64/.present": b"",
            "var/lib/dkms/nvidia/2.0/.present": b"",
        },
    )
    fs = open_root(str(archive))
    assert fs.listdir("var/lib/dkms/nvidia") == ["1.0", "2.0"]  # parents the archive never named
    assert fs.listdir("var/lib/dkms/nvidia/1.0/k") == ["x86_64"]
    assert fs.listdir("") == ["proc", "var"]
    assert fs.listdir("proc/modules") == []


def test_a_module_member_is_opened_as_a_seekable_view_of_its_bytes(tmp_path):
    archive = tar_of(tmp_path, {"proc/modules": b"", "lib/nvidia.ko": b"0123456789"})
    with open_root(str(archive)).open_file("lib/nvidia.ko") as handle:
        handle.seek(4)
        assert handle.read(3) == b"456"
        handle.seek(0)
        assert handle.read() == b"0123456789"


def test_a_device_in_an_archive_is_unreadable(tmp_path):
    archive = tmp_path / "snap.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("proc/modules"), io.BytesIO(b""))
        fifo = tarfile.TarInfo(DMESG)
        fifo.type = tarfile.FIFOTYPE
        tar.addfile(fifo)
    fs = open_root(str(archive))
    assert fs.read_text(DMESG) is None
    assert fs.denied == ["/" + DMESG]
