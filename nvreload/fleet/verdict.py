"""What a node's `nvreload --status --json` document means for a rolling reload: reload it, leave
it (healthy), or never touch it (blocked: a reboot, a rebuild, a service call, or a reload the node
itself says cannot run). The controller's plan and the node's own last look before it acts both
decide with this one function, so the two cannot disagree."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

# a finding that recommends one of these is not fixed by a module reload: the node is reported and
# never touched (the "a finding that says reboot, rebuild or service")
BLOCKING_ACTIONS = frozenset(
    {"reboot", "rebuild_module", "service_hardware", "fix_platform", "sign_module", "check_access", "install_driver"}
)
NVRELOAD_REASON_PREFIX = "nvreload:"  # every drain reason nvreload writes starts so


class Verdict(str, Enum):
    RELOAD = "reload"
    HEALTHY = "healthy"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class NodeReading:
    """The parts of a status document a rollout decides on."""

    loaded_version: str | None
    userspace_version: str | None
    recommended_action: str
    reload_feasible: bool
    blockers: tuple[str, ...]
    drift: tuple[str, ...]  # drift_* finding codes (--baseline)
    blocking_findings: tuple[str, ...]  # "code: message" of the findings that block

    @classmethod
    def from_status(cls, status: dict) -> NodeReading:
        driver = status.get("driver") or {}
        reload = status.get("reload") or {}
        findings = [f for f in status.get("findings") or [] if isinstance(f, dict)]
        return cls(
            loaded_version=driver.get("kernel_module_version"),
            userspace_version=driver.get("userspace_version"),
            recommended_action=str(status.get("recommended_action") or "none"),
            reload_feasible=bool(reload.get("feasible", True)),
            blockers=tuple(_blocker_text(b) for b in reload.get("blockers") or []),
            drift=tuple(sorted({str(f.get("code")) for f in findings if str(f.get("code", "")).startswith("drift_")})),
            blocking_findings=tuple(
                f"{f.get('code')}: {f.get('message')}" for f in findings if f.get("action") in BLOCKING_ACTIONS
            ),
        )


def _blocker_text(blocker: object) -> str:
    if isinstance(blocker, dict):
        return str(blocker.get("message") or blocker.get("code") or blocker)
    return str(blocker)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    why: str


def decide(reading: NodeReading, target_version: str | None, with_driver: bool) -> Decision:
    """Reload, healthy or blocked. `target_version` is the driver version the fleet wants loaded
    (None: whatever userspace the node has installed); `with_driver`: the rollout installs a .run,
    so a node whose installed driver is the wrong one is not blocked for that."""
    if reading.recommended_action in BLOCKING_ACTIONS and not (
        with_driver and reading.recommended_action == "install_driver"
    ):
        return Decision(Verdict.BLOCKED, _blocked_why(reading))
    wanted = target_version or reading.userspace_version
    if target_version and not with_driver and reading.userspace_version not in (None, target_version):
        return Decision(
            Verdict.BLOCKED,
            f"{reading.userspace_version} is installed, {target_version} wanted: install it (nvreload_driver_run)",
        )
    needs = reading.recommended_action == "reload" or (
        wanted is not None and reading.loaded_version is not None and reading.loaded_version != wanted
    )
    if not needs:
        loaded = reading.loaded_version or "no module"
        return Decision(Verdict.HEALTHY, f"{loaded} loaded, no reload needed")
    if not reading.reload_feasible:
        return Decision(Verdict.BLOCKED, "the reload cannot run: " + "; ".join(reading.blockers or ("blocked",)))
    return Decision(Verdict.RELOAD, f"{reading.loaded_version} loaded, {wanted} wanted")


def _blocked_why(reading: NodeReading) -> str:
    if reading.blocking_findings:
        return "; ".join(reading.blocking_findings)
    return f"the node needs {reading.recommended_action.replace('_', ' ')}, not a reload"


def drained_by_nvreload(reason: str | None) -> bool:
    return (reason or "").startswith(NVRELOAD_REASON_PREFIX)
