"""The simulated node: the same ReloadTarget port, with the kernel's rules.

- a module with holders refuses to unload ("rmmod: ERROR: Module nvidia is in use by: nvidia_uvm"),
  and so does one with open handles ("Module nvidia is in use");
- a module loads only when the modules it depends on are loaded; nvidia_peermem only with MOFED ready;
- NVML fails with "Driver Not Loaded" while nvidia is out, and with the version mismatch until the
  module that loads matches the userspace version;
- a killed process releases its handles; a stopped container or service releases its processes;
- a GPU refuses a reset while anything has it open, while its persistence mode is on, and while
  nvidia_drm is loaded (the real driver's "In use by another client", NVIDIA/mig-parted#181).

Its state lives in a JSON file under the state directory (rewritten after every change), so a run
killed with SIGKILL leaves a node that `--rollback --simulate` can inspect and repair.
Faults: {"at": "<step>", "error": "<message>", "times": 1} fails the first action of that step
(times -1: every time; "skip": N lets N actions through first); {"at": "<step>", "crash": "before"|"after"} SIGKILLs the process at that
step boundary. Latencies (seconds) make benchmarks realistic.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from importlib import resources

from nvreload.catalog import FABRIC_SERVICES, MPS_COMM
from nvreload.engine.plan import FinalState, MigInstance, ReloadView, mig_geometry
from nvreload.errors import BadInputError, HostError, ScenarioError
from nvreload.host.processes import Termination
from nvreload.model import Check, ContainerState, GpuProcess, KubePod, ServiceState
from nvreload.state_files import UnreadableFile, atomic_write_json, read_json
from nvreload.trusted_paths import open_trusted_file

# Which module needs which to be loaded first (the kernel's symbol dependencies).
DEPENDS = {
    "nvidia": (),
    "nvidia_uvm": ("nvidia",),
    "nvidia_modeset": ("nvidia",),
    "nvidia_drm": ("nvidia_modeset",),
    "nvidia_peermem": ("nvidia", "ib_core"),
    "nvidia_fs": ("nvidia",),
    "gdrdrv": ("nvidia",),
    "nvidia_vgpu_vfio": ("nvidia",),
}
NODE_FILE = "sim-node.json"
FABRIC_MANAGER = "nvidia-fabricmanager.service"
# The daemon that holds persistence mode: on for every GPU while it runs, off when it stops.
PERSISTENCED = "nvidia-persistenced.service"


def default_scenario() -> dict:
    return json.loads(resources.files("nvreload").joinpath("scenarios/default.json").read_text())


# A scenario describes a node in kilobytes; a far larger file is not one, and is not read into memory.
MAX_SCENARIO_BYTES = 16 * 2**20


def load_scenario(path: str | None) -> dict:
    """The scenario at `path` (the built-in one when None), checked whole against
    nvreload/schema/scenario.schema.json: ScenarioError naming the file and the key otherwise."""
    if not path:
        return default_scenario()
    try:
        # a scenario decides what a root run reports and records: one that another user owns or can
        # write, or reached through their directories or links, is refused like a .run is
        fd = open_trusted_file(path, what="take it as a scenario")
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(MAX_SCENARIO_BYTES + 1)
        if len(raw) > MAX_SCENARIO_BYTES:
            raise ValueError(f"larger than {MAX_SCENARIO_BYTES // 2**20} MiB")
        data = json.loads(raw)
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such scenario file") from None
    except BadInputError as exc:
        raise ScenarioError(exc.message) from None
    except (OSError, ValueError, RecursionError) as exc:
        raise ScenarioError(f"{path}: not a JSON scenario ({exc})") from None
    problem = scenario_problem(data)
    if problem:
        raise ScenarioError(f"{path}: {problem}")
    return data


def scenario_problem(data: object) -> str | None:
    """The first thing that makes `data` not a scenario, as 'key: why', or None."""
    import jsonschema

    schema = json.loads(resources.files("nvreload").joinpath("schema/scenario.schema.json").read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if error is None:
        return None
    where = error.json_path.replace("$.", "", 1) if error.json_path != "$" else "the scenario"
    # a bound says what the bound is, never the value it caught (a 72-GPU list dumped whole)
    bounds = {
        "maxItems": f"more than {error.validator_value} items",
        "minItems": f"fewer than {error.validator_value} items",
        "maxLength": f"longer than {error.validator_value} characters",
        "maxProperties": f"more than {error.validator_value} keys",
    }
    message = bounds.get(str(error.validator), error.message)
    message = message if len(message) <= 160 else message[:157] + "..."
    return f"{where}: {message}"


def scenario_digest(scenario: dict) -> str:
    """What tells one scenario from another: a node made from another one is replaced."""
    return hashlib.sha256(json.dumps(scenario, sort_keys=True).encode()).hexdigest()


def _read_node_file(path: str) -> dict | None:
    """The simulated node's state as a run left it; None when there is none yet."""
    try:
        data = read_json(path, MAX_SCENARIO_BYTES)
    except UnreadableFile as exc:
        raise ScenarioError(
            f"{path}: not a simulated node's state ({exc.why}); remove it or use another NVRELOAD_STATE_DIR"
        ) from None
    if data is None:
        return None
    required = ("loaded", "processes", "services", "containers", "gpus", "faults", "kernel", "consoles_bound")
    if not isinstance(data, dict) or not all(key in data for key in required):
        raise ScenarioError(f"{path}: not a simulated node's state; remove it or use another NVRELOAD_STATE_DIR")
    return data


