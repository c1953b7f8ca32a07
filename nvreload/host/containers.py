"""GPU containers through the Docker Engine API: Docker's socket, Podman's rootful socket, and the
rootless Podman sockets of other users, each its own engine.

The docker SDK (~200 ms to import) is imported only when an engine socket exists, so
`--status --json` on a node without containers never pays for it.

A container is a GPU container when it carries any marker NVIDIA's toolkit acts on:
NVIDIA_VISIBLE_DEVICES (not void/none), a /dev/nvidia* device, a DeviceRequest for the gpu
capability, the `nvidia` runtime, or a CDI device `nvidia.com/gpu=...`; or when the holder scan
found one of its processes on a GPU device.

Podman's Docker-compatible view drops DeviceRequests and reports every runtime as "oci", so a
Podman engine is read through its own libpod API on the same socket: the runtime it really ran
(`OCIRuntime`), the devices, the annotations (CDI's `cdi.k8s.io/...` requests and NVIDIA's hook
annotations) and the command line it was created with (where `--device nvidia.com/gpu=0` stays).
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass

from nvreload.errors import HostError
from nvreload.model import ContainerState, KubePod

DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
PODMAN_SOCKET = "/run/podman/podman.sock"
# where each user's runtime directory is (pam_systemd's /run/user/UID); a test points it elsewhere
USER_RUNTIME_ROOT = "/run/user"
DOCKER_UNIT = "docker.service"
# the libpod API version asked for: Podman 4.x answers /v4.0.0/libpod/... (and 5.x still does)
LIBPOD = "/v4.0.0/libpod"


@dataclass(frozen=True)
class EngineSocket:
    """One engine's socket: its URL, and the unprivileged user who owns it (a rootless Podman)."""

    url: str
    owner_uid: int | None = None
    owner: str | None = None  # that user's name, for the messages


def engine_sockets() -> list[EngineSocket]:
    """Every engine that can exist here: Docker's ($DOCKER_HOST, or its socket), rootful Podman's
    ($CONTAINER_HOST, Podman's own variable, or its socket), root's own runtime directory's Podman,
    then each other user's rootless Podman under /run/user/UID (see user_sockets)."""
    found: list[EngineSocket] = []
    docker_env = os.environ.get("DOCKER_HOST")
    if docker_env:
        if _reachable(docker_env):
            found.append(EngineSocket(docker_env))
    else:
        path = next((p for p in DOCKER_SOCKETS if os.path.exists(p)), None)
        if path:
            found.append(EngineSocket(f"unix://{path}"))
    podman_env = os.environ.get("CONTAINER_HOST")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    candidates = [podman_env] if podman_env else [f"unix://{PODMAN_SOCKET}"]
    if runtime:
        candidates.append(f"unix://{runtime}/podman/podman.sock")
    for url in candidates:
        if _reachable(url) and not any(_same_socket(url, e.url) for e in found):
            found.append(EngineSocket(url))
    found += [s for s in user_sockets() if not any(_same_socket(s.url, e.url) for e in found)]
    return found


def user_sockets(root: str | None = None) -> list[EngineSocket]:
    """Other users' rootless Podman sockets, /run/user/UID/podman/podman.sock. nvreload runs as root
    and these paths are the users' own: only a directory named by a UID, owned by that UID and
    not a link, holding a socket (not a link) owned by the same UID, is taken; anything else is
    passed over, never followed."""
    root = root or os.environ.get("NVRELOAD_USER_RUNTIME_ROOT") or USER_RUNTIME_ROOT
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    found = []
    for name in names:
        if not (name.isascii() and name.isdigit()) or int(name) == 0:
            continue
        uid = int(name)
        base = os.path.join(root, name)
        try:
            if not _owned_dir(base, uid) or not _owned_dir(os.path.join(base, "podman"), uid):
                continue
            info = os.lstat(os.path.join(base, "podman", "podman.sock"))
        except OSError:
            continue
        if stat.S_ISSOCK(info.st_mode) and info.st_uid == uid:
            found.append(EngineSocket(f"unix://{base}/podman/podman.sock", uid, _user_name(uid)))
    return found


def _owned_dir(path: str, uid: int) -> bool:
    info = os.lstat(path)
    return stat.S_ISDIR(info.st_mode) and info.st_uid == uid


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _reachable(url: str) -> bool:
    return not url.startswith("unix://") or os.path.exists(url[len("unix://") :])


def _same_socket(a: str, b: str) -> bool:
    """Whether two URLs are one socket (/var/run is /run): the same engine is never listed twice."""
    if a == b:
        return True
    if not (a.startswith("unix://") and b.startswith("unix://")):
        return False
    try:
        x, y = os.stat(a[len("unix://") :]), os.stat(b[len("unix://") :])
    except OSError:
        return False
    return (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)


