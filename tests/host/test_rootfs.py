import os
import tarfile

import pytest

from nvreload.errors import SnapshotError
from nvreload.host.rootfs import open_root


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
