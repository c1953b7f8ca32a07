#!/usr/bin/env python3
"""Reading the on-disk nvidia module's .modinfo: each compression format, without and with the cache.

    python3 bench/modinfo_read.py [--mib 14] [--runs 5]
Builds a real ELF object of about --mib MiB (a .modinfo section plus a blob of this machine's shared
libraries, which compress about as well as a kernel module does) in each format, then prints the
median time of read_on_disk_module() on a cold cache (decompress everything, parse the section
table) and on a warm one (one stat and one small JSON file). No target; it says what the cache buys.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nvreload.host.modinfo_cache import ModinfoCache  # noqa: E402
from nvreload.read.on_disk import read_on_disk_module  # noqa: E402
from nvreload.rootfs import open_root  # noqa: E402

RELEASE = "6.1.0-26-amd64"
COMPRESSORS = {"": None, ".xz": ["xz", "-c"], ".gz": ["gzip", "-c"], ".zst": ["zstd", "-q", "-c"]}


def build_module(directory: str, mib: int) -> str:
    blob = os.path.join(directory, "blob")
    with open(blob, "wb") as out:
        # each library once (the .so, .so.N and .so.N.M names are links to one file)
        libraries = dict.fromkeys(os.path.realpath(p) for p in sorted(glob.glob("/usr/lib/*/*.so*")))
        for library in libraries:
            if out.tell() >= mib << 20:
                break
            try:
                with open(library, "rb") as handle:
                    out.write(handle.read(mib << 20))
            except OSError:
                continue
        out.truncate(mib << 20)
    source = os.path.join(directory, "mod.c")
    with open(source, "w") as handle:
        handle.write(
            'static const char v[] __attribute__((used, section(".modinfo"), aligned(1))) = "version=580.159.04";\n'
            f'static const char m[] __attribute__((used, section(".modinfo"), aligned(1))) = "vermagic={RELEASE} SMP mod_unload ";\n'
            f'__asm__(".section .rodata.blob,\\"a\\"\\n.incbin \\"{blob}\\"\\n.previous\\n");\n'
        )
    obj = os.path.join(directory, "nvidia.ko")
    subprocess.run(["gcc", "-c", "-o", obj, source], check=True)
    return obj


def median_ms(call, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=14)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        plain = build_module(work, args.mib)
        print(f"{'format':8} {'file MiB':>9} {'cold ms':>9} {'cached ms':>10}")
        for suffix, tool in COMPRESSORS.items():
            root = os.path.join(work, f"root{suffix or '.ko'}")
            target = os.path.join(root, "lib/modules", RELEASE, "updates/dkms", "nvidia.ko" + suffix)
            os.makedirs(os.path.dirname(target))
            os.makedirs(os.path.join(root, "proc"))
            if tool is None:
                shutil.copy(plain, target)
            else:
                with open(target, "wb") as out:
                    subprocess.run(tool + [plain], stdout=out, check=True)
            fs = open_root(root)
            cache_path = os.path.join(work, f"cache{suffix}.json")

            # the defaults bind this round's root and cache: the timer calls them inside the loop
            def cold(fs=fs, cache_path=cache_path) -> None:
                if os.path.exists(cache_path):
                    os.unlink(cache_path)
                assert read_on_disk_module(fs, RELEASE, cache=ModinfoCache(cache_path)).version == "580.159.04"

            def warm(fs=fs, cache_path=cache_path) -> None:
                assert read_on_disk_module(fs, RELEASE, cache=ModinfoCache(cache_path)).version == "580.159.04"

            cold_ms = median_ms(cold, args.runs)
            warm_ms = median_ms(warm, args.runs)
            size = os.path.getsize(target) / (1 << 20)
            print(f"{'.ko' + suffix:8} {size:9.1f} {cold_ms:9.1f} {warm_ms:10.2f}")


if __name__ == "__main__":
    main()
