"""The .modinfo cache: a module file read once is not decompressed again until it changes."""

import json
import os

import pytest
from snapshot_builder import healthy_node

import nvreload.read.elf_modinfo as elf_modinfo
from nvreload.host.modinfo_cache import ModinfoCache
from nvreload.read.on_disk import read_on_disk_module
from nvreload.rootfs import open_root


@pytest.fixture
def xz_node(tmp_path):
    snap = healthy_node(tmp_path / "node")
    for plain in (snap.root / "lib/modules").rglob("nvidia.ko"):
        plain.unlink()
    snap.on_disk_module("550.127.08", compression="xz")  # RHEL's format: the costly one to read
    return snap


def read(snap, cache):
    return read_on_disk_module(open_root(str(snap.root)), snap.release, cache=cache)


def test_an_unchanged_module_is_answered_from_the_cache_without_decompressing(xz_node, tmp_path, monkeypatch):
    cache_file = tmp_path / "state" / "modinfo-cache.json"
    first = read(xz_node, ModinfoCache(str(cache_file)))
    assert first.version == "550.127.08" and first.path.endswith("nvidia.ko.xz")
    assert cache_file.exists()

    def no_decompressing(*args):
        raise AssertionError("the module was read again")

    monkeypatch.setattr(elf_modinfo, "read_modinfo_file", no_decompressing)
    again = read(xz_node, ModinfoCache(str(cache_file)))
    assert again == first


def test_a_module_replaced_since_is_read_again(xz_node, tmp_path):
    cache = str(tmp_path / "modinfo-cache.json")
    assert read(xz_node, ModinfoCache(cache)).version == "550.127.08"
    module = next((xz_node.root / "lib/modules").rglob("nvidia.ko.xz"))
    module.unlink()
    xz_node.on_disk_module("550.144.03", compression="xz")  # DKMS or an installer wrote a new file
    assert read(xz_node, ModinfoCache(cache)).version == "550.144.03"


def test_a_module_rewritten_in_place_with_its_old_mtime_is_still_read_again(xz_node, tmp_path):
    cache = str(tmp_path / "modinfo-cache.json")
    read(xz_node, ModinfoCache(cache))
    module = next((xz_node.root / "lib/modules").rglob("nvidia.ko.xz"))
    before = os.stat(module)
    xz_node.on_disk_module("550.144.03", compression="xz")
    module = next((xz_node.root / "lib/modules").rglob("nvidia.ko.xz"))
    os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))  # ctime still moves
    after = os.stat(module)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    assert read(xz_node, ModinfoCache(cache)).version == "550.144.03"


def test_a_corrupt_cache_file_is_ignored_and_replaced(xz_node, tmp_path):
    cache_file = tmp_path / "modinfo-cache.json"
    cache_file.write_text("{not json")
    assert read(xz_node, ModinfoCache(str(cache_file))).version == "550.127.08"
    assert json.loads(cache_file.read_text())


def test_a_cache_that_cannot_be_written_changes_nothing_but_speed(xz_node, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    cache = ModinfoCache(str(blocked / "modinfo-cache.json"))  # its directory is a file
    assert read(xz_node, cache).version == "550.127.08"


def test_an_unreadable_module_is_not_remembered(tmp_path):
    snap = healthy_node(tmp_path / "node")
    module = next((snap.root / "lib/modules").rglob("nvidia.ko*"))
    module.write_bytes(b"not an ELF file")
    cache_file = tmp_path / "modinfo-cache.json"
    assert read(snap, ModinfoCache(str(cache_file))).error
    assert not cache_file.exists()
