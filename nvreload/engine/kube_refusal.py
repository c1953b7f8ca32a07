"""Kubernetes pods on the GPUs: refused before anything stops (pure).

A process in a pod belongs to kubelet: ending it, or its container behind kubelet's back, makes
kubelet start the pod again, onto the GPU being reloaded. So a run refuses while a pod holds a GPU,
names each pod, its container and the GPU it holds, and says what to run: cordon the node, take
the GPU pods off it, then run nvreload again. The GPU Operator's own pods are named as such; where
its driver container runs, the operator owns the driver and nvreload leaves it alone.
"""

from __future__ import annotations

import re

from nvreload.engine.plan import ReloadView
from nvreload.errors import RefusedError
from nvreload.model import GpuProcess, KubePod

_GPU_NODE = re.compile(r"/dev/nvidia(\d+)$")
# the GPU Operator's operands: (what it is, its container names, the prefix of its pods' names)
GPU_OPERATOR = (
    ("driver", ("nvidia-driver-ctr",), "nvidia-driver-daemonset"),
    ("device plugin", ("nvidia-device-plugin", "nvidia-device-plugin-ctr"), "nvidia-device-plugin-daemonset"),
    ("DCGM exporter", ("nvidia-dcgm-exporter",), "nvidia-dcgm-exporter"),
    ("DCGM", ("nvidia-dcgm-ctr",), "nvidia-dcgm"),
    ("container toolkit", ("nvidia-container-toolkit-ctr",), "nvidia-container-toolkit-daemonset"),
    ("MIG manager", ("nvidia-mig-manager",), "nvidia-mig-manager"),
)
# the operator's node label that takes every operand off a node (and =true brings them back)
OPERANDS_LABEL = "nvidia.com/gpu.deploy.operands"


class KubePodsHoldGpus(RefusedError):
    """A Kubernetes pod holds a GPU: kubelet would restart it onto the GPU being reloaded."""


def operator_role(pod: KubePod) -> str | None:
    """What the pod is to the GPU Operator (driver, device plugin, ...), or None."""
    for role, containers, prefix in GPU_OPERATOR:
        if pod.container in containers or (pod.name or "").startswith(prefix + "-"):
            return role
    return None


def refuse_kube_pods(view: ReloadView, holders: tuple[GpuProcess, ...], command: str = "reload") -> None:
    """Raise KubePodsHoldGpus when any of `holders` runs in a pod; nothing has stopped yet."""
    pods: dict[str, tuple[KubePod, set[str]]] = {}
    for process in holders:
        if process.pod is not None:
            entry = pods.setdefault(process.pod.container_id, (process.pod, set()))
            entry[1].update(_gpu_names(view, process))
    for container in view.containers:  # a pod's GPU container as cri-dockerd runs it, holding or not
        if container.pod is not None:
            pods.setdefault(container.pod.container_id, (container.pod, set()))
    if not pods:
        return
    node = view.hostname or "NODE"
    driver = [pod for pod, _ in pods.values() if operator_role(pod) == "driver"]
    if driver:
        raise KubePodsHoldGpus(
            f"{command} refused: the GPU Operator manages the NVIDIA driver on this node ({driver[0].describe()} "
            "is its driver container); nvreload leaves the driver to it: upgrade or restart the driver through "
            f"the operator (its ClusterPolicy), or take the operands off the node first: "
            f"kubectl label node {node} {OPERANDS_LABEL}=false"
        )
    held = []
    operator = False
    for pod, gpus in sorted(pods.values(), key=lambda entry: entry[0].describe()):
        role = operator_role(pod)
        operator = operator or role is not None
        what = f" (the GPU Operator's {role})" if role else ""
        held.append(f"{pod.describe()}{what} holds {', '.join(sorted(gpus)) or 'a GPU'}")
    raise KubePodsHoldGpus(
        f"{command} refused: Kubernetes pods hold the GPUs and kubelet would start them again on the GPU "
        f"being reloaded: {'; '.join(held)}. First run: {_commands(node, pods.values(), operator)}; "
        f"then nvreload again, and kubectl uncordon {node} after it"
    )


def _gpu_names(view: ReloadView, process: GpuProcess) -> set[str]:
    by_minor = {g.minor: g for g in view.gpus if g.minor is not None}
    names = set()
    for device in process.devices:
        match = _GPU_NODE.search(device.split(" ", 1)[-1])
        if match:
            gpu = by_minor.get(int(match.group(1)))
            names.add(f"GPU {gpu.index} ({gpu.bus_id})" if gpu else match.group(0))
    return names


def _commands(node: str, pods, operator: bool) -> str:
    """cordon, then each GPU pod off the node (its controller starts it elsewhere)."""
    commands = [f"kubectl cordon {node}"]
    if operator:  # DaemonSets ignore a cordon: the operator's own label takes them off the node
        commands.append(f"kubectl label node {node} {OPERANDS_LABEL}=false")
    for pod, _ in sorted(pods, key=lambda entry: entry[0].describe()):
        if operator_role(pod):
            continue
        if pod.name:
            commands.append(f"kubectl delete pod --namespace {pod.namespace} {pod.name}")
        else:
            commands.append(
                f"kubectl get pods --all-namespaces --field-selector spec.nodeName={node} "
                f"-o custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,UID:.metadata.uid "
                f"| grep {pod.uid} (then kubectl delete pod it)"
            )
    return "; ".join(commands)
