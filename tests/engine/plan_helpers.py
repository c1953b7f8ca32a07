"""Pieces of a node as the pure planners see it (ReloadView's parts), shared by their tests."""

from nvreload.engine.plan import LoadedModule
from nvreload.model import GpuProcess

# nvidia_drm loaded with modeset on, as most nodes load it: nvidia <- nvidia_modeset <- nvidia_drm
DRM_STACK = (
    LoadedModule("nvidia", ("nvidia_modeset",)),
    LoadedModule("nvidia_modeset", ("nvidia_drm",)),
    LoadedModule("nvidia_drm", (), {"modeset": "Y"}),
)

# systemd-logind holding nvidia_drm's DRM node for a session
LOGIND_ON_DRM = GpuProcess(
    700,
    1700,
    "systemd-logind",
    "/lib/systemd/systemd-logind",
    ("226:0 /dev/dri/card0",),
    None,
    "systemd-logind.service",
    "procfs",
    700,
)
