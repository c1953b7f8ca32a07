"""Kubernetes pods as a node shows them without its API server: kubelet's cgroups, and the
container runtime's own state files (parsers only).

kubelet puts each pod's containers under kubepods: with the systemd cgroup driver
`kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<UID, '-' as '_'>.slice/<runtime>-<id>.scope`
(a guaranteed pod sits right under kubepods.slice), with the cgroupfs driver
`/kubepods/<qos>/pod<UID>/<id>`. The names an operator knows (namespace, pod, container) are in
the OCI bundle the runtime wrote for the container: containerd's
`/run/containerd/io.containerd.runtime.v2.task/k8s.io/<id>/config.json` and CRI-O's
`/run/containers/storage/overlay-containers/<id>/userdata/config.json`, as annotations the CRI
plugin sets (what `crictl inspect` shows). Both are root's files: anything else is not read.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass

from nvreload.model import KubePod

# systemd driver: the pod slice, then the container's scope (containerd, CRI-O, or cri-dockerd)
_SYSTEMD = re.compile(
    r"kubepods(?:-[a-z]+)*-pod([0-9a-f_]{36})\.slice/(cri-containerd|crio|docker)-([0-9a-f]{64})\.scope"
)
# cgroupfs driver: /kubepods[/qos]/pod<UID>/<id>
_CGROUPFS = re.compile(r"/kubepods(?:/[a-z]+)?/pod([0-9a-f-]{36})/([0-9a-f]{64})(?:/|$)")
_RUNTIME = {"cri-containerd": "containerd", "crio": "cri-o", "docker": "docker"}

BUNDLES = {
    "containerd": "run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json",
    "cri-o": "run/containers/storage/overlay-containers/{id}/userdata/config.json",
}
# (namespace, pod, container) annotation keys of each runtime's CRI plugin
ANNOTATIONS = {
    "containerd": (
        "io.kubernetes.cri.sandbox-namespace",
        "io.kubernetes.cri.sandbox-name",
        "io.kubernetes.cri.container-name",
    ),
    "cri-o": ("io.kubernetes.pod.namespace", "io.kubernetes.pod.name", "io.kubernetes.container.name"),
}
_LIMIT = 1 << 20  # an OCI config is kilobytes


@dataclass(frozen=True)
class PodCgroup:
    uid: str
    runtime: str  # containerd | cri-o | docker | unknown
    container_id: str


def pod_cgroup(cgroup_text: str) -> PodCgroup | None:
    """The pod and container a process's /proc/<pid>/cgroup puts it in, if kubelet placed it."""
    if "kubepods" not in cgroup_text:
        return None
    for line in cgroup_text.splitlines():
        path = line.split(":", 2)[-1]
        match = _SYSTEMD.search(path)
        if match:
            return PodCgroup(match.group(1).replace("_", "-"), _RUNTIME[match.group(2)], match.group(3))
        match = _CGROUPFS.search(path)
        if match:
            return PodCgroup(match.group(1), "unknown", match.group(2))
    return None


def kube_pod(cgroup_text: str, root: str = "/") -> KubePod | None:
    """The pod of a process, named from its runtime's bundle where one is there to read."""
    found = pod_cgroup(cgroup_text)
    if found is None:
        return None
    names: tuple[str | None, str | None, str | None] = (None, None, None)
    runtimes = [found.runtime] if found.runtime in BUNDLES else list(BUNDLES)
    for runtime in runtimes:
        annotations = _bundle_annotations(os.path.join(root, BUNDLES[runtime].format(id=found.container_id)))
        if annotations is not None:
            names = tuple(annotations.get(k) or None for k in ANNOTATIONS[runtime])  # type: ignore[assignment]
            found = PodCgroup(found.uid, runtime, found.container_id)
            break
    return KubePod(found.uid, found.runtime, found.container_id, *names)


def _bundle_annotations(path: str) -> dict[str, str] | None:
    """The annotations of an OCI config.json that root owns and nobody else can write; no link followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
            return None
        data = os.read(fd, _LIMIT)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        annotations = json.loads(data).get("annotations") or {}
    except (ValueError, AttributeError):
        return None
    return {str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, dict) else None
