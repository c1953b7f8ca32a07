from plan_helpers import DRM_STACK, LOGIND_ON_DRM

from nvreload.engine.plan import LoadedModule, ReloadView
from nvreload.engine.planner import build_plan, parameters_to_restore, unload_order
from nvreload.model import ContainerState, GpuProcess, ServiceState


def test_unload_order_follows_holders_not_a_fixed_list():
    modules = (
        LoadedModule("nvidia", ("nvidia_uvm", "nvidia_modeset", "gdrdrv", "vendor_helper")),
        LoadedModule("nvidia_uvm", ()),
        LoadedModule("nvidia_modeset", ("nvidia_drm",)),
        LoadedModule("nvidia_drm", ()),
        LoadedModule("gdrdrv", ()),
        LoadedModule("vendor_helper", ()),
    )
    order = unload_order(modules)
    assert order[-1] == "nvidia"
    assert order.index("nvidia_drm") < order.index("nvidia_modeset")
    assert set(order) == {m.name for m in modules}


def test_load_order_is_the_reverse_and_restores_exactly_the_loaded_set():
    view = ReloadView(
        modules=(LoadedModule("nvidia", ("nvidia_uvm",)), LoadedModule("nvidia_uvm", ())),
        processes=(),
        services=(),
        containers=(),
    )
    plan = build_plan(view)
    assert [a.target for a in plan.step("unload_modules").actions] == ["nvidia_uvm", "nvidia"]
    assert [a.target for a in plan.step("load_modules").actions] == ["nvidia", "nvidia_uvm"]  # no nvidia_drm added


def test_parameters_restored_are_those_that_differ_from_modprobe_d():
    current = {"NVreg_EnableGpuFirmware": "1", "NVreg_OpenRmEnableUnsupportedGpus": "1", "uvm_thing": "5"}
    configured = {"NVreg_EnableGpuFirmware": "1", "NVreg_OpenRmEnableUnsupportedGpus": "0"}
    assert parameters_to_restore("nvidia", current, configured) == {"NVreg_OpenRmEnableUnsupportedGpus": "1"}
    assert parameters_to_restore("nvidia_drm", {"modeset": "Y"}, {}) == {"modeset": "1"}
    assert parameters_to_restore("nvidia_drm", {"modeset": "Y"}, {"modeset": "1"}) == {}


def test_processes_in_containers_and_units_are_stopped_through_them_not_killed():
    proc = lambda pid, c=None, u=None: GpuProcess(pid, 1, "python3", "", ("195:0 /dev/nvidia0",), c, u, "procfs")  # noqa: E731
    view = ReloadView(
        modules=(LoadedModule("nvidia", ()),),
        processes=(proc(10, c="abc123abc123"), proc(11, u="my-trainer.service"), proc(12)),
        services=(ServiceState("nvidia-persistenced.service", "active"),),
        containers=(ContainerState("abc123abc123ffff", "train", True, ("gpu",)),),
    )
    actions = [(a.kind, a.target) for a in build_plan(view).step("stop_consumers").actions]
    assert actions == [
        ("stop_container", "train"),
        ("stop_service", "nvidia-persistenced.service"),
        ("stop_service", "my-trainer.service"),
        ("kill_process", "12"),
    ]
    restart = [(a.kind, a.target) for a in build_plan(view).step("restart_consumers").actions]
    assert restart == [
        ("start_service", "my-trainer.service"),
        ("start_service", "nvidia-persistenced.service"),
        ("start_container", "train"),
    ]


def test_the_fabric_manager_stops_last_and_starts_before_verify_ahead_of_every_other_consumer():
    # an NVSwitch node's CUDA check fails (error 802) until the fabric manager is up for the new driver
    view = ReloadView(
        modules=(LoadedModule("nvidia", ()),),
        processes=(),
        containers=(),
        services=(
            ServiceState("nvidia-fabricmanager.service", "active"),
            ServiceState("nvidia-persistenced.service", "active"),
            ServiceState("nvidia-dcgm.service", "active"),
            ServiceState("nvidia-imex.service", "active"),
        ),
    )
    plan = build_plan(view)
    stops = [a.target for a in plan.step("stop_consumers").actions]
    verify = [(a.kind, a.target) for a in plan.step("verify").actions]
    restarts = [a.target for a in plan.step("restart_consumers").actions]
    assert stops[-2:] == ["nvidia-imex.service", "nvidia-fabricmanager.service"]
    assert verify == [
        ("start_service", "nvidia-fabricmanager.service"),
        ("start_service", "nvidia-imex.service"),
        ("verify", "driver"),
    ]
    assert restarts == ["nvidia-persistenced.service", "nvidia-dcgm.service"]


def test_a_holders_cycle_is_refused_with_the_refusal_exit_code_not_an_internal_error():
    import pytest

    from nvreload.engine.planner import CyclicHolders
    from nvreload.errors import ExitCode
    from nvreload.frontend import guarded

    cyclic = (LoadedModule("nvidia", ("nvidia_uvm",)), LoadedModule("nvidia_uvm", ("nvidia",)))
    with pytest.raises(CyclicHolders, match="cycle: nvidia, nvidia_uvm"):
        unload_order(cyclic)
    assert guarded(lambda: unload_order(cyclic) and 0, verbose=False) == ExitCode.REFUSED


