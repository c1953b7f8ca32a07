#!/usr/bin/env python3
"""Engine overhead of a simulated reload with realistic operation latencies.

Container stops 2-10 s (in parallel), service stops, module unload 0.5 s each, nvidia load 3 s per
GPU. Prints the wall time, the critical path (the sum of the operations that cannot overlap) and
the engine overhead beyond it (target <= 50 ms). The engine journals for real (fsync at step
boundaries); the simulated node keeps its state in memory.

    python3 bench/reload_overhead.py [--scale 0.1]   # scale shrinks every latency for a quick run
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from nvreload.engine.engine import Engine  # noqa: E402
from nvreload.engine.journal import Journal, JournalContext  # noqa: E402
from nvreload.engine.planner import build_plan  # noqa: E402
from nvreload.engine.sim import SimulatedNode, default_scenario  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    s = args.scale
    scenario = default_scenario()
    stop_times = [2, 5, 10, 3, 7, 4]
    scenario["containers"] = [
        {"id": f"{i:064x}", "name": f"gpu-job-{i}", "running": True, "gpu": True, "holds": ["nvidia"], "stop_s": t}
        for i, t in enumerate(stop_times)
    ]
    scenario["processes"] = [p for p in scenario["processes"] if not p.get("container")]
    scenario["latency"] = {
        "stop_service": 0.3 * s,
        "start_service": 0.2 * s,
        "unload_module": 0.5 * s,
        "load_module": 0.5 * s,
        "load_module_per_gpu": 3.0 * s,
        "start_container": 0.3 * s,
        "terminate": 0.1 * s,
        "verify": 0.0,
    }

    class InMemoryNode(SimulatedNode):
        """The simulated node without its crash-persistence file: that file is the simulation's
        bookkeeping, not the engine's work, and would be counted as engine overhead."""

        def _save(self) -> None:
            pass

    with tempfile.TemporaryDirectory() as state:
        node = InMemoryNode(scenario, state)
        original_stop = node.stop_container

        def stop_with_its_own_latency(cid: str, timeout):  # each container has its own stop time
            container = node._container(cid)
            time.sleep(container["stop_s"] * s)
            original_stop(cid, timeout)

        node.stop_container = stop_with_its_own_latency  # type: ignore[method-assign]
        view = node.observe()
        plan = build_plan(view, node.configured_parameters())
        journal = Journal.start(os.path.join(state, "journal.json"), "reload", [], JournalContext("simulated"))
        started = time.perf_counter()
        report = Engine(node, journal).reload(plan)
        wall = time.perf_counter() - started
    lat = scenario["latency"]
    services = len(view.services)
    modules = len(view.modules)
    gpus = len(scenario["gpus"])
    stop_phase = max(max(stop_times) * s, services * lat["stop_service"]) + lat["terminate"]
    critical = (
        stop_phase
        + modules * lat["unload_module"]
        + gpus * lat["load_module_per_gpu"]
        + (modules - 1) * lat["load_module"]
        + services * lat["start_service"]
        + len(stop_times) * lat["start_container"]
    )
    print(f"result {report.result}; {len(stop_times)} containers, {services} services, {modules} modules, {gpus} GPUs")
    print(f"{'':28} {'seconds':>10}")
    print(f"{'wall time':28} {wall:10.3f}")
    print(f"{'critical path':28} {critical:10.3f}")
    print(f"{'sequential container stops':28} {sum(stop_times) * s:10.3f}")
    print(f"engine overhead: {(wall - critical) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