def gpu_markers(attrs: dict) -> tuple[str, ...]:
    """Every NVIDIA-toolkit marker in a container's inspect document."""
    markers = []
    config = attrs.get("Config") or {}
    host = attrs.get("HostConfig") or {}
    for entry in config.get("Env") or []:
        key, _, value = entry.partition("=")
        if key == "NVIDIA_VISIBLE_DEVICES" and value.strip().lower() not in ("", "void", "none"):
            markers.append(f"env:NVIDIA_VISIBLE_DEVICES={value}")
    for device in host.get("Devices") or []:
        path = device.get("PathOnHost") or ""
        inside = device.get("PathInContainer") or ""
        if path.startswith("/dev/nvidia") or inside.startswith("/dev/nvidia"):
            markers.append(f"device:{inside or path}")
        elif path.startswith("nvidia.com/gpu="):
            markers.append(f"cdi:{path}")  # Podman records CDI names as devices
    for request in host.get("DeviceRequests") or []:
        capabilities = {c for group in request.get("Capabilities") or [] for c in group}
        if "gpu" in capabilities or request.get("Driver") == "nvidia":
            markers.append("device_request:gpu")
        for device_id in request.get("DeviceIDs") or []:
            if device_id.startswith("nvidia.com/gpu="):
                markers.append(f"cdi:{device_id}")
    if host.get("Runtime") == "nvidia":
        markers.append("runtime:nvidia")
    return tuple(dict.fromkeys(markers))


def podman_markers(attrs: dict) -> tuple[str, ...]:
    """Every NVIDIA marker in a libpod inspect document (Podman's own view, not the compat one)."""
    config = attrs.get("Config") or {}
    host = attrs.get("HostConfig") or {}
    markers = [m for m in gpu_markers({"Config": config, "HostConfig": {"Devices": host.get("Devices")}})]
    runtime = str(attrs.get("OCIRuntime") or "")
    if runtime == "nvidia" or runtime.endswith("/nvidia-container-runtime"):
        markers.append("runtime:nvidia")
    command = [str(t) for t in config.get("CreateCommand") or []]
    for previous, token in zip(["", *command], command, strict=False):
        value = token.split("=", 1)[1] if token.startswith(("--device=", "--gpus=")) else token
        if previous == "--device" or token.startswith("--device="):
            if value.startswith("nvidia.com/gpu="):
                markers.append(f"cdi:{value}")
            else:  # a rootless Podman bind-mounts devices and lists none in HostConfig.Devices
                host, _, inside = value.partition(":")
                path = inside.split(":", 1)[0] or host
                if host.startswith("/dev/nvidia") or path.startswith("/dev/nvidia"):
                    markers.append(f"device:{path}")
        elif previous == "--gpus" or token.startswith("--gpus="):
            markers.append(f"gpus:{value}")  # Podman 5 turns --gpus into CDI devices
    for key, value in sorted((config.get("Annotations") or {}).items()):
        if key.startswith("cdi.k8s.io/"):
            markers += [f"cdi:{v.strip()}" for v in str(value).split(",") if v.strip().startswith("nvidia.com/")]
        elif key.startswith(("nvidia.com/", "com.nvidia.")):
            markers.append(f"annotation:{key}")  # what an OCI hook's `when` matches on
    return tuple(dict.fromkeys(markers))


@dataclass(frozen=True)
class EngineInfo:
    """The container engine's identity and whether live-restore keeps containers up across its restart."""

    live_restore: bool
    name: str  # "docker" | "podman"
    version: str


