"""MIG geometry through NVML, run in a child process (nvreload.host.mig starts it), for the same
reasons as the NVML probe (nvml_session.py): NVML's descriptors never live in the process that
unloads the module, and a hang or crash inside libnvidia-ml is the child's.

    python -S -c "from nvreload.host.mig_session import main; main()" list
        -> {"gpus": {"<pci bus id>": [{"profile_id", "start", "size", "compute": [[id, start, size], ...]}]}}
    ... create '<bus id>' '<instances as JSON>'
        -> {"created": n}
Errors: {"error": "..."} and exit status 1. Imports nothing of nvreload's.
"""

from __future__ import annotations

import json
import sys


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _gpu_instances(nv, handle) -> list:
    """Every GPU instance of the device, with its profile id: NVML lists them per profile."""
    found = []
    for profile in range(nv.NVML_GPU_INSTANCE_PROFILE_COUNT):
        try:
            info = nv.nvmlDeviceGetGpuInstanceProfileInfo(handle, profile, version=1)
        except nv.NVMLError:
            continue  # a profile this GPU does not have
        count = nv.c_uint(0)
        handles = (nv.c_nvmlGpuInstance_t * max(int(info.instanceCount), 1))()
        nv.nvmlDeviceGetGpuInstances(handle, info.id, handles, nv.byref(count))
        for index in range(count.value):
            found.append((info.id, handles[index]))
    return found


def _compute_instances(nv, gpu_instance) -> list:
    found = []
    for profile in range(nv.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
        try:
            info = nv.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                gpu_instance, profile, nv.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED, version=1
            )
        except nv.NVMLError:
            continue
        count = nv.c_uint(0)
        handles = (nv.c_nvmlComputeInstance_t * max(int(info.instanceCount), 1))()
        nv.nvmlGpuInstanceGetComputeInstances(gpu_instance, info.id, handles, nv.byref(count))
        for index in range(count.value):
            ci = nv.nvmlComputeInstanceGetInfo(handles[index])
            found.append([int(info.id), int(ci.placement.start), int(ci.placement.size)])
    return sorted(found, key=lambda c: (c[1], c[0]))


def list_geometry(nv) -> dict:
    gpus = {}
    for index in range(nv.nvmlDeviceGetCount()):
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        try:
            current, _pending = nv.nvmlDeviceGetMigMode(handle)
        except nv.NVMLError:
            continue  # no MIG on this GPU
        if not current:
            continue
        instances = []
        for profile_id, gi in _gpu_instances(nv, handle):
            info = nv.nvmlGpuInstanceGetInfo(gi)
            instances.append(
                {
                    "profile_id": int(profile_id),
                    "start": int(info.placement.start),
                    "size": int(info.placement.size),
                    "compute": _compute_instances(nv, gi),
                }
            )
        if instances:
            bus = _text(nv.nvmlDeviceGetPciInfo(handle).busId)
            gpus[bus] = sorted(instances, key=lambda i: (i["start"], i["profile_id"]))
    return {"gpus": gpus}


def _handle_by_bus(nv, bus: str):
    for index in range(nv.nvmlDeviceGetCount()):
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        if _text(nv.nvmlDeviceGetPciInfo(handle).busId).lower().endswith(bus.lower()[-12:]):
            return handle
    raise LookupError(f"no GPU {bus} in NVML")


def create_geometry(nv, bus: str, instances: list) -> dict:
    handle = _handle_by_bus(nv, bus)
    created = 0
    for instance in instances:
        placement = nv.c_nvmlGpuInstancePlacement_t()
        placement.start, placement.size = instance["start"], instance["size"]
        gi = nv.nvmlDeviceCreateGpuInstanceWithPlacement(handle, instance["profile_id"], nv.byref(placement))
        for profile_id, start, size in instance.get("compute", []):
            ci_placement = nv.c_nvmlComputeInstancePlacement_t()
            ci_placement.start, ci_placement.size = start, size
            nv.nvmlGpuInstanceCreateComputeInstanceWithPlacement(gi, profile_id, nv.byref(ci_placement))
        created += 1
    return {"created": created}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        import pynvml as nv

        nv.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - an import or init failure is this child's whole answer
        sys.stdout.write(json.dumps({"error": f"NVML: {_text(exc)}"}))
        sys.exit(1)
    try:
        if args[:1] == ["list"]:
            document = list_geometry(nv)
        elif args[:1] == ["create"] and len(args) == 3:
            document = create_geometry(nv, args[1], json.loads(args[2]))
        else:
            document = {"error": f"unknown command {args!r}"}
    except Exception as exc:  # noqa: BLE001 - NVML's own error text is the answer
        document = {"error": f"{type(exc).__name__}: {_text(exc)}"}
    finally:
        try:
            nv.nvmlShutdown()
        except Exception:  # noqa: BLE001 - the answer stands
            pass
    sys.stdout.write(json.dumps(document))
    sys.exit(1 if "error" in document else 0)
