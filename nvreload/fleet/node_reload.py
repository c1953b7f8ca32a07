"""`nvreload-fleet reload` on a node: one node's part of a rollout, from its last look to the
node's result document the controller's report is merged from.

The reload itself is nvreload's (`--reload --drain slurm`: journaled, rolled back on failure, the
drain resumed only where nvreload drained). What this adds is what a rollout needs around it:
- a node healthy by now is left alone, and a node blocked by now is never touched (the preflight
  is minutes old by the time a late batch comes);
- a run that still holds the node (started by a controller that died) is waited for, not raced;
  if its journal says it reloaded the node (the run the preflight found unfinished, or the one
  waited for here), the node counts as reloaded by this rollout, with that run's figures;
- an earlier run's unfinished journal is finished (--rollback) before a new run starts;
- a .run is checked against its SHA-256 before nvreload sees it;
- the result is verified: the module loaded afterwards must be the version the fleet wants;
- a node whose reload failed stays drained, its reason naming nvreload and the run, so that no job
  lands on it and a rerun recognises it as nvreload's (the drain reason starts as nvreload's own).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

from nvreload.engine.journal import Journal
from nvreload.errors import BadInputError, HostError
from nvreload.fleet.node_side import Invocation, NodeTools, short_hostname
from nvreload.fleet.verdict import NodeReading, Verdict, decide, drained_by_nvreload
from nvreload.host.slurm import REASON, SlurmNodeState

RESULT_SCHEMA_VERSION = 1
# nvreload's exits that leave the node as it was before the run (rolled back, or refused before
# anything stopped: a drain that timed out, a blocker found at the last look)
AS_BEFORE_EXITS = (10, 77)


@dataclass(frozen=True)
class ReloadRequest:
    drain_timeout: float
    driver: str | None = None
    driver_sha256: str | None = None
    target_version: str | None = None
    fleet_run: str | None = None
    earlier_run: str | None = None  # the run the preflight found unfinished on the node


@dataclass
class NodeRun:
    host: str
    outcome: str  # reloaded, skipped_healthy, skipped_blocked, failed, rolled_back, left_drained
    driver_before: str | None = None
    driver_after: str | None = None
    wanted_version: str | None = None
    exit_code: int | None = None
    drained_by_run: bool = False
    left_drained: str | None = None
    gpu_unavailable_seconds: float | None = None
    seconds: float = 0.0
    error: str | None = None
    journal: str | None = None
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)

    def document(self) -> dict:
        return {"schema_version": RESULT_SCHEMA_VERSION, **self.__dict__, "seconds": round(self.seconds, 1)}


def reload_node(tools: NodeTools, request: ReloadRequest) -> NodeRun:
    started = time.monotonic()
    run = NodeRun(host=short_hostname(), outcome="failed")
    try:
        _reload(tools, request, run)
    except (BadInputError, HostError) as exc:
        run.outcome, run.error = "failed", exc.message
    run.seconds = time.monotonic() - started
    return run


def _reload(tools: NodeTools, request: ReloadRequest, run: NodeRun) -> None:
    reading = _read(tools)
    waited = tools.wait_while_busy(request.drain_timeout + 1800)
    if waited:
        run.notes.append("waited for a run that held the node (started by an earlier controller)")
        reading = _read(tools)
    decision = decide(reading, request.target_version, request.driver is not None)
    earlier = _earlier_reload(tools, request, waited)
    if earlier is not None and decision.verdict is Verdict.HEALTHY:
        run.wanted_version = request.target_version or reading.userspace_version
        _finished_by_earlier_run(tools, reading, earlier, run)
        return
    run.driver_before = reading.loaded_version
    run.wanted_version = request.target_version or reading.userspace_version
    if decision.verdict is Verdict.BLOCKED:
        run.outcome, run.error = "skipped_blocked", decision.why
        return
    if decision.verdict is Verdict.HEALTHY:
        run.outcome, run.driver_after = "skipped_healthy", reading.loaded_version
        _resume_leftover(tools, run)
        return
    if tools.journal_unfinished():
        _finish_earlier_journal(tools, run)
    if request.driver is not None:
        _check_driver(request)
    before = tools.slurm_state()
    invocation = tools.nvreload(*_reload_args(tools, request), timeout=request.drain_timeout + 3600)
    _take_report(invocation, run)
    if invocation.exit_code == 0:
        _verify(tools, run)
    else:
        run.outcome = "rolled_back" if invocation.exit_code in AS_BEFORE_EXITS else "failed"
        run.error = _error_of(invocation)
    _settle_drain(tools, before, run, request)


def _read(tools: NodeTools) -> NodeReading:
    status = tools.status()
    if status.document is None:
        raise HostError(f"nvreload --status gave no document: {status.error or f'exit {status.exit_code}'}")
    return NodeReading.from_status(status.document)


def _reload_args(tools: NodeTools, request: ReloadRequest) -> list[str]:
    args = ["--reload", "--yes", "--json"]
    if tools.slurm_node:
        args += ["--drain", "slurm", "--slurm-node", tools.slurm_node, "--drain-timeout", f"{request.drain_timeout:g}"]
    if request.driver:
        args += ["--driver", request.driver]
    return args


def _take_report(invocation: Invocation, run: NodeRun) -> None:
    run.exit_code = invocation.exit_code
    report = invocation.document or {}
    run.gpu_unavailable_seconds = report.get("gpu_unavailable_seconds")
    journal = report.get("journal") or {}
    run.journal, run.run_id = journal.get("path"), journal.get("run_id")
    slurm = report.get("slurm") or {}
    run.drained_by_run = bool(slurm.get("drained"))
    if slurm.get("jobs_waited_for"):
        run.notes.append(
            f"waited {slurm.get('waited_seconds', 0)} s for job(s) {', '.join(map(str, slurm['jobs_waited_for']))} to end"
        )


def _error_of(invocation: Invocation) -> str:
    report = invocation.document or {}
    return str(report.get("error") or invocation.error or f"nvreload --reload exited {invocation.exit_code}")


def _verify(tools: NodeTools, run: NodeRun) -> None:
    """The module loaded now must be the one the fleet wants: nvreload verified that the GPUs
    answer, this checks that they answer with the right driver."""
    after = _read(tools)
    run.driver_after = after.loaded_version
    if run.wanted_version and after.loaded_version != run.wanted_version:
        run.outcome = "failed"
        run.error = f"after the reload {after.loaded_version} is loaded, {run.wanted_version} was wanted"
    else:
        run.outcome = "reloaded"


def _settle_drain(tools: NodeTools, before: SlurmNodeState | None, run: NodeRun, request: ReloadRequest) -> None:
    """A failed node stays out of the scheduler, with a reason naming nvreload and the run; a
    reloaded node an admin had drained stays drained (nvreload resumed only its own drain)."""
    node = tools.slurm()
    if node is None:
        return
    if run.outcome == "reloaded":
        now = node.state()
        if now.flags & {"DRAIN", "DRAINING", "DRAINED", "DOWN"}:
            run.outcome, run.left_drained = "left_drained", f"drained before the run: {now.reason or now.state}"
        return
    if before is not None and before.held_by_admin:
        run.left_drained = f"drained before the run, left as it was: {before.reason or before.state}"
        return
    reason = f"{REASON} failed, {run.outcome.replace('_', ' ')} (run {run.run_id or 'none'}"
    reason += f", fleet run {request.fleet_run})" if request.fleet_run else ")"
    now = node.state()
    if not drained_by_nvreload(now.reason) or "reboot" not in (now.reason or ""):
        node.drain(reason)  # a reboot reason nvreload itself wrote says more: it stays
    run.left_drained = node.state().reason or reason


def _resume_leftover(tools: NodeTools, run: NodeRun) -> None:
    """A healthy node still drained for nvreload's reason, by a run that is over: resume it."""
    node, state = tools.slurm(), tools.slurm_state()
    if node is None or state is None or not drained_by_nvreload(state.reason) or tools.journal_unfinished():
        return
    node.resume()
    run.notes.append(f"resumed: drained by an earlier nvreload run ({state.reason})")


