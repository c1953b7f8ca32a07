"""What an acting command asks for (--reload, --reset, --stop, --start, --rollback), as a typed
value: its own module, off the status path (where every class definition costs)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ActionRequest:
    """--reload, --reset, --stop, --start, --rollback, with what modifies them."""

    action: str
    simulate: str | None = None  # None: the live node; "": the built-in scenario; else a scenario file
    root: str | None = None  # only with --dry-run: plan against a snapshot
    driver: str | None = None
    dry_run: bool = False
    yes: bool = False
    force_display: bool = False
    restart_docker: bool = False
    peermem_wait: float = 300.0  # seconds nvidia_peermem waits for MOFED, once per run
    gpus: str | None = None  # --reset: "all", or nvidia-smi indexes, PCI addresses, UUIDs (comma list)
    when_idle: bool = False  # --reload only while nothing but the known GPU services uses the GPUs
    # --after-upgrade: a package hook ran nvreload (apt, dnf, manual): reload only if the diagnosis asks
    # for it, and then only as the policy allows ("report" or "when-idle")
    trigger: str | None = None
    on_upgrade: str | None = None
    drain: str | None = None  # "slurm": drain the node in Slurm first, resume it after
    slurm_node: str | None = None  # the node's Slurm name, when it is not the short host name
    drain_timeout: float = 3600.0  # seconds the node's jobs may take to end
