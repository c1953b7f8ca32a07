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

from nvreload.engine.dry_run import RecordedAction
from nvreload.engine.engine import Engine, Reporter
from nvreload.engine.journal import DetachedJournal, Journal, JournalContext, NullJournal, move_aside
from nvreload.engine.kinds import Plan
from nvreload.engine.lock import NodeLock, NullLock
from nvreload.engine.outcome import RunReport
from nvreload.engine.plan import ReloadView, mig_documents
from nvreload.engine.planner import build_plan
from nvreload.engine.reset_planner import ALL, build_reset_plan, select_gpus
from nvreload.errors import BadInputError, ExitCode, JournalError, RefusedError
from nvreload.host.installer import check_archive, installer_version, take_installer
from nvreload.pending import PendingReload, clear_pending, pending_path, record_pending
from nvreload.state_files import StatePaths, check_writable_dirs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nvreload.engine.dry_run import RecordingTarget
    from nvreload.engine.sim import SimulatedNode
    from nvreload.engine.target import ReloadTarget
    from nvreload.slurm_drain import SlurmDrain


@dataclass
class ActionRequest:
    """--reload, --reset, --stop, --start, --rollback, with what modifies them."""

    action: str
    simulate: str | None = None  # None: the live node; "": the built-in scenario; else a scenario file
    root: str | None = None  # only with --dry-run: plan against a snapshot
    driver: str | None = None
    dry_run: bool = False
    yes: bool = False
    force_display: bool = False
    restart_docker: bool = False
    peermem_wait: float = 300.0  # seconds nvidia_peermem waits for MOFED, once per run
    gpus: str | None = None  # --reset: "all", or nvidia-smi indexes, PCI addresses, UUIDs (comma list)
    when_idle: bool = False  # --reload only while nothing but the known GPU services uses the GPUs
    # --after-upgrade: a package hook ran nvreload (apt, dnf, manual): reload only if the diagnosis asks
    # for it, and then only as the policy allows ("report" or "when-idle")
    trigger: str | None = None
    on_upgrade: str | None = None
    drain: str | None = None  # "slurm": drain the node in Slurm first, resume it after
    slurm_node: str | None = None  # the node's Slurm name, when it is not the short host name
    drain_timeout: float = 3600.0  # seconds the node's jobs may take to end


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
    node.recommend = lambda view: _recommended_for(node, view)
    return node


def _recommended_for(node: SimulatedNode, view: ReloadView) -> str:
    """What --status would recommend for the simulated node (the package hooks' question)."""
    from nvreload.diagnosis.findings import diagnose
    from nvreload.engine.sim_status import simulated_node_state

    return diagnose(simulated_node_state(node, view)).recommended_action


def run_action(
    request: ActionRequest, paths: StatePaths, reporter: Reporter, confirm: Callable[[str], bool] | None
) -> ActionResult:
    """`confirm` asks a person; None when no terminal can ask (then --yes is required)."""
    action = request.action
    dry_run = request.dry_run
    # A dry run shows the plan even where the real run would refuse, then the refusal and its exit code.
    refusal = None
    if request.simulate is None and request.root is None and os.geteuid() != 0:
        refusal = f"--{action} needs root (it stops services{' and resets GPUs' if action == 'reset' else ' and unloads kernel modules'}); run it with sudo"
        if not dry_run:
            raise RefusedError(refusal)
    installer, private = request.driver, None
    try:
        if request.driver is not None:  # before anything is stopped: a .run that is unsafe or damaged is refused here
            from nvreload.host.commands import CommandRunner

            live = not dry_run and request.simulate is None
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
        return _act(request, paths, reporter, confirm, refusal, installer)
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)


