"""Kubernetes pods on the GPUs, with real processes in real cgroups laid out as kubelet's systemd
driver lays them out (tests/realengine/kubelet.py): the live holder scan finds them in their pods,
names them from the runtime's bundle, and a reload is refused before anything stops."""

import os
import stat

import pytest

from nvreload.engine.kube_refusal import KubePodsHoldGpus
from nvreload.engine.plan import GpuRef, LoadedModule, ReloadView
from nvreload.engine.planner import build_plan
from nvreload.engine.reset_planner import build_reset_plan
from nvreload.errors import ExitCode
from nvreload.host.processes import scan_gpu_holders
from nvreload.read.devices import DeviceMatcher
from nvreload.read.kube import pod_cgroup

TRAIN_UID = "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
PLUGIN_UID = "0b1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e60"
TRAIN_ID = "a" * 63 + "1"
PLUGIN_ID = "c" * 63 + "2"
ZERO = os.stat("/dev/zero").st_rdev
GPUS = (GpuRef(0, "0000:3b:00.0", 0), GpuRef(1, "0000:5e:00.0", 1))


@pytest.fixture
def gpu_nodes(tmp_path):
    """/dev/nvidia0 and /dev/nvidia1 stand-ins: real character devices (those of /dev/zero)."""
    directory = tmp_path / "dev"
    directory.mkdir()
    for minor in (0, 1):
        os.mknod(directory / f"nvidia{minor}", 0o600 | stat.S_IFCHR, ZERO)
    return directory


def view_of(processes):
    return ReloadView(
        modules=(LoadedModule("nvidia", ()),),
        processes=processes,
        services=(),
        containers=(),
        gpus=GPUS,
        hostname="gpu-node-7",
    )


def scan(kubelet):
    matcher = DeviceMatcher(exact=frozenset({(os.major(ZERO), os.minor(ZERO))}))
    return scan_gpu_holders(matcher, runtime_root=str(kubelet.state))


def test_a_pod_on_a_gpu_refuses_the_reload_naming_pod_container_gpu_and_the_commands(kubelet, gpu_nodes):
    pid = kubelet.pod_container("besteffort", TRAIN_UID, "containerd", TRAIN_ID, gpu_nodes / "nvidia1")
    kubelet.bundle(
        "containerd",
        TRAIN_ID,
        {
            "io.kubernetes.cri.sandbox-namespace": "ml",
            "io.kubernetes.cri.sandbox-name": "train-7d9f",
            "io.kubernetes.cri.container-name": "trainer",
        },
    )
    (holder,) = [p for p in scan(kubelet) if p.pid == pid]
    assert holder.pod is not None and holder.pod.uid == TRAIN_UID and holder.container_id == TRAIN_ID
    with pytest.raises(KubePodsHoldGpus) as refused:
        build_plan(view_of((holder,)))
    message = refused.value.message
    assert refused.value.exit_code == ExitCode.REFUSED
    assert f"pod ml/train-7d9f container trainer (containerd {TRAIN_ID[:12]}) holds GPU 1 (0000:5e:00.0)" in message
    assert "kubectl cordon gpu-node-7; kubectl delete pod --namespace ml train-7d9f;" in message
    assert "kubectl uncordon gpu-node-7" in message
    assert os.path.exists(f"/proc/{pid}")  # nothing was stopped


def test_a_cri_o_pod_and_the_gpu_operator_s_device_plugin_are_named_and_the_operator_label_given(kubelet, gpu_nodes):
    kubelet.pod_container("burstable", PLUGIN_UID, "cri-o", PLUGIN_ID, gpu_nodes / "nvidia0")
    kubelet.bundle(
        "cri-o",
        PLUGIN_ID,
        {
            "io.kubernetes.pod.namespace": "gpu-operator",
            "io.kubernetes.pod.name": "nvidia-device-plugin-daemonset-x2x4q",
            "io.kubernetes.container.name": "nvidia-device-plugin",
        },
    )
    kubelet.pod_container("guaranteed", TRAIN_UID, "containerd", TRAIN_ID, gpu_nodes / "nvidia0")
    holders = scan(kubelet)
    with pytest.raises(KubePodsHoldGpus) as refused:
        build_reset_plan(view_of(holders), (GPUS[0],))
    message = refused.value.message
    assert message.startswith("--reset refused:")
    assert "pod gpu-operator/nvidia-device-plugin-daemonset-x2x4q container nvidia-device-plugin (cri-o" in message
    assert "(the GPU Operator's device plugin) holds GPU 0" in message
    assert "kubectl label node gpu-node-7 nvidia.com/gpu.deploy.operands=false" in message
    # no bundle for this one: named by its pod's UID, with the command that finds its name
    assert f"pod uid {TRAIN_UID} container (containerd {TRAIN_ID[:12]}) holds GPU 0" in message
    assert f"| grep {TRAIN_UID}" in message


def test_the_gpu_operator_s_driver_container_leaves_the_driver_to_the_operator(kubelet, gpu_nodes):
    kubelet.pod_container("besteffort", TRAIN_UID, "containerd", TRAIN_ID, gpu_nodes / "nvidia0")
    kubelet.bundle(
        "containerd",
        TRAIN_ID,
        {
            "io.kubernetes.cri.sandbox-namespace": "gpu-operator",
            "io.kubernetes.cri.sandbox-name": "nvidia-driver-daemonset-5kq8z",
            "io.kubernetes.cri.container-name": "nvidia-driver-ctr",
        },
    )
    with pytest.raises(KubePodsHoldGpus) as refused:
        build_plan(view_of(scan(kubelet)), stop_only=True)
    assert refused.value.message.startswith("--stop refused: the GPU Operator manages the NVIDIA driver on this node")
    assert "nvreload leaves the driver to it" in refused.value.message


