#!/usr/bin/env python3
"""Stop and restart 8 Podman GPU containers beside 8 Docker ones, through the real command line
(--stop, then --start), against a real dockerd and a real rootful Podman API service. Each
container takes ~1 s to stop (its PID 1 sleeps 1 s on SIGTERM). Prints the stop phase as the run
reports it (--start reports no steps) and the wall time of each command, interpreter start included.

    sudo python3 bench/podman_docker_stop.py   # needs docker.io, podman, busybox (see .ci/run)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from realengine.dockerd import Dockerd  # noqa: E402
from realengine.podman import PodmanService  # noqa: E402

SLOW_STOP = 'trap "sleep 1; exit 0" TERM; sleep 3600 & wait'
COUNT = 8


def cli(env: dict, *args: str) -> tuple[float, dict]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "nvreload", *args, "--yes", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=300,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"nvreload {' '.join(args)} exited {proc.returncode}: {proc.stdout[-2000:]}{proc.stderr}")
    return wall, json.loads(proc.stdout)


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="nvreload-bench-"))
    docker = Dockerd(base / "docker")
    podman = PodmanService(base / "podman")
    (base / "docker").mkdir()
    (base / "podman").mkdir()
    try:
        docker.start()
        docker.busybox_image()
        podman.start()
        podman.busybox_image()
        for index in range(COUNT):
            docker.client.containers.run(
                "busybox:test",
                ["sh", "-c", SLOW_STOP],
                detach=True,
                name=f"d-gpu-{index}",
                environment={"NVIDIA_VISIBLE_DEVICES": "all"},
            )
            podman.remote(
                "run", "-d", "--name", f"p-gpu-{index}", "--device", f"nvidia.com/gpu={index % 2}",
                "busybox:test", "sh", "-c", SLOW_STOP,
            )  # fmt: skip
        time.sleep(0.5)
        none = f"unix://{base}/none.sock"
        runs = (
            ("Docker alone", {"DOCKER_HOST": docker.url, "CONTAINER_HOST": none}, COUNT),
            ("Podman alone", {"DOCKER_HOST": none, "CONTAINER_HOST": podman.url}, COUNT),
            ("both", {"DOCKER_HOST": docker.url, "CONTAINER_HOST": podman.url}, 2 * COUNT),
        )
        print(f"{COUNT} Podman + {COUNT} Docker GPU containers, each ~1 s to stop (seconds)")
        print(f"{'engines':14} {'stop phase':>10} {'--stop wall':>12} {'--start wall':>13} {'stop+restart':>13}")
        for label, env, expected in runs:
            env = {**env, "NVRELOAD_STATE_DIR": str(base / f"state-{label[0]}")}
            stop_wall, stop = cli(env, "--stop")
            start_wall, start = cli(env, "--start")
            assert len(stop["stopped"]) == expected and len(start["restarted"]) == expected, (stop, start)
            phase = sum(s["seconds"] for s in stop["steps"])
            print(f"{label:14} {phase:10.3f} {stop_wall:12.3f} {start_wall:13.3f} {stop_wall + start_wall:13.3f}")
    finally:
        podman.teardown()
        docker.teardown()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
