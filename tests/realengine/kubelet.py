"""What kubelet leaves on a node, made for real without kubelet (no API server can run here):
cgroups laid out as kubelet's systemd cgroup driver lays them out, in a cgroup2 hierarchy this
test mounts itself, with real processes moved into them; and the OCI bundle a CRI runtime writes
for each container (containerd's and CRI-O's paths, with the annotations their CRI plugins set).

cgroup2 has one hierarchy per machine, so the test's mount shows the machine's: everything made
here is under a parent of the test's own (nvreload-test-<pid>-<n>), never kubelet's top-level
kubepods.slice, so that runs beside each other (or a real kubelet) never meet."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

_COUNT = itertools.count()
HOLD = "import sys, time; f = open(sys.argv[1], 'rb'); print('ready', flush=True); time.sleep(600)"


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "the kubepods tests need root (mounting cgroup2, moving processes between cgroups)"
    if shutil.which("mount") is None:
        return "mount (util-linux) is not installed"
    return None


class KubeletNode:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.mount = base / "cgroup2"
        self.state = base / "state"  # the runtimes' state root (/run/containerd... below it)
        self.parent = f"nvreload-test-{os.getpid()}-{next(_COUNT)}"
        self.procs: list[subprocess.Popen] = []
        self.scopes: list[Path] = []

    def start(self) -> KubeletNode:
        self.mount.mkdir(parents=True)
        subprocess.run(["mount", "-t", "cgroup2", "none", str(self.mount)], check=True, capture_output=True)
        return self

    def pod_container(self, qos: str, pod_uid: str, runtime: str, container_id: str, device: Path) -> int:
        """A real process holding `device`, moved into the container's scope of the pod's slice."""
        slice_ = "kubepods.slice"
        path = self.mount / self.parent / slice_
        if qos != "guaranteed":
            path = path / f"kubepods-{qos}.slice"
        prefix = "kubepods" if qos == "guaranteed" else f"kubepods-{qos}"
        scope = {"containerd": "cri-containerd", "cri-o": "crio"}[runtime]
        path = path / f"{prefix}-pod{pod_uid.replace('-', '_')}.slice" / f"{scope}-{container_id}.scope"
        path.mkdir(parents=True, exist_ok=True)
        self.scopes.append(path)
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(device)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
        )
        self.procs.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        (path / "cgroup.procs").write_text(str(proc.pid))
        return proc.pid

    def place(self, pid: int, path: str) -> None:
        """Move a process the test started into a cgroup of its own layout (e.g. system.slice/x.service)."""
        directory = self.mount / self.parent / path
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "cgroup.procs").write_text(str(pid))

    def bundle(self, runtime: str, container_id: str, annotations: dict[str, str], owner: int = 0) -> Path:
        """The OCI config.json the runtime keeps for the container, as root writes it (or `owner`)."""
        where = {
            "containerd": f"run/containerd/io.containerd.runtime.v2.task/k8s.io/{container_id}",
            "cri-o": f"run/containers/storage/overlay-containers/{container_id}/userdata",
        }[runtime]
        directory = self.state / where
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "config.json"
        config.write_text(json.dumps({"ociVersion": "1.0.2", "annotations": annotations}))
        config.chmod(0o644)
        os.chown(config, owner, owner)
        return config

    def teardown(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        # the scopes are empty now: remove them, deepest first, then the test's parent
        top = self.mount / self.parent
        if top.exists():
            for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                directory.rmdir()
            top.rmdir()
        subprocess.run(["umount", str(self.mount)], check=False, capture_output=True)
