"""A command line that asks only for status, as a typed value (the acting commands' request is
actions.ActionRequest: kept off the status path, where every class definition costs)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StatusRequest:
    """A command line that asks for status and nothing else."""

    root: str | None = None
    as_json: bool = False
    verbose: bool = False
