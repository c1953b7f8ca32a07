"""The parsers behind the holder scan: /proc/devices majors, /proc/<pid>/stat, cgroup paths."""

from nvreload.read.devices import classify_cgroup, nvidia_majors, parse_proc_stat


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
