#!/usr/bin/env python3
"""Peak memory and wall time of `nvreload --status --root X --json` on hostile snapshots.

    /work/venv/bin/python bench/hostile_snapshot.py [--limit-mib 2048] [--timeout 60]
Builds each reproducer in a temporary directory (tests/hostile_builder.py: a gzip bomb .tgz, a
.ko.xz and a .ko.zst that inflate to 4 GiB, a 2 GiB sparse dmesg.txt, a FIFO and, as root, a copy of
/dev/zero's device node as dmesg.txt, 20k empty directories as a tree and as a .tgz), runs nvreload
on each under an address-space limit (so that a reader that does load everything fails fast instead
of taking the machine) and a timeout (a FIFO that blocks), and prints the child's peak RSS
(wait4's rusage), the wall time, the exit code and whether the JSON names the file as unreadable.
Target: every row under 200 MiB and a few seconds, exit 0-3, the file named.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import hostile_builder as hostile  # noqa: E402

CASES = {
    "gzip bomb .tgz (2 GiB)": hostile.gzip_bomb_tgz,
    ".ko.xz bomb (4 GiB)": hostile.xz_module_bomb,
    ".ko.zst bomb (4 GiB)": hostile.zst_module_bomb,
    "sparse dmesg.txt (2 GiB)": hostile.sparse_dmesg,
    "FIFO as dmesg.txt": hostile.fifo_dmesg,
    "/dev/zero node as dmesg.txt": hostile.zero_device_dmesg,
    "20k empty dirs (tree)": lambda d: hostile.many_empty_directories(d, archive=False),
    "20k empty dirs (.tgz)": hostile.many_empty_directories,
}


def nvreload_argv() -> list[str]:
    script = Path(sys.executable).with_name("nvreload")
    return [str(script)] if script.exists() else [sys.executable, "-m", "nvreload"]


def named(stdout: bytes, path: str) -> str:
    """How the status document names `path`: in "unreadable", or in a finding's evidence."""
    if not path:
        return "-"
    try:
        doc = json.loads(stdout)
    except ValueError:
        return "no JSON"
    if path in doc.get("unreadable", []):
        return "unreadable"
    for finding in doc.get("findings", []):
        if finding["evidence"].get("path") == path:
            return f"{finding['code']}: {finding['evidence'].get('error')}"
    return "NOT NAMED"


def run(root: Path, limit: int, timeout: float) -> tuple[int | str, float, float, bytes]:
    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    started = time.perf_counter()
    child = subprocess.Popen(
        nvreload_argv() + ["--status", "--root", str(root), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        preexec_fn=limit_memory,
    )
    try:
        stdout, _ = child.communicate(timeout=timeout)
        code: int | str = child.returncode
    except subprocess.TimeoutExpired:
        child.kill()  # our own child
        stdout, _ = child.communicate()
        code = f"timeout {timeout:.0f}s"
    wall = time.perf_counter() - started
    # this process runs one child only (--one), so RUSAGE_CHILDREN is that child's peak
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return code, rss, wall, stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-mib", type=int, default=2048, help="address-space limit of each run")
    parser.add_argument("--timeout", type=float, default=60)
    args = parser.parse_args()
    print(f"{'case':30} {'exit':>12} {'peak RSS MiB':>13} {'wall s':>7}  file reported as")
    for name, build in CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            if "/dev/zero" in name and os.geteuid() != 0:
                print(f"{name:30} skipped: mknod needs root")
                continue
            root, path = build(Path(tmp))
            # each case in a fresh child of a fresh child, so that ru_maxrss is this run's alone
            probe = subprocess.run(
                [sys.executable, __file__, "--one", str(root), str(args.limit_mib << 20), str(args.timeout)],
                capture_output=True,
                check=True,
            )
            code, rss, wall, stdout = json.loads(probe.stdout)
            print(f"{name:30} {code!s:>12} {rss:13.0f} {wall:7.2f}  {named(stdout.encode(), path)}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--one":
        code, rss, wall, out = run(Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
        print(json.dumps([code, rss, wall, out.decode("utf-8", "replace")]))
    else:
        main()
