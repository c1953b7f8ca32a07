#!/usr/bin/env python3
"""Holder scan vs fuser: 1,000 processes x 200 descriptors (some on /dev/zero), 5 runs each.

    python3 bench/holder_scan.py [--procs 1000] [--fds 200]
Prints the medians and, last, `holder-scan ratio nvreload/fuser: X.XX` (target <= 0.5).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nvreload.host.processes import scan_gpu_holders  # noqa: E402
from nvreload.read.devices import DeviceMatcher  # noqa: E402


def spawn_holders(count: int, fds: int) -> list[int]:
    """Fork `count` sleepers, each with `fds` descriptors; every 10th holds /dev/zero."""
    pids = []
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            try:
                opened = [os.open("/dev/null", os.O_RDONLY) for _ in range(fds - 1)]
                if index % 10 == 0:
                    opened.append(os.open("/dev/zero", os.O_RDONLY))
                signal.pause()
            finally:
                os._exit(0)
        pids.append(pid)
    time.sleep(1.0 + count / 1000)
    return pids


def timed(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--procs", type=int, default=1000)
    parser.add_argument("--fds", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, args.fds + 64), max(hard, args.fds + 64)))
    fuser = shutil.which("fuser") or "/bin/fuser"
    zero = os.stat("/dev/zero").st_rdev
    matcher = DeviceMatcher(exact=frozenset({(os.major(zero), os.minor(zero))}))
    pids = spawn_holders(args.procs, args.fds)
    try:
        found = len(scan_gpu_holders(matcher))
        ours = timed(lambda: scan_gpu_holders(matcher), args.runs)
        theirs = timed(lambda: subprocess.run([fuser, "/dev/zero"], capture_output=True), args.runs)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            os.waitpid(pid, 0)
    print(f"{args.procs} processes x {args.fds} fds, {found} holding /dev/zero; median of {args.runs} runs")
    print(f"{'scanner':24} {'median ms':>10}")
    print(f"{'nvreload scan':24} {ours:10.1f}")
    print(f"{'fuser /dev/zero':24} {theirs:10.1f}")
    print(f"holder-scan ratio nvreload/fuser: {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
