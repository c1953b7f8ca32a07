"""What a command line asks for, as typed values: the CLI builds one, the application acts on it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StatusRequest:
    """A command line that asks for status and nothing else."""

    root: str | None = None
    as_json: bool = False
    verbose: bool = False


@dataclass
class ActionRequest:
    """--reload, --stop, --start, --rollback (and --reset, not built yet), with what modifies them."""

    action: str
    simulate: str | None = None  # None: the live node; "": the built-in scenario; else a scenario file
    root: str | None = None  # only with --dry-run: plan against a snapshot
    driver: str | None = None
    dry_run: bool = False
    yes: bool = False
    force_display: bool = False
    restart_docker: bool = False
