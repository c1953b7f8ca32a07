"""A run's session: what it holds and writes from its lock to its last record (the lock, the journal,
the Slurm drain, the pending-reload record), with a real form and a dry-run form chosen once, the
way the engine gets a RecordingTarget. The acting commands never ask `dry_run` again."""

from __future__ import annotations

from contextlib import AbstractContextManager

from nvreload.action_request import ActionRequest
from nvreload.engine.engine import Reporter
from nvreload.engine.journal import DetachedJournal, Journal, JournalContext, NullJournal, move_aside
from nvreload.engine.kinds import Plan
from nvreload.engine.lock import NodeLock, NullLock
from nvreload.engine.plan import ReloadView, mig_documents
from nvreload.errors import JournalError, RefusedError
from nvreload.pending import PendingReload, clear_pending, pending_path, record_pending
from nvreload.state_files import StatePaths, check_writable_dirs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from nvreload.engine.dry_run import RecordingTarget
    from nvreload.engine.target import ReloadTarget
    from nvreload.slurm_drain import SlurmDrain


def plan_document(plan: Plan) -> list[dict]:
    """The plan as the journal keeps it."""
    return [{"step": s.name, "action": a.kind, "target": a.target} for s in plan.steps for a in s.actions]


def journal_context(request: ActionRequest, target: ReloadTarget, view: ReloadView) -> JournalContext:
    """What the run relies on, from the node as read before it."""
    reload = request.action == "reload"
    return JournalContext(
        target.name,
        request.driver,
        view.container_engine,
        view.loaded_version,
        mig_documents({bus: i for bus, i in view.mig.items() if bus not in view.mig_pending})
        if view.mig and reload
        else None,
        dict(view.persistence) if reload else None,
    )


class RunSession:
    """A real run: the node lock, a journal on disk, the drain, the pending record."""

    dry_run = False

    def __init__(self, request: ActionRequest, paths: StatePaths) -> None:
        self.request = request
        self.paths = paths
        self.recorder: RecordingTarget | None = None

    def prepare(self) -> None:
        """Before anything is written there (the simulated node's own file included)."""
        check_writable_dirs(self.paths)

    def target(self, node: ReloadTarget) -> ReloadTarget:
        return node

    def lock(self) -> AbstractContextManager[object]:
        return NodeLock(self.paths.lock)

    def refuse(self, refusal: str | None) -> None:
        """A precondition does not hold: the real run stops here."""
        if refusal:
            raise RefusedError(refusal)

    def refuse_unfinished_run(self) -> None:
        previous = _previous_run(self.paths.journal)
        if previous is not None and previous.unfinished:
            raise RefusedError(
                f"an unfinished run ({previous.action}, state {previous.state}) is in {previous.path}: "
                f"run nvreload --rollback{' --simulate' if self.request.simulate is not None else ''} first"
            )

    def confirm(self, question: str, ask) -> None:
        """An acting command on a real node goes ahead only when a person said so (or --yes, or a
        package hook, which has its own policy)."""
        if self.request.yes or self.request.trigger is not None:
            return
        if ask is None:
            raise RefusedError(f"--{self.request.action} acts on the node: confirm with --yes when no terminal can ask")
        if not ask(question):
            raise RefusedError("not confirmed")

    def start_journal(self, target: ReloadTarget, view: ReloadView, plan: Plan) -> Journal:
        return Journal.start(
            self.paths.journal,
            self.request.action,
            plan_document(plan),
            journal_context(self.request, target, view),
        )

    def resume_journal(self, journal: Journal) -> Journal:
        """The journal --start and --rollback finish."""
        return journal

    def drain(self, journal: Journal, reporter: Reporter) -> SlurmDrain | None:
        """--drain slurm: the drain around the run, journaled in its journal."""
        if self.request.drain != "slurm":
            return None
        from nvreload.host.slurm import SlurmNode, local_node_name
        from nvreload.slurm_drain import SlurmDrain

        node = SlurmNode(self.request.slurm_node or local_node_name())
        return SlurmDrain(node, journal, reporter, self.request.drain_timeout)

    def clear_pending(self) -> None:
        clear_pending(pending_path(self.paths.state_dir))

    def record_pending(self, due: PendingReload) -> PendingReload:
        return record_pending(pending_path(self.paths.state_dir), due)


class DryRunSession(RunSession):
    """--dry-run: the same run on a RecordingTarget, and nothing written anywhere: no lock, a
    journal that is never written, no drain, no pending record."""

    dry_run = True

    def prepare(self) -> None:
        pass

    def target(self, node: ReloadTarget) -> ReloadTarget:
        from nvreload.engine.dry_run import RecordingTarget

        self.recorder = RecordingTarget(node)
        return self.recorder

    def lock(self) -> AbstractContextManager[object]:
        return NullLock()

    def refuse(self, refusal: str | None) -> None:
        pass  # the plan is shown, then the refusal and its exit code

    def refuse_unfinished_run(self) -> None:
        pass

    def confirm(self, question: str, ask) -> None:
        pass

    def start_journal(self, target: ReloadTarget, view: ReloadView, plan: Plan) -> Journal:
        return NullJournal()

    def resume_journal(self, journal: Journal) -> Journal:
        # the real resume walks a copy that is never written: its recorded actions are what the
        # real run would do
        return DetachedJournal.load(journal.path)

    def drain(self, journal: Journal, reporter: Reporter) -> SlurmDrain | None:
        return None

    def clear_pending(self) -> None:
        pass

    def record_pending(self, due: PendingReload) -> PendingReload:
        return due


def session_for(request: ActionRequest, paths: StatePaths) -> RunSession:
    return DryRunSession(request, paths) if request.dry_run else RunSession(request, paths)


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
