#!/usr/bin/env python3
"""Stop phase against a real dockerd: 8 GPU containers that each take ~1 s to stop (their PID 1
sleeps 1 s on SIGTERM), stopped by the engine in parallel. Prints the slowest single stop, the
stop phase, and the ratio (target <= 1.5; sequential would be ~8).

    sudo python3 bench/consumer_stop.py      # needs dockerd and busybox installed (see .ci/run)
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from realengine.dockerd import Dockerd  # noqa: E402

SLOW_STOP = ["sh", "-c", 'trap "sleep 1; exit 0" TERM; sleep 3600 & wait']
COUNT = 8


def main() -> None:
    engine = Dockerd(Path(tempfile.mkdtemp(prefix="nvreload-bench-")))
    engine.start()
    try:
        engine.busybox_image()
        probe = engine.client.containers.run(
            "busybox:test", SLOW_STOP, detach=True, name="probe", environment={"NVIDIA_VISIBLE_DEVICES": "all"}
        )
        time.sleep(0.3)
        started = time.perf_counter()
        probe.stop(timeout=10)
        single = time.perf_counter() - started
        probe.remove()
        singles = [single]
        for index in range(COUNT):
            engine.client.containers.run(
                "busybox:test",
                SLOW_STOP,
                detach=True,
                name=f"gpu-{index}",
                environment={"NVIDIA_VISIBLE_DEVICES": "all"},
            )
        time.sleep(0.5)

        os.environ["DOCKER_HOST"] = engine.url
        from nvreload.engine.engine import Engine
        from nvreload.engine.journal import Journal, JournalContext
        from nvreload.engine.live_target import LiveTarget
        from nvreload.engine.planner import build_plan
        from nvreload.host.machine import Machine
        from nvreload.rootfs import DirRoot

        target = LiveTarget(Machine(DirRoot("/")))
        view = target.observe()
        assert len(view.containers) == COUNT, view.containers
        plan = build_plan(view, stop_only=True)
        with tempfile.TemporaryDirectory() as state:
            report = Engine(
                target, Journal.start(os.path.join(state, "journal.json"), "stop", [], JournalContext("live"))
            ).stop(plan)
        phase = report.steps[0]["seconds"]
        slowest = max(singles)
        print(f"{COUNT} GPU containers, each ~1 s to stop")
        print(f"{'':30} {'seconds':>8}")
        print(f"{'slowest single stop':30} {slowest:8.3f}")
        print(f"{'engine stop phase (parallel)':30} {phase:8.3f}")
        print(f"{'sequential would be about':30} {COUNT * slowest:8.3f}")
        print(f"consumer-stop ratio phase/slowest: {phase / slowest:.2f}")
    finally:
        engine.teardown()


if __name__ == "__main__":
    main()
