"""The NVML session itself, run in a child process (nvreload.host.nvml starts it).

It prints one JSON object on stdout: {"status", "error", "driver_version", "cuda_driver_version",
"devices": [...]}. It imports nothing of nvreload's but this file, so the child pays only for Python
and pynvml; nvreload.host.nvml turns the object back into an NvmlReport.

The session is opened and closed explicitly: while open, NVML holds /dev/nvidia* descriptors,
which would keep the very module we want to unload busy. In a child, even a crash inside
libnvidia-ml (it happens on half-upgraded nodes) closes them.
"""

from __future__ import annotations

import json
import sys
from typing import Any

# NVML return codes (nvml.h) that classify a failed nvmlInit.
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18

INIT_STATUS = {
    NVML_ERROR_DRIVER_NOT_LOADED: "driver_not_loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "library_not_found",
    NVML_ERROR_LIB_RM_VERSION_MISMATCH: "version_mismatch",
}


# nvmlGpuFabricState_t: 0 not supported (no NVSwitch fabric), 1 not started, 2 in progress, 3 completed;
# named as nvidia-smi -q prints them, so that a snapshot and the live node read alike
_FABRIC_STATES = {1: "Not Started", 2: "In Progress", 3: "Completed"}


def _fabric(info: object) -> dict:
    state = _FABRIC_STATES.get(getattr(info, "state", 0)) if info is not None else None
    if state is None:
        return {}
    status = getattr(info, "status", None)
    return {
        "fabric_state": state,
        "fabric_status": "Success" if status == 0 else (f"NVML status {status}" if status is not None else None),
    }


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class NvmlSession:
    """`with NvmlSession() as nvml:` — nvml.read() is safe to call whatever state the driver is in."""

    def __init__(self) -> None:
        self._pynvml: Any = None  # the pynvml module once imported (untyped)
        self._open = False
        self.init_status = "unavailable"
        self.init_error: str | None = None

    def __enter__(self) -> NvmlSession:
        try:
            import pynvml
        except ImportError as exc:
            self.init_error = f"nvidia-ml-py is not installed: {exc}"
            return self
        self._pynvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            code = getattr(exc, "value", None)
            self.init_status = INIT_STATUS.get(code, "error") if isinstance(code, int) else "error"
            self.init_error = _text(exc)
            return self
        except OSError as exc:  # a broken library file
            self.init_status, self.init_error = "error", str(exc)
            return self
        self._open = True
        self.init_status = "ok"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._open and self._pynvml is not None:
            self._open = False
            try:
                self._pynvml.nvmlShutdown()
            except Exception:  # noqa: BLE001 - what was read stands; the process exits next anyway
                pass

    def _safe(self, call, *args):
        try:
            return call(*args)
        except Exception:  # noqa: BLE001 - any NVML call may be unsupported on some GPU
            return None

    def _fabric_info(self, handle: object) -> object:
        """The GPU's NVSwitch fabric state (NVML fills a structure); None where NVML or the GPU lacks it."""
        nv = self._pynvml
        if not hasattr(nv, "c_nvmlGpuFabricInfo_t"):
            return None
        import ctypes

        info = nv.c_nvmlGpuFabricInfo_t()
        return info if self._safe(nv.nvmlDeviceGetGpuFabricInfo, handle, ctypes.byref(info)) is not None else None

    def _device(self, index: int) -> dict:
        nv = self._pynvml
        handle = self._safe(nv.nvmlDeviceGetHandleByIndex, index)
        if handle is None:
            return {"index": index}
        pci = self._safe(nv.nvmlDeviceGetPciInfo, handle)
        mig = self._safe(nv.nvmlDeviceGetMigMode, handle)
        persistence = self._safe(nv.nvmlDeviceGetPersistenceMode, handle)
        pids: set[int] = set()
        for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            for proc in self._safe(getattr(nv, getter), handle) or []:
                pids.add(int(proc.pid))
        fabric = self._fabric_info(handle)
        name = self._safe(nv.nvmlDeviceGetName, handle)
        uuid = self._safe(nv.nvmlDeviceGetUUID, handle)
        return {
            "index": index,
            "name": _text(name) if name is not None else None,
            "uuid": _text(uuid) if uuid is not None else None,
            "pci_bus_id": _text(pci.busId) if pci is not None else None,
            "persistence_mode": bool(persistence) if persistence is not None else None,
            "mig_mode": bool(mig[0]) if mig is not None else None,
            "mig_pending": bool(mig[1]) if mig is not None else None,  # what the next GPU reset applies
            "compute_pids": sorted(pids),
            **_fabric(fabric),
        }

    def read(self) -> dict:
        if not self._open:
            return {"status": self.init_status, "error": self.init_error}
        nv = self._pynvml
        count = self._safe(nv.nvmlDeviceGetCount) or 0
        driver = self._safe(nv.nvmlSystemGetDriverVersion)
        return {
            "status": "ok",
            "driver_version": _text(driver) if driver is not None else None,
            "cuda_driver_version": self._safe(nv.nvmlSystemGetCudaDriverVersion),
            "devices": [self._device(index) for index in range(count)],
        }


def main() -> None:
    with NvmlSession() as session:
        document = session.read()
    sys.stdout.write(json.dumps(document))


if __name__ == "__main__":
    main()
