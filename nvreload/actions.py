"""The acting commands (--reload, --stop, --start, --rollback): pick the target, the journal and the
lock, check preconditions, confirm, run the engine. Rendering is the caller's; so is the question
put to a person (a `confirm` callable)."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from nvreload.action_request import ActionRequest
from nvreload.engine.dry_run import RecordedAction
from nvreload.engine.engine import Engine, Reporter
from nvreload.engine.journal import Journal
from nvreload.engine.kinds import Plan
from nvreload.engine.outcome import RunReport
from nvreload.engine.plan import ReloadView
from nvreload.engine.planner import build_plan
from nvreload.engine.reset_planner import ALL, build_reset_plan, select_gpus
from nvreload.errors import BadInputError, ExitCode, RefusedError
from nvreload.host.installer import check_archive, take_installer
from nvreload.pending import PendingReload
from nvreload.preconditions import AFTER_READING, BEFORE_READING, Facts, first_refusal
from nvreload.session import RunSession, journal_context, plan_document, session_for
from nvreload.state_files import StatePaths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nvreload.engine.sim import SimulatedNode
    from nvreload.engine.target import ReloadTarget
    from nvreload.slurm_drain import SlurmDrain


@dataclass
class ActionResult:
    """What an acting command came to: a run report, a dry-run plan, or nothing to do."""

    exit_code: int
    report: RunReport | None = None
    plan: list[RecordedAction] = field(default_factory=list)
    dry_run: bool = False
    nothing_to_do: str | None = None  # the state the last run ended in, when there was nothing to do
    refusal: str | None = None  # a dry run of what the real run would refuse: the plan, and why
    pending: PendingReload | None = None  # a reload due but not done (--when-idle, --after-upgrade)
    not_needed: str | None = None  # --after-upgrade on a node that needs no reload: what its diagnosis says
    slurm_resumed: str | None = None  # --rollback/--start: the Slurm node a killed --drain slurm run left drained

    def document(self) -> dict:
        if self.pending is not None:
            return {"schema_version": 1, "result": "reload_pending", "pending": self.pending.document()}
        if self.not_needed is not None:
            return {"schema_version": 1, "result": "not_needed", "recommended_action": self.not_needed}
        if self.nothing_to_do is not None:
            document = {"schema_version": 1, "result": "nothing_to_do", "journal_state": self.nothing_to_do}
            if self.slurm_resumed:
                document["slurm_resumed"] = self.slurm_resumed
            return document
        if self.dry_run:
            document = {
                "schema_version": 1,
                "plan": [a.document() for a in self.plan],
            }
            if self.refusal:
                document["refused"] = self.refusal
            return document
        assert self.report is not None
        return self.report.document()


def _target(request: ActionRequest, paths: StatePaths) -> ReloadTarget:
    """The node to act on."""
    if request.simulate is not None:
        return simulated_node(request.simulate, paths, persist=not request.dry_run)
    from nvreload.engine.live_target import LiveTarget
    from nvreload.host.machine import Machine
    from nvreload.rootfs import open_root

    return LiveTarget(Machine(open_root(request.root), modinfo_cache_path=paths.modinfo_cache))


# What --simulate acts on: a node of the simulation's own, which never touches this machine (no
# scenario key can change that). Only tests put another class here (tests/realengine/sim_live.py:
# simulated modules with a real dockerd's and systemd's consumers).
SIMULATED_NODE: type[SimulatedNode] | None = None


def simulated_node(scenario_file: str, paths: StatePaths, persist: bool) -> SimulatedNode:
    """The simulated node in `paths`: as the last run left it, or made from the scenario (the
    built-in one when `scenario_file` is ""). A scenario file names the node to act on: one made
    from another scenario is replaced, unless a run on it is unfinished (its journal needs that
    node to be put back)."""
    from nvreload.engine.sim import SimulatedNode, load_scenario, scenario_digest

    node_class = SIMULATED_NODE or SimulatedNode
    scenario = load_scenario(scenario_file or None)
    node = node_class(scenario, paths.state_dir, persist=persist)
    if scenario_file and node.made_from != scenario_digest(scenario):
        previous = Journal.load_if_any(paths.journal)
        if persist and previous is not None and previous.unfinished:
            raise RefusedError(
                f"the simulated node in {paths.state_dir} was made from another scenario and has an "
                f"unfinished run ({previous.action}, state {previous.state}): finish it with "
                f"nvreload --rollback --simulate, or set NVRELOAD_STATE_DIR to another directory"
            )
        node = node_class(scenario, paths.state_dir, replace=True, persist=persist)
    return node


def run_action(
    request: ActionRequest, paths: StatePaths, reporter: Reporter, confirm: Callable[[str], bool] | None
) -> ActionResult:
    """`confirm` asks a person; None when no terminal can ask (then --yes is required)."""
    session = session_for(request, paths.for_run(simulated=request.simulate is not None))
    # A dry run shows the plan even where the real run would refuse, then the refusal and its exit code.
    refusal = first_refusal(BEFORE_READING, Facts(request))
    session.refuse(refusal)
    installer, private = request.driver, None
    try:
        if request.driver is not None:  # before anything is stopped: a .run that is unsafe or damaged is refused here
            from nvreload.host.commands import CommandRunner

            live = not session.dry_run and request.simulate is None
            # The archive's --check runs only on a copy taken through the one descriptor that was
            # checked, in a directory of our own (mkdtemp: 0700), never on the path, which a user
            # may point elsewhere once it is checked. The live run executes that copy too (under
            # the runtime directory: tmpfs, gone at reboot); a dry run and a simulation only check
            # it, and keep the path the operator gave for their plan and report.
            if live:
                os.makedirs(paths.runtime_dir, exist_ok=True)
            private = tempfile.mkdtemp(prefix="installer-", dir=paths.runtime_dir if live else None)
            copy = take_installer(request.driver, private)
            check_archive(CommandRunner(), copy)
            if live:
                installer = copy
        return _act(session, reporter, confirm, refusal, installer)
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)


def _act(
    session: RunSession,
    reporter: Reporter,
    confirm: Callable[[str], bool] | None,
    refusal: str | None,
    installer: str | None,
) -> ActionResult:
    request = session.request
    session.prepare()
    target = session.target(_target(request, session.paths))
    with session.lock():
        if request.action in ("start", "rollback"):
            return _resume(session, target, reporter)
        session.refuse_unfinished_run()
        view = target.observe()
        if request.action == "reload" and request.trigger is not None and view.recommended_action != "reload":
            # a package hook on a node that needs no reload (most upgrades touch no driver): nothing
            # to do, and whatever was pending is not any more (a reboot, a person did it)
            session.clear_pending()
            return ActionResult(ExitCode.OK, not_needed=view.recommended_action)
        refusal = refusal or first_refusal(AFTER_READING, Facts(request, view, installer))
        session.refuse(refusal)
        if request.action == "reload" and (request.when_idle or request.trigger is not None):
            deferred = _deferred(session, view)
            if deferred is not None:
                return deferred
        plan = _plan(request, target, view, installer)
        session.confirm(f"{request.action}: {len(plan.actions())} actions on this node. Go ahead?", confirm)
        journal = session.start_journal(target, view, plan)
        drain = session.drain(journal, reporter)
        if drain is not None:
            view, plan = _drained(session, drain, target, journal)
        engine = Engine(
            target,
            journal,
            reporter,
            peermem_wait=request.peermem_wait,
            epilogue=drain.settle if drain is not None else None,
        )
        report = {"stop": engine.stop, "reset": engine.reset}.get(request.action, engine.reload)(plan)
        report.container_engine = view.container_engine
        report.left_alone = [
            {"service": name, "why": "enabled but already failed before the run; not started"}
            for name in view.failed_services
        ]
        report.warnings += _unrecorded_mig(view, report)
        if request.action == "reload" and report.exit_code == ExitCode.OK:
            session.clear_pending()  # done: nothing is pending any more
        if session.recorder is not None:
            code = ExitCode.REFUSED if refusal else ExitCode.OK
            return ActionResult(code, report, list(session.recorder.recorded), dry_run=True, refusal=refusal)
        return ActionResult(report.exit_code, report)


def _unrecorded_mig(view: ReloadView, report: RunReport) -> list[dict]:
    """The MIG instances the run could not record (NVML did not answer): gone once the modules went
    out, whatever the run's end, and nothing of nvreload's brings them back."""
    if not view.mig_unrecorded or not any(step["name"] == "unload_modules" for step in report.steps):
        return []
    return [
        {
            "module": "nvidia",
            "warning": f"{bus}: {count} MIG GPU instance(s) could not be recorded (NVML: {view.nvml_status}) "
            "and are gone with the unload: create them again (nvidia-mig-parted apply, or nvidia-smi mig -cgi ... -C)",
        }
        for bus, count in sorted(view.mig_unrecorded.items())
    ]


def _plan(request: ActionRequest, target: ReloadTarget, view: ReloadView, installer: str | None) -> Plan:
    if request.action == "reset":
        return build_reset_plan(view, select_gpus(view, request.gpus or ALL), target.configured_parameters())
    if request.force_display:
        view = view.with_display_servers_ended()
    return build_plan(
        view,
        target.configured_parameters(),
        driver=installer,
        stop_only=request.action == "stop",
        restart_container_engine=request.restart_docker,
    )


def _drained(session: RunSession, drain: SlurmDrain, target: ReloadTarget, journal: Journal) -> tuple[ReloadView, Plan]:
    """--drain slurm, the run's first journaled step: the node drained and its jobs ended (or
    RefusedError: the node resumed). The plan is made again from the node as it is now, without
    the jobs; a failure before the engine starts gives the node back."""
    drain.drain_and_wait()
    try:
        view = target.observe()
        plan = _plan(session.request, target, view, session.request.driver)
        journal.replan(plan_document(plan), journal_context(session.request, target, view))
    except BaseException as exc:
        drain.give_back_unstarted(getattr(exc, "message", None) or repr(exc))
        raise
    return view, plan


def _deferred(session: RunSession, view: ReloadView) -> ActionResult | None:
    """A reload that is due and not done now (None: go ahead and reload): the upgrade policy says
    report, or GPU work is running. A dry run says so and writes nothing."""
    from nvreload.engine.idle import busy_consumers

    request = session.request
    busy = busy_consumers(view)
    report_only = request.trigger is not None and request.on_upgrade != "when-idle"
    if not report_only and not busy:
        return None
    now = time.time()
    due = PendingReload(
        since=now,
        updated=now,
        trigger=request.trigger or "manual",
        reason="policy_report" if report_only else "busy",
        busy=busy,
        loaded_version=view.loaded_version,
        userspace_version=view.userspace_version,
    )
    return ActionResult(ExitCode.RELOAD_PENDING, pending=session.record_pending(due))


def _resume(session: RunSession, target: ReloadTarget, reporter: Reporter) -> ActionResult:
    """--start, --rollback: finish the journal's run, the Slurm drain it left included (after the
    consumers: jobs land on a node whose services are up again); with a recorder (a dry run), say
    how."""
    from nvreload.slurm_drain import resume_from_journal

    action = session.request.action
    journal = Journal.load_if_any(session.paths.journal)
    if journal is None:
        raise BadInputError(f"no journal in {os.path.dirname(session.paths.journal)}: nothing to {action}")
    if not journal.unfinished:
        return ActionResult(ExitCode.OK, nothing_to_do=journal.state)
    journal = session.resume_journal(journal)
    resumed: list[str] = []

    def epilogue(report: RunReport) -> None:
        if not session.dry_run:
            resumed.extend(filter(None, [resume_from_journal(journal, report)]))

    report = Engine(target, journal, reporter, peermem_wait=session.request.peermem_wait, epilogue=epilogue).resume()
    if session.recorder is not None:
        return ActionResult(ExitCode.OK, report, list(session.recorder.recorded), dry_run=True)
    return ActionResult(report.exit_code, report, slurm_resumed=resumed[0] if resumed else None)
