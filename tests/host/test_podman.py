"""A real Podman (rootful, through its API service): its GPU containers read from its own libpod
view by every marker it records, and stopped and started with their restart policy kept."""

import pytest

from nvreload.host.containers import ContainerEngine, podman_markers


@pytest.fixture
def boxes(podman):
    yield podman
    podman.remove_all()


def test_podman_is_read_through_libpod_where_its_compat_view_loses_the_markers(boxes):
    boxes.run("p-cdi", "--device", "nvidia.com/gpu=0")
    boxes.run("p-dev", "--device", "/dev/null:/dev/nvidia3")
    boxes.run("p-hook", "--annotation", "com.nvidia.gpu=true")
    boxes.local("run", "-d", "--runtime", "nvidia", "--name", "p-rt", "busybox:test", "sleep", "3600")
    boxes.run("p-env", "--env", "NVIDIA_VISIBLE_DEVICES=all")
    boxes.run("p-plain")
    engine = ContainerEngine(boxes.url)
    assert engine.info().name == "podman"
    found = {c.name: c for c in engine.gpu_containers()}
    assert set(found) == {"p-cdi", "p-dev", "p-hook", "p-rt", "p-env"}
    # the CDI name as it was asked for, and the device node the spec put in the container
    assert found["p-cdi"].markers == ("device:/dev/nvidia0", "cdi:nvidia.com/gpu=0")
    assert found["p-dev"].markers == ("device:/dev/nvidia3",)
    assert found["p-hook"].markers == ("annotation:com.nvidia.gpu",)
    assert found["p-rt"].markers == ("runtime:nvidia",)
    assert found["p-env"].markers == ("env:NVIDIA_VISIBLE_DEVICES=all",)
    assert {c.engine for c in found.values()} == {"podman"}
    # what the Docker-compatible view says of the same containers: no runtime, no CDI name
    compat = boxes.client.containers.get("p-rt").attrs
    assert compat["HostConfig"]["Runtime"] == "oci"
    assert boxes.hook_starts() >= 1  # the hook on NVIDIA's annotation really ran


def test_a_cdi_request_in_the_annotations_is_a_marker():
    attrs = {"Config": {"Annotations": {"cdi.k8s.io/gpus": "nvidia.com/gpu=0,nvidia.com/gpu=1", "x": "y"}}}
    assert podman_markers(attrs) == ("cdi:nvidia.com/gpu=0", "cdi:nvidia.com/gpu=1")


@pytest.mark.parametrize("policy", ["always", "on-failure", "no"])
def test_a_stopped_podman_container_stays_down_and_comes_back_with_its_restart_policy(boxes, policy):
    boxes.run("p-policy", "--device", "nvidia.com/gpu=1", "--restart", policy)
    engine = ContainerEngine(boxes.url)
    (box,) = engine.gpu_containers()
    started = boxes.inspect("p-policy")["State"]["StartedAt"]
    assert engine.stop(box.id, 5) is None  # nothing to relax: Podman never restarts what it was told to stop
    assert boxes.inspect("p-policy")["State"]["Status"] == "exited"
    engine.start(box.id)
    after = boxes.inspect("p-policy")
    assert after["State"]["Status"] == "running" and after["State"]["StartedAt"] != started
    assert after["HostConfig"]["RestartPolicy"]["Name"] == policy


def test_a_user_socket_is_taken_only_where_the_directory_and_socket_are_that_user_s(tmp_path):
    import os
    import socket

    from nvreload.host.containers import user_sockets

    def make(uid, owner_dir, owner_sock, link=False):
        directory = tmp_path / str(uid) / "podman"
        directory.mkdir(parents=True)
        path = directory / "podman.sock"
        if link:
            path.symlink_to("/run/docker.sock")
        else:
            server = socket.socket(socket.AF_UNIX)
            server.bind(str(path))
            server.close()
            os.chown(path, owner_sock, owner_sock, follow_symlinks=False)
        os.chown(directory.parent, owner_dir, owner_dir)
        os.chown(directory, owner_dir, owner_dir)

    make(65534, 65534, 65534)  # nobody's own: taken
    make(65533, 0, 65533)  # a directory root owns, named for another UID: not that user's
    make(65532, 65532, 0)  # a socket another user (root) owns in the user's directory
    make(65531, 65531, 65531, link=True)  # a link the user made, to anywhere
    make(0, 0, 0)  # root's own runtime dir is not another user's
    (tmp_path / "not-a-uid").mkdir()
    found = user_sockets(str(tmp_path))
    assert [(s.owner_uid, s.owner, s.url) for s in found] == [
        (65534, "nobody", f"unix://{tmp_path}/65534/podman/podman.sock")
    ]
