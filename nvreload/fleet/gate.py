"""`nvreload-fleet gate` on the controller, after each batch: go on, or halt the rollout.

A failed canary always halts (nothing else runs unless the canaries end reloaded and verified).
After that the rollout halts once the share of failed nodes among those it started exceeds
nvreload_max_fail_percentage (default 0: the first failed node halts it). A node that was started
and left no result (it stopped answering mid-reload) counts as failed: nobody knows its state."""

from __future__ import annotations

from dataclasses import dataclass

from nvreload.fleet.rundir import RunDir

SUCCESS = frozenset({"reloaded", "left_drained", "skipped_healthy", "skipped_blocked"})


@dataclass(frozen=True)
class GateDecision:
    halt: bool
    why: str

    def line(self) -> str:
        return f"{'halt' if self.halt else 'continue'}: {self.why}"


def failed_hosts(run_dir: RunDir, hosts: list[str]) -> list[str]:
    failed = []
    for host in hosts:
        if not run_dir.started(host):
            continue
        result = run_dir.result(host)
        if result is None or result.get("outcome") not in SUCCESS:
            failed.append(host)
    return failed


def decide_gate(run_dir: RunDir, max_fail_percentage: int) -> GateDecision:
    plan = run_dir.plan()
    targets = list(plan.get("targets") or [])
    started = [h for h in targets if run_dir.started(h)]
    failed = failed_hosts(run_dir, started)
    canary_failed = [h for h in plan.get("canary") or [] if h in failed]
    if canary_failed:
        return GateDecision(True, f"the canary failed ({', '.join(canary_failed)}): no other node is touched")
    if not started:
        return GateDecision(False, "no node started yet")
    share = 100 * len(failed) / len(started)
    if share > max_fail_percentage:
        return GateDecision(
            True,
            f"{len(failed)} of {len(started)} started nodes failed ({', '.join(failed)}), "
            f"more than nvreload_max_fail_percentage={max_fail_percentage}%",
        )
    return GateDecision(False, f"{len(started) - len(failed)} of {len(started)} started nodes reloaded or skipped")
