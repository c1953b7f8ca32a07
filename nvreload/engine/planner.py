"""The pure planner: a ReloadView in, ordered steps out. No I/O."""

from __future__ import annotations

from nvreload.catalog import FABRIC_SERVICES, GPU_SERVICES, LOGIND_COMM, LOGIND_UNIT
from nvreload.engine.kinds import (
    Action,
    ApplyMigMode,
    InstallDriver,
    KillProcess,
    LoadModule,
    Plan,
    QuitMps,
    RebindConsole,
    RecreateMig,
    RestartContainerEngine,
    RestartService,
    StartContainer,
    StartService,
    Step,
    StopContainer,
    StopService,
    UnbindConsole,
    UnloadModule,
    Verify,
    restart_actions,
)
from nvreload.engine.kube_refusal import refuse_kube_pods
from nvreload.engine.plan import BOOT_MODULES, OPTIONAL_MODULES, LoadedModule, ReloadView
from nvreload.errors import RefusedError
from nvreload.model import ContainerState, GpuProcess, ServiceState

_TRUE = {"y", "1", "yes", "true", "on"}
_FALSE = {"n", "0", "no", "false", "off"}
# Parameters whose non-default value matters and whose default is known: a console set up with
# modeset=1 must come back with it even when nobody wrote it in modprobe.d.
KNOWN_DEFAULTS = {("nvidia_drm", "modeset"): "N", ("nvidia_drm", "fbdev"): "N"}


class CyclicHolders(RefusedError):
    """The holders graph has a cycle: no unload order exists, so nothing is done (refused)."""


def unload_order(modules: tuple[LoadedModule, ...]) -> list[str]:
    """A topological order of the holders graph: a module goes only once nothing loaded holds it."""
    loaded = {m.name: m for m in modules}
    holders = {name: {h for h in m.holders if h in loaded} for name, m in loaded.items()}
    order: list[str] = []
    remaining = set(loaded)
    while remaining:
        free = sorted(name for name in remaining if not (holders[name] & remaining))
        if not free:
            raise CyclicHolders(
                "reload refused: the holders graph of the modules has a cycle: " + ", ".join(sorted(remaining))
            )
        # among the free ones, unload the least fundamental first (nvidia itself last)
        free.sort(key=lambda n: (n == "nvidia", n))
        order.append(free[0])
        remaining.discard(free[0])
    return order


def _same(a: str, b: str) -> bool:
    a, b = a.strip().lower(), b.strip().lower()
    return a == b or (a in _TRUE and b in _TRUE) or (a in _FALSE and b in _FALSE)


def parameters_to_restore(module: str, current: dict[str, str], configured: dict[str, str]) -> dict[str, str]:
    """Parameters to pass on load so the module comes back as it was: those whose current value
    differs from what modprobe.d (and the kernel command line) would give, plus known non-defaults."""
    restore = {}
    for key, value in current.items():
        if key in configured:
            if not _same(value, configured[key]):
                restore[key] = value
        elif (module, key) in KNOWN_DEFAULTS and not _same(value, KNOWN_DEFAULTS[(module, key)]):
            restore[key] = "1" if value.strip().lower() in _TRUE else value
    return restore


def service_stop_order(active: list[str]) -> list[str]:
    rank = {name: index for index, name in enumerate(GPU_SERVICES)}
    return sorted(active, key=lambda n: (rank.get(n, -1), n))


def units_owning(view: ReloadView, containers: tuple[ContainerState, ...]) -> dict[str, list[str]]:
    """The systemd units that own containers (Quadlet, podman generate systemd, a `docker run` in a
    service), with the containers each owns: such a container is stopped and started through its
    unit, once; stopped behind its back, systemd would start it again or fail the unit."""
    owned: dict[str, list[str]] = {}
    for container in containers:
        if container.unit and container.unit != view.own_unit:
            owned.setdefault(container.unit, []).append(container.short_name)
    return owned


