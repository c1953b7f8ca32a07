"""One way from a read node to the planner's view, for the live machine and the simulated node
alike: the read model (a NodeState), its diagnosis (blockers, the recommended action), and the MIG
instances recorded where NVML says a GPU has MIG mode on. A simulated run therefore decides with
the rules a live run decides with; the simulated node keeps only the world's rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from nvreload.diagnosis.findings import diagnose
from nvreload.engine.plan import MigInstance, ReloadView, reload_view
from nvreload.errors import HostError
from nvreload.model import NodeState


def observed_view(
    node: NodeState,
    read_mig: Callable[[], dict[str, tuple[MigInstance, ...]]],
    consoles: tuple[str, ...] = (),
    container_engine: dict | None = None,
    own_unit: str | None = None,
    available_modules: tuple[str, ...] = (),
    configured_modules: frozenset[str] = frozenset(),
) -> ReloadView:
    """`read_mig`: the MIG instances per GPU, asked only when a GPU has MIG mode on; a HostError
    from it blocks the reload (instances that cannot be recorded cannot be brought back)."""
    view = reload_view(
        node, diagnose(node), consoles, container_engine, own_unit, available_modules, configured_modules
    )
    if any(d.mig_mode for d in node.nvml.devices):
        try:
            view = replace(view, mig=read_mig())
        except HostError:
            view = replace(view, blockers=view.blockers + ("mig_geometry_unreadable",))
    return view