def _earlier_reload(tools: NodeTools, request: ReloadRequest, waited: bool) -> Journal | None:
    """The journal of an earlier reload that ended reloaded and is this rollout's to count: the
    run the preflight found unfinished (whether it ended before this step or while it waited), or
    the run this step waited for. The journal is the evidence, not how the timing fell."""
    journal = tools.journal()
    if journal is None or journal.action != "reload" or journal.state != "reloaded":
        return None
    if request.earlier_run is not None:
        return journal if journal.run_id == request.earlier_run else None
    return journal if waited else None


def _finished_by_earlier_run(tools: NodeTools, reading: NodeReading, earlier: Journal, run: NodeRun) -> None:
    """The earlier run's own figures: its journal keeps the report it ended with."""
    result = earlier.result
    run.outcome = "reloaded"
    run.driver_before = earlier.module_version_before
    run.driver_after = reading.loaded_version
    run.exit_code = 0
    run.journal, run.run_id = earlier.path, earlier.run_id
    run.gpu_unavailable_seconds = result.get("gpu_unavailable_seconds")
    run.drained_by_run = bool((result.get("slurm") or {}).get("drained"))
    run.notes.append(f"the earlier run {earlier.run_id} finished the reload")
    _resume_leftover(tools, run)


def _finish_earlier_journal(tools: NodeTools, run: NodeRun) -> None:
    done = tools.nvreload("--rollback", "--yes", "--json", timeout=3600)
    if done.exit_code not in (0, 10):
        raise HostError(f"an earlier run's journal could not be finished (--rollback): {_error_of(done)}")
    run.notes.append("finished an earlier run's journal (--rollback) first")


def _check_driver(request: ReloadRequest) -> None:
    assert request.driver is not None
    if not request.driver_sha256:
        raise BadInputError("a driver .run needs its SHA-256 (nvreload_driver_sha256)")
    digest = hashlib.sha256()
    try:
        with open(request.driver, "rb") as installer:
            for chunk in iter(lambda: installer.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise BadInputError(f"{request.driver}: {exc.strerror}") from None
    if digest.hexdigest() != request.driver_sha256.lower():
        raise BadInputError(f"{request.driver}: SHA-256 {digest.hexdigest()} is not {request.driver_sha256}")
