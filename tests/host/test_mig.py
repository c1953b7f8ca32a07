"""MIG geometry through the real pynvml in a real child process, against the stand-in
libnvidia-ml.so.1 (tests/stub_libraries/libnvidia-ml.c), which keeps its instances in a file so
that what one child creates the next one lists, and refuses overlapping placements as NVML does."""

import pytest

from nvreload.errors import HostError
from nvreload.host.commands import CommandRunner
from nvreload.host.mig import create_geometry, read_geometry

MIG_GPU = "NVIDIA H100 80GB HBM3|GPU-0|00000000:3B:00.0|1|1|"
PLAIN_GPU = "NVIDIA H100 80GB HBM3|GPU-1|00000000:5D:00.0|1|0|"
GEOMETRY = [
    {"profile_id": 14, "start": 0, "size": 2, "compute": [[0, 0, 1], [0, 1, 1]]},
    {"profile_id": 9, "start": 4, "size": 4, "compute": [[2, 0, 3]]},
]


@pytest.fixture
def mig_state(stub_nvml, monkeypatch, tmp_path):
    monkeypatch.setenv("STUB_NVML_GPUS", f"{MIG_GPU};{PLAIN_GPU}")
    state = tmp_path / "mig-instances"
    monkeypatch.setenv("STUB_NVML_MIG", str(state))
    return state


def test_the_geometry_of_each_mig_gpu_is_read_with_placements_and_compute_instances(mig_state):
    mig_state.write_text("0 9 4 4 2,0,3\n0 14 0 2 0,0,1 0,1,1\n")
    assert read_geometry(CommandRunner()) == {"00000000:3B:00.0": GEOMETRY}


def test_a_gpu_without_instances_or_without_mig_is_not_listed(mig_state):
    mig_state.write_text("")
    assert read_geometry(CommandRunner()) == {}


def test_instances_created_again_are_what_was_read_before(mig_state):
    mig_state.write_text("")
    create_geometry(CommandRunner(), "0000:3b:00.0", GEOMETRY)
    assert read_geometry(CommandRunner()) == {"00000000:3B:00.0": GEOMETRY}


def test_a_placement_that_is_taken_is_nvmls_own_error(mig_state):
    mig_state.write_text("0 19 0 1\n")
    with pytest.raises(HostError, match="MIG through NVML: NVMLError_InsufficientResources: Insufficient Resources"):
        create_geometry(CommandRunner(), "0000:3b:00.0", GEOMETRY)


def test_nvml_that_cannot_start_is_an_error_not_an_empty_geometry(mig_state, monkeypatch):
    monkeypatch.setenv("STUB_NVML_INIT", "18")
    with pytest.raises(HostError, match="MIG through NVML: NVML: RM has detected an NVML/RM version mismatch"):
        read_geometry(CommandRunner())