def _act(
    request: ActionRequest,
    paths: StatePaths,
    reporter: Reporter,
    confirm: Callable[[str], bool] | None,
    refusal: str | None,
    installer: str | None,
) -> ActionResult:
    action, dry_run = request.action, request.dry_run
    paths = paths.for_run(simulated=request.simulate is not None)
    if not dry_run:  # before anything is written there (the simulated node's own file included)
        check_writable_dirs(paths)
    target = _target(request, paths)
    recorder = None
    if dry_run:
        from nvreload.engine.dry_run import RecordingTarget

        recorder = target = RecordingTarget(target)
    with NullLock() if dry_run else NodeLock(paths.lock):
        if action in ("start", "rollback"):
            return _resume_with_slurm(action, target, paths, reporter, recorder, request.peermem_wait)
        previous = None if dry_run else _previous_run(paths.journal)
        if previous is not None and previous.unfinished:
            raise RefusedError(
                f"an unfinished run ({previous.action}, state {previous.state}) is in {previous.path}: "
                f"run nvreload --rollback{' --simulate' if request.simulate is not None else ''} first"
            )
        view = target.observe()
        if action == "reload" and request.trigger is not None and view.recommended_action != "reload":
            # a package hook on a node that needs no reload (most upgrades touch no driver): nothing
            # to do, and whatever was pending is not any more (a reboot, a person did it)
            if not dry_run:
                clear_pending(pending_path(paths.state_dir))
            return ActionResult(ExitCode.OK, not_needed=view.recommended_action)
        blockers = [b for b in view.blockers if not (b == "display_server_active" and request.force_display)]
        if view.display_processes and not request.force_display and "display_server_active" not in blockers:
            blockers.append("display_server_active")
        if blockers and action == "reload":
            refusal = refusal or "reload refused: " + ", ".join(blockers) + " (nvreload --status explains)"
            if not dry_run:
                raise RefusedError(refusal)
        if installer and view.fabric_manager_version and action == "reload":
            refusal = refusal or _fabric_refusal(installer, view.fabric_manager_version)
            if refusal and not dry_run:
                raise RefusedError(refusal)
        if action == "reload" and (request.when_idle or request.trigger is not None):
            deferred = _deferred(request, view, pending_path(paths.state_dir), dry_run)
            if deferred is not None:
                return deferred

        def make_plan(view: ReloadView) -> Plan:
            if action == "reset":
                return build_reset_plan(view, select_gpus(view, request.gpus or ALL), target.configured_parameters())
            return build_plan(
                view,
                target.configured_parameters(),
                driver=installer,
                stop_only=action == "stop",
                restart_container_engine=request.restart_docker,
            )

        plan = make_plan(view)
        if not dry_run and not request.yes and request.trigger is None:
            if confirm is None:
                raise RefusedError(f"--{action} acts on the node: confirm with --yes when no terminal can ask")
            if not confirm(f"{action}: {len(plan.actions())} actions on this node. Go ahead?"):
                raise RefusedError("not confirmed")
        drain = None
        if request.drain == "slurm" and not dry_run:
            drain = _drained(request, paths, reporter)  # after the jobs ended (RefusedError: they did not)
        journal_started = False
        try:
            if drain is not None:  # the jobs have ended: plan from the node as it is now
                view = target.observe()
                plan = make_plan(view)
            journal = _start_journal(request, paths, target, view, plan)
            journal_started = True
            engine = Engine(target, journal, reporter, peermem_wait=request.peermem_wait)
            report = {"stop": engine.stop, "reset": engine.reset}.get(action, engine.reload)(plan)
        except BaseException:
            # before the run began nothing changed: the node goes back to Slurm. After (a crash of
            # nvreload itself), it stays drained and --rollback resumes it from slurm-drain.json.
            if drain is not None and not journal_started:
                drain.finish(ExitCode.REFUSED)
            raise
        if drain is not None:
            finished = drain.finish(report.exit_code)
            report.slurm = finished.document() if finished else None
        report.container_engine = view.container_engine
        report.left_alone = [
            {"service": name, "why": "enabled but already failed before the run; not started"}
            for name in view.failed_services
        ]
        if action == "reload" and not dry_run and report.exit_code == ExitCode.OK:
            clear_pending(pending_path(paths.state_dir))  # done: nothing is pending any more
        if recorder is not None:
            return ActionResult(
                ExitCode.REFUSED if refusal else ExitCode.OK,
                report,
                list(recorder.recorded),
                dry_run=True,
                refusal=refusal,
            )
        return ActionResult(report.exit_code, report)


def _drained(request: ActionRequest, paths: StatePaths, reporter: Reporter) -> SlurmDrain:
    """--drain slurm: the node drained in Slurm and its jobs ended (or RefusedError, the node resumed)."""
    from nvreload.host.slurm import SlurmNode, local_node_name
    from nvreload.slurm_drain import SlurmDrain

    drain = SlurmDrain(
        SlurmNode(request.slurm_node or local_node_name()), paths.state_dir, reporter, request.drain_timeout
    )
    drain.drain_and_wait()
    return drain


