#!/usr/bin/env python3
"""The randomized interruption harness of the test suite (tests/engine/test_interruption_harness.py),
run by hand: every seeded case, then a table of how the runs ended, per action and signal, and how
long it took. The test asserts each case; this counts them.

    python bench/interruptions.py            # the suite's 120 cases
    python bench/interruptions.py --runs 400 # more of the same seed's sequence
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path[:0] = [str(TESTS), str(TESTS / "engine")]

from test_interruption_harness import RUNS, case, finish_and_check, run_case  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=RUNS)
    args = parser.parse_args()
    started = time.monotonic()
    endings: Counter[tuple[str, str, str]] = Counter()
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=2) as pool:
        runs = list(pool.map(lambda n: run_case(Path(tmp), n), range(args.runs)))
        for run in runs:
            endings[(run["action"], run["signal"], finish_and_check(run))] += 1
    elapsed = time.monotonic() - started
    print(f"{'action':<8} {'signal':<8} {'journal ends':<12} {'runs':>5}")
    for (action, signum, final), count in sorted(endings.items()):
        print(f"{action:<8} {signum:<8} {final:<12} {count:>5}")
    finals = Counter()
    for (_, _, final), count in endings.items():
        finals[final] += count
    print(
        f"\n{args.runs} runs, all consistent, in {elapsed:.0f} s: "
        + ", ".join(f"{k} {v}" for k, v in sorted(finals.items()))
    )
    print(f"first case: {case(0)}")


if __name__ == "__main__":
    main()
