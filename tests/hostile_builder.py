"""Hostile snapshots for `--root`: each builds in a directory and returns (the --root path, the
snapshot path that must be reported unreadable). Shared by the tests and bench/hostile_snapshot.py.

Nothing here materialises a large file: a sparse file is `truncate`d, and a bomb is one compressed
block of zeros repeated (gzip members, xz streams and zstd frames may all be concatenated, and
every reader of the format reads them as one stream), so a file that inflates to gigabytes is
written in a fraction of a second and takes a few hundred KB on disk.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import stat
import struct
import tarfile
from pathlib import Path

from snapshot_builder import Snapshot

ZERO_BLOCK = 64 << 20  # one compressed block of zeros, repeated
DMESG = "nvreload-snapshot/dmesg.txt"


def _zero_blocks(compress, total: int) -> bytes:
    """`total` zero bytes (a multiple of ZERO_BLOCK) as repeated compressed blocks."""
    assert total % ZERO_BLOCK == 0
    return compress(bytes(ZERO_BLOCK)) * (total // ZERO_BLOCK)


def base_snapshot(root: Path) -> Snapshot:
    snap = Snapshot(root)
    snap.dmesg(["[    5.100000] NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  550.127.08  Release Build"])
    return snap


def sparse_dmesg(directory: Path, size: int = 2 << 30) -> tuple[Path, str]:
    base_snapshot(directory / "snap")
    with open(directory / "snap" / DMESG, "r+b") as handle:
        handle.truncate(size)  # a hole: no block on disk
    return directory / "snap", "/" + DMESG


def fifo_dmesg(directory: Path) -> tuple[Path, str]:
    base_snapshot(directory / "snap")
    os.unlink(directory / "snap" / DMESG)
    os.mkfifo(directory / "snap" / DMESG)
    return directory / "snap", "/" + DMESG


def zero_device_dmesg(directory: Path) -> tuple[Path, str]:
    """A copy of /dev/zero's device node (root only: mknod)."""
    base_snapshot(directory / "snap")
    os.unlink(directory / "snap" / DMESG)
    os.mknod(directory / "snap" / DMESG, stat.S_IFCHR | 0o444, os.makedev(1, 5))
    return directory / "snap", "/" + DMESG


def _elf_header(shoff: int) -> bytes:
    """An ELF64 header whose section table starts at `shoff` (one 64-byte entry)."""
    ident = b"\x7fELF\x02\x01\x01" + bytes(9)
    return ident + struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 1, 0)


def xz_module_bomb(directory: Path, expands_to: int = 4 << 30) -> tuple[Path, str]:
    """nvidia.ko.xz: a valid ELF header claiming its section table at the end, then zeros."""
    snap = base_snapshot(directory / "snap")
    rel = f"lib/modules/{snap.release}/updates/dkms/nvidia.ko.xz"
    first = bytearray(ZERO_BLOCK)
    first[:64] = _elf_header(expands_to - 64)
    data = lzma.compress(bytes(first)) + _zero_blocks(lzma.compress, expands_to - ZERO_BLOCK)
    snap.write(rel, data)
    return directory / "snap", "/" + rel


def zst_module_bomb(directory: Path, expands_to: int = 4 << 30) -> tuple[Path, str]:
    import zstandard

    snap = base_snapshot(directory / "snap")
    rel = f"lib/modules/{snap.release}/updates/dkms/nvidia.ko.zst"
    first = bytearray(ZERO_BLOCK)
    first[:64] = _elf_header(expands_to - 64)
    compress = zstandard.ZstdCompressor(level=3, write_content_size=False).compress
    snap.write(rel, compress(bytes(first)) + _zero_blocks(compress, expands_to - ZERO_BLOCK))
    return directory / "snap", "/" + rel


def gzip_bomb_tgz(directory: Path, expands_to: int = 2 << 30) -> tuple[Path, str]:
    """A .tgz whose dmesg.txt member is `expands_to` zeros (the end-of-archive blocks are zeros too)."""
    base_snapshot(directory / "snap")
    head = io.BytesIO()
    tar = tarfile.open(fileobj=head, mode="w:", format=tarfile.GNU_FORMAT)
    for path in sorted((directory / "snap").rglob("*")):
        name = str(path.relative_to(directory / "snap"))
        if name != DMESG:
            tar.add(path, arcname=name, recursive=False)
    members = head.getvalue()  # taken before close(), which would end the archive
    bomb = tarfile.TarInfo(DMESG)
    bomb.size = expands_to
    archive = directory / "snap.tgz"
    archive.write_bytes(
        gzip.compress(members + bomb.tobuf(tarfile.GNU_FORMAT))
        + _zero_blocks(lambda data: gzip.compress(data, 9), expands_to)
        + gzip.compress(bytes(2 * tarfile.BLOCKSIZE))
    )
    return archive, "/" + DMESG


def many_empty_directories(directory: Path, count: int = 20_000, archive: bool = True) -> tuple[Path, str]:
    """`count` empty DKMS version directories (each one is listed), as a tree or a .tgz."""
    base_snapshot(directory / "snap")
    for index in range(count):
        (directory / "snap" / f"var/lib/dkms/nvidia/{index}.0").mkdir(parents=True)
    if not archive:
        return directory / "snap", ""
    with tarfile.open(directory / "snap.tgz", "w:gz", compresslevel=1) as tar:
        for name in sorted(os.listdir(directory / "snap")):
            tar.add(directory / "snap" / name, arcname=name)
    return directory / "snap.tgz", ""


def status_capped(root: Path, address_space: int = 600 << 20, timeout: float = 120):
    """`nvreload --status --root ROOT --json` in a child whose address space is capped (Python
    itself needs ~100 MB of it): (exit code, the JSON document or None)."""
    import json
    import resource
    import subprocess
    import sys

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

    done = subprocess.run(
        [sys.executable, "-m", "nvreload", "--status", "--root", str(root), "--json"],
        capture_output=True,
        preexec_fn=cap,
        timeout=timeout,
    )
    try:
        return done.returncode, json.loads(done.stdout)
    except ValueError:
        return done.returncode, None
