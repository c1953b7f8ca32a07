"""GPU containers through the Docker Engine API (Docker, or Podman's Docker-compatible socket).

The docker SDK (~200 ms to import) is imported only when an engine socket exists, so
`--status --json` on a node without containers never pays for it.

A container is a GPU container when it carries any marker NVIDIA's toolkit acts on:
NVIDIA_VISIBLE_DEVICES (not void/none), a /dev/nvidia* device, a DeviceRequest for the gpu
capability, the `nvidia` runtime, or a CDI device `nvidia.com/gpu=...`; or when the holder scan
found one of its processes on a GPU device.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from nvreload.errors import HostError
from nvreload.model import ContainerState

SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/podman/podman.sock")
DOCKER_UNIT = "docker.service"


def engine_url() -> str | None:
    """The engine's URL if one can exist here: $DOCKER_HOST, or a socket file that is present."""
    env = os.environ.get("DOCKER_HOST")
    if env:
        if env.startswith("unix://") and not os.path.exists(env[len("unix://") :]):
            return None
        return env
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    candidates = list(SOCKETS) + ([f"{runtime}/podman/podman.sock"] if runtime else [])
    for path in candidates:
        if os.path.exists(path):
            return f"unix://{path}"
    return None


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


@dataclass(frozen=True)
class EngineInfo:
    """The container engine's identity and whether live-restore keeps containers up across its restart."""

    live_restore: bool
    name: str  # "docker" | "podman"
    version: str


class ContainerEngine:
    def __init__(self, url: str, timeout: float = 120.0) -> None:
        import docker  # lazy: only nodes with an engine socket pay for it

        self.url = url
        try:
            self.client = docker.DockerClient(base_url=url, timeout=int(timeout))
        except Exception as exc:  # noqa: BLE001 - the SDK raises DockerException and plain OSErrors
            raise HostError(f"container engine at {url}: {exc}") from None

    def info(self) -> EngineInfo:
        try:
            info = self.client.info()
            version = self.client.version()
        except Exception as exc:  # noqa: BLE001
            raise HostError(f"container engine at {self.url} does not answer: {exc}") from None
        components = {c.get("Name", "").lower() for c in version.get("Components") or []}
        name = "podman" if any("podman" in c for c in components) else "docker"
        return EngineInfo(bool(info.get("LiveRestoreEnabled")), name, str(version.get("Version", "?")))

    def gpu_containers(self, holder_ids: tuple[str, ...] = ()) -> tuple[ContainerState, ...]:
        """Running containers with a GPU marker, or whose process the holder scan found."""
        try:
            containers = self.client.containers.list()
        except Exception as exc:  # noqa: BLE001
            raise HostError(f"cannot list containers at {self.url}: {exc}") from None
        found = []
        for container in containers:
            attrs = container.attrs
            markers = list(gpu_markers(attrs))
            if any(container.id.startswith(h) or h.startswith(container.id) for h in holder_ids):
                markers.append("holds_gpu_device")
            if not markers:
                continue
            policy = ((attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or None
            stop_timeout = (attrs.get("Config") or {}).get("StopTimeout")
            found.append(ContainerState(container.id, container.name, True, tuple(markers), policy, stop_timeout))
        return tuple(found)

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
        if policy == "always":
            try:
                container.update(restart_policy={"Name": "unless-stopped"})
                relaxed = policy
            except Exception:  # noqa: BLE001 - Podman cannot update restart policies; stop anyway
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
        if restore_policy:
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


def _short(exc: Exception) -> str:
    text = str(exc)
    return text.split('("', 1)[-1].rstrip('")') if '("' in text else text
