"""A .ko.zst written as a stream (kmod's and most distributions' way: `zstd` reading a pipe) has no
content size in its frame header; the reader must not need one."""

import shutil
import subprocess

import pytest
import zstandard
from snapshot_builder import build_ko

from nvreload.read.elf_modinfo import read_modinfo

FIELDS = {
    "version": "550.127.08",
    "license": "NVIDIA",
    "name": "nvidia",
    "vermagic": "6.1.0-26-amd64 SMP preempt mod_unload modversions ",
}

pytestmark = pytest.mark.skipif(
    shutil.which("zstd") is None, reason="the zstd tool is not installed (apt-get install zstd)"
)


def streamed(ko, how: str) -> bytes:
    if how == "stdin":  # zstd cannot know the size of what it reads from a pipe
        with open(ko, "rb") as source:
            return subprocess.run(["zstd", "-q", "-c"], stdin=source, capture_output=True, check=True).stdout
    return subprocess.run(["zstd", "-q", "-c", "--no-content-size", str(ko)], capture_output=True, check=True).stdout


@pytest.mark.parametrize("how", ["stdin", "no-content-size"])
def test_a_streamed_ko_zst_without_a_content_size_is_read(tmp_path, how):
    ko = build_ko(tmp_path / "nvidia.ko", FIELDS)
    data = streamed(ko, how)
    # the case under test: the frame header really says nothing about the size
    assert zstandard.get_frame_parameters(data).content_size == zstandard.CONTENTSIZE_UNKNOWN
    info = read_modinfo("nvidia.ko.zst", data)
    assert info["version"] == ["550.127.08"] and info["vermagic"] == [FIELDS["vermagic"]]


def test_a_streamed_ko_zst_gives_the_on_disk_version_in_the_status(tmp_path):
    from helpers import status_of
    from snapshot_builder import healthy_node

    snap = healthy_node(tmp_path / "node")
    plain = next((snap.root / "lib/modules").rglob("nvidia.ko"))
    ko = build_ko(tmp_path / "new" / "nvidia.ko", {**FIELDS, "version": "550.144.03"})
    (plain.parent / "nvidia.ko.zst").write_bytes(streamed(ko, "stdin"))
    plain.unlink()
    document = status_of(snap.root)
    assert document["driver"]["on_disk_module_version"] == "550.144.03"
    assert document["driver"]["on_disk_module_path"].endswith("nvidia.ko.zst")
