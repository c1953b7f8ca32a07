"""`nvreload-fleet report` on the controller: the plan and every node's result merged into one
fleet report (fleet-report.json, nvreload/schema/fleet-report.schema.json) and a table."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from nvreload.fleet.rundir import RunDir

REPORT_SCHEMA_VERSION = 1
STATES = (
    "reloaded",
    "left_drained",
    "skipped_healthy",
    "skipped_blocked",
    "failed",
    "rolled_back",
    "not_attempted",
    "unreachable",
)
FAILED_STATES = frozenset({"failed", "rolled_back"})


@dataclass
class NodeReport:
    host: str
    state: str
    driver_before: str | None = None
    driver_after: str | None = None
    drained_by_run: bool = False
    left_drained: str | None = None
    gpu_unavailable_seconds: float | None = None
    seconds: float | None = None
    error: str | None = None
    journal: str | None = None
    run_id: str | None = None
    drift: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def document(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FleetReport:
    fleet_run: str
    nodes: list[NodeReport]
    refused: str | None = None
    halted: str | None = None

    @property
    def totals(self) -> dict[str, int]:
        return {state: sum(1 for n in self.nodes if n.state == state) for state in STATES}

    @property
    def failed(self) -> bool:
        return self.refused is not None or any(n.state in FAILED_STATES for n in self.nodes)

    @property
    def result(self) -> str:
        if self.refused is not None:
            return "refused"
        if self.failed:
            return "failed"
        if self.halted:
            return "halted"
        left = self.totals["unreachable"] + self.totals["not_attempted"]
        return "incomplete" if left else "done"

    def document(self) -> dict:
        return {
            "schema_version": REPORT_SCHEMA_VERSION,
            "fleet_run": self.fleet_run,
            "finished": time.time(),
            "result": self.result,
            "refused": self.refused,
            "halted": self.halted,
            "totals": self.totals,
            "nodes": [n.document() for n in self.nodes],
        }


def node_report(host: str, planned: dict, run_dir: RunDir, targets: list[str]) -> NodeReport:
    node = NodeReport(
        host, "not_attempted", driver_before=planned.get("driver"), drift=list(planned.get("drift") or [])
    )
    verdict = planned.get("verdict")
    if verdict == "unreachable":
        node.state, node.error = "unreachable", planned.get("why")
    elif verdict in ("blocked", "unreadable"):
        node.state, node.error = "skipped_blocked", planned.get("why")
    elif verdict == "healthy":
        node.state, node.driver_after = "skipped_healthy", planned.get("driver")
    elif host in targets and run_dir.started(host):
        _take_result(node, run_dir.result(host))
    return node


def _take_result(node: NodeReport, result: dict | None) -> None:
    if result is None:
        node.state = "failed"
        node.error = "its reload started and it gave no result (it stopped answering): check it by hand"
        return
    if result.get("unreachable"):
        node.state, node.error = "unreachable", str(result.get("error") or "unreachable during its reload")
        return
    node.state = str(result.get("outcome") or "failed")
    if node.state not in STATES:
        node.state, node.error = "failed", f"unknown outcome {result.get('outcome')!r}"
        return
    for name in ("driver_before", "driver_after", "left_drained", "gpu_unavailable_seconds", "error", "journal"):
        if result.get(name) is not None:
            setattr(node, name, result[name])
    node.run_id = result.get("run_id")
    node.seconds = result.get("seconds")
    node.drained_by_run = bool(result.get("drained_by_run"))
    node.notes = [str(n) for n in result.get("notes") or []]


def build_report(run_dir: RunDir, halted: str | None = None) -> FleetReport:
    plan = run_dir.plan()
    planned = plan.get("nodes") or {}
    targets = list(plan.get("targets") or [])
    nodes = [node_report(h, planned.get(h) or {}, run_dir, targets) for h in plan.get("hosts") or []]
    return FleetReport(str(plan.get("fleet_run")), nodes, refused=plan.get("refused"), halted=halted)


def table(report: FleetReport) -> str:
    """The human table: one line per node, then the totals."""
    rows = [("NODE", "STATE", "BEFORE", "AFTER", "DRAINED", "GPUS OUT", "ERROR / NOTE")]
    for n in report.nodes:
        out = f"{n.gpu_unavailable_seconds:.1f} s" if n.gpu_unavailable_seconds is not None else "-"
        note = n.error or n.left_drained or "; ".join(n.notes) or ""
        rows.append(
            (
                n.host,
                n.state,
                n.driver_before or "-",
                n.driver_after or "-",
                "yes" if n.drained_by_run else "no",
                out,
                note,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r[:6])) + "  " + r[6] for r in rows]
    totals = ", ".join(f"{count} {state}" for state, count in report.totals.items() if count)
    lines.append(f"fleet run {report.fleet_run}: {report.result} ({totals or 'no nodes'})")
    if report.refused:
        lines.append(f"refused: {report.refused}")
    if report.halted:
        lines.append(f"halted: {report.halted}")
    return "\n".join(line.rstrip() for line in lines)