def consumer_stops(
    view: ReloadView,
    containers: tuple[ContainerState, ...],
    services: tuple[ServiceState, ...],
    processes: tuple[GpuProcess, ...],
    mps_active: bool,
) -> list[Action]:
    """What stops these consumers, in order: the units that own containers, the other containers, MPS,
    services (fabric manager last), then each holder process by what owns it (its container, its
    unit) or, owned by nothing, by signal."""
    owned = units_owning(view, containers)
    stop: list[Action] = [StopService(unit, owns_containers=tuple(names)) for unit, names in owned.items()]
    for container in containers:
        if container.unit in owned:
            continue
        stop.append(
            StopContainer(
                container.name or container.id,
                id=container.id,
                timeout=container.stop_timeout,
                restart_policy=container.restart_policy,
            )
        )
    if mps_active:
        stop.append(QuitMps())
    # Never the unit nvreload itself runs in (a post-upgrade hook's, an operator's transient unit):
    # stopping it would kill this run halfway. Its GPU holders are ended one by one instead.
    services = tuple(s for s in services if s.name != view.own_unit and s.name not in owned)
    commands = {s.name: s.command for s in services}
    for name in service_stop_order([s.name for s in services]):
        command = commands[name]
        stop.append(StopService(name, command=tuple(command) if command else None))
    stop += holder_stops(view, processes, {c.id for c in containers}, {s.name for s in services} | set(owned))
    return stop


def holder_stops(
    view: ReloadView, processes: tuple[GpuProcess, ...], stopped_containers: set[str], stopped_units: set[str]
) -> list[Action]:
    """Each holder process by what owns it: nothing where its container or unit stops anyway, its
    unit, its container, or, owned by nothing, a signal."""
    stop: list[Action] = []
    for proc in processes:
        if proc.container_id and any(
            cid.startswith(proc.container_id) or proc.container_id.startswith(cid) for cid in stopped_containers
        ):
            continue
        if proc.systemd_unit and proc.systemd_unit in stopped_units:
            continue
        if proc.systemd_unit and proc.systemd_unit != view.own_unit:
            stopped_units.add(proc.systemd_unit)
            stop.append(StopService(proc.systemd_unit, reason=f"pid {proc.pid} holds the GPU"))
            continue
        if proc.container_id:
            stop.append(
                StopContainer(proc.container_id[:12], id=proc.container_id, reason=f"pid {proc.pid} holds the GPU")
            )
            stopped_containers.add(proc.container_id)
            continue
        stop.append(
            KillProcess(
                str(proc.pid),
                pid=proc.pid,
                start_time=proc.start_time,
                comm=proc.comm,
                process_group=proc.process_group,
            )
        )
    return stop


def refuse_unlisted_containers(view: ReloadView, holders: tuple[GpuProcess, ...], command: str = "reload") -> None:
    """A GPU holder in a container no engine here lists (another user's rootless Podman whose socket
    is not running, an engine that did not answer) can be stopped by nobody: a signal would only
    make its engine restart it, and a stop by id would fail halfway through the run. Refused first."""
    known = [c.id for c in view.containers]
    unlisted = [
        p
        for p in holders
        if p.container_id
        and p.pod is None
        and not any(k.startswith(p.container_id) or p.container_id.startswith(k) for k in known)
    ]
    if not unlisted:
        return
    named = "; ".join(
        f"pid {p.pid} ({p.comm}{'' if p.uid is None else f', uid {p.uid}'}) in container {(p.container_id or '')[:12]} "
        f"holds {', '.join(d.split(' ', 1)[-1] for d in p.devices) or 'a GPU'}"
        for p in unlisted
    )
    engine_error = f" ({view.container_engine_error})" if view.container_engine_error else ""
    raise RefusedError(
        f"{command} refused: GPU holders in containers that no container engine here lists{engine_error}: {named}. "
        "Stop each as the user who runs it (podman stop ID; for a rootless Podman, start that user's "
        "podman.socket and nvreload stops them through it), then run nvreload again"
    )


def logind_apart(view: ReloadView, processes: tuple[GpuProcess, ...]) -> tuple[tuple[GpuProcess, ...], list[Action]]:
    """logind holds the DRM nodes of its sessions: it is restarted, which releases them, never
    stopped as a holder. The holders without it, and the restart where it holds them."""
    if not view.logind_holds_drm:
        return processes, []
    return tuple(p for p in processes if p.comm != LOGIND_COMM), [
        RestartService(LOGIND_UNIT, reason="holds /dev/dri of nvidia_drm")
    ]


