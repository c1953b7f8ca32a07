"""XID codes bucketed the way NVIDIA's XID catalog buckets their immediate action.

Source: NVIDIA's "Xid Catalog" (docs.nvidia.com/deploy/xid-errors), column "Resolution Bucket
(Immediate Action)", for Ampere and newer. This is the subset an operator acts on; an XID not listed
here is reported but drives no action.
"""

from __future__ import annotations

import re

REBOOT = "reboot"
RESET_GPU = "reset_gpu"
RESTART_APP = "restart_application"
SERVICE_HARDWARE = "service_hardware"

# GPU has fallen off the bus: only a reboot (or a hot-plug cycle of the slot) brings it back.
REBOOT_XIDS = frozenset({79})
# RESET_GPU: uncorrectable ECC, row-remap failures, GSP/firmware errors, internal micro-controller faults.
RESET_XIDS = frozenset({48, 62, 64, 74, 95, 109, 110, 119, 120, 121, 136, 140, 143})
# RESTART_APP: the fault belongs to one application's context; restarting it is enough.
RESTART_APP_XIDS = frozenset({13, 31, 43, 45, 68, 69, 94})

# Xid 154 (driver 550+) states the recovery action itself: "GPU recovery action changed from
# 0x0 (None) to 0x1 (GPU Reset Required)".
_RECOVERY = re.compile(r"recovery action changed from .* to 0x(?P<code>[0-9a-f]+)", re.IGNORECASE)
_RECOVERY_ACTIONS = {0: None, 1: RESET_GPU, 2: REBOOT, 3: RESET_GPU, 4: RESET_GPU, 6: REBOOT, 7: REBOOT}


def bucket(xid: int, message: str = "") -> str | None:
    if xid in REBOOT_XIDS:
        return REBOOT
    if xid in RESET_XIDS:
        return RESET_GPU
    if xid in RESTART_APP_XIDS:
        return RESTART_APP
    if xid == 154:
        match = _RECOVERY.search(message)
        if match:
            return _RECOVERY_ACTIONS.get(int(match.group("code"), 16))
    return None
