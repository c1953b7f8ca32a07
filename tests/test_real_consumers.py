"""--stop / --start and a simulated-modules reload whose consumers are a real dockerd's containers
and a real systemd's units; and what happens when they fail. Real engines, started by the session
fixtures in conftest.py."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import docker
import pytest
from helpers import run_cli
from realengine.dockerd import SLEEPER, STUBBORN

from nvreload.engine.sim import default_scenario
from nvreload.errors import ExitCode

SIM_LIVE = Path(__file__).parent / "realengine" / "sim_live.py"
GPU_UNITS = ("nvidia-persistenced.service", "nvidia-fabricmanager.service", "nvidia-dcgm.service")


@pytest.fixture
def node(dockerd, systemd_container, tmp_path):
    """Four GPU-looking containers (one per marker), one plain container, the systemd units."""
    client = dockerd.client
    made = [
        client.containers.run(
            "busybox:test", SLEEPER, detach=True, name="gpu-env", environment={"NVIDIA_VISIBLE_DEVICES": "all"}
        ),
        client.containers.run("busybox:test", SLEEPER, detach=True, name="gpu-dev", devices=["/dev/null:/dev/nvidia0"]),
        client.containers.run(
            "busybox:test",
            SLEEPER,
            detach=True,
            name="gpu-req",
            device_requests=[docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])],
        ),
        client.containers.run(
            "busybox:test", SLEEPER, detach=True, name="gpu-rt", runtime="nvidia", restart_policy={"Name": "always"}
        ),
        client.containers.run("busybox:test", SLEEPER, detach=True, name="plain"),
    ]
    for unit in GPU_UNITS:
        systemd_container.systemctl("reset-failed", unit)
        systemd_container.systemctl("start", unit)
    env = {
        "DOCKER_HOST": dockerd.url,
        "NVRELOAD_SYSTEMCTL": str(systemd_container.wrapper),
        "NVRELOAD_STATE_DIR": str(tmp_path / "state"),
    }
    yield env, made
    for container in client.containers.list(all=True):
        if container.name != "nvreload-test-systemd":
            container.remove(force=True)
    for flag in systemd_container.ctl.iterdir():
        flag.unlink()


def state(dockerd, name):
    box = dockerd.client.containers.get(name)
    return box.status, box.attrs["State"]["StartedAt"]


def cli(env, *args):
    proc = run_cli(*args, "--yes", "--json", env=env, timeout=180)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, (json.loads(proc.stdout) if proc.stdout.strip() else None)


def test_status_lists_the_gpu_containers_and_units_but_not_the_plain_container(node):
    env, _ = node
    proc = run_cli("--status", "--json", env=env)
    doc = json.loads(proc.stdout)
    assert {c["name"] for c in doc["consumers"]["containers"]} == {"gpu-env", "gpu-dev", "gpu-req", "gpu-rt"}
    services = {s["name"]: s["active"] for s in doc["consumers"]["services"]}
    assert {u: services[u] for u in GPU_UNITS} == dict.fromkeys(GPU_UNITS, "active")
    assert services["nvsm.service"] == "inactive" and services["dcgm-exporter.service"] == "failed"


def test_stop_then_start_touches_exactly_the_gpu_containers_and_active_gpu_units(node, dockerd, systemd_container):
    env, _ = node
    plain_before = state(dockerd, "plain")
    proc, report = cli(env, "--stop")
    assert proc.returncode == 0, proc.stderr
    assert set(report["stopped"]) == {"gpu-env", "gpu-dev", "gpu-req", "gpu-rt", *GPU_UNITS, "nv-hostengine.service"}
    assert report["container_engine"]["live_restore"] is True  # what the run relied on is recorded
    assert report["left_alone"] == [
        {"service": "dcgm-exporter.service", "why": "enabled but already failed before the run; not started"}
    ]
    for name in ("gpu-env", "gpu-dev", "gpu-req", "gpu-rt"):
        assert state(dockerd, name)[0] == "exited"
    assert state(dockerd, "plain") == plain_before
    assert [systemd_container.active(u) for u in GPU_UNITS] == ["inactive"] * 3
    # `always` is relaxed while stopped so a dockerd restart cannot start it behind our back
    assert dockerd.client.containers.get("gpu-rt").attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"

    proc, report = cli(env, "--start")
    assert proc.returncode == 0, proc.stderr
    assert report["result"] == "started"
    for name in ("gpu-env", "gpu-dev", "gpu-req", "gpu-rt"):
        assert state(dockerd, name)[0] == "running"
    assert dockerd.client.containers.get("gpu-rt").attrs["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert state(dockerd, "plain") == plain_before
    assert [systemd_container.active(u) for u in GPU_UNITS] == ["active"] * 3
    # it had used its one start a minute: nvreload cleared the start limit and started it again
    assert systemd_container.active("nv-hostengine.service") == "active"
    assert systemd_container.active("nvsm.service") == "inactive"
    assert systemd_container.active("dcgm-exporter.service") == "failed"


def test_a_simulated_modules_reload_restarts_the_real_consumers(node, dockerd, systemd_container, tmp_path):
    env, _ = node
    scenario = default_scenario()
    scenario.update(processes=[], containers=[], services=[])
    path = tmp_path / "live-consumers.json"
    path.write_text(json.dumps(scenario))
    hook_before = dockerd.hook_starts()
    proc = subprocess.run(
        [sys.executable, str(SIM_LIVE), "--reload", "--simulate", str(path), "--yes", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["result"] == "reloaded"
    assert set(report["restarted"]) == {"gpu-env", "gpu-dev", "gpu-req", "gpu-rt", *GPU_UNITS, "nv-hostengine.service"}
    assert dockerd.hook_starts() == hook_before + 1  # the --gpus container really went through a start
    assert [systemd_container.active(u) for u in GPU_UNITS] == ["active"] * 3
    assert state(dockerd, "plain")[0] == "running"


def test_a_container_and_a_unit_that_fail_to_start_are_named_and_the_rest_comes_back(
    node, dockerd, systemd_container, tmp_path
):
    env, _ = node
    data = tmp_path / "data"
    data.mkdir()
    dockerd.client.containers.run(
        "busybox:test",
        SLEEPER,
        detach=True,
        name="gpu-bind",
        environment={"NVIDIA_VISIBLE_DEVICES": "0"},
        mounts=[docker.types.Mount("/data", str(data), type="bind")],
    )
    proc, _ = cli(env, "--stop")
    assert proc.returncode == 0, proc.stderr
    data.rmdir()  # its bind-mount source vanished while it was stopped
    (systemd_container.ctl / "fail-dcgm").write_text("")  # nvidia-dcgm's ExecStart now fails
    proc, report = cli(env, "--start")
    assert proc.returncode == ExitCode.PARTIAL
    assert {f["target"] for f in report["restart_failures"]} == {"gpu-bind", "nvidia-dcgm.service"}
    assert state(dockerd, "gpu-env")[0] == "running"
    assert systemd_container.active("nvidia-persistenced.service") == "active"
    # the journal keeps what did not come back: fix the cause, --start again
    data.mkdir()
    (systemd_container.ctl / "fail-dcgm").unlink()
    proc, report = cli(env, "--start")
    assert proc.returncode == 0, proc.stdout
    assert state(dockerd, "gpu-bind")[0] == "running"
    assert systemd_container.active("nvidia-dcgm.service") == "active"


def test_a_container_that_ignores_sigterm_is_killed_after_its_stop_timeout(node, dockerd):
    env, _ = node
    created = dockerd.client.api.create_container(
        "busybox:test", STUBBORN, name="gpu-stubborn", environment={"NVIDIA_VISIBLE_DEVICES": "all"}, stop_timeout=1
    )
    dockerd.client.api.start(created["Id"])
    started = time.monotonic()
    proc, report = cli(env, "--stop")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started >= 1.0
    stubborn = dockerd.client.containers.get("gpu-stubborn")
    assert stubborn.status == "exited" and stubborn.attrs["State"]["ExitCode"] == 137
    proc, _ = cli(env, "--start")
    assert proc.returncode == 0
    assert state(dockerd, "gpu-stubborn")[0] == "running"


def test_with_dockerd_down_the_containers_are_named_and_the_units_still_come_back(node, dockerd, systemd_container):
    env, _ = node
    proc, _ = cli(env, "--stop")
    assert proc.returncode == 0, proc.stderr
    dockerd.stop()
    try:
        proc, report = cli(env, "--start")
        assert proc.returncode == ExitCode.PARTIAL
        assert {f["target"] for f in report["restart_failures"]} == {"gpu-env", "gpu-dev", "gpu-req", "gpu-rt"}
        assert [systemd_container.active(u) for u in GPU_UNITS] == ["active"] * 3
    finally:
        dockerd.start()
    proc, _ = cli(env, "--start")
    assert proc.returncode == 0, proc.stdout
    for name in ("gpu-env", "gpu-dev", "gpu-req", "gpu-rt"):
        assert state(dockerd, name)[0] == "running"
