"""The names nvreload knows of: GPU services and daemons, display servers. Data only, so that the
pure layers (diagnosis, planner) and the doors (systemd, processes) share one list."""

from __future__ import annotations

# Stop order: consumers of the driver first, the fabric manager (which consumers depend on) last.
# Start order is the reverse: fabric manager first, then persistenced, then the rest.
GPU_SERVICES = (
    "nvidia-dcgm-exporter.service",
    "dcgm-exporter.service",
    "nvidia-dcgm.service",
    "nv-hostengine.service",
    "dcgm.service",
    "nvsm.service",
    "nvidia-gridd.service",  # vGPU licensing
    "nvidia-topologyd.service",
    "nvidia-persistenced.service",
    "nvidia-imex.service",
    "nvidia-fabricmanager.service",
    "nvlsm.service",
)

# The NVLink fabric: on an NVSwitch node CUDA fails (error 802, "system not yet initialized") until
# these are up again for the new driver instance, so they start right after the modules load and
# before the verify step, not with the other consumers. The NVLink Subnet Manager (4th-generation
# NVSwitch, HGX B200) comes before the fabric manager, IMEX (cross-node memory export) after it.
FABRIC_SERVICES = ("nvlsm.service", "nvidia-fabricmanager.service", "nvidia-imex.service")

# Executable names (argv[0] basename) of the daemons a reload must stop and bring back where PID 1
# is not systemd.
GPU_DAEMONS = ("nv-hostengine", "dcgm-exporter", "nvsm", "nvidia-persistenced", "nv-fabricmanager")

MPS_COMM = "nvidia-cuda-mps"
LOGIND_COMM = "systemd-logind"
LOGIND_UNIT = "systemd-logind.service"

DISPLAY_SERVERS = frozenset(
    {
        "Xorg",
        "X",
        "Xwayland",
        "gnome-shell",
        "kwin_wayland",
        "kwin_x11",
        "sway",
        "weston",
        "mutter",
        "gdm",
        "gdm3",
        "gdm-x-session",
        "gdm-wayland-session",
        "sddm",
        "sddm-greeter",
        "lightdm",
        "Hyprland",
    }
)
