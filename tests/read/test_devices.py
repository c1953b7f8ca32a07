"""The parsers behind the holder scan: /proc/devices majors, /proc/<pid>/stat, cgroup paths."""

import pytest

from nvreload.read.devices import (
    cgroup_unit,
    classify_cgroup,
    docker_client_containers,
    nvidia_majors,
    parse_proc_stat,
)


def test_cgroup_paths_classify_containers_and_units():
    cid = "a" * 64
    assert classify_cgroup(f"0::/system.slice/docker-{cid}.scope\n") == (cid, None)
    assert classify_cgroup("0::/system.slice/nvidia-persistenced.service\n") == (None, "nvidia-persistenced.service")
    assert classify_cgroup(f"12:devices:/kubepods/besteffort/pod1234/{cid}\n") == (cid, None)
    assert classify_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n") == (None, None)


def test_nvidia_majors_come_from_the_character_devices_only():
    text = "Character devices:\n  1 mem\n195 nvidia-frontend\n236 nvidia-uvm\n\nBlock devices:\n195 nvidia\n"
    assert nvidia_majors(text) == frozenset({195, 236})


def test_a_comm_with_spaces_and_parentheses_does_not_shift_the_stat_fields():
    raw = "4242 (my (odd) proc) Z 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0"
    ident = parse_proc_stat(4242, raw)
    assert (ident.comm, ident.start_time, ident.is_zombie, ident.is_kernel_thread) == (
        "my (odd) proc",
        987654,
        True,
        False,
    )


def test_a_kernel_thread_is_told_by_its_flags():
    raw = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0"
    assert parse_proc_stat(2, raw).is_kernel_thread


def test_a_major_in_superscript_digits_is_not_a_major_nor_a_crash():
    # found by tests/fuzz: str.isdigit() accepts '²', int() refuses it
    assert nvidia_majors("Character devices:\n² nvidia-uvm\n195 nvidia\n") == frozenset({195})


@pytest.mark.parametrize(
    "argv, containers",
    [
        (("docker", "-H", "unix:///run/docker.sock", "run", "--rm", "--name", "train", "img"), ("train",)),
        (("/usr/bin/docker", "container", "run", "--name=train", "img", "sh"), ("train",)),
        (("docker", "start", "-a", "--detach-keys", "ctrl-x", "train", "infer"), ("train", "infer")),
        (("docker", "run", "-dit", "-e", "A=1", "--rm", "--name", "a", "img"), ("a",)),
        (("docker", "run", "-e", "A=1", "img", "--name", "inside"), ()),  # past the image: the command's
        (("docker", "ps"), ()),
        (("docker", "run", "--", "--name", "x"), ()),
    ],
)
def test_a_docker_client_names_the_containers_it_runs_in_the_foreground(argv, containers):
    assert docker_client_containers(argv) == containers


def test_the_unit_of_a_cgroup_is_found_inside_a_containerised_systemd():
    text = "0::/docker/" + "a" * 64 + "/system.slice/d-train.service\n"
    assert cgroup_unit(text) == "d-train.service"
