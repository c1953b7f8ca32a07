"""What keeps a node from an unattended reload (engine/idle.py): anything but the known GPU services."""

from nvreload.engine.idle import busy_consumers, describe
from nvreload.engine.plan import ReloadView
from nvreload.model import ContainerState, GpuProcess


def process(pid, comm, unit=None, container=None):
    return GpuProcess(pid, 1000 + pid, comm, comm, ("195:0 /dev/nvidia0",), container, unit, "procfs")


def view(processes=(), containers=(), display=()):
    return ReloadView(
        modules=(), processes=tuple(processes), services=(), containers=tuple(containers), display_processes=display
    )


def test_the_known_gpu_services_alone_leave_the_node_idle():
    stack = [
        process(10, "nvidia-persiste", unit="nvidia-persistenced.service"),
        process(11, "nv-hostengine", unit="nvidia-dcgm.service"),
        process(12, "nv-fabricmanage", unit="nvidia-fabricmanager.service"),
        process(13, "nvidia-persistenced"),  # no systemd: the daemon by name
        process(14, "nvidia-cuda-mps"),  # MPS's control daemon: its clients are listed on their own
    ]
    assert busy_consumers(view(stack)) == ()


def test_a_training_process_is_busy_even_inside_a_unit_nvreload_does_not_know():
    busy = busy_consumers(view([process(4242, "python3", unit="train.service")]))
    assert busy == ({"kind": "process", "name": "python3", "pid": 4242, "unit": "train.service"},)


def test_a_gpu_container_is_one_entry_with_its_processes_folded_in():
    box = ContainerState("c0ffee" + "0" * 58, "trainer", True, ("NVIDIA_VISIBLE_DEVICES",), None, None)
    busy = busy_consumers(view([process(5101, "python3", container="c0ffee000000")], [box]))
    assert busy == ({"kind": "container", "name": "trainer", "id": box.id},)
    assert describe(busy) == "container trainer"


def test_a_display_server_is_busy():
    xorg = process(900, "Xorg")
    assert busy_consumers(view(display=(xorg,))) == ({"kind": "display", "name": "Xorg", "pid": 900},)
