"""XID codes, bucketed by the immediate action NVIDIA's Xid catalog gives each one.

Source: NVIDIA, "Analyzing Xid Errors with the Xid Catalog" (Ampere and newer),
docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html, column "Resolution Bucket (Immediate
Action)", read 2026-11-24: XIDs 1-172 (the page's own version gates run to CUDA 12.9 / driver R575).
Xid 154 states the recovery action itself (nvmlDeviceGpuRecoveryAction_t).

How a catalog bucket becomes an nvreload action:
- RESTART_APP -> restart_application
- RESET_GPU, WORKFLOW_XID_48 and WORKFLOW_NVLINK_ERR (the page: "a GPU reset or node reboot is needed
  to clear this error") -> reset_gpu
- RESTART_BM (79, fallen off the bus) and RESTART_VM (151) -> reboot
- CHECK_MECHANICALS (54, auxiliary power not connected) and CONTACT_SUPPORT on an XID in use (142)
  -> service_hardware
- UPDATE_SWFW (78, vGPU start error) -> install_driver
- IGNORE, WORKFLOW_XID_45 (follow the other Xid), WORKFLOW_NVLINK5_ERR (144-150: the action depends
  on the subcode and comes as the Xid 154 that follows), CHECK_UVM (159), XIDs marked unused, and
  XIDs with no bucket on the page (162-172) -> None: reported, no action drawn from them.

One deliberate difference: the catalog's immediate action for 63 (a row marked for remapping) is
IGNORE, but the remap takes effect only at the next GPU reset, which is what the driver's own line
says ("reset gpu to activate"); 63 and 64 get their own finding (row_remap_pending) for that.
"""

from __future__ import annotations

import re

REBOOT = "reboot"
RESET_GPU = "reset_gpu"
RESTART_APP = "restart_application"
SERVICE_HARDWARE = "service_hardware"
INSTALL_DRIVER = "install_driver"

FALLEN_OFF_BUS = 79


def _span(first: int, last: int) -> set[int]:
    return set(range(first, last + 1))


RESTART_APP_XIDS = frozenset(
    {8, 11, 13, 25, 31, 32, 39, 40, 41, 60, 68, 69, 70, 71, 72, 75, 76, 77, 80, 82, 83, 84, 85, 86, 88, 89, 94}
    | _span(96, 105)  # NVDEC5-7, NVJPG1-7
    | _span(126, 135)  # CE10-CE19
    | {139}
)
RESET_XIDS = frozenset({46, 48, 62, 64, 74, 95, 109, 110, 119, 120, 136, 140, 143, 155, 156, 158})
REBOOT_XIDS = frozenset({FALLEN_OFF_BUS, 151})
SERVICE_XIDS = frozenset({54, 142})
DRIVER_XIDS = frozenset({78})
# Row remapping (Ampere and newer) or page retirement (older): 63 marks a row pending remap, 64 a
# remap that failed; either takes effect only at the next GPU reset (or reboot).
REMAP_XIDS = frozenset({63, 64})

_BUCKETS = (
    (REBOOT_XIDS, REBOOT),
    (RESET_XIDS | REMAP_XIDS, RESET_GPU),
    (RESTART_APP_XIDS, RESTART_APP),
    (SERVICE_XIDS, SERVICE_HARDWARE),
    (DRIVER_XIDS, INSTALL_DRIVER),
)

# Xid 154 (driver 550+) states the recovery action itself: "GPU recovery action changed from
# 0x0 (None) to 0x1 (GPU Reset Required)".
# (compiled at its first use, through re's cache: few logs hold an Xid 154)
_RECOVERY = r"(?i)recovery action changed from .* to 0x(?P<code>[0-9a-f]+)"
# 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, 4 drain and reset, 5 recover the IMEX domain (the
# fabric's daemons, not this node's driver), 6 PCIe bus reset, 7 system reboot
_RECOVERY_ACTIONS = {0: None, 1: RESET_GPU, 2: REBOOT, 3: RESET_GPU, 4: RESET_GPU, 5: None, 6: REBOOT, 7: REBOOT}


def bucket(xid: int, message: str = "") -> str | None:
    """The nvreload action NVIDIA's catalog gives this XID (Xid 154: the action its message names)."""
    if xid == 154:
        match = re.search(_RECOVERY, message)
        return _RECOVERY_ACTIONS.get(int(match.group("code"), 16)) if match else None
    for xids, action in _BUCKETS:
        if xid in xids:
            return action
    return None