def test_a_bundle_another_user_owns_or_a_link_is_never_read_for_names(kubelet, gpu_nodes, tmp_path):
    kubelet.pod_container("besteffort", TRAIN_UID, "containerd", TRAIN_ID, gpu_nodes / "nvidia0")
    annotations = {"io.kubernetes.cri.sandbox-name": "forged", "io.kubernetes.cri.container-name": "forged"}
    config = kubelet.bundle("containerd", TRAIN_ID, annotations, owner=65534)
    (holder,) = scan(kubelet)
    assert holder.pod.name is None and holder.pod.container is None
    elsewhere = tmp_path / "forged.json"
    config.rename(elsewhere)
    os.chown(elsewhere, 0, 0)
    config.symlink_to(elsewhere)
    (holder,) = scan(kubelet)
    assert holder.pod.name is None


@pytest.mark.parametrize(
    "line, uid, runtime",
    [
        (
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6f1c2d3e_4a5b_4c6d_8e9f_0a1b2c3d4e5f"
            f".slice/cri-containerd-{TRAIN_ID}.scope",
            TRAIN_UID,
            "containerd",
        ),
        (
            f"0::/kubepods.slice/kubepods-pod{TRAIN_UID.replace('-', '_')}.slice/crio-{TRAIN_ID}.scope",
            TRAIN_UID,
            "cri-o",
        ),
        (f"11:memory:/kubepods/besteffort/pod{TRAIN_UID}/{TRAIN_ID}", TRAIN_UID, "unknown"),
    ],
)
def test_kubelet_s_cgroup_layouts_give_the_pod_uid_and_runtime(line, uid, runtime):
    found = pod_cgroup(line)
    assert (found.uid, found.runtime, found.container_id) == (uid, runtime, TRAIN_ID)


def test_a_process_outside_kubepods_is_no_pod():
    assert pod_cgroup(f"0::/system.slice/docker-{TRAIN_ID}.scope") is None


POD = {"uid": TRAIN_UID, "container_id": TRAIN_ID, "namespace": "ml", "name": "train-7d9f", "container": "trainer"}


def test_a_simulated_pod_refuses_the_reload_with_exit_77_before_anything_stops(tmp_path):
    import json

    from helpers import run_cli
    from sim_helpers import node_state, write_scenario

    from nvreload.engine.sim import default_scenario

    processes = default_scenario()["processes"] + [
        {"pid": 7001, "comm": "python3", "holds": ["nvidia", "nvidia_uvm"], "gpus": [0], "pod": POD}
    ]
    scenario = write_scenario(tmp_path, processes=processes, hostname="gpu-node-7")
    env = {"NVRELOAD_STATE_DIR": str(tmp_path / "state")}
    proc = run_cli("--reload", "--simulate", scenario, "--yes", env=env)
    assert proc.returncode == ExitCode.REFUSED, proc.stderr
    assert f"pod ml/train-7d9f container trainer (containerd {TRAIN_ID[:12]}) holds GPU 0" in proc.stderr
    assert "kubectl cordon gpu-node-7" in proc.stderr
    state = node_state(tmp_path / "state")
    assert all(p.get("alive", True) for p in state["processes"])
    assert all(c["running"] for c in state["containers"]) and "nvidia" in state["loaded"]
    assert json.loads(open(scenario).read())["processes"][-1]["pod"] == POD


def test_the_simulated_kubelet_starts_a_killed_pod_process_again_on_its_gpus(tmp_path):
    from sim_helpers import write_scenario

    from nvreload.engine.sim import SimulatedNode, load_scenario

    processes = [{"pid": 7001, "comm": "python3", "holds": ["nvidia"], "gpus": [0], "pod": POD}]
    node = SimulatedNode(load_scenario(write_scenario(tmp_path, processes=processes)), str(tmp_path / "state"))
    assert node.terminate_process(7001, None).outcome == "terminated"
    (again,) = node.gpu_holders()
    assert again.pid == 17001 and again.pod.name == "train-7d9f"


def test_a_simulated_pod_container_run_by_cri_dockerd_refuses_the_reload(tmp_path):
    from helpers import run_cli
    from sim_helpers import write_scenario

    from nvreload.engine.sim import default_scenario

    containers = default_scenario()["containers"] + [
        {
            "id": "e" * 64,
            "name": "k8s_trainer_train-7d9f_ml",
            "running": True,
            "markers": ["env:NVIDIA_VISIBLE_DEVICES=0"],
            "pod": {"uid": TRAIN_UID, "namespace": "ml", "name": "train-7d9f", "container": "trainer"},
        }
    ]
    scenario = write_scenario(tmp_path, containers=containers)
    proc = run_cli("--reload", "--simulate", scenario, "--yes", env={"NVRELOAD_STATE_DIR": str(tmp_path / "s")})
    assert proc.returncode == ExitCode.REFUSED, proc.stderr
    assert f"pod ml/train-7d9f container trainer (docker {'e' * 12}) holds a GPU" in proc.stderr