def _module_devices(holds: list[str]) -> tuple[str, ...]:
    """The device nodes a process that holds these modules has open, as /proc shows them: nvidia_drm
    through its DRM node (major 226), the rest through the nvidia character devices."""
    return tuple("226:0 /dev/dri/card0" if name == "nvidia_drm" else f"195:0 /dev/{name}" for name in holds)


class SimulatedNode:
    name = "simulated"
    MODULES = frozenset(DEPENDS)  # the modules it simulates (what its /proc/modules lists)

    def __init__(self, scenario: dict, state_dir: str, replace: bool = False, persist: bool = True) -> None:
        """The node as the last run left it in `state_dir`, or a new one from `scenario` (also when
        `replace`: the caller has checked that no unfinished run needs the old one). Without
        `persist` (a dry run) nothing is ever written."""
        self.path = os.path.join(state_dir, NODE_FILE)
        self.persist = persist
        self._lock = threading.RLock()
        existing = None if replace else _read_node_file(self.path)
        if existing is not None:
            self.s = existing
        else:
            self.s = self._initial(scenario)
            self._save()

    @property
    def made_from(self) -> str | None:
        """The digest of the scenario this node was made from."""
        return self.s.get("scenario_digest")

    @staticmethod
    def _initial(scenario: dict) -> dict:
        s = json.loads(json.dumps(scenario))
        s["scenario_digest"] = scenario_digest(scenario)
        s.setdefault(
            "kernel", {"release": "6.1.0-26-amd64", "module_unload_supported": True, "modules_disabled": False}
        )
        s.setdefault("gpus", [])
        s.setdefault("processes", [])
        s.setdefault("services", [])
        s.setdefault("containers", [])
        s.setdefault("faults", [])
        s.setdefault("latency", {})
        s.setdefault("modprobe_d", {})
        s.setdefault("mofed_ready", True)
        s.setdefault("consoles", [])
        s["consoles_bound"] = list(s["consoles"])
        for fault in s["faults"]:
            fault.setdefault("times", 1)
        s["loaded"] = {m["name"]: m.get("parameters", {}) for m in s["modules"]}
        s["fabric_up"] = (
            bool(s.get("nvswitch"))
            and "nvidia" in s["loaded"]
            and any(sv["name"] == FABRIC_MANAGER and sv.get("active") for sv in s["services"])
        )
        s["loaded_version"] = s["driver"].get("loaded_version")
        s["installed_version"] = s["driver"].get("installed_version", s["loaded_version"])
        s["cdi_version"] = s["loaded_version"]  # the spec was generated for the driver running then
        for gpu in s["gpus"]:
            gpu["persistence_now"] = gpu.get("persistence", False)
            gpu["mig_now"] = list(gpu.get("mig_instances", [])) if "nvidia" in s["loaded"] else []
        return s

    def _save(self) -> None:
        if not self.persist:
            return
        with self._lock:
            # Simulated state needs to survive the death of the process (a test's SIGKILL), not
            # power loss: no fsync, so the simulation does not inflate the engine's timings.
            atomic_write_json(self.path, self.s, durable=False)

    def _latency(self, key: str, scale: float = 1.0) -> None:
        seconds = float(self.s["latency"].get(key, 0)) * scale
        if seconds > 0:
            time.sleep(seconds)

    def _fault(self, step: str) -> None:
        with self._lock:
            for fault in self.s["faults"]:
                if fault.get("at") == step and fault.get("crash") == "during":
                    if fault.get("skip", 0) > 0:
                        fault["skip"] -= 1
                    else:
                        fault["crash"] = "done"
                    self._save()
                    if fault["crash"] == "done":
                        # inside the step: the engine has written this action's undo record, and the
                        # action never runs
                        signal.raise_signal(signal.SIGKILL)
                if fault.get("at") == step and "error" in fault and fault["times"] != 0:
                    if fault.get("skip", 0) > 0:  # let this many actions of the step through first
                        fault["skip"] -= 1
                        self._save()
                        continue
                    if fault["times"] > 0:
                        fault["times"] -= 1
                    self._save()
                    raise HostError(fault["error"])

    # observation ------------------------------------------------------------------------------
    def module_holders(self, name: str) -> list[str]:
        return sorted(m for m in self.s["loaded"] if name in DEPENDS.get(m, ()))

    def module_users(self, name: str) -> list[str]:
        users = [f"pid {p['pid']}" for p in self.s["processes"] if p.get("alive", True) and name in p.get("holds", [])]
        users += [
            f"service {sv['name']}" for sv in self.s["services"] if sv.get("active") and name in sv.get("holds", [])
        ]
        users += [
            f"container {c['name']}" for c in self.s["containers"] if c.get("running") and name in c.get("holds", [])
        ]
        if name == "nvidia_drm":  # fbcon on nvidia-drmdrmfb pins the module until unbound
            users += [f"console {v}" for v in self.s["consoles_bound"]]
        return users

    def _gpu_nodes(self, user: dict) -> tuple[str, ...]:
        """The /dev/nvidia<minor> a process, service or container holds: the GPUs it names, or all
        of them when it holds the nvidia module without naming any."""
        if "nvidia" not in user.get("holds", []):
            return ()
        indexes = user.get("gpus", range(len(self.s["gpus"])))
        return tuple(f"195:{i} /dev/nvidia{i}" for i in indexes)

    def observe(self) -> ReloadView:
        """The node read as a live node is read, and planned from by the live path's rules."""
        from nvreload.engine.observation import observed_view
        from nvreload.engine.sim_status import simulated_node_state

        with self._lock:
            nothing_loaded = "nvidia" not in self.s["loaded"]
            return observed_view(
                simulated_node_state(self),
                self.mig_geometry,
                consoles=tuple(self.s["consoles_bound"]) if "nvidia_drm" in self.s["loaded"] else (),
                # a reload from nothing loads what is on disk (by default: the scenario's modules)
                available_modules=tuple(self.s.get("on_disk_modules", [m["name"] for m in self.s["modules"]]))
                if nothing_loaded
                else (),
                configured_modules=frozenset(self.s.get("modules_load_d", [])) if nothing_loaded else frozenset(),
            )

    def gpu_processes(self) -> list[GpuProcess]:
        """What a scan of /proc would find holding the GPUs: the scenario's processes that are alive
        and hold a loaded module, and a process of its own for each GPU service or container that
        holds GPUs without one listed."""
        processes = []
        for p in self.s["processes"]:
            if not p.get("alive", True) or not p.get("holds"):
                continue
            container = p.get("container")
            if container and not any(c["id"] == container and c.get("running") for c in self.s["containers"]):
                continue
            unit = p.get("unit")
            if unit and not any(sv["name"] == unit and sv.get("active") for sv in self.s["services"]):
                continue
            if not set(p["holds"]) & set(self.s["loaded"]):
                continue
            processes.append(
                GpuProcess(
                    p["pid"],
                    p.get("start_time", 1000 + p["pid"]),
                    p.get("comm", "proc"),
                    p.get("cmdline", p.get("comm", "")),
                    _module_devices(p["holds"]) + self._gpu_nodes(p),
                    container,
                    unit,
                    "procfs",
                    p.get("pgrp", p["pid"]),
                    _pod(p.get("pod")),
                )
            )
        return processes + self._unit_and_container_processes(processes) + self._mps_server()

    def _mps_server(self) -> list[GpuProcess]:
        """A running MPS daemon holds the GPUs through its server process: what tells a live scan
        that MPS is up (its comm, cut to 15 characters like every comm)."""
        if not self.s.get("mps_active") or "nvidia" not in self.s["loaded"]:
            return []
        nodes = tuple(f"195:{i} /dev/nvidia{i}" for i in range(len(self.s["gpus"])))
        return [GpuProcess(3900, 3900, MPS_COMM, "nvidia-cuda-mps-server", nodes, None, None, "procfs", 3900)]

    def _unit_and_container_processes(self, processes: list[GpuProcess]) -> list[GpuProcess]:
        """An active GPU service or a running GPU container holds its GPUs through a process of its
        own, listed in the scenario or not."""
        listed_units = {p.systemd_unit for p in processes if p.systemd_unit}
        listed_containers = {p.container_id for p in processes if p.container_id}
        own: list[GpuProcess] = []
        for number, sv in enumerate(self.s["services"]):
            if sv.get("active") and sv.get("holds") and sv["name"] not in listed_units:
                comm = sv["name"].removesuffix(".service")[:15]
                own.append(
                    GpuProcess(
                        3000 + number,
                        3000 + number,
                        comm,
                        comm,
                        self._gpu_nodes(sv),
                        None,
                        sv["name"],
                        "procfs",
                        3000 + number,
                    )
                )
        for number, c in enumerate(self.s["containers"]):
            if c.get("running") and c.get("holds") and c["id"] not in listed_containers:
                own.append(
                    GpuProcess(
                        3500 + number,
                        3500 + number,
                        "python3",
                        f"python3 ({c['name']})",
                        self._gpu_nodes(c),
                        c["id"],
                        None,
                        "procfs",
                        3500 + number,
                    )
                )
        return own

    def gpu_units_and_containers(
        self, processes: list[GpuProcess]
    ) -> tuple[tuple[ServiceState, ...], tuple[ContainerState, ...]]:
        services = tuple(ServiceState(sv["name"], "active") for sv in self.s["services"] if sv.get("active"))
        containers = tuple(
            ContainerState(
                c["id"],
                c["name"],
                True,
                tuple(c.get("markers", ["NVIDIA_VISIBLE_DEVICES"])),
                c.get("restart_policy"),
                c.get("stop_timeout"),
                c.get("engine", "docker"),
                c.get("unit"),
                _pod({**c["pod"], "runtime": "docker", "container_id": c["id"]} if c.get("pod") else None),
            )
            for c in self.s["containers"]
            # as the live engine lists them: a GPU marker, or a process of its own on a GPU
            if c.get("running") and (c.get("gpu", True) or c["id"] in {p.container_id for p in processes})
        )
        return services, containers

    def configured_parameters(self) -> dict[str, dict[str, str]]:
        return {k: dict(v) for k, v in self.s.get("modprobe_d", {}).items()}

    def gpu_holders(self) -> tuple[GpuProcess, ...]:
        with self._lock:
            return tuple(
                GpuProcess(
                    p["pid"],
                    p.get("start_time", 1000 + p["pid"]),
                    p.get("comm", "proc"),
                    p.get("cmdline", ""),
                    _module_devices(p["holds"]),
                    p.get("container"),
                    p.get("unit"),
                    "procfs",
                    p.get("pgrp", p["pid"]),
                    _pod(p.get("pod")),
                )
                for p in self.s["processes"]
                if p.get("alive", True) and set(p.get("holds", [])) & set(self.s["loaded"])
            )

    def loaded_modules(self) -> frozenset[str]:
        with self._lock:
            return frozenset(n for n in self.s["loaded"] if n in DEPENDS)

    def loaded_driver_version(self) -> str | None:
        with self._lock:
            return self.s["loaded_version"] if "nvidia" in self.s["loaded"] else None

    def final_state(self) -> FinalState:
        view = self.observe()
        return FinalState(
            tuple(m.name for m in view.modules),
            tuple(s.name for s in view.services),
            tuple(c.name for c in view.containers),
        )

    def nvml_status(self) -> str:
        if "nvidia" not in self.s["loaded"]:
            return "driver_not_loaded"
        if self.s["loaded_version"] != self.s["installed_version"]:
            return "version_mismatch"
        return "ok"

    # consumers --------------------------------------------------------------------------------
    def _container(self, cid: str) -> dict:
        for c in self.s["containers"]:
            if c["id"] == cid or c["name"] == cid or c["id"].startswith(cid):
                return c
        raise HostError(f"no such container: {cid}")

    def stop_container(self, container_id: str, timeout: int | None) -> None:
        self._fault("stop_consumers")
        c = self._container(container_id)
        self._latency("stop_container")
        with self._lock:
            if c.get("unit") and any(sv["name"] == c["unit"] and sv.get("active") for sv in self.s["services"]):
                # stopped behind its unit's back: systemd (Restart=) starts it again at once
                c["starts"] = c.get("starts", 0) + 1
                self._save()
                return
            c["running"] = False
            if c.get("restart_policy") == "always":
                # as the container door does: a dockerd restart must not start it while the modules
                # are out; the start puts `always` back
                c["restart_policy"] = "unless-stopped"
            for p in self.s["processes"]:
                if p.get("container") == c["id"]:
                    p["alive"] = False
            self._save()

    def restart_container_engine(self) -> None:
        self._fault("restart_consumers")

    def start_container(self, container_id: str, restart_policy: str | None = None) -> None:
        self._fault("restart_consumers")
        c = self._container(container_id)
        if (
            self.s.get("cdi_specs")
            and any(m.startswith("cdi:") for m in c.get("markers", []))
            and self.s.get("cdi_version") != self.s["loaded_version"]
        ):
            raise HostError(
                f"container {c['name']}: error injecting CDI devices: failed to create a mount for "
                f"libcuda.so.{self.s.get('cdi_version')}: no such file or directory"
            )
        if c.get("holds") and self.nvml_status() == "driver_not_loaded":
            raise HostError(
                f"container {c['name']}: nvidia-container-cli: initialization error: nvml error: {self.nvml_status().replace('_', ' ')}"
            )
        self._latency("start_container")
        with self._lock:
            c["running"] = True
            c["starts"] = c.get("starts", 0) + 1
            if restart_policy == "always":
                c["restart_policy"] = "always"
            self._save()

    def _service(self, name: str) -> dict:
        for sv in self.s["services"]:
            if sv["name"] == name:
                return sv
        raise HostError(f"Unit {name} not found.")

    def stop_service(self, name: str) -> None:
        self._fault("stop_consumers")
        sv = self._service(name)
        self._latency("stop_service")
        with self._lock:
            sv["active"] = False
            owned = {c["id"] for c in self.s["containers"] if c.get("unit") == name}
            for c in self.s["containers"]:
                if c["id"] in owned:
                    c["running"] = False  # the unit's ExecStop stops its container
            for p in self.s["processes"]:
                if p.get("unit") == name or p.get("container") in owned:
                    p["alive"] = False
            if name == FABRIC_MANAGER:
                self.s["fabric_up"] = False
            if name == PERSISTENCED:
                for gpu in self.s["gpus"]:
                    gpu["persistence_now"] = False
            self._save()

    def start_service(self, name: str, command: list[str] | None = None) -> None:
        # the fabric's services start in the verify step (before the CUDA check), the rest after it
        self._fault("verify" if name in FABRIC_SERVICES else "restart_consumers")
        sv = self._service(name)
        if sv.get("holds") and self.nvml_status() == "driver_not_loaded":
            raise HostError(f"Job for {name} failed because the control process exited with error code.")
        if (
            name == FABRIC_MANAGER
            and self.s.get("nvswitch")
            and self.s.get("fabric_manager_version") not in (None, self.s["loaded_version"])
        ):
            # the real nv-fabricmanager refuses a driver of any other version
            raise HostError(
                f"Job for {name} failed because the control process exited with error code. "
                f"(fabric manager {self.s['fabric_manager_version']} does not match driver {self.s['loaded_version']})"
            )
        self._latency("start_service")
        with self._lock:
            sv["active"] = True
            sv["starts"] = sv.get("starts", 0) + 1
            for c in self.s["containers"]:
                if c.get("unit") == name:  # its ExecStart runs its container
                    c["running"] = True
                    c["starts"] = c.get("starts", 0) + 1
            if name == FABRIC_MANAGER and self.s.get("nvswitch"):
                self.s["fabric_up"] = True
                self.s["fabric_polls_left"] = int(self.s.get("fabric_training_polls", 0))
            if name == PERSISTENCED:
                for gpu in self.s["gpus"]:
                    gpu["persistence_now"] = True
            self._save()

    def refresh_cdi_specs(self) -> list[str]:
        with self._lock:
            if self.s.get("cdi_specs"):
                self.s["cdi_version"] = self.s["loaded_version"]
                self._save()
            return list(self.s.get("cdi_specs", []))

    def mig_geometry(self) -> dict[str, tuple[MigInstance, ...]]:
        with self._lock:
            unreadable = [g["pci_bus_id"] for g in self.s["gpus"] if g.get("mig_unreadable")]
            if unreadable:  # NVML's answer for a GPU whose instances it cannot list
                raise HostError(f"GPU {unreadable[0]}: nvmlDeviceGetGpuInstances: Unknown Error")
            return mig_geometry({g["pci_bus_id"]: g["mig_now"] for g in self.s["gpus"] if g.get("mig_now")})

    def create_mig(self, bus_id: str, instances: tuple[MigInstance, ...]) -> None:
        with self._lock:
            gpu = self._gpu(bus_id)
            if not gpu.get("mig"):
                raise HostError(f"GPU {bus_id}: MIG mode is disabled (Insufficient resources? no: Not Supported)")
            if gpu.get("mig_create_fails"):
                raise HostError(f"GPU {bus_id}: {gpu['mig_create_fails']}")
            gpu["mig_now"] = [i.document() for i in instances]
            self._save()

    def disable_persistence(self, bus_id: str) -> None:
        with self._lock:
            self._gpu(bus_id)["persistence_now"] = False
            self._save()

    def reset_gpu(self, bus_id: str) -> None:
        """nvidia-smi -r: refused while anything has the GPU open; a GPU marked `lost_on_reset`
        does not come back (gone from NVML until a reboot)."""
        self._fault("reset_gpus")
        with self._lock:
            gpu = self._gpu(bus_id)
            index = self.s["gpus"].index(gpu)
            node = f"195:{index} /dev/nvidia{index}"  # exactly: /dev/nvidia1 is not /dev/nvidia10
            users = [
                f"pid {p['pid']}" for p in self.s["processes"] if p.get("alive", True) and node in self._gpu_nodes(p)
            ]
            users += [sv["name"] for sv in self.s["services"] if sv.get("active") and node in self._gpu_nodes(sv)]
            users += [c["name"] for c in self.s["containers"] if c.get("running") and node in self._gpu_nodes(c)]
            if gpu.get("persistence_now"):
                users.append("persistence mode")
            if "nvidia_drm" in self.s["loaded"]:
                # the real driver refuses a reset while nvidia_drm is loaded, nothing else holding the
                # GPU ("In use by another client": NVIDIA/mig-parted#181, ComputeCanada/puppet-magic_castle#387)
                users.append("nvidia_drm")
            if users:
                raise HostError(
                    f"GPU {bus_id.upper()} is currently in use by another process ({', '.join(users)}). "
                    "1 device is currently being used by one or more other processes"
                )
        self._latency("reset_gpu")
        with self._lock:
            gpu["resets"] = gpu.get("resets", 0) + 1
            gpu["lost"] = bool(gpu.get("lost_on_reset"))
            if gpu.get("mig_pending"):  # a reset applies the pending MIG mode, and no instance survives it
                gpu["mig"], gpu["mig_pending"], gpu["mig_now"] = not gpu.get("mig"), False, []
            self._save()

    def _gpu(self, bus_id: str) -> dict:
        for gpu in self.s["gpus"]:
            if gpu["pci_bus_id"].lower() == bus_id.lower():
                return gpu
        raise HostError(f"No devices were found matching {bus_id}")

    def fabric_ready(self) -> bool | None:
        """An NVSwitch node's fabric: down from every nvidia load until the fabric manager starts for
        it, then up after `fabric_training_polls` questions (the NVLinks training)."""
        if not self.s.get("nvswitch"):
            return None
        with self._lock:
            if self.s.get("fabric_up") and self.s.get("fabric_polls_left", 0) > 0:
                self.s["fabric_polls_left"] -= 1
                return False
            return bool(self.s.get("fabric_up"))

    def restart_service(self, name: str) -> None:
        self.stop_service(name)
        self.start_service(name)

    def quit_mps(self) -> None:
        with self._lock:
            self.s["mps_active"] = False
            self._save()

    def start_mps(self) -> None:
        with self._lock:
            self.s["mps_active"] = True
            self._save()

    def terminate_process(self, pid: int, start_time: int | None) -> Termination:
        self._fault("stop_consumers")
        if pid <= 1:
            return Termination(pid, "refused", "never signal PID 1 (or lower)", holds_on=True)
        with self._lock:
            for p in self.s["processes"]:
                if p["pid"] == pid and p.get("alive", True):
                    if start_time is not None and p.get("start_time", 1000 + pid) != start_time:
                        return Termination(pid, "refused", f"pid {pid} now belongs to another process")
                    self._latency("kill_grace" if p.get("ignores_sigterm") else "terminate")
                    p["alive"] = False
                    if p.get("pod"):  # kubelet starts the pod's container again, on the same GPUs
                        again = {k: v for k, v in p.items() if k not in ("alive", "start_time")}
                        self.s["processes"].append({**again, "pid": pid + 10000, "pgrp": pid + 10000})
                    child = p.pop("spawns_on_kill", None)
                    if child:  # a child forked just before the signal: it inherited the descriptors
                        self.s["processes"].append(
                            {"holds": list(p.get("holds", [])), "pgrp": p.get("pgrp", pid), "comm": "child", **child}
                        )
                    self._save()
                    if p.get("ignores_sigterm"):
                        return Termination(pid, "killed", "ignored SIGTERM; SIGKILL")
                    return Termination(pid, "terminated", "exited after SIGTERM")
        return Termination(pid, "gone", "exited before SIGTERM")

    def bind_console(self, vtcon: str, bind: bool) -> None:
        with self._lock:
            if vtcon not in self.s["consoles"]:
                raise HostError(f"/sys/class/vtconsole/{vtcon}/bind: No such file or directory")
            if bind and "nvidia_drm" not in self.s["loaded"]:
                raise HostError(f"/sys/class/vtconsole/{vtcon}/bind: No such device")
            bound = [v for v in self.s["consoles_bound"] if v != vtcon]
            self.s["consoles_bound"] = bound + ([vtcon] if bind else [])
            self._save()

    # modules ----------------------------------------------------------------------------------
    def unload_module(self, name: str) -> None:
        self._fault("unload_modules")
        with self._lock:
            if not self.s["kernel"].get("module_unload_supported", True):
                raise HostError(f"rmmod: ERROR: could not remove '{name}': Function not implemented")
            if name not in self.s["loaded"]:
                raise HostError(f"rmmod: ERROR: Module {name} is not currently loaded")
            holders = self.module_holders(name)
            if holders:
                raise HostError(f"rmmod: ERROR: Module {name} is in use by: {' '.join(holders)}")
            if self.module_users(name):
                raise HostError(f"rmmod: ERROR: Module {name} is in use")
        self._latency("unload_module")
        with self._lock:
            del self.s["loaded"][name]
            self._save()

    def load_module(self, name: str, parameters: dict[str, str]) -> None:
        self._fault("load_modules")
        with self._lock:
            if self.s["kernel"].get("modules_disabled"):
                raise HostError(f"modprobe: ERROR: could not insert '{name}': Operation not permitted")
            if name in self.s["loaded"]:
                return
            for dep in DEPENDS.get(name, ()):
                if dep == "ib_core":
                    if not self.mofed_ready():
                        raise HostError(f"modprobe: ERROR: could not insert '{name}': Invalid argument")
                    continue
                if dep not in self.s["loaded"]:
                    raise HostError(
                        f"modprobe: ERROR: could not insert '{name}': Unknown symbol in module, or unknown parameter (see dmesg)"
                    )
            if (
                name != "nvidia"
                and "nvidia" in self.s["loaded"]
                and self.s["loaded_version"] != self.s["installed_version"]
            ):
                # As the real kernel showed (tests/vm): a dependent from disk refuses to load next to
                # an nvidia of another version ("NVRM: API mismatch").
                raise HostError(f"modprobe: ERROR: could not insert '{name}': Invalid argument")
        scale = len(self.s["gpus"]) if name == "nvidia" else 1
        self._latency("load_module_per_gpu" if name == "nvidia" else "load_module", scale)
        with self._lock:
            self.s["loaded"][name] = dict(parameters) | {
                k: v for k, v in self.s.get("modprobe_d", {}).get(name, {}).items() if k not in parameters
            }
            if name == "nvidia":
                for gpu in self.s["gpus"]:
                    gpu["mig_now"] = []  # a new driver instance: MIG mode stays, every instance is gone
                self.s["loaded_version"] = self.s["installed_version"]
                self.s["fabric_up"] = False  # a new driver instance: the fabric manager must set it up again
                for gpu in self.s["gpus"]:
                    gpu["persistence_now"] = False  # a fresh driver instance starts with persistence off
            self._save()

    def mofed_ready(self) -> bool:
        return bool(self.s.get("mofed_ready", True))

    def install_driver(self, path: str, module_type: str | None) -> None:
        self._fault("install_driver")
        with self._lock:
            if "nvidia" in self.s["loaded"]:
                raise HostError("ERROR: An NVIDIA kernel module 'nvidia' appears to already be loaded in your kernel.")
            version = os.path.basename(path).removeprefix("NVIDIA-Linux-x86_64-").removesuffix(".run")
            self.s["installed_version"] = version
            self._save()

    def verify(self, expected_persistence: dict[str, bool]) -> list[Check]:
        self._fault("verify")
        self._latency("verify")
        status = self.nvml_status()
        lost = [g["pci_bus_id"] for g in self.s["gpus"] if g.get("lost")]
        checks = [
            Check("nvml", status == "ok", f"NVML {status}"),
            Check(
                "versions_agree",
                self.s["loaded_version"] == self.s["installed_version"],
                f"kernel module {self.s['loaded_version']}, userspace {self.s['installed_version']}",
            ),
            Check(
                "gpus_enumerate",
                status == "ok" and not lost,
                f"{len(self.s['gpus']) - len(lost) if status == 'ok' else 0} of {len(self.s['gpus'])} GPU(s)"
                + (f"; missing {', '.join(lost)}" if lost else ""),
            ),
        ]
        if self.s.get("nvswitch"):
            checks.append(
                Check(
                    "cuda_context",
                    bool(self.s.get("fabric_up")),
                    "CUDA context ok"
                    if self.s.get("fabric_up")
                    else "CUDA error 802: system not yet initialized (the NVLink fabric is not up)",
                )
            )
        return checks

    def restore_persistence(self, expected: dict[str, bool]) -> None:
        with self._lock:
            for gpu in self.s["gpus"]:
                if expected.get(gpu["pci_bus_id"]):
                    gpu["persistence_now"] = True
            self._save()

    def at_boundary(self, step: str, phase: str) -> None:
        for fault in self.s["faults"]:
            if fault.get("at") == step and fault.get("crash") == phase:
                fault["crash"] = "done"  # a node that is restarted by the test must not crash again
                self._save()
                signal.raise_signal(signal.SIGKILL)  # a simulated crash: this process dies at once

    def sleep(self, seconds: float) -> None:
        time.sleep(min(seconds, 0.01))


def _pod(pod: dict | None) -> KubePod | None:
    """A scenario process's pod (kubelet's cgroup and the runtime's names, as the live scan reads them)."""
    if not pod:
        return None
    return KubePod(
        pod["uid"],
        pod.get("runtime", "containerd"),
        pod.get("container_id", "0" * 64),
        pod.get("namespace"),
        pod.get("name"),
        pod.get("container"),
    )