class ContainerEngine:
    def __init__(
        self, url: str, timeout: float = 120.0, owner_uid: int | None = None, owner: str | None = None
    ) -> None:
        import docker  # lazy: only nodes with an engine socket pay for it

        self.url = url
        self.owner_uid = owner_uid
        self.owner = owner
        self._info: EngineInfo | None = None
        try:
            self.client = docker.DockerClient(base_url=url, timeout=int(timeout))
        except Exception as exc:  # noqa: BLE001 - the SDK raises DockerException and plain OSErrors
            raise HostError(f"container engine at {url}: {exc}") from None

    def info(self) -> EngineInfo:
        if self._info is not None:
            return self._info
        try:
            info = self.client.info()
            version = self.client.version()
        except Exception as exc:  # noqa: BLE001
            raise HostError(f"container engine at {self.url} does not answer: {exc}") from None
        components = {c.get("Name", "").lower() for c in version.get("Components") or []}
        name = "podman" if any("podman" in c for c in components) else "docker"
        self._info = EngineInfo(bool(info.get("LiveRestoreEnabled")), name, str(version.get("Version", "?")))
        return self._info

    @property
    def label(self) -> str:
        """How reports name this engine: docker, podman, or podman (user alice, uid 1000)."""
        name = self.info().name
        return f"{name} (user {self.owner}, uid {self.owner_uid})" if self.owner_uid is not None else name

    def gpu_containers(self, holder_ids: tuple[str, ...] = ()) -> tuple[ContainerState, ...]:
        """Running containers with a GPU marker, or whose process the holder scan found."""
        if self.info().name == "podman":
            return self._podman_gpu_containers(holder_ids)
        try:
            containers = self.client.containers.list()
        except Exception as exc:  # noqa: BLE001
            raise HostError(f"cannot list containers at {self.url}: {exc}") from None
        documents = [(c.id, c.name, c.attrs, list(gpu_markers(c.attrs))) for c in containers]
        return self._found(documents, holder_ids)

    def _podman_gpu_containers(self, holder_ids: tuple[str, ...]) -> tuple[ContainerState, ...]:
        documents = []
        for entry in self._libpod("/containers/json"):
            if entry.get("IsInfra"):
                continue  # a pod's pause container holds nothing
            attrs = self._libpod(f"/containers/{entry['Id']}/json", missing_ok=True)
            if attrs is None or not (attrs.get("State") or {}).get("Running"):
                continue  # gone, or stopped, between the list and its inspect
            documents.append((attrs["Id"], str(attrs.get("Name") or ""), attrs, list(podman_markers(attrs))))
        return self._found(documents, holder_ids)

    def _found(self, documents: list, holder_ids: tuple[str, ...]) -> tuple[ContainerState, ...]:
        found = []
        for container_id, name, attrs, markers in documents:
            if any(container_id.startswith(h) or h.startswith(container_id) for h in holder_ids):
                markers.append("holds_gpu_device")
            if not markers:
                continue
            policy = ((attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or None
            config = attrs.get("Config") or {}
            labels = config.get("Labels") or {}
            found.append(
                ContainerState(
                    container_id,
                    name.lstrip("/"),
                    True,
                    tuple(markers),
                    policy,
                    config.get("StopTimeout"),
                    engine=self.label,
                    # Quadlet and `podman generate systemd --new` units label their container so
                    unit=labels.get("PODMAN_SYSTEMD_UNIT") or None,
                    pod=_pod_of_labels(container_id, labels),
                )
            )
        return tuple(found)

    def _libpod(self, path: str, missing_ok: bool = False):
        api = self.client.api
        try:
            response = api.get(api.base_url + LIBPOD + path)
            if missing_ok and response.status_code == 404:
                return None
            response.raise_for_status()
            return response.json()
        except Exception as exc:  # noqa: BLE001 - requests' and the SDK's errors alike
            raise HostError(f"podman at {self.url}: GET {LIBPOD}{path}: {_short(exc)}") from None

    def has(self, container_id: str) -> bool:
        """Whether this engine knows the container (a run resumed from its journal asks each engine)."""
        try:
            self.client.containers.get(container_id)
            return True
        except Exception:  # noqa: BLE001 - NotFound, or an engine that does not answer: not here
            return False

    def _get(self, container_id: str):
        try:
            return self.client.containers.get(container_id)
        except Exception as exc:  # noqa: BLE001
            raise HostError(f"container {container_id[:12]}: {exc}") from None

    def stop(self, container_id: str, timeout: int | None) -> str | None:
        """Stop it (the engine sends SIGTERM, waits `timeout`, then SIGKILL). A restart policy of
        `always` would let the daemon start it again on its own restart while the modules are out,
        so it is relaxed to `unless-stopped` until we start it; returns the policy to restore."""
        container = self._get(container_id)
        policy = ((container.attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or None
        relaxed = None
        # Podman has no daemon to start a stopped container behind us (its `always` restarts only
        # what exits on its own, never what `podman stop` stopped), nor a way to update the policy
        if policy == "always" and self.info().name == "docker":
            try:
                container.update(restart_policy={"Name": "unless-stopped"})
                relaxed = policy
            except Exception:  # noqa: BLE001 - an engine that cannot update it; stop anyway
                relaxed = None
        try:
            container.stop(timeout=10 if timeout is None else timeout)
        except Exception as exc:  # noqa: BLE001
            raise HostError(f"container {container.name}: stop failed: {exc}") from None
        return relaxed

    def start(self, container_id: str, restore_policy: str | None = None) -> None:
        container = self._get(container_id)
        try:
            container.start()
        except Exception as exc:  # noqa: BLE001
            raise HostError(f"container {container.name}: {_short(exc)}") from None
        if restore_policy and self.info().name == "docker":  # stop() relaxes nothing on Podman
            try:
                container.update(restart_policy={"Name": restore_policy})
            except Exception as exc:  # noqa: BLE001
                raise HostError(
                    f"container {container.name}: started, but restart policy {restore_policy} not restored: {exc}"
                ) from None

    def wait_ready(self, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if self.client.ping():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.2)
        raise HostError(f"container engine at {self.url} did not answer within {seconds:g} s")


def _pod_of_labels(container_id: str, labels: dict) -> KubePod | None:
    """The pod of a container kubelet made through cri-dockerd (or dockershim): its labels say so."""
    uid = labels.get("io.kubernetes.pod.uid")
    if not uid:
        return None
    return KubePod(
        str(uid),
        "docker",
        container_id,
        labels.get("io.kubernetes.pod.namespace"),
        labels.get("io.kubernetes.pod.name"),
        labels.get("io.kubernetes.container.name"),
    )


def _short(exc: Exception) -> str:
    text = str(exc)
    return text.split('("', 1)[-1].rstrip('")') if '("' in text else text
