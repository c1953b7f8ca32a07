"""Our .modinfo reader against kmod's real `modinfo`, on real compiled modules in every compression."""

import shutil
import subprocess

import pytest
from snapshot_builder import build_ko

from nvreload.errors import ModuleFileError
from nvreload.read.elf_modinfo import read_modinfo

FIELDS = {
    "version": "550.127.08",
    "license": "NVIDIA",
    "name": "nvidia",
    "vermagic": "6.1.0-26-amd64 SMP preempt mod_unload modversions ",
}


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
        pytest.skip(
            f"this kmod build cannot read .ko.{compression} (kmod --version lacks {KMOD_FEATURES[compression]})"
        )
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


# bounded reading of compressed modules ----------------------------------------------------------

import gzip  # noqa: E402
import lzma  # noqa: E402
import tracemalloc  # noqa: E402

from hostile_builder import ZERO_BLOCK, _elf_header  # noqa: E402

from nvreload.read import elf_modinfo  # noqa: E402


def test_a_module_whose_section_table_lies_past_the_cap_is_refused_naming_the_cap():
    data = lzma.compress(_elf_header(shoff=4 << 30) + bytes(4096))
    with pytest.raises(ModuleFileError, match="past the 256 MiB read of a module"):
        read_modinfo("nvidia.ko.xz", data)


def test_an_xz_module_is_streamed_not_held_whole_in_memory():
    # 320 MiB of zeros as five concatenated .xz streams (kmod and xz read them as one); the
    # section table claimed at 200 MiB is within the cap, so all of that is inflated, then dropped
    first = bytearray(ZERO_BLOCK)
    first[:64] = _elf_header(shoff=200 << 20)
    data = lzma.compress(bytes(first)) + lzma.compress(bytes(ZERO_BLOCK)) * 4
    tracemalloc.start()
    try:
        with pytest.raises(ModuleFileError, match="no .modinfo|no usable section table"):
            read_modinfo("nvidia.ko.xz", data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak >> 20} MiB held while reading a 320 MiB module"


def test_a_module_larger_than_the_cap_reads_when_its_parts_lie_within_it(tmp_path, monkeypatch):
    monkeypatch.setattr(elf_modinfo, "MAX_MODULE_BYTES", 1 << 20)
    path = build_ko(tmp_path / "nvidia.ko", FIELDS, "xz")
    padded = tmp_path / "padded.ko"
    padded.write_bytes(lzma.decompress(path.read_bytes()) + bytes(2 << 20))
    assert read_modinfo("padded.ko.gz", gzip.compress(padded.read_bytes()))["version"] == ["550.127.08"]


def test_a_zstd_module_without_a_content_size_in_its_frame_reads(tmp_path):
    import zstandard

    plain = build_ko(tmp_path / "nvidia.ko", FIELDS).read_bytes()
    data = zstandard.ZstdCompressor(write_content_size=False).compress(plain)
    assert zstandard.get_frame_parameters(data).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert read_modinfo("nvidia.ko.zst", data)["version"] == ["550.127.08"]


def test_a_module_split_across_xz_streams_reads_as_one(tmp_path):
    plain = build_ko(tmp_path / "nvidia.ko", FIELDS).read_bytes()
    data = lzma.compress(plain[:100]) + bytes(4) + lzma.compress(plain[100:])  # NUL padding between streams
    assert read_modinfo("nvidia.ko.xz", data)["version"] == ["550.127.08"]


def test_a_section_table_claimed_larger_than_any_module_has_is_refused_before_reading(tmp_path):
    header = bytearray(_elf_header(shoff=64))
    header[0x3A:0x40] = (0xFFFF).to_bytes(2, "little") + (0xFFFF).to_bytes(2, "little") + bytes(2)  # 65535 x 65535
    with pytest.raises(ModuleFileError, match="more than any module has"):
        read_modinfo("nvidia.ko.gz", gzip.compress(bytes(header)))
