"""`--verify`: is the live driver healthy? Each check is a value; the worst failure decides the exit code."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from nvreload.diagnosis import xid_catalog
from nvreload.errors import ExitCode
from nvreload.host.runner import TIMED_OUT, CommandRunner
from nvreload.model import NodeState
from nvreload.read.nvidia_proc import normalize_bus_id


@dataclass(frozen=True)
class Check:
    """One --verify check and whether it passed."""

    name: str
    ok: bool
    detail: str
    severity: str = "critical"  # what a failure of this check means


# Runs in a child process: libcuda keeps /dev/nvidia* open until the process exits, and a verify
# inside the reload engine must not pin the module it may have to unload again on rollback.
CUDA_PROBE = r"""
import ctypes, sys
try:
    cuda = ctypes.CDLL("libcuda.so.1")
except OSError as exc:
    print("libcuda.so.1 not loadable: %s" % exc); sys.exit(3)
def check(rc, what):
    if rc != 0:
        name = ctypes.c_char_p()
        cuda.cuGetErrorName(rc, ctypes.byref(name))
        print("%s failed: %s (%d)" % (what, (name.value or b"?").decode(), rc)); sys.exit(2)
check(cuda.cuInit(0), "cuInit")
count = ctypes.c_int()
check(cuda.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
for i in range(count.value):
    dev = ctypes.c_int(); ctx = ctypes.c_void_p()
    check(cuda.cuDeviceGet(ctypes.byref(dev), i), "cuDeviceGet(%d)" % i)
    check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain(%d)" % i)
    check(cuda.cuDevicePrimaryCtxRelease_v2(dev), "cuDevicePrimaryCtxRelease(%d)" % i)
print("CUDA context opened on %d device(s)" % count.value)
"""


def cuda_context_check(runner: CommandRunner | None = None, timeout: float = 60.0) -> Check:
    result = (runner or CommandRunner()).run([sys.executable, "-c", CUDA_PROBE], timeout=timeout)
    if result.returncode == TIMED_OUT:
        return Check("cuda_context", False, f"no CUDA context within {timeout:g} s")
    if result.returncode < 0:  # a crash inside libcuda
        return Check("cuda_context", False, f"the CUDA probe was killed by signal {-result.returncode}")
    detail = result.stdout.strip() or (result.stderr.strip().splitlines()[-1:] or ["no output"])[0]
    return Check("cuda_context", result.returncode == 0, detail)


def run_checks(node: NodeState, cuda: Check | None) -> list[Check]:
    checks = []
    nvml = node.nvml
    checks.append(Check("nvml", nvml.status == "ok", f"NVML {nvml.status}" + (f": {nvml.error}" if nvml.error else "")))
    versions = {
        "kernel module": node.resident.version,
        "userspace": node.userspace.version,
        "NVML": nvml.driver_version,
        "on-disk module": node.on_disk.version if node.on_disk else None,
    }
    known = {k: v for k, v in versions.items() if v}
    agree = len(set(known.values())) == 1 and bool(node.resident.version)
    checks.append(Check("versions_agree", agree, ", ".join(f"{k} {v}" for k, v in versions.items())))
    enumerated = {normalize_bus_id(d.pci_bus_id) for d in nvml.devices if d.pci_bus_id}
    missing = [g.bus_id for g in node.pci_gpus if g.bus_id not in enumerated]
    checks.append(Check(
        "gpus_enumerate",
        bool(node.pci_gpus) and not missing,
        f"{len(enumerated)} of {len(node.pci_gpus)} PCI GPU(s) in NVML" + (f"; missing {', '.join(missing)}" if missing else ""),
    ))
    new_xids = [x for x in node.kernel_log.xids if x.since_driver_load and xid_catalog.bucket(x.xid, x.message)]
    checks.append(Check(
        "no_new_xids", not new_xids,
        "no actionable XID since the driver loaded" if not new_xids else "; ".join(x.line for x in new_xids[-3:]),
        severity="critical" if any(xid_catalog.bucket(x.xid, x.message) != "restart_application" for x in new_xids) else "warning",
    ))
    if cuda is not None:
        checks.append(cuda)
    return checks


def verify_exit_code(checks: list[Check]) -> int:
    failed = [c for c in checks if not c.ok]
    if any(c.severity == "critical" for c in failed):
        return ExitCode.CRITICAL
    if failed:
        return ExitCode.WARNING
    return ExitCode.OK
