"""A command line that asks only for status, as a typed value (the acting commands' request is
actions.ActionRequest: kept off the status path, where every class definition costs)."""

from __future__ import annotations

from nvreload.records import record

FORMATS = ("human", "json", "prometheus")


@record
class StatusRequest:
    """A command line that asks for status and nothing else."""

    root: str | None = None
    format: str = "human"  # one of FORMATS
    verbose: bool = False
    output: str | None = None  # --output FILE: the json or prometheus text goes there, atomically
    baseline: str | None = None  # --baseline FILE: a known-good node's status document; drift_* findings
