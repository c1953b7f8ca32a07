#!/usr/bin/env python3
"""What the journal costs as a reload grows: a simulated reload of N GPU containers (no operation
latency), in memory but for the journal, which is written for real. Prints, per N, the wall time
and the bytes the process wrote (/proc/self/io wchar). Target: linear in N (2,000 containers once
took 61 s and wrote 4.2 GB, the whole journal being rewritten per record).

    python3 bench/journal_scale.py [N ...]    # default 250 500 1000 2000
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nvreload.engine.engine import Engine  # noqa: E402
from nvreload.engine.journal import Journal, JournalContext  # noqa: E402
from nvreload.engine.planner import build_plan  # noqa: E402
from nvreload.engine.sim import SimulatedNode, default_scenario  # noqa: E402


class InMemoryNode(SimulatedNode):
    def _save(self) -> None:  # the simulation's own bookkeeping file is not the journal's cost
        pass


def written_bytes() -> int:
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("wchar:"))


def run(containers: int) -> tuple[float, int, str]:
    scenario = default_scenario()
    scenario["containers"] = [
        {"id": f"{i:064x}", "name": f"gpu-job-{i}", "running": True, "gpu": True, "holds": ["nvidia"]}
        for i in range(containers)
    ]
    scenario["processes"] = [p for p in scenario["processes"] if not p.get("container")]
    with tempfile.TemporaryDirectory() as state:
        node = InMemoryNode(scenario, state)
        view = node.observe()
        plan = build_plan(view, node.configured_parameters())
        before, started = written_bytes(), time.perf_counter()
        journal = Journal.start(
            os.path.join(state, "journal.json"),
            "reload",
            [{"step": s.name, "action": a.kind, "target": a.target} for s in plan.steps for a in s.actions],
            JournalContext("simulated"),
        )
        report = Engine(node, journal).reload(plan)
        return time.perf_counter() - started, written_bytes() - before, report.result


def main() -> None:
    sizes = [int(n) for n in sys.argv[1:]] or [250, 500, 1000, 2000]
    print(f"{'containers':>10} {'seconds':>9} {'MB written':>11} {'bytes/container':>16}  result")
    for n in sizes:
        seconds, written, result = run(n)
        print(f"{n:>10} {seconds:9.2f} {written / 1e6:11.2f} {written / n:16.0f}  {result}")


if __name__ == "__main__":
    main()
