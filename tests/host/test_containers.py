"""The container adapter: NVIDIA's markers on inspect documents, and a real dockerd."""

import docker
import pytest
from realengine.dockerd import SLEEPER

from nvreload.errors import HostError
from nvreload.host.containers import ContainerEngine, gpu_markers


def test_every_nvidia_toolkit_marker_is_recognised():
    attrs = {
        "Config": {"Env": ["PATH=/bin", "NVIDIA_VISIBLE_DEVICES=all"]},
        "HostConfig": {
            "Devices": [{"PathOnHost": "/dev/nvidia0"}, {"PathOnHost": "nvidia.com/gpu=0"}],
            "DeviceRequests": [
                {"Driver": "", "Capabilities": [["gpu"]]},
                {"Driver": "cdi", "DeviceIDs": ["nvidia.com/gpu=all"]},
            ],
            "Runtime": "nvidia",
        },
    }
    assert gpu_markers(attrs) == (
        "env:NVIDIA_VISIBLE_DEVICES=all",
        "device:/dev/nvidia0",
        "cdi:nvidia.com/gpu=0",
        "device_request:gpu",
        "cdi:nvidia.com/gpu=all",
        "runtime:nvidia",
    )


@pytest.mark.parametrize("value", ["void", "none", "", "NONE"])
def test_nvidia_visible_devices_void_or_none_is_not_a_gpu(value):
    assert (
        gpu_markers({"Config": {"Env": [f"NVIDIA_VISIBLE_DEVICES={value}"]}, "HostConfig": {"Runtime": "runc"}}) == ()
    )


@pytest.fixture
def containers(dockerd):
    made = []

    def run(name, **kwargs):
        kwargs.setdefault("command", SLEEPER)
        made.append(dockerd.client.containers.run("busybox:test", detach=True, name=name, **kwargs))
        return made[-1]

    yield run
    for container in made:
        container.remove(force=True)


def test_a_real_engine_lists_gpu_containers_by_each_marker_and_not_the_plain_one(dockerd, containers):
    containers("m-env", environment={"NVIDIA_VISIBLE_DEVICES": "all"})
    containers("m-dev", devices=["/dev/null:/dev/nvidia0"])
    containers("m-req", device_requests=[docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])])
    containers("m-rt", runtime="nvidia")
    containers("m-void", environment={"NVIDIA_VISIBLE_DEVICES": "void"})
    plain = containers("m-plain")
    found = {c.name: c for c in ContainerEngine(dockerd.url).gpu_containers()}
    assert {"m-env", "m-dev", "m-req", "m-rt"} <= set(found)
    assert "m-plain" not in found and "m-void" not in found
    assert found["m-rt"].markers == ("runtime:nvidia",)
    # a container the holder scan found is a GPU container whatever its markers
    held = {c.name for c in ContainerEngine(dockerd.url).gpu_containers((plain.id[:12],))}
    assert "m-plain" in held


def test_stopping_an_always_container_relaxes_its_policy_until_it_is_started(dockerd, containers):
    box = containers("m-always", environment={"NVIDIA_VISIBLE_DEVICES": "all"}, restart_policy={"Name": "always"})
    engine = ContainerEngine(dockerd.url)
    assert engine.stop(box.id, 5) == "always"
    box.reload()
    assert box.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    engine.start(box.id, restore_policy="always")
    box.reload()
    assert box.status == "running" and box.attrs["HostConfig"]["RestartPolicy"]["Name"] == "always"


def test_an_engine_that_is_not_there_is_a_host_error(tmp_path):
    with pytest.raises(HostError):
        ContainerEngine(f"unix://{tmp_path}/nope.sock", timeout=2).gpu_containers()
