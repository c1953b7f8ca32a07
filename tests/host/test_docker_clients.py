"""A `docker run` client in a service's cgroup makes its container the unit's: real processes named
docker (a compiled stand-in that only waits), in real cgroups laid out as systemd lays a service out."""

import subprocess

import pytest

from nvreload.host.processes import docker_client_units


@pytest.fixture
def docker_binary(tmp_path):
    """A binary named docker (its comm is 'docker'), which waits: the argv is what counts."""
    source = tmp_path / "docker.c"
    source.write_text("#include <unistd.h>\nint main(void) { pause(); return 0; }\n")
    binary = tmp_path / "bin" / "docker"
    binary.parent.mkdir()
    subprocess.run(["gcc", "-o", str(binary), str(source)], check=True)
    tmp_path.chmod(0o755)
    return binary


def start(node, command, unit):
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    node.procs.append(proc)
    node.place(proc.pid, f"system.slice/{unit}")
    return proc


def test_root_s_docker_run_in_a_service_names_its_unit_and_nobody_s_is_not_believed(kubelet, docker_binary):
    start(
        kubelet,
        [str(docker_binary), "-H", "unix:///run/docker.sock", "run", "--rm", "--name", "train", "img"],
        "train.service",
    )
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    start(kubelet, [*nobody, str(docker_binary), "run", "--name", "victim", "img"], "forged.service")
    import time

    time.sleep(0.2)  # setpriv has exec'd the stand-in
    owned = docker_client_units()
    assert owned.get("train") == "train.service"
    assert "victim" not in owned
