"""Read the `.modinfo` section of a kernel module (.ko, .ko.xz, .ko.gz, .ko.zst) without kmod.

A module's .modinfo section is a run of NUL-terminated `key=value` strings (version=, vermagic=,
license=, ...). Only the ELF header, the section header table and the section-name string table
are needed to find it, so only those parts are read: a plain module by seeking, a compressed one by
decompressing it as a stream and keeping just the bytes of the part wanted (the section table sits
at the end, so the stream is run through once per part, never held whole). A module file comes from
a snapshot as readily as from this machine, so the decompressed bytes are capped.
"""

from __future__ import annotations

import struct

from nvreload.errors import ModuleFileError

TYPE_CHECKING = False  # not typing's: importing typing costs the --status path; mypy and pyright read this name as True
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import BinaryIO

_ELF_MAGIC = b"\x7fELF"
# The furthest into a decompressed module we read. A real nvidia.ko is ~100 MB; this is collect's
# own cap on the one file it copies (collect.MAX_FILE). A bomb is given up after ~0.5 s of
# inflating per pass.
MAX_MODULE_BYTES = 256 << 20
# The largest one part may be: a section table of 16 MiB is 260k sections (a module has tens to a
# few thousand); .modinfo and the section names are kilobytes.
MAX_PART_BYTES = 16 << 20
# liblzma's memory for one .xz stream (its dictionary): the kernel compresses modules with a 1 MiB
# dictionary, `xz -9` uses 64 MiB; a header asking for more is refused, not allocated.
XZ_MEMLIMIT = 96 << 20
_CHUNK = 1 << 20


def _parse(read: Callable[[int, int], bytes]) -> dict[str, list[str]]:
    """.modinfo of the ELF whose bytes `read(offset, size)` returns (fewer past its end)."""
    elf = read(0, 64)
    if len(elf) < 64 or elf[:4] != _ELF_MAGIC:
        raise ModuleFileError("not an ELF file")
    ei_class, ei_data = elf[4], elf[5]
    if ei_class not in (1, 2) or ei_data not in (1, 2):
        raise ModuleFileError("unknown ELF class or byte order")
    endian = "<" if ei_data == 1 else ">"
    try:
        if ei_class == 2:
            (shoff,) = struct.unpack_from(endian + "Q", elf, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", elf, 0x3A)
            section = endian + "IIQQQQIIQQ"
        else:
            (shoff,) = struct.unpack_from(endian + "I", elf, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", elf, 0x2E)
            section = endian + "IIIIIIIIII"
        if shnum == 0 or shstrndx >= shnum or shentsize < struct.calcsize(section):
            raise ModuleFileError("ELF file has no usable section table")
        table = read(shoff, shnum * shentsize)
        if len(table) < shnum * shentsize:
            raise ModuleFileError("ELF section table runs past the end of the file (truncated?)")
        headers = [struct.unpack_from(section, table, i * shentsize) for i in range(shnum)]
        str_off, str_size = headers[shstrndx][4], headers[shstrndx][5]
        names = read(str_off, str_size)
        for name_off, _type, _flags, _addr, offset, size, *_ in headers:
            end = names.find(b"\0", name_off)
            if names[name_off:end] != b".modinfo":
                continue
            modinfo = read(offset, size)
            if len(modinfo) < size:
                raise ModuleFileError(".modinfo runs past the end of the file (truncated?)")
            info: dict[str, list[str]] = {}
            for entry in modinfo.split(b"\0"):
                key, sep, value = entry.partition(b"=")
                if sep:
                    info.setdefault(key.decode("ascii", "replace"), []).append(value.decode("utf-8", "replace"))
            return info
    except struct.error as exc:
        raise ModuleFileError(f"malformed ELF file: {exc}") from None
    raise ModuleFileError("no .modinfo section")


def parse_modinfo(elf: bytes) -> dict[str, list[str]]:
    """All key=value pairs of .modinfo, keys mapping to every value given (alias= repeats)."""
    return _parse(lambda offset, size: elf[offset : offset + size])


def _inflating(name: str, handle: BinaryIO):
    """A reader of the decompressed stream of `handle` (at its start), or None for a plain module.
    Concatenated streams (xz), members (gzip) and frames (zstd) read as one, as kmod reads them."""
    if name.endswith(".xz"):
        return _XzReader(handle)
    if name.endswith(".gz"):
        import gzip

        return gzip.GzipFile(fileobj=handle, mode="rb")
    if name.endswith(".zst"):
        import zstandard  # lazy: only nodes with .ko.zst modules pay for it

        # kmod writes frames without a content size: the stream reader needs none
        return zstandard.ZstdDecompressor().stream_reader(handle, read_across_frames=True, closefd=False)
    return None


class _XzReader:
    """.xz streams one after another, decompressed with liblzma's memory limited to XZ_MEMLIMIT."""

    def __init__(self, handle: BinaryIO) -> None:
        import lzma

        self._lzma = lzma
        self._handle = handle
        self._decoder = lzma.LZMADecompressor(memlimit=XZ_MEMLIMIT)
        self._pending = b""

    def read(self, size: int) -> bytes:
        while True:
            if self._decoder.eof:  # the next stream, after the padding of NULs that may separate them
                rest = self._decoder.unused_data.lstrip(b"\0")
                while not rest:
                    more = self._handle.read(_CHUNK)
                    if not more:
                        return b""
                    rest = more.lstrip(b"\0")
                self._decoder = self._lzma.LZMADecompressor(memlimit=XZ_MEMLIMIT)
                self._pending = rest
            if self._decoder.needs_input and not self._pending:
                self._pending = self._handle.read(_CHUNK)
                if not self._pending:
                    raise EOFError("the .xz stream ends early")
            out = self._decoder.decompress(self._pending, size)
            self._pending = b""
            if out:
                return out


class _ModuleImage:
    """The decompressed bytes of a module file, read by part."""

    def __init__(self, name: str, handle: BinaryIO) -> None:
        self.name = name
        self.handle = handle

    def read(self, offset: int, size: int) -> bytes:
        if size > MAX_PART_BYTES:
            raise ModuleFileError(f"a part of {size} bytes is claimed, more than any module has")
        if offset + size > MAX_MODULE_BYTES:
            raise ModuleFileError(
                f"its headers point {offset + size} bytes in, past the {MAX_MODULE_BYTES >> 20} MiB read of a module"
            )
        self.handle.seek(0)
        stream = _inflating(self.name, self.handle)
        if stream is None:
            self.handle.seek(offset)
            return self.handle.read(size)
        skipped = 0
        while skipped < offset:  # what comes before the part is decompressed and dropped
            chunk = stream.read(min(_CHUNK, offset - skipped))
            if not chunk:
                return b""
            skipped += len(chunk)
        parts, got = [], 0
        while got < size:
            chunk = stream.read(min(_CHUNK, size - got))
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)


def read_modinfo_file(name: str, handle: BinaryIO) -> dict[str, list[str]]:
    """.modinfo of the module file open in `handle` (seekable); `name` says its compression."""
    image = _ModuleImage(name, handle)
    try:
        return _parse(image.read)
    except ModuleFileError:
        raise
    except (OSError, EOFError, ValueError) as exc:  # lzma.LZMAError, zlib.error and gzip's errors among them
        raise ModuleFileError(f"cannot decompress {name}: {exc}") from None
    except Exception as exc:  # zstandard.ZstdError has no stable import path across versions
        raise ModuleFileError(f"cannot decompress {name}: {exc}") from None


def read_modinfo(name: str, data: bytes) -> dict[str, list[str]]:
    import io

    return read_modinfo_file(name, io.BytesIO(data))
