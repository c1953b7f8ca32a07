"""XID codes bucketed the way NVIDIA's XID catalog buckets their immediate action.

Source: NVIDIA's "Xid Catalog" for Ampere and newer, r590 edition
(docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html and docs.nvidia.com/deploy/pdf/XID_Errors.pdf),
column "Resolution Bucket (Immediate Action)", XIDs 1-154 plus the recovery-action codes Xid 154
carries (nvmlDeviceGpuRecoveryAction_t, 0-7). This is the subset an operator acts on; an XID not
listed here is reported but drives no action.
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
RESET_XIDS = frozenset({48, 62, 74, 95, 109, 110, 119, 120, 121, 136, 140, 143})
# Row remapping (Ampere and newer) or page retirement (older): 63 marks a row pending remap, 64 a
# remap that failed; either takes effect only at the next GPU reset (or reboot). The r590 catalog
# buckets 64 RESET_GPU; both get their own finding because the GPU keeps working until then.
REMAP_XIDS = frozenset({63, 64})
# RESTART_APP: the fault belongs to one application's context; restarting it is enough.
RESTART_APP_XIDS = frozenset({13, 31, 43, 45, 68, 69, 94})

# Xid 154 (driver 550+) states the recovery action itself: "GPU recovery action changed from
# 0x0 (None) to 0x1 (GPU Reset Required)".
_RECOVERY = re.compile(r"recovery action changed from .* to 0x(?P<code>[0-9a-f]+)", re.IGNORECASE)
# 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, 4 drain and reset, 5 recover the IMEX domain (the
# fabric's daemons, not this node's driver), 6 PCIe bus reset, 7 system reboot
_RECOVERY_ACTIONS = {0: None, 1: RESET_GPU, 2: REBOOT, 3: RESET_GPU, 4: RESET_GPU, 5: None, 6: REBOOT, 7: REBOOT}


def bucket(xid: int, message: str = "") -> str | None:
    if xid in REBOOT_XIDS:
        return REBOOT
    if xid in RESET_XIDS or xid in REMAP_XIDS:
        return RESET_GPU
    if xid in RESTART_APP_XIDS:
        return RESTART_APP
    if xid == 154:
        match = _RECOVERY.search(message)
        if match:
            return _RECOVERY_ACTIONS.get(int(match.group("code"), 16))
    return None