def _start_journal(
    request: ActionRequest, paths: StatePaths, target: ReloadTarget, view: ReloadView, plan: Plan
) -> Journal | NullJournal:
    action = request.action
    return (
        NullJournal()
        if request.dry_run
        else Journal.start(
            paths.journal,
            action,
            [{"step": s.name, "action": a.kind, "target": a.target} for s in plan.steps for a in s.actions],
            JournalContext(
                target.name,
                request.driver,
                view.container_engine,
                view.loaded_version,
                mig_documents({bus: i for bus, i in view.mig.items() if bus not in view.mig_pending})
                if view.mig and action == "reload"
                else None,
                dict(view.persistence) if action == "reload" else None,
            ),
        )
    )


def _deferred(request: ActionRequest, view: ReloadView, pending_file: str, dry_run: bool) -> ActionResult | None:
    """A reload that is due and not done now (None: go ahead and reload): the upgrade policy says
    report, or GPU work is running. A dry run says so and writes nothing."""
    from nvreload.engine.idle import busy_consumers

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
    return ActionResult(ExitCode.RELOAD_PENDING, pending=due if dry_run else record_pending(pending_file, due))


def _fabric_refusal(driver: str, fabric_manager_version: str) -> str | None:
    """Why a --driver reload must not start on an NVSwitch node: the fabric manager starts only for
    a driver of its exact version, and without it the new driver's GPUs have no NVLink fabric."""
    version = installer_version(driver)
    if version is None or version == fabric_manager_version:
        return None
    return (
        f"reload refused: {os.path.basename(driver)} installs driver {version}, but nvidia-fabricmanager is "
        f"{fabric_manager_version} and starts only with its own version: install nvidia-fabricmanager {version} "
        "first (the NVLink fabric would stay down)"
    )


def _previous_run(path: str) -> Journal | None:
    """The journal a new run would replace. One that cannot be read may record consumers an
    earlier run stopped: it is moved aside (never overwritten), and this run stops there."""
    try:
        return Journal.load_if_any(path)
    except JournalError as exc:
        try:
            aside = move_aside(path)
        except OSError as move:
            raise JournalError(
                f"{exc.message}; it could not be moved aside ({move.strerror}): remove it by hand"
            ) from None
        raise JournalError(
            f"{exc.message}; moved to {aside}: check whether it names consumers still stopped, then run again"
        ) from None


def _resume_with_slurm(
    action: str,
    target: ReloadTarget,
    paths: StatePaths,
    reporter: Reporter,
    recorder: RecordingTarget | None,
    peermem_wait: float,
) -> ActionResult:
    """_resume, then the Slurm node a killed --drain slurm run left drained goes back to Slurm (after
    the consumers: jobs land on a node whose services are up again)."""
    from nvreload.slurm_drain import read_record, record_path, resume_after_crash

    drained = read_record(record_path(paths.state_dir)) if recorder is None else None
    try:
        result = _resume(action, target, paths, reporter, recorder, peermem_wait)
    except BadInputError:  # no journal: the run was killed before it began, while it waited for jobs
        if drained is None:
            raise
        result = ActionResult(ExitCode.OK, nothing_to_do="none")
    if drained is not None and result.exit_code in (ExitCode.OK, ExitCode.ROLLED_BACK, ExitCode.PARTIAL):
        resumed = resume_after_crash(paths.state_dir)  # None: the node was not drained for nvreload
        if resumed is None:
            return result
        result.slurm_resumed = resumed
        if result.report is not None:
            from nvreload.slurm_drain import DrainReport

            result.report.slurm = DrainReport(drained, drained=True, resumed=True).document()
    return result


def _resume(
    action: str,
    target: ReloadTarget,
    paths: StatePaths,
    reporter: Reporter,
    recorder: RecordingTarget | None,
    peermem_wait: float,
) -> ActionResult:
    """--start, --rollback: finish the journal's run; with a recorder (a dry run), say how."""
    journal = Journal.load_if_any(paths.journal)
    if journal is None:
        raise BadInputError(f"no journal in {os.path.dirname(paths.journal)}: nothing to {action}")
    if not journal.unfinished:
        return ActionResult(ExitCode.OK, nothing_to_do=journal.state)
    if recorder is not None:
        # the real resume, on the recording target and a journal that is never written: its
        # recorded actions are what the real run would do
        report = Engine(target, DetachedJournal.load(paths.journal), reporter, peermem_wait=peermem_wait).resume()
        return ActionResult(ExitCode.OK, report, list(recorder.recorded), dry_run=True)
    report = Engine(target, journal, reporter, peermem_wait=peermem_wait).resume()
    return ActionResult(report.exit_code, report)
