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
    "nvidia-persistenced.service",
    "nvidia-fabricmanager.service",
)

# Executable names (argv[0] basename) of the daemons a reload must stop and bring back where PID 1
# is not systemd.
GPU_DAEMONS = ("nv-hostengine", "dcgm-exporter", "nvsm", "nvidia-persistenced", "nv-fabricmanager")

MPS_COMM = "nvidia-cuda-mps"
LOGIND_COMM = "systemd-logind"
LOGIND_UNIT = "systemd-logind.service"

DISPLAY_SERVERS = frozenset(
    {"Xorg", "X", "Xwayland", "gnome-shell", "kwin_wayland", "kwin_x11", "sway", "weston", "mutter",
     "gdm", "gdm3", "gdm-x-session", "gdm-wayland-session", "sddm", "sddm-greeter", "lightdm", "Hyprland"}
)
