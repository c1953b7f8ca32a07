"""Our .modinfo reader against kmod's real `modinfo`, on real compiled modules in every compression."""

import shutil
import subprocess

import pytest

from nvreload.errors import ModuleFileError
from nvreload.read.elf_modinfo import read_modinfo
from snapshot_builder import build_ko

FIELDS = {"version": "550.127.08", "license": "NVIDIA", "name": "nvidia",
          "vermagic": "6.1.0-26-amd64 SMP preempt mod_unload modversions "}


@pytest.mark.parametrize("compression", [None, "xz", "gz", "zst"])
def test_modinfo_version_and_vermagic_read_from_every_compression(tmp_path, compression):
    path = build_ko(tmp_path / "nvidia.ko", FIELDS, compression)
    info = read_modinfo(path.name, path.read_bytes())
    assert info["version"] == ["550.127.08"]
    assert info["vermagic"] == [FIELDS["vermagic"]]
    assert info["license"] == ["NVIDIA"]


MODINFO = shutil.which("modinfo") or shutil.which("modinfo", path="/usr/sbin:/sbin")
KMOD_FEATURES = {"xz": "+XZ", "gz": "+ZLIB", "zst": "+ZSTD"}


def kmod_reads(compression):
    """Whether this kmod build can decompress the format (`kmod --version` lists +XZ, -ZLIB...)."""
    if compression is None:
        return True
    kmod = shutil.which("kmod") or shutil.which("kmod", path="/usr/bin:/bin:/usr/sbin:/sbin")
    version = subprocess.run([kmod, "--version"], capture_output=True, text=True).stdout if kmod else ""
    return KMOD_FEATURES[compression] in version


@pytest.mark.skipif(MODINFO is None, reason="kmod's modinfo is not installed (apt-get install kmod)")
@pytest.mark.parametrize("compression", [None, "xz", "gz", "zst"])
def test_real_modinfo_agrees_with_our_reader(tmp_path, compression):
    if not kmod_reads(compression):
        pytest.skip(f"this kmod build cannot read .ko.{compression} (kmod --version lacks {KMOD_FEATURES[compression]})")
    path = build_ko(tmp_path / "nvidia.ko", FIELDS, compression)
    modinfo = MODINFO
    ours = read_modinfo(path.name, path.read_bytes())
    for field in ("version", "vermagic", "license"):
        theirs = subprocess.run([modinfo, "-F", field, str(path)], capture_output=True, text=True, check=True).stdout
        assert theirs.rstrip("\n") == ours[field][0].rstrip(" ") or theirs.rstrip("\n") == ours[field][0]


def test_a_truncated_module_is_a_module_error_not_a_crash(tmp_path):
    path = build_ko(tmp_path / "nvidia.ko", FIELDS)
    data = path.read_bytes()
    with pytest.raises(ModuleFileError):
        read_modinfo("nvidia.ko", data[: len(data) // 3])


def test_garbage_is_not_an_elf(tmp_path):
    with pytest.raises(ModuleFileError, match="not an ELF"):
        read_modinfo("nvidia.ko", b"this is not a kernel module at all" * 10)


def test_a_corrupt_xz_stream_is_a_module_error(tmp_path):
    with pytest.raises(ModuleFileError, match="decompress"):
        read_modinfo("nvidia.ko.xz", b"\xfd7zXZ\x00garbage")


def test_a_corrupt_zst_stream_is_a_module_error(tmp_path):
    with pytest.raises(ModuleFileError, match="decompress"):
        read_modinfo("nvidia.ko.zst", b"\x28\xb5\x2f\xfdgarbage-garbage")


def test_an_elf_without_modinfo_says_so(tmp_path):
    path = build_ko(tmp_path / "plain.ko", {})
    with pytest.raises(ModuleFileError, match="no .modinfo"):
        read_modinfo("plain.ko", path.read_bytes())
