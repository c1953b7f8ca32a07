"""Whether a CUDA context opens: the one door to libcuda, always in a child process."""

from __future__ import annotations

import sys

from nvreload.host.commands import TIMED_OUT, CommandRunner
from nvreload.model import Check

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
