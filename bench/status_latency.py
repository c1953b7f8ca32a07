#!/usr/bin/env python3
"""Median wall time of `nvreload --status --json` beside `python -c pass`, 20 interleaved runs each.

    .venv/bin/python bench/status_latency.py            # on the H100 capture (tests/fixtures/...)
    .venv/bin/python bench/status_latency.py --live     # on this machine's live node
Target: the --root run <= 2.5x python's own start-up; live on a GPU node <= 100 ms.

Run it with the python of the environment nvreload is installed in: it times the `nvreload` console
script next to that python (what operators run), or `python -m nvreload` where there is none. The
ratio depends on the environment: a python whose site-packages import much at start-up (.pth files)
makes it look better than a clean venv does, so the table names the interpreter. The runs are made
without PYTHONDONTWRITEBYTECODE (an installed package has its bytecode; without it every run would
time Python compiling nvreload's sources).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent.parent / "tests/fixtures/h100-580-no-unload"


ENVIRONMENT = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall_ms(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, env=ENVIRONMENT)
    return (time.perf_counter() - started) * 1000


def interleaved_medians(commands: list[list[str]], runs: int) -> list[float]:
    """Run the commands in turn, `runs` rounds, so that a slow spell of the machine (a shared VM)
    falls on all of them alike instead of on one block of runs."""
    for argv in commands:  # warm the page cache and the .pyc files first
        wall_ms(argv)
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for index, argv in enumerate(commands):
            times[index].append(wall_ms(argv))
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--live", action="store_true")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    target = [] if args.live else ["--root", str(FIXTURE)]
    script = Path(sys.executable).parent / "nvreload"
    nvreload = [str(script)] if script.exists() else [sys.executable, "-m", "nvreload"]
    python, status = interleaved_medians(
        [[sys.executable, "-c", "pass"], [*nvreload, "--status", "--json", *target]], args.runs
    )
    print(f"python: {sys.executable} {sys.version.split()[0]}; nvreload: {' '.join(nvreload)}")
    print(f"{'command':44} {'median ms':>10}")
    print(f"{'python3 -c pass':44} {python:10.1f}")
    print(f"{'nvreload --status --json ' + ('(live)' if args.live else '--root <fixture>'):44} {status:10.1f}")
    print(f"ratio nvreload/python: {status / python:.2f}")


if __name__ == "__main__":
    main()