def build_plan(
    view: ReloadView,
    configured_parameters: dict[str, dict[str, str]] | None = None,
    driver: str | None = None,
    stop_only: bool = False,
    restart_container_engine: bool = False,
) -> Plan:
    configured_parameters = configured_parameters or {}
    refuse_kube_pods(view, view.processes, "--stop" if stop_only else "reload")
    refuse_unlisted_containers(view, view.processes, "--stop" if stop_only else "reload")
    processes, restart_logind = logind_apart(view, view.processes)
    stop = consumer_stops(view, view.containers, view.services, processes, view.mps_active) + restart_logind
    steps = [Step("stop_consumers", tuple(stop))]
    if stop_only:
        return Plan(tuple(steps))

    order = unload_order(view.modules)
    by_name = {m.name: m for m in view.modules}
    # A VT console on nvidia_drm's framebuffer holds the module: unbind it first, rebind it last.
    unbind: tuple[Action, ...] = tuple(UnbindConsole(vtcon) for vtcon in view.consoles)
    steps.append(Step("unload_modules", unbind + tuple(UnloadModule(name) for name in order)))
    if driver:
        module_type = {"open": "open", "proprietary": "proprietary"}.get(view.driver_flavor or "")
        steps.append(Step("install_driver", (InstallDriver(driver, module_type=module_type),)))
    load: list[Action] = []
    for name in reversed(order):
        params = parameters_to_restore(name, by_name[name].parameters, configured_parameters.get(name, {}))
        load.append(LoadModule(name, parameters=params))
    if "nvidia" not in by_name:
        # Nothing of the driver is loaded (a node booted without it, a failed earlier load): load
        # what a boot would, from what is on disk; the optional ones only where configured.
        load += [LoadModule(name) for name in boot_set(view) if name not in by_name]
    # A pending MIG mode change takes effect at the GPU's next reset: during the load the GPU is free
    # (every consumer stopped, persistence not yet back), so it is applied there, before nvidia_drm
    # loads: the driver refuses a reset while nvidia_drm is loaded ("In use by another client",
    # NVIDIA/mig-parted#181). A GPU whose mode changes keeps none of its old instances. On an
    # NVSwitch node single GPUs are never reset.
    pending = () if view.nvswitch else view.mig_pending
    load = with_mig_mode_applied(load, pending)
    load += [RebindConsole(vtcon) for vtcon in view.consoles]
    steps.append(Step("load_modules", tuple(load)))
    steps += verify_and_restart(view, stop, pending, restart_container_engine)
    return Plan(tuple(steps))


def verify_and_restart(
    view: ReloadView, stop: list[Action], pending: tuple[str, ...], restart_container_engine: bool
) -> list[Step]:
    """The reload's last two steps: the fabric and the MIG instances back, the check; then what
    stopped comes back."""
    restart = restart_actions(stop)
    # the fabric comes up before verify: without it an NVSwitch node fails its CUDA check
    fabric = [a for a in restart if isinstance(a, StartService) and a.target in FABRIC_SERVICES]
    restart = [a for a in restart if a not in fabric]
    # a reload loses every MIG instance: they come back (after the fabric) before the CUDA check
    mig: list[Action] = [
        RecreateMig(bus, instances=tuple(i.document() for i in instances))
        for bus, instances in sorted(view.mig.items())
        if bus not in pending
    ]
    steps = [Step("verify", tuple(fabric) + tuple(mig) + (Verify(persistence=dict(view.persistence)),))]
    if restart_container_engine:
        # before any container starts: the toolkit re-reads the driver's libraries on daemon start
        first_container = next((i for i, a in enumerate(restart) if isinstance(a, StartContainer)), len(restart))
        restart.insert(first_container, RestartContainerEngine())
    steps.append(Step("restart_consumers", tuple(restart)))
    return steps


def with_mig_mode_applied(load: list[Action], pending: tuple[str, ...]) -> list[Action]:
    """The module loads with a reset of each GPU whose MIG mode change is pending, after nvidia is
    in and before nvidia_drm (with it loaded the driver refuses the reset)."""
    if not pending or not any(a.target == "nvidia" for a in load):
        return load
    apply: list[Action] = [ApplyMigMode(bus) for bus in pending]
    drm = next((i for i, a in enumerate(load) if a.target == "nvidia_drm"), len(load))
    return load[:drm] + apply + load[drm:]


def boot_set(view: ReloadView) -> list[str]:
    """The modules to load on a node where nvidia is not loaded, in dependency order."""
    wanted = [m for m in BOOT_MODULES if m in view.available_modules]
    wanted += [m for m in OPTIONAL_MODULES if m in view.available_modules and m in view.configured_modules]
    return wanted if "nvidia" in wanted else []
