import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

FIXTURES = Path(__file__).parent / "fixtures"
H100_FIXTURE = FIXTURES / "h100-580-no-unload"


@pytest.fixture(autouse=True)
def _simulations_stay_in_the_test(tmp_path_factory, monkeypatch):
    """--simulate without NVRELOAD_STATE_DIR keeps its node under $XDG_STATE_HOME: a test's, never
    the home directory of whoever runs the suite."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("xdg-state")))


@pytest.fixture
def h100_root() -> Path:
    return H100_FIXTURE


@pytest.fixture
def snapshot(tmp_path):
    from snapshot_builder import healthy_node

    return healthy_node(tmp_path / "node")


@pytest.fixture(scope="session")
def stub_library_dir(tmp_path_factory) -> Path:
    """A directory holding libnvidia-ml.so.1 and libcuda.so.1 compiled from tests/stub_libraries/*.c:
    real shared objects with NVIDIA's ABI, for the code that dlopens them (put it on LD_LIBRARY_PATH)."""
    import subprocess

    directory = tmp_path_factory.mktemp("stub-libraries")
    for source in sorted((Path(__file__).parent / "stub_libraries").glob("*.c")):
        target = directory / f"{source.stem}.so.1"
        subprocess.run(["gcc", "-shared", "-fPIC", "-Wall", "-Werror", "-o", str(target), str(source)], check=True)
    return directory


@pytest.fixture(scope="session")
def dockerd(tmp_path_factory):
    """A real dockerd for the whole session, with a busybox image; skipped with the reason when it
    cannot run here (.ci/run installs docker.io so that CI runs these)."""
    from realengine import dockerd as real

    reason = real.why_not()
    if reason:
        pytest.skip(reason)
    engine = real.Dockerd(tmp_path_factory.mktemp("dockerd", numbered=True))
    engine.start()
    engine.busybox_image()
    yield engine
    engine.teardown()


@pytest.fixture(scope="session")
def podman(tmp_path_factory):
    """A real rootful Podman API service for the whole session, with a busybox image and a CDI spec
    of two GPUs; skipped with the reason when it cannot run here (.ci/run installs podman)."""
    from realengine import podman as real

    reason = real.why_not()
    if reason:
        pytest.skip(reason)
    service = real.PodmanService(tmp_path_factory.mktemp("podman", numbered=True))
    try:
        service.start()
        service.busybox_image()
        yield service
    finally:
        service.teardown()


@pytest.fixture(scope="session")
def rootless_podman():
    """User nobody's rootless Podman API service, its socket where pam_systemd puts a user's
    (<runtime root>/65534/podman/podman.sock); skipped with the reason when it cannot run here."""
    import tempfile

    from realengine import podman as real

    reason = real.why_not() or (None if shutil.which("setpriv") else "setpriv (util-linux) is not installed")
    if reason:
        pytest.skip(reason)
    service = real.RootlessPodman(Path(tempfile.mkdtemp(prefix="nvr-rl-", dir="/tmp")))
    try:
        service.start()
        service.busybox_image()
        yield service
    finally:
        service.teardown()
        shutil.rmtree(service.base, ignore_errors=True)


@pytest.fixture
def kubelet(tmp_path):
    """Real cgroup v2 directories laid out as kubelet (and systemd) lay them out, in a hierarchy the
    test mounts (tests/realengine/kubelet.py); skipped with the reason where it cannot be mounted."""
    from realengine import kubelet as real

    reason = real.why_not()
    if reason:
        pytest.skip(reason)
    node = real.KubeletNode(tmp_path / "node").start()
    yield node
    node.teardown()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real slurmctld + slurmd for the whole session (one node: this host's short name); skipped with
    the reason when they cannot run here (.ci/run installs slurm-wlm so that CI runs these)."""
    from realengine import slurm as real

    reason = real.why_not()
    if reason:
        pytest.skip(reason)
    cluster = real.SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm(slurm_cluster):
    """The session's cluster with no jobs and its node idle, before and after the test."""
    slurm_cluster.reset()
    yield slurm_cluster
    slurm_cluster.reset()


@pytest.fixture(scope="session")
def fleet_testbed(tmp_path_factory):
    """Four nodes, each its own network namespace, host name, sshd and slurmd of one slurmctld
    (tests/realengine/fleet.py), for the whole session. In CI a testbed that cannot start fails the
    fleet cases instead of skipping them."""
    from realengine import fleet as real

    reason = real.why_not()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the fleet cases cannot run: {reason}")
        pytest.skip(reason)
    testbed = real.FleetTestbed(tmp_path_factory.mktemp("fleet"))
    try:
        testbed.start()
        yield testbed
    finally:
        testbed.stop()


@pytest.fixture(scope="session")
def systemd_container(dockerd, tmp_path_factory):
    from realengine import systemd as real

    reason = real.why_not()
    if reason:
        pytest.skip(reason)
    box = real.SystemdContainer(dockerd.client, tmp_path_factory.mktemp("systemd"))
    box.start()
    yield box
    box.stop()


DRIVER_NAME = "NVIDIA-Linux-x86_64-550.144.03.run"


@pytest.fixture
def installer(tmp_path):
    """A real makeself archive labelled as NVIDIA's, with safe permissions."""
    if shutil.which("makeself") is None:
        pytest.skip("makeself is not installed (apt-get install makeself)")
    content = tmp_path / "payload"
    content.mkdir()
    (content / "nvidia-installer").write_text("#!/bin/sh\nexit 0\n")
    os.chmod(content / "nvidia-installer", 0o755)
    run = tmp_path / DRIVER_NAME
    subprocess.run(
        [
            "makeself",
            "--quiet",
            str(content),
            str(run),
            "NVIDIA Accelerated Graphics Driver for Linux-x86_64 550.144.03",
            "./nvidia-installer",
        ],
        check=True,
        capture_output=True,
    )
    os.chmod(run, 0o755)
    return run