def test_the_unit_nvreload_runs_in_is_never_stopped_its_holders_are_ended_one_by_one():
    # Learned on the real kernel (tests/vm): a hook's own unit held the GPU, the plan stopped that
    # unit, and systemd killed nvreload halfway through its run.
    proc = lambda pid, u: GpuProcess(pid, 1, "sleep", "", ("195:0 /dev/nvidia0",), None, u, "procfs")  # noqa: E731
    view = ReloadView(
        modules=(LoadedModule("nvidia", ()),),
        containers=(),
        processes=(proc(20, "nvreload-hook.service"), proc(21, "trainer.service"), proc(22, "trainer.service")),
        services=(ServiceState("nvreload-hook.service", "active"),),
        own_unit="nvreload-hook.service",
    )
    actions = [(a.kind, a.target) for a in build_plan(view).step("stop_consumers").actions]
    assert actions == [("kill_process", "20"), ("stop_service", "trainer.service")]


def test_unload_order_follows_holders_where_alphabetical_order_would_be_wrong():
    # Alphabetically gdrdrv goes before nvidia_fs and nvidia_modeset before nvidia_drm would, yet
    # each is held by the other: rmmod refuses a module while a holder is loaded.
    modules = (
        LoadedModule("nvidia", ("nvidia_modeset", "gdrdrv", "nvidia_uvm")),
        LoadedModule("gdrdrv", ("nvidia_fs",)),
        LoadedModule("nvidia_fs", ()),
        LoadedModule("nvidia_uvm", ("nvidia_peermem",)),
        LoadedModule("nvidia_peermem", ()),
        LoadedModule("nvidia_modeset", ("nvidia_drm",)),
        LoadedModule("nvidia_drm", ()),
    )
    order = unload_order(modules)
    assert order != sorted(order, key=lambda n: (n == "nvidia", n))
    for module in modules:
        for holder in module.holders:
            assert order.index(holder) < order.index(module.name), (holder, module.name, order)
    assert order[-1] == "nvidia"


def test_logind_holding_drm_is_restarted_once_never_stopped_with_the_consumers():
    view = ReloadView(modules=DRM_STACK, processes=(LOGIND_ON_DRM,), services=(), containers=(), logind_holds_drm=True)
    plan = build_plan(view)
    assert [(a.kind, a.target) for a in plan.step("stop_consumers").actions] == [
        ("restart_service", "systemd-logind.service")
    ]
    assert plan.step("restart_consumers").actions == ()  # nothing to start again: it never stopped


def test_a_pending_mig_mode_is_applied_after_nvidia_loads_and_before_nvidia_drm():
    view = ReloadView(modules=DRM_STACK, processes=(), services=(), containers=(), mig_pending=("0000:2a:00.0",))
    load = [(a.kind, a.target) for a in build_plan(view).step("load_modules").actions]
    assert load == [
        ("load_module", "nvidia"),
        ("load_module", "nvidia_modeset"),
        ("apply_mig_mode", "0000:2a:00.0"),  # the driver refuses a reset while nvidia_drm is loaded
        ("load_module", "nvidia_drm"),
    ]


def test_without_nvidia_drm_the_pending_mig_mode_is_applied_after_the_last_module():
    view = ReloadView(
        modules=(LoadedModule("nvidia", ("nvidia_uvm",)), LoadedModule("nvidia_uvm", ())),
        processes=(),
        services=(),
        containers=(),
        mig_pending=("0000:2a:00.0",),
    )
    load = [(a.kind, a.target) for a in build_plan(view).step("load_modules").actions]
    assert load == [("load_module", "nvidia"), ("load_module", "nvidia_uvm"), ("apply_mig_mode", "0000:2a:00.0")]


def test_containers_a_unit_owns_are_stopped_and_started_through_the_unit_once():
    view = ReloadView(
        modules=(LoadedModule("nvidia", ()),),
        processes=(),
        services=(ServiceState("q-train.service", "active"),),
        containers=(
            ContainerState(
                "a" * 64, "q-train", True, ("cdi:nvidia.com/gpu=0",), engine="podman", unit="q-train.service"
            ),
            ContainerState(
                "b" * 64, "q-sidecar", True, ("cdi:nvidia.com/gpu=1",), engine="podman", unit="q-train.service"
            ),
            ContainerState("c" * 64, "loose", True, ("cdi:nvidia.com/gpu=1",), engine="podman"),
        ),
    )
    plan = build_plan(view)
    stop = [(a.kind, a.target) for a in plan.step("stop_consumers").actions]
    assert stop == [("stop_service", "q-train.service"), ("stop_container", "loose")]
    owns = list(plan.step("stop_consumers").actions[0].owns_containers)
    assert owns == [f"q-train ({'a' * 12})", f"q-sidecar ({'b' * 12})"]
    restart = [(a.kind, a.target) for a in plan.step("restart_consumers").actions]
    assert restart == [("start_service", "q-train.service"), ("start_container", "loose")]
