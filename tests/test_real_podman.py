"""--stop / --start on a node that runs Docker and Podman side by side: a real dockerd and a real
rootful Podman API service, each with GPU containers, each reached through its own socket."""

import json

import pytest
from helpers import run_cli

# TERM is logged, the stop takes half a second, then the exit is logged: stops that overlap in
# time show as a second TERM before the first exit (the log is one file both engines bind-mount)
SLOW_STOP = (
    'trap "echo term $NAME >> /log/stops; sleep 0.5; echo exit $NAME >> /log/stops; exit 0" TERM; sleep 3600 & wait'
)


@pytest.fixture
def both(dockerd, podman, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    docker_names = [f"d-gpu{i}" for i in range(2)]
    for name in docker_names:
        dockerd.client.containers.run(
            "busybox:test",
            ["sh", "-c", SLOW_STOP],
            detach=True,
            name=name,
            environment={"NVIDIA_VISIBLE_DEVICES": "all", "NAME": name},
            volumes={str(log): {"bind": "/log", "mode": "rw"}},
        )
    podman_names = ["p-cdi", "p-dev", "p-hook", "p-always"]
    options = {
        "p-cdi": ["--device", "nvidia.com/gpu=0"],
        "p-dev": ["--device", "/dev/null:/dev/nvidia2"],
        "p-hook": ["--annotation", "com.nvidia.gpu=true"],
        "p-always": ["--device", "nvidia.com/gpu=1", "--restart", "always"],
    }
    for name in podman_names:
        podman.remote(
            "run",
            "-d",
            "--name",
            name,
            "-e",
            f"NAME={name}",
            "-v",
            f"{log}:/log",
            *options[name],
            "busybox:test",
            "sh",
            "-c",
            SLOW_STOP,
        )
    podman.run("p-plain")
    env = {"DOCKER_HOST": dockerd.url, "CONTAINER_HOST": podman.url, "NVRELOAD_STATE_DIR": str(tmp_path / "state")}
    yield env, docker_names, podman_names, log / "stops"
    podman.remove_all()
    for name in docker_names:
        dockerd.client.containers.get(name).remove(force=True)


def cli(env, *args):
    proc = run_cli(*args, "--json", env=env, timeout=180)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, json.loads(proc.stdout)


def test_status_counts_the_gpu_containers_of_each_engine(both, podman, dockerd):
    env, docker_names, podman_names, _ = both
    proc, doc = cli(env, "--status")
    containers = {c["name"]: c for c in doc["consumers"]["containers"]}
    assert set(containers) == {*docker_names, *podman_names}
    assert {containers[n]["engine"] for n in podman_names} == {"podman"}
    assert containers["p-cdi"]["markers"] == ["device:/dev/nvidia0", "cdi:nvidia.com/gpu=0"]
    engines = {e["name"]: e for e in doc["consumers"]["engines"]}
    assert engines["podman"] == {"name": "podman", "url": podman.url, "gpu_containers": 4}
    assert engines["docker"] == {"name": "docker", "url": dockerd.url, "gpu_containers": 2}
    human = run_cli("--status", env=env).stdout
    assert "container engines: docker 2 GPU container(s), podman 4 GPU container(s)" in human
    metrics = run_cli("--status", "--format", "prometheus", env=env).stdout
    assert f'nvreload_container_engine_gpu_containers{{engine="podman",url="{podman.url}"}} 4' in metrics
    assert f'nvreload_container_engine_gpu_containers{{engine="docker",url="{dockerd.url}"}} 2' in metrics


def test_stop_then_start_takes_podman_and_docker_containers_down_together_and_back(both, podman, dockerd):
    env, docker_names, podman_names, stops = both
    hooks = podman.hook_starts()
    proc, report = cli(env, "--stop", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert set(report["stopped"]) == {*docker_names, *podman_names}
    assert {n: podman.inspect(n)["State"]["Status"] for n in podman_names} == dict.fromkeys(podman_names, "exited")
    assert podman.inspect("p-plain")["State"]["Status"] == "running"
    lines = stops.read_text().split("\n")
    # in parallel, across both engines: every TERM came before the first container finished its stop
    first_exit = next(i for i, line in enumerate(lines) if line.startswith("exit"))
    assert {line.split()[1] for line in lines[:first_exit]} == {*docker_names, *podman_names}

    proc, report = cli(env, "--start", "--yes")
    assert proc.returncode == 0, proc.stdout
    assert report["result"] == "started"
    assert {n: podman.inspect(n)["State"]["Status"] for n in podman_names} == dict.fromkeys(podman_names, "running")
    assert {dockerd.client.containers.get(n).status for n in docker_names} == {"running"}
    assert podman.inspect("p-always")["HostConfig"]["RestartPolicy"]["Name"] == "always"
    assert podman.hook_starts() == hooks + 1  # the hooked container went through a real start


# What `podman generate systemd --new` and Quadlet write, reduced to what this systemd box can run:
# the unit's podman (the host's /usr/bin/podman, remote, through the session's Podman socket linked
# into the box's /ctl) runs the container in the foreground, labelled with its unit.
OWNED_UNIT = """[Unit]
Description=GPU trainer in a Podman container owned by this unit
StartLimitIntervalSec=0

[Service]
Environment=PODMAN_SYSTEMD_UNIT=%n
ExecStartPre=-/usr/bin/podman --remote --url unix:///ctl/podman.sock rm --force --time 0 q-train
ExecStart=/usr/bin/podman --remote --url unix:///ctl/podman.sock run --rm --name q-train \\
    --label PODMAN_SYSTEMD_UNIT=%n --device nvidia.com/gpu=0 busybox:test sh -c 'trap "exit 0" TERM; sleep 3600 & wait'
ExecStop=/usr/bin/podman --remote --url unix:///ctl/podman.sock stop --time 5 q-train
Restart=always
RestartSec=0.2
TimeoutStopSec=15
"""


@pytest.fixture
def owned(podman, systemd_container, tmp_path):
    import os
    import time

    link = systemd_container.ctl / "podman.sock"
    if link.exists():
        link.unlink()
    os.link(podman.socket, link)  # the same socket, reachable in the box
    units = systemd_container.run_systemd / "system"
    units.mkdir(exist_ok=True)
    (units / "q-train.service").write_text(OWNED_UNIT)
    systemd_container.systemctl("daemon-reload")
    systemd_container.systemctl("start", "q-train.service")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and podman.remote("inspect", "q-train", check=False).returncode != 0:
        time.sleep(0.2)
    env = {
        "CONTAINER_HOST": podman.url,
        "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
        "NVRELOAD_SYSTEMCTL": str(systemd_container.wrapper),
        "NVRELOAD_STATE_DIR": str(tmp_path / "state"),
    }
    yield env
    systemd_container.systemctl("stop", "q-train.service")
    (units / "q-train.service").unlink()
    systemd_container.systemctl("daemon-reload")
    link.unlink()
    podman.remove_all()


def test_a_container_its_unit_owns_is_stopped_and_started_through_the_unit_once(owned, podman, systemd_container):
    env = owned
    first = podman.inspect("q-train")
    assert first["Config"]["Labels"]["PODMAN_SYSTEMD_UNIT"] == "q-train.service"
    proc, plan = cli(env, "--stop", "--dry-run")
    stops = [a for a in plan["plan"] if a["action"] == "stop_container" or a["target"] == "q-train.service"]
    assert [(a["action"], a["target"]) for a in stops] == [("stop_service", "q-train.service")]
    assert stops[0]["detail"]["owns_containers"] == [f"q-train ({first['Id'][:12]})"]

    proc, report = cli(env, "--stop", "--yes")
    assert proc.returncode == 0, proc.stdout
    assert "q-train.service" in report["stopped"] and not any("q-train (" in n for n in report["stopped"])
    # stopped through its unit: systemd did not start it again behind the stop, the unit is not failed
    assert systemd_container.active("q-train.service") == "inactive"
    assert podman.remote("inspect", "q-train", check=False).returncode != 0  # --rm: gone with the unit

    proc, report = cli(env, "--start", "--yes")
    assert proc.returncode == 0, proc.stdout
    assert systemd_container.active("q-train.service") == "active"
    again = podman.inspect("q-train")
    assert again["State"]["Status"] == "running" and again["Id"] != first["Id"]
    assert systemd_container.systemctl("show", "-p", "NRestarts", "q-train.service").stdout.strip() == "NRestarts=0"


def test_the_reason_stopping_an_owned_container_behind_its_unit_makes_systemd_start_it_again(
    owned, podman, systemd_container
):
    import time

    first = podman.inspect("q-train")["Id"]
    podman.remote("stop", "--time", "5", "q-train")
    deadline = time.monotonic() + 30
    again = first
    while time.monotonic() < deadline and again == first:
        time.sleep(0.2)
        done = podman.remote("inspect", "--format", "{{.Id}}", "q-train", check=False)
        again = done.stdout.decode().strip() or first
    assert again != first  # a new container, started by systemd while the GPU would be out
    assert systemd_container.systemctl("show", "-p", "NRestarts", "q-train.service").stdout.strip() == "NRestarts=1"


@pytest.fixture
def users(rootless_podman, tmp_path):
    rootless_podman.run("r-gpu", "--device", "/dev/null:/dev/nvidia0")
    rootless_podman.run("r-plain")
    env = {
        "NVRELOAD_USER_RUNTIME_ROOT": str(rootless_podman.run_root),
        "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
        "CONTAINER_HOST": f"unix://{tmp_path}/no-podman.sock",
        "NVRELOAD_STATE_DIR": str(tmp_path / "state"),
    }
    yield env
    rootless_podman.remove_all()


def test_another_user_s_rootless_gpu_container_is_found_and_handled_through_that_user_s_socket(users, rootless_podman):
    env = users
    proc, doc = cli(env, "--status")
    engine = "podman (user nobody, uid 65534)"
    assert doc["consumers"]["engines"] == [{"name": engine, "url": rootless_podman.url, "gpu_containers": 1}]
    assert [(c["name"], c["engine"]) for c in doc["consumers"]["containers"]] == [("r-gpu", engine)]

    proc, report = cli(env, "--stop", "--yes")
    assert proc.returncode == 0, proc.stdout
    assert report["stopped"] == ["r-gpu"]
    assert rootless_podman.inspect("r-gpu")["State"]["Status"] == "exited"
    assert rootless_podman.inspect("r-plain")["State"]["Status"] == "running"
    proc, report = cli(env, "--start", "--yes")
    assert proc.returncode == 0, proc.stdout
    assert rootless_podman.inspect("r-gpu")["State"]["Status"] == "running"


def test_a_rootless_container_on_a_gpu_whose_socket_is_not_running_is_refused_before_anything_stops(
    rootless_podman,
):
    import os

    from nvreload.engine.plan import LoadedModule, ReloadView
    from nvreload.engine.planner import build_plan
    from nvreload.errors import RefusedError
    from nvreload.host.processes import scan_gpu_holders
    from nvreload.read.devices import DeviceMatcher

    holding = 'exec 3</dev/nvidia0; trap "exit 0" TERM; sleep 3600 & wait'
    rootless_podman.remote(
        "run", "-d", "--name", "r-held", "--device", "/dev/zero:/dev/nvidia0", "busybox:test", "sh", "-c", holding
    )
    try:
        box = rootless_podman.inspect("r-held")
        zero = os.stat("/dev/zero").st_rdev
        # the real scan: /dev/zero's device number stands for a GPU's; the container is found by its conmon
        holders = tuple(
            p
            for p in scan_gpu_holders(DeviceMatcher(exact=frozenset({(os.major(zero), os.minor(zero))})))
            if p.container_id == box["Id"]
        )
        assert box["State"]["Pid"] in {p.pid for p in holders}
        assert {p.uid for p in holders} == {65534}
        # no engine lists it (nvreload was not shown this user's socket): refused, nothing stopped
        view = ReloadView(modules=(LoadedModule("nvidia", ()),), processes=holders, services=(), containers=())
        with pytest.raises(RefusedError) as refused:
            build_plan(view)
        message = refused.value.message
        assert f"pid {box['State']['Pid']} (sh, uid 65534) in container {box['Id'][:12]} holds /dev/nvidia0" in message
        assert "podman.socket" in message
        assert rootless_podman.inspect("r-held")["State"]["Status"] == "running"
    finally:
        rootless_podman.remove_all()


# A `docker run` in a service: the unit's docker client (the host's /usr/bin/docker, through the
# session dockerd's socket linked into the box's /ctl) runs the container in the foreground. Docker
# records no unit on the container: the unit is the one whose docker client runs it.
DOCKER_UNIT = """[Unit]
Description=GPU trainer in a Docker container run by this unit
StartLimitIntervalSec=0

[Service]
ExecStartPre=-/usr/bin/docker -H unix:///ctl/docker.sock rm --force d-train
ExecStart=/usr/bin/docker -H unix:///ctl/docker.sock run --rm --name d-train \\
    -e NVIDIA_VISIBLE_DEVICES=all busybox:test sh -c 'trap "exit 0" TERM; sleep 3600 & wait'
ExecStop=/usr/bin/docker -H unix:///ctl/docker.sock stop --time 5 d-train
Restart=always
RestartSec=0.2
TimeoutStopSec=15
"""


@pytest.fixture
def docker_unit(dockerd, systemd_container, tmp_path):
    import os
    import time

    link = systemd_container.ctl / "docker.sock"
    if link.exists():
        link.unlink()
    os.link(dockerd.socket, link)
    units = systemd_container.run_systemd / "system"
    units.mkdir(exist_ok=True)
    (units / "d-train.service").write_text(DOCKER_UNIT)
    systemd_container.systemctl("daemon-reload")
    systemd_container.systemctl("start", "d-train.service")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not dockerd.client.containers.list(filters={"name": "d-train"}):
        time.sleep(0.2)
    env = {
        "DOCKER_HOST": dockerd.url,
        "CONTAINER_HOST": f"unix://{tmp_path}/no-podman.sock",
        "NVRELOAD_SYSTEMCTL": str(systemd_container.wrapper),
        "NVRELOAD_STATE_DIR": str(tmp_path / "state"),
    }
    yield env
    systemd_container.systemctl("stop", "d-train.service")
    (units / "d-train.service").unlink()
    systemd_container.systemctl("daemon-reload")
    link.unlink()


def test_a_docker_run_in_a_service_is_stopped_and_started_through_its_unit(docker_unit, dockerd, systemd_container):
    env = docker_unit
    first = dockerd.client.containers.get("d-train").id
    proc, doc = cli(env, "--status")
    assert {c["name"]: c["unit"] for c in doc["consumers"]["containers"]}["d-train"] == "d-train.service"
    proc, report = cli(env, "--stop", "--yes")
    assert proc.returncode == 0, proc.stdout
    assert "d-train.service" in report["stopped"] and "d-train" not in report["stopped"]
    assert systemd_container.active("d-train.service") == "inactive"
    assert not dockerd.client.containers.list(all=True, filters={"name": "d-train"})  # --rm: gone with the unit
    proc, report = cli(env, "--start", "--yes")
    assert proc.returncode == 0, proc.stdout
    assert systemd_container.active("d-train.service") == "active"
    assert dockerd.client.containers.get("d-train").id != first
    assert systemd_container.systemctl("show", "-p", "NRestarts", "d-train.service").stdout.strip() == "NRestarts=0"


def test_a_pod_s_container_that_cri_dockerd_runs_in_docker_is_refused_and_left_running(dockerd, tmp_path):
    labels = {
        "io.kubernetes.pod.uid": "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f",
        "io.kubernetes.pod.namespace": "ml",
        "io.kubernetes.pod.name": "train-7d9f",
        "io.kubernetes.container.name": "trainer",
    }
    box = dockerd.client.containers.run(
        "busybox:test",
        ["sh", "-c", 'trap "exit 0" TERM; sleep 3600 & wait'],
        detach=True,
        name="k8s_trainer_train-7d9f_ml_6f1c2d3e_0",
        labels=labels,
        environment={"NVIDIA_VISIBLE_DEVICES": "0"},
    )
    try:
        env = {
            "DOCKER_HOST": dockerd.url,
            "CONTAINER_HOST": f"unix://{tmp_path}/no-podman.sock",
            "NVRELOAD_STATE_DIR": str(tmp_path / "state"),
        }
        proc = run_cli("--stop", "--yes", env=env, timeout=120)
        assert proc.returncode == 77, proc.stdout + proc.stderr
        assert f"pod ml/train-7d9f container trainer (docker {box.id[:12]}) holds a GPU" in proc.stderr
        assert "kubectl delete pod --namespace ml train-7d9f" in proc.stderr
        box.reload()
        assert box.status == "running"
    finally:
        box.remove(force=True)
