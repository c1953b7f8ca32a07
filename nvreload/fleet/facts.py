"""`nvreload-fleet facts` on a node: what the preflight needs to know of it, in one JSON document:
its status document (with drift findings against the fleet's baseline), its state in Slurm, and
whether an earlier run still holds it or left its journal unfinished."""

from __future__ import annotations

from dataclasses import dataclass

from nvreload.errors import BadInputError, HostError
from nvreload.fleet.node_side import NodeTools, short_hostname, slurm_document

FACTS_SCHEMA_VERSION = 1
STATUS_EXITS = (0, 1, 2, 3)  # OK, WARNING, CRITICAL, UNKNOWN: a status was read


@dataclass(frozen=True)
class NodeFacts:
    host: str
    status: dict | None
    status_exit: int
    error: str | None
    slurm: dict | None
    busy: bool
    journal_unfinished: bool
    unfinished_run: str | None = None  # the run id of that journal: a rerun knows it by it

    def document(self) -> dict:
        return {
            "schema_version": FACTS_SCHEMA_VERSION,
            "host": self.host,
            "status": self.status,
            "status_exit": self.status_exit,
            "error": self.error,
            "slurm": self.slurm,
            "busy": self.busy,
            "journal_unfinished": self.journal_unfinished,
            "unfinished_run": self.unfinished_run,
        }

    @classmethod
    def from_document(cls, data: dict) -> NodeFacts:
        if not isinstance(data, dict) or data.get("schema_version") != FACTS_SCHEMA_VERSION:
            raise BadInputError("not the facts of a node (nvreload-fleet facts)")
        return cls(
            host=str(data.get("host")),
            status=data.get("status") if isinstance(data.get("status"), dict) else None,
            status_exit=int(data.get("status_exit", 70)),
            error=data.get("error"),
            slurm=data.get("slurm") if isinstance(data.get("slurm"), dict) else None,
            busy=bool(data.get("busy")),
            journal_unfinished=bool(data.get("journal_unfinished")),
            unfinished_run=str(data["unfinished_run"]) if data.get("unfinished_run") else None,
        )


def gather(tools: NodeTools, baseline: str | None) -> NodeFacts:
    status = tools.status(*(["--baseline", baseline] if baseline else []))
    error = None
    if status.exit_code not in STATUS_EXITS or status.document is None:
        error = status.error or f"nvreload --status exited {status.exit_code}"
    unfinished_run = tools.unfinished_run()  # the journal, read once for both fields
    slurm, slurm_error = None, None
    try:
        slurm = slurm_document(tools.slurm_state())
    except (BadInputError, HostError) as exc:
        slurm_error = f"Slurm: {exc.message}"
    return NodeFacts(
        host=short_hostname(),
        status=status.document if error is None else None,
        status_exit=status.exit_code,
        error="; ".join(e for e in (error, slurm_error) if e) or None,
        slurm=slurm,
        busy=tools.busy(),
        journal_unfinished=unfinished_run is not None,
        unfinished_run=unfinished_run,
    )
