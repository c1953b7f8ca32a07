"""`nvreload-fleet plan` on the controller: from every node's preflight facts, who is reloaded (in
which batches, the canary first), who is skipped and why, and the refusal when the rollout would
take more nodes out of service at once than the fleet allows, counting the nodes that are out
already (drained or down in Slurm, unreachable, unreadable)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from nvreload.errors import BadInputError
from nvreload.fleet.amounts import Amount, batch_sizes
from nvreload.fleet.facts import NodeFacts
from nvreload.fleet.rundir import RunDir
from nvreload.fleet.verdict import NodeReading, Verdict, decide, drained_by_nvreload
from nvreload.host.slurm import SlurmNodeState

PLAN_SCHEMA_VERSION = 1
OUT_OF_SERVICE_FLAGS = frozenset({"DRAIN", "DRAINING", "DRAINED", "DOWN", "FAIL", "MAINT"})


@dataclass(frozen=True)
class FleetPolicy:
    max_unavailable: Amount
    canary: int
    batches: list[Amount]
    max_fail_percentage: int = 0
    target_version: str | None = None
    with_driver: bool = False

    def serial(self) -> list[Amount]:
        """The play's `serial`: the canary batch, then the batches."""
        return [Amount(self.canary, False), *self.batches] if self.canary > 0 else list(self.batches)

    def document(self) -> dict:
        return {
            "max_unavailable": str(self.max_unavailable),
            "canary": self.canary,
            "batches": [str(b) for b in self.batches],
            "max_fail_percentage": self.max_fail_percentage,
            "target_version": self.target_version,
            "with_driver": self.with_driver,
        }


@dataclass
class PlannedNode:
    host: str
    verdict: str  # reload, healthy, blocked, unreachable, unreadable
    why: str
    driver: str | None = None
    drained_by: str | None = None  # None, "admin" or "nvreload" (an earlier run left it drained)
    out_of_service: bool = False
    drift: list[str] = field(default_factory=list)
    busy: bool = False
    # the run whose journal was unfinished at the preflight (a reload a dead controller started,
    # still going, or killed): if that run is what fixed the node, it counts as this rollout's
    earlier_run: str | None = None


@dataclass
class FleetPlan:
    fleet_run: str
    hosts: list[str]
    policy: FleetPolicy
    nodes: dict[str, PlannedNode]
    targets: list[str]
    batches: list[int]
    out_at_once: int
    allowed_unavailable: int
    refused: str | None

    def document(self) -> dict:
        return {
            "schema_version": PLAN_SCHEMA_VERSION,
            "fleet_run": self.fleet_run,
            "created": time.time(),
            "hosts": self.hosts,
            "policy": self.policy.document(),
            "nodes": {h: n.__dict__ for h, n in self.nodes.items()},
            "targets": self.targets,
            "canary": self.targets[: self.policy.canary],
            "batches": self.batches,
            "out_at_once": self.out_at_once,
            "allowed_unavailable": self.allowed_unavailable,
            "refused": self.refused,
        }


def new_fleet_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def plan_node(host: str, facts: NodeFacts | None, policy: FleetPolicy) -> PlannedNode:
    if facts is None:
        return PlannedNode(host, "unreachable", "no answer to the preflight", out_of_service=True)
    node = PlannedNode(host, "unreadable", facts.error or "", busy=facts.busy, earlier_run=facts.unfinished_run)
    if facts.slurm is not None:
        state = SlurmNodeState(str(facts.slurm.get("node")), str(facts.slurm.get("state")), facts.slurm.get("reason"))
        node.out_of_service = bool(state.flags & OUT_OF_SERVICE_FLAGS)
        if node.out_of_service:
            node.drained_by = "nvreload" if drained_by_nvreload(state.reason) else "admin"
    node.out_of_service = node.out_of_service or facts.busy
    if facts.status is None:
        node.why = facts.error or "nvreload --status gave no document"
        node.out_of_service = True  # nobody knows whether its GPUs serve
        return node
    reading = NodeReading.from_status(facts.status)
    node.driver, node.drift = reading.loaded_version, list(reading.drift)
    decision = decide(reading, policy.target_version, policy.with_driver)
    node.verdict, node.why = decision.verdict.value, decision.why
    if decision.verdict is Verdict.HEALTHY and (facts.busy or node.drained_by == "nvreload"):
        # an earlier run still holds it, or left it drained: its reload step waits for that run,
        # checks the node and resumes the drain nvreload left
        node.verdict, node.why = "reload", "an earlier nvreload run left it unfinished or drained: finish it"
    return node


def make_plan(hosts: list[str], run_dir: RunDir, policy: FleetPolicy, fleet_run: str | None = None) -> FleetPlan:
    if len(set(hosts)) != len(hosts):
        raise BadInputError("the host list names a host twice")
    nodes = {h: plan_node(h, _facts(run_dir, h), policy) for h in hosts}
    targets = [h for h in hosts if nodes[h].verdict == "reload"]
    sizes = batch_sizes(len(targets), policy.serial())
    already_out = {h for h, n in nodes.items() if n.out_of_service}
    out_at_once = len(already_out) + _most_newly_out(targets, sizes, already_out)
    allowed = policy.max_unavailable.of(len(hosts))
    refused = None
    if targets and out_at_once > allowed:
        refused = (
            f"{out_at_once} of {len(hosts)} nodes would be out of service at once "
            f"({len(already_out)} already: {', '.join(sorted(already_out)) or 'none'}; "
            f"the largest batch adds {out_at_once - len(already_out)}), "
            f"more than nvreload_max_unavailable={policy.max_unavailable} ({allowed})"
        )
    return FleetPlan(
        fleet_run or new_fleet_run_id(), hosts, policy, nodes, targets, sizes, out_at_once, allowed, refused
    )


def _most_newly_out(targets: list[str], sizes: list[int], already_out: set[str]) -> int:
    most, start = 0, 0
    for size in sizes:
        batch = targets[start : start + size]
        most = max(most, len([h for h in batch if h not in already_out]))
        start += size
    return most


def _facts(run_dir: RunDir, host: str) -> NodeFacts | None:
    data = run_dir.facts(host)
    return NodeFacts.from_document(data) if data is not None else None
