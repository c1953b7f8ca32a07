"""Read the `.modinfo` section of a kernel module (.ko, .ko.xz, .ko.gz, .ko.zst) without kmod.

A module's .modinfo section is a run of NUL-terminated `key=value` strings (version=, vermagic=,
license=, ...). Only the ELF header, the section header table and the section-name string table
are needed to find it.
"""

from __future__ import annotations

import struct

from nvreload.errors import ModuleFileError

_ELF_MAGIC = b"\x7fELF"


def decompress_module(name: str, data: bytes) -> bytes:
    import gzip
    import lzma
    import zlib

    try:
        if name.endswith(".xz"):
            return lzma.decompress(data)
        if name.endswith(".gz"):
            return gzip.decompress(data)
        if name.endswith(".zst"):
            import zstandard  # lazy: only nodes with .ko.zst modules pay for it

            # Kernel modules compressed by kmod carry no content size in the frame header,
            # so decompress as a stream.
            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    except (lzma.LZMAError, OSError, EOFError, zlib.error) as exc:
        raise ModuleFileError(f"cannot decompress {name}: {exc}") from None
    except Exception as exc:  # zstandard.ZstdError has no stable import path across versions
        raise ModuleFileError(f"cannot decompress {name}: {exc}") from None
    return data


def parse_modinfo(elf: bytes) -> dict[str, list[str]]:
    """All key=value pairs of .modinfo, keys mapping to every value given (alias= repeats)."""
    if len(elf) < 64 or elf[:4] != _ELF_MAGIC:
        raise ModuleFileError("not an ELF file")
    ei_class, ei_data = elf[4], elf[5]
    if ei_class not in (1, 2) or ei_data not in (1, 2):
        raise ModuleFileError("unknown ELF class or byte order")
    endian = "<" if ei_data == 1 else ">"
    try:
        if ei_class == 2:
            shoff, = struct.unpack_from(endian + "Q", elf, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", elf, 0x3A)
            section = endian + "IIQQQQIIQQ"
        else:
            shoff, = struct.unpack_from(endian + "I", elf, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", elf, 0x2E)
            section = endian + "IIIIIIIIII"
        if shnum == 0 or shstrndx >= shnum or shentsize < struct.calcsize(section):
            raise ModuleFileError("ELF file has no usable section table")
        if shoff + shnum * shentsize > len(elf):
            raise ModuleFileError("ELF section table runs past the end of the file (truncated?)")
        headers = [struct.unpack_from(section, elf, shoff + i * shentsize) for i in range(shnum)]
        str_off, str_size = headers[shstrndx][4], headers[shstrndx][5]
        names = elf[str_off : str_off + str_size]
        for name_off, _type, _flags, _addr, offset, size, *_ in headers:
            end = names.find(b"\0", name_off)
            if names[name_off:end] != b".modinfo":
                continue
            if offset + size > len(elf):
                raise ModuleFileError(".modinfo runs past the end of the file (truncated?)")
            info: dict[str, list[str]] = {}
            for entry in elf[offset : offset + size].split(b"\0"):
                key, sep, value = entry.partition(b"=")
                if sep:
                    info.setdefault(key.decode("ascii", "replace"), []).append(value.decode("utf-8", "replace"))
            return info
    except struct.error as exc:
        raise ModuleFileError(f"malformed ELF file: {exc}") from None
    raise ModuleFileError("no .modinfo section")


def read_modinfo(name: str, data: bytes) -> dict[str, list[str]]:
    return parse_modinfo(decompress_module(name, data))
