"""The engine: runs a plan against a ReloadTarget, journaling before and after every step and every
change it will have to undo, and on any failure or signal undoes in reverse so the node ends fully
reloaded or fully restored. It imports no CLI, no rendering: progress goes to a Reporter."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from nvreload.catalog import FABRIC_SERVICES, LOGIND_COMM
from nvreload.engine.journal import Journal
from nvreload.engine.kinds import (
    STOP_KINDS,
    STOPS,
    Action,
    ApplyMigMode,
    KillProcess,
    LoadModule,
    Plan,
    RebindConsole,
    RecreateMig,
    ResetGpu,
    StartService,
    Step,
    StopContainer,
    StopService,
    UnbindConsole,
    UnloadModule,
    Verify,
    restart_actions,
    undo_key,
)
from nvreload.engine.outcome import Outcome, RunReport, settle
from nvreload.engine.plan import OPTIONAL_MODULES, mig_geometry
from nvreload.engine.reset_planner import gpu_minors, holds_drm
from nvreload.engine.target import ReloadTarget
from nvreload.errors import HostError, Interrupted, JournalWriteError, StepFailed
from nvreload.model import Check, GpuProcess

MODULE_STEPS = ("unload_modules", "install_driver", "load_modules", "verify")
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# The fabric manager trains every NVLink and programs the switches: about a minute on an 8-GPU HGX.
FABRIC_WAIT_S = 180.0
# rescans for children that inherited a killed holder's descriptors (each forks at most one more)
LATE_HOLDER_ROUNDS = 5


class Reporter:
    """Progress callbacks; the console renderer implements these, tests use this silent one."""

    def step(self, name: str, status: str, seconds: float | None = None, detail: str = "") -> None: ...
    def action(self, action: Action, status: str, detail: str = "") -> None: ...


class Engine:
    def __init__(
        self,
        target: ReloadTarget,
        journal: Journal,
        reporter: Reporter | None = None,
        peermem_wait: float = 300.0,
        workers: int = 16,
        fabric_wait: float = FABRIC_WAIT_S,
        epilogue: Callable[[RunReport], None] | None = None,
    ) -> None:
        self.fabric_wait = fabric_wait
        # the run's last journaled step once its outcome is known (the Slurm drain's resume): before
        # the journal is finished, so a run killed before it is done leaves it for --rollback
        self.epilogue = epilogue
        self.target = target
        self.journal = journal
        self.reporter = reporter or Reporter()
        self.peermem_wait = peermem_wait
        self.workers = workers
        self._steps: list[dict] = []
        self._deferred_signal: int | None = None
        self._unload_started: float | None = None
        self._gpu_back: float | None = None
        self._mofed_given_up = False  # waited once for MOFED in this run: never again
        # persistence mode per GPU before the run: the plan's in a run, the journal's when resuming one
        self._persistence: dict[str, bool] | None = None

    # signals ------------------------------------------------------------------------------
    def _raise_on_signal(self, signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    def _defer_signal(self, signum: int, _frame: object) -> None:
        # rollback must finish; the signal is acted on once the journal and the report are out
        self._deferred_signal = signum

    @contextmanager
    def _signals_held(self) -> Iterator[None]:
        """Hold SIGINT, SIGTERM and SIGHUP for the block, then act on the first that came (as
        Interrupted), once the block is done."""
        held: list[int] = []
        previous = self._install(lambda signum, _frame: held.append(signum))
        try:
            yield
        except BaseException:
            if held:  # the block failed anyway, and its undo runs: the signal is acted on after it
                self._deferred_signal = held[0]
            raise
        finally:
            self._restore(previous)
        if held:
            raise Interrupted(held[0])

    def _install(self, handler) -> dict:
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED_SIGNALS:
                previous[signum] = signal.signal(signum, handler)
        return previous

    def _restore(self, previous: dict) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    # steps --------------------------------------------------------------------------------
    def _run_step(self, name: str, body) -> None:
        self.target.at_boundary(name, "before")
        started = time.monotonic()
        self.journal.step_started(name)
        self.reporter.step(name, "running")
        entry: dict[str, object] = {"name": name, "status": "running", "seconds": None, "error": None}
        self._steps.append(entry)
        try:
            body()
        except (StepFailed, HostError) as exc:
            # a StepFailed from the step's own body already names it: "verify: verify: ..." otherwise
            detail = exc.detail if isinstance(exc, StepFailed) else exc.message
            entry.update(status="failed", seconds=round(time.monotonic() - started, 3), error=detail)
            self.journal.step_finished(name, "failed", detail)
            self.reporter.step(name, "failed", time.monotonic() - started, detail)
            raise StepFailed(name, detail) from None
        except Interrupted as exc:
            entry.update(status="interrupted", seconds=round(time.monotonic() - started, 3), error=exc.message)
            self.journal.step_finished(name, "interrupted", exc.message)
            self.reporter.step(name, "interrupted", time.monotonic() - started, exc.message)
            raise
        entry.update(status="done", seconds=round(time.monotonic() - started, 3))
        self.journal.step_finished(name, "done")
        self.reporter.step(name, "done", time.monotonic() - started)
        self.target.at_boundary(name, "after")

    def _stop_consumers(
        self, actions: tuple[Action, ...], relevant: Callable[[GpuProcess], bool] | None = None
    ) -> None:
        """`relevant`: a --reset's test of a holder (of its GPUs, of nvidia_drm where it goes out);
        only those matter after the stops (None: every holder of every GPU)."""
        containers = [a for a in actions if isinstance(a, StopContainer)]
        services = [a for a in actions if isinstance(a, StopService)]
        errors: list[str] = []

        def stop(action: StopContainer | StopService, what: str) -> bool:
            try:
                self._journaled(action)
            except HostError as exc:
                errors.append(f"{what} {action.target}: {exc.message}")
                self.reporter.action(action, "failed", exc.message)
                return False
            self.reporter.action(action, "done")
            return True

        def stop_services() -> None:
            for action in services:
                if not stop(action, "service"):
                    return  # the order matters: do not stop what depends on a unit still running

        # Containers stop in parallel with each other and with the service chain: the critical
        # path is the slowest container, not their sum. A signal waits until every stop under way
        # is done and journaled: raised inside the pool (a Thread.start() it waits on), it would
        # leave a worker to stop a container after the rollback had restarted the rest.
        with self._signals_held(), ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures: list[Future[object]] = [pool.submit(stop, a, "container") for a in containers]
            if services:
                futures.append(pool.submit(stop_services))
            for future in futures:
                future.result()
        if errors:
            raise StepFailed("stop_consumers", "; ".join(errors))
        for action in actions:
            if isinstance(action, (StopContainer, StopService)):
                continue  # stopped above, side by side
            if isinstance(action, KillProcess):
                self._kill(action)
            elif action.undo_kind is not None:
                self._journaled(action)  # MPS, and any other stop with an undo
            else:
                action.perform(self.target)  # logind's restart
        self._end_late_holders(actions, relevant)

    def _journaled(self, action: Action) -> None:
        """An action that leaves an undo record: intended before it acts, done once it has."""
        assert action.undo_kind is not None
        record = self.journal.intend(action.undo_kind, *action.undo_record())
        action.perform(self.target)
        self.journal.mark(record, "done")

    def _kill(self, action: KillProcess) -> None:
        result = action.perform(self.target)
        self.journal.add_killed(action.killed_record(result))
        self.reporter.action(action, result.text)
        # A process that moved on (exited, released the GPU, pid reused) is fine; one we may not
        # signal, or one that survived SIGKILL, will keep the module busy.
        if result.holds_on:
            raise StepFailed("stop_consumers", f"pid {action.pid} ({action.comm}): {result.text}")

    def _gpu_holders(self, relevant: Callable[[GpuProcess], bool] | None) -> tuple[GpuProcess, ...]:
        holders = self.target.gpu_holders()
        return holders if relevant is None else tuple(h for h in holders if relevant(h))

    def _end_late_holders(
        self, actions: tuple[Action, ...], relevant: Callable[[GpuProcess], bool] | None = None
    ) -> None:
        """The plan was made from one scan; what holds a GPU device after the stops is a late holder.

        A child a holder forked just before its signal inherited the descriptors (a shell loop's
        `sleep`, a dataloader worker): it is in the process group of a process this run ended, or
        in a unit or container this run stopped, and is ended the same way. Anything else started
        using the GPU after the plan was shown: it is not signalled, and the step fails before any
        module is touched, so the rollback restores everything."""
        groups = {a.process_group for a in actions if isinstance(a, KillProcess) and (a.process_group or 0) > 1}
        units = {a.target for a in actions if isinstance(a, StopService)}
        containers = [a.id for a in actions if isinstance(a, StopContainer)]

        def ours(holder: GpuProcess) -> bool:
            if holder.process_group in groups or (holder.systemd_unit and holder.systemd_unit in units):
                return True
            cid = holder.container_id
            return cid is not None and any(cid.startswith(c) or c.startswith(cid) for c in containers)

        for _round in range(LATE_HOLDER_ROUNDS):
            late = self._gpu_holders(relevant)
            if not late:
                return
            strangers = [h for h in late if not ours(h)]
            if strangers:
                raise StepFailed(
                    "stop_consumers",
                    "started holding the GPU after the plan was made, not signalled: "
                    + ", ".join(f"pid {h.pid} ({h.comm})" for h in strangers),
                )
            for holder in late:
                action = KillProcess(
                    str(holder.pid), pid=holder.pid, start_time=holder.start_time, comm=holder.comm, late=True
                )
                result = action.perform(self.target)
                self.journal.add_killed(action.killed_record(result))
                self.reporter.action(action, result.text)
        left = self._gpu_holders(relevant)
        if left:
            raise StepFailed(
                "stop_consumers",
                f"still holding the GPU after {LATE_HOLDER_ROUNDS} rounds of ending late holders: "
                + ", ".join(f"pid {h.pid} ({h.comm})" for h in left),
            )

    def _unload(self, actions: tuple[Action, ...]) -> None:
        self._unload_started = time.monotonic()
        for action in actions:
            self._journaled(action)
            self.reporter.action(action, "done")

    def _load_one(self, name: str, parameters: dict[str, str]) -> None:
        if name == "nvidia_peermem":
            deadline = time.monotonic() + (0 if self._mofed_given_up else self.peermem_wait)
            while not self.target.mofed_ready():
                if time.monotonic() >= deadline:
                    self._mofed_given_up = True
                    raise HostError(f"MOFED not ready after {self.peermem_wait:g} s; nvidia_peermem not loaded")
                self.target.sleep(1.0)
        self.target.load_module(name, parameters)

    def _load_optional(self, name: str, parameters: dict[str, str], report: RunReport) -> bool:
        """An optional module (peermem, nvidia_fs, gdrdrv) that will not load is a warning: the
        driver works without it, and failing the reload for it would take the GPUs down for nothing."""
        try:
            self._load_one(name, parameters)
        except HostError as exc:
            report.warnings.append({"module": name, "warning": f"{name} not loaded: {exc.message}"})
            self.reporter.action(LoadModule(name), "warning", exc.message)
            return False
        report.warnings[:] = [w for w in report.warnings if w["module"] != name]  # an earlier try's warning
        return True

    def _load_module(self, name: str, parameters: dict[str, str], report: RunReport) -> bool:
        """Load one module of the set and mark its unload put back. A needed module that will not
        load raises; an optional one is a warning, and False."""
        if name in OPTIONAL_MODULES:
            if not self._load_optional(name, parameters, report):
                return False
        else:
            self._load_one(name, parameters)
        self._put_back("unload_module", name)
        return True

    def _load(self, actions: tuple[Action, ...], report: RunReport) -> None:
        for action in actions:
            if isinstance(action, ApplyMigMode):
                self._apply_mig_mode(action, report)
                continue
            if isinstance(action, RebindConsole):
                action.perform(self.target)
                self._put_back(*action.undoes())
            elif isinstance(action, LoadModule) and not self._load_module(action.target, action.parameters, report):
                continue  # reported as a warning
            self.reporter.action(action, "done")

    def _put_back(self, kind: str, target: str) -> None:
        record = self.journal.find(kind, target)
        if record is not None and record.outstanding:
            self.journal.mark(record, "undone")

    def _failed_checks(self, persistence: dict[str, bool]) -> list[Check]:
        return [c for c in self.target.verify(persistence) if not c.ok and c.severity == "critical"]

    def _verify(self, action: Verify) -> None:
        failed = self._failed_checks(action.persistence)
        if failed:
            raise StepFailed("verify", "; ".join(f"{c.name}: {c.detail}" for c in failed))
        self._gpu_back = time.monotonic()

    def _apply_mig_mode(self, action: ApplyMigMode, report: RunReport) -> None:
        """Reset a GPU whose MIG mode change is pending: the change takes effect at a reset. One the
        GPU refuses is a warning: the driver works, in the mode it had."""
        try:
            action.perform(self.target)
            self.reporter.action(action, "done")
        except HostError as exc:
            report.warnings.append(
                {
                    "module": "nvidia",
                    "warning": f"{action.target}: the pending MIG mode change "
                    f"was not applied (a reset or a reboot applies it): {exc.message}",
                }
            )
            self.reporter.action(action, "warning", exc.message)

    def _verify_step(self, actions: tuple[Action, ...], report: RunReport) -> None:
        self._bring_up_fabric([a for a in actions if isinstance(a, StartService)], report)
        self._recreate_mig({a.target: list(a.instances) for a in actions if isinstance(a, RecreateMig)}, report)
        self._verify(next(a for a in actions if isinstance(a, Verify)))

    def _recreate_mig(self, wanted: dict[str, list[dict]], report: RunReport) -> None:
        """Bring back the MIG instances the GPUs had before the unload (a module reload loses them
        all), on each GPU that has none now. A GPU that cannot get them back is a failure of the
        consumers that use them (`--start` tries again), not of the driver."""
        if not wanted:
            return
        current = self.target.mig_geometry()
        for bus, documents in sorted(wanted.items()):
            instances = mig_geometry({bus: documents})[bus]
            if current.get(bus) == instances:
                continue
            if current.get(bus):
                report.warnings.append(
                    {
                        "module": "nvidia",
                        "warning": f"{bus}: MIG instances differ from before the run; left as they are",
                    }
                )
                continue
            action = RecreateMig(bus, instances=tuple(documents))
            try:
                self.target.create_mig(bus, instances)
            except HostError as exc:
                report.restart_failures[:] = [
                    f for f in report.restart_failures if (f["action"], f["target"]) != ("recreate_mig", bus)
                ]
                report.restart_failures.append({"action": "recreate_mig", "target": bus, "error": exc.message})
                self.reporter.action(action, "failed", exc.message)
                continue
            report.restart_failures[:] = [f for f in report.restart_failures if f["target"] != bus]
            self.reporter.action(action, "done")

    def _refresh_cdi(self, report: RunReport) -> None:
        """After a version change, before any container starts: the CDI specs name the old driver's
        files. A spec that cannot be written is a warning (non-CDI containers still start)."""
        before, now = self.journal.module_version_before, self.target.loaded_driver_version()
        if before is None or now is None or before == now:
            return
        try:
            self.target.refresh_cdi_specs()
        except HostError as exc:
            report.warnings.append(
                {"module": "nvidia", "warning": f"CDI specs not regenerated for {now}: {exc.message}"}
            )

    def _bring_up_fabric(self, starts: list[Action], report: RunReport) -> None:
        """Start the NVLink fabric's services for the new driver instance and wait until the fabric
        is up: on an NVSwitch node a CUDA context fails until then (error 802)."""
        if not starts:
            return
        before = len(report.restart_failures)
        self._restart(starts, report)
        failed = report.restart_failures[before:]
        if failed:
            raise StepFailed("verify", "; ".join(f"{f['target']} did not start: {f['error']}" for f in failed))
        deadline = time.monotonic() + self.fabric_wait
        while self.target.fabric_ready() is False:
            if time.monotonic() >= deadline:
                raise StepFailed(
                    "verify",
                    f"the NVLink fabric was not up {self.fabric_wait:g} s after "
                    + ", ".join(a.target for a in starts)
                    + " started",
                )
            self.target.sleep(1.0)

    def _restart(self, actions: tuple[Action, ...] | list[Action], report: RunReport) -> None:
        for action in actions:
            key = undo_key(action)
            record = self.journal.find(*key) if key else None
            if record is not None and not record.outstanding:
                continue  # an earlier attempt brought it back
            try:
                action.perform(self.target)
            except HostError as exc:
                report.restart_failures.append({"action": action.kind, "target": action.target, "error": exc.message})
                self.reporter.action(action, "failed", exc.message)
                continue
            if record is not None:
                self.journal.mark(record, "undone")
            report.restarted.append(action.target)
            # a retry that worked clears the earlier failure of the same target
            report.restart_failures[:] = [f for f in report.restart_failures if f["target"] != action.target]
            self.reporter.action(action, "done")

    # runs ---------------------------------------------------------------------------------
    def _finish(self, report: RunReport) -> RunReport:
        report.final = self.target.final_state().document()
        report.deferred_signal = self._deferred_signal
        if self.epilogue is not None:
            self.epilogue(report)
        report.journal = self.journal.reference()
        self.journal.best_effort = True  # the node is as the report says: a journal write cannot undo that
        self.journal.finish(report.outcome.journal_state, report.document())
        if self.journal.write_error:
            # the outcome stands (the node is as it says); the journal on disk may be behind it
            report.warnings.append({"journal": self.journal.write_error})
        return report

    def reload(self, plan: Plan) -> RunReport:
        report = RunReport(Outcome.RELOADED, steps=self._steps)
        verify = plan.step("verify")
        checked = next((a for a in verify.actions if isinstance(a, Verify)), None) if verify else None
        self._persistence = dict(checked.persistence) if checked else {}
        load = plan.step("load_modules")
        if load is not None:
            self.journal.set_modules([(a.target, a.parameters) for a in load.actions if isinstance(a, LoadModule)])

        def restart(step: Step) -> None:
            self._restore_persistence(report)
            self._refresh_cdi(report)
            self._restart_or_fail(step.actions, report)

        self._run_plan(
            plan,
            report,
            {
                "stop_consumers": lambda step: self._stop_consumers(step.actions),
                "unload_modules": lambda step: self._unload(step.actions),
                "install_driver": lambda step: self._install_driver(step.actions[0]),
                "load_modules": lambda step: self._load(step.actions, report),
                "verify": lambda step: self._verify_step(step.actions, report),
                "restart_consumers": restart,
            },
            lambda failed_step, interrupted: self._rollback(failed_step, report, interrupted=interrupted),
        )
        self._summarize_undo(report)
        if self._unload_started is not None:
            report.gpu_unavailable_seconds = round((self._gpu_back or time.monotonic()) - self._unload_started, 3)
        return self._finish(report)

    def _install_driver(self, action: Action) -> None:
        action.perform(self.target)

    def _run_plan(
        self,
        plan: Plan,
        report: RunReport,
        bodies: dict[str, Callable[[Step], None]],
        undo: Callable[[str, bool], None],
    ) -> None:
        """Each step of the plan through its body, between journaled boundaries, with signals raised
        as Interrupted; on a failure or a signal, `undo(failed step, interrupted)` with any further
        signal held until it is done."""
        previous = self._install(self._raise_on_signal)
        failed_step = None
        try:
            for step in plan.steps:
                failed_step = step.name
                body = bodies.get(step.name)
                if body is not None:
                    self._run_step(step.name, lambda s=step, b=body: b(s))
            failed_step = None
        except (StepFailed, Interrupted, JournalWriteError) as exc:
            self._install(self._defer_signal)
            report.error = exc.message
            undo(failed_step or "stop_consumers", isinstance(exc, Interrupted))
        finally:
            self._restore(previous)

    def _restart_or_fail(self, actions: tuple[Action, ...], report: RunReport) -> None:
        """The restart step: bring back what was stopped; whatever did not come back fails the step."""
        self._restart(actions, report)
        if report.restart_failures:
            raise StepFailed(
                "restart_consumers", "; ".join(f"{f['target']}: {f['error']}" for f in report.restart_failures)
            )

    def _summarize_undo(self, report: RunReport) -> None:
        """What the journal says was stopped and killed, for the report."""
        stopped = [r for r in self.journal.undo if r.state != "intended"]
        report.stopped = [StopContainer.from_record(r).target for r in stopped if r.kind == StopContainer.undo_kind] + [
            r.target for r in stopped if r.kind == StopService.undo_kind
        ]
        report.killed = self.journal.killed

    def _rollback(self, failed_step: str, report: RunReport, interrupted: bool = False) -> None:
        """Undo in reverse: modules back, then consumers back. Killed processes stay dead (reported).
        Where the old modules cannot come back (see _roll_forward), the reload is finished instead."""
        self.journal.begin_rollback()
        needs_reboot = rolled_forward = False
        modules_touched = failed_step in MODULE_STEPS or bool(self.journal.outstanding("unload_module"))
        if modules_touched:
            ok = self._ensure_modules(report)
            if not ok:
                ok = rolled_forward = self._roll_forward(report)
            else:
                rolled_forward = self._went_forward(report)
            needs_reboot = not ok
        if not needs_reboot:
            self._rebind_consoles(report)
            self._recreate_mig(self.journal.mig, report)
            if modules_touched:
                self._restore_persistence(report)
        verify_failed = failed_step == "verify" and not interrupted
        if rolled_forward:
            fabric = [a for a in restart_actions(self._stopped_as_actions()) if a.target in FABRIC_SERVICES]
            try:
                self._bring_up_fabric(fabric, report)
                verify_failed = not self._verify_rolled_forward(report)
            except StepFailed as exc:
                report.restart_failures.append({"action": "verify", "target": "fabric", "error": exc.message})
                verify_failed = True
        if rolled_forward and not needs_reboot:
            self._refresh_cdi(report)
        if failed_step != "restart_consumers" or interrupted:
            # After a failed restart we do not retry in the same breath: what did not come back is
            # reported, and `--start` (or `--rollback`) retries it from the journal.
            self._restart(restart_actions(self._stopped_as_actions()), report)
        settle(
            report,
            broken=needs_reboot or verify_failed,
            reached=Outcome.RELOADED if rolled_forward or failed_step == "restart_consumers" else None,
        )

    def _roll_forward(self, report: RunReport) -> bool:
        """The unload stopped halfway (a late holder, a crash) and the modules on disk are of another
        version than the nvidia still loaded: the real ones refuse to load next to it ("API
        mismatch"), and the old ones are gone from disk. Going back is impossible, so finish the
        reload: take out what is left and load the whole set from disk."""
        loaded = self.target.loaded_modules()
        if "nvidia" not in loaded:
            return False  # nvidia itself will not load: nothing to go forward with
        for name in reversed([name for name, _ in self.journal.modules]):
            if name in loaded:
                try:
                    self.target.unload_module(name)
                except HostError as exc:
                    report.restart_failures.append({"action": "unload_module", "target": name, "error": exc.message})
                    return False
        report.restart_failures[:] = [f for f in report.restart_failures if f["action"] != "load_module"]
        if not self._ensure_modules(report):
            return False
        self._went_forward(report)  # says which version came instead
        return True

    def _went_forward(self, report: RunReport) -> bool:
        """Whether what came back is another version than the run started with: the old modules
        were no longer on disk (an upgrade replaced them), so undoing the unload finished the reload."""
        before, now = self.journal.module_version_before, self.target.loaded_driver_version()
        if before is None or now is None or before == now:
            return False
        report.warnings.append(
            {
                "module": "nvidia",
                "warning": f"{before} could not come back (no longer on disk): "
                f"{now} was loaded, so the reload was finished instead of undone",
            }
        )
        return True

    def _verify_rolled_forward(self, report: RunReport) -> bool:
        try:
            failed = self._failed_checks({})
        except HostError as exc:  # the checks could not even run: not verified, and said so
            report.restart_failures.append({"action": "verify", "target": "driver", "error": exc.message})
            return False
        for check in failed:
            report.restart_failures.append({"action": "verify", "target": check.name, "error": check.detail})
        return not failed

    def _ensure_modules(self, report: RunReport) -> bool:
        """Load back every module of the original set that is not loaded now; False if any that the
        driver needs will not (an optional one that will not is a warning)."""
        loaded = self.target.loaded_modules()
        ok = True
        for name, parameters in self.journal.modules:
            if name in loaded:
                self._put_back("unload_module", name)
                continue
            try:
                self._load_module(name, parameters, report)
            except HostError as exc:
                report.restart_failures.append({"action": "load_module", "target": name, "error": exc.message})
                ok = False
                if name == "nvidia":
                    break  # nothing else can load without it
        return ok

    def _restore_persistence(self, report: RunReport) -> None:
        """Persistence mode back where the run found it on (the journal holds it): a new driver
        instance starts with it off, on every path that loaded the modules."""
        persistence = self._persistence if self._persistence is not None else self.journal.persistence
        expected = {bus: True for bus, on in persistence.items() if on}
        if not expected:
            return
        try:
            self.target.restore_persistence(expected)
        except HostError as exc:
            report.restart_failures.append(
                {"action": "restore_persistence", "target": ", ".join(sorted(expected)), "error": exc.message}
            )

    def _rebind_consoles(self, report: RunReport) -> None:
        for record in self.journal.outstanding("unbind_console"):
            try:
                self.target.bind_console(record.target, True)
                self.journal.mark(record, "undone")
            except HostError as exc:
                report.restart_failures.append(
                    {"action": "rebind_console", "target": record.target, "error": exc.message}
                )

    def _stopped_as_actions(self) -> list[Action]:
        """The stop actions whose undo records are outstanding, as the planner would have made them."""
        return [STOPS[record.kind].from_record(record) for record in self.journal.outstanding(*STOP_KINDS)]

    # --reset ------------------------------------------------------------------------------
    def reset(self, plan: Plan) -> RunReport:
        """Stop the chosen GPUs' consumers, reset each GPU (persistence off first), verify, then put
        persistence and the consumers back. A reset cannot be undone: on a failure what stopped
        comes back, and the outcome says whether the GPUs did (rolled back: not reset, as before;
        reboot: a GPU did not come back from its reset)."""
        report = RunReport(Outcome.RESET, steps=self._steps)
        resets = plan.step("reset_gpus")
        actions = resets.actions if resets else ()
        minors = frozenset(a.minor for a in actions if isinstance(a, ResetGpu) and a.minor is not None)
        drm_out = any(isinstance(a, UnloadModule) for a in actions)  # nvidia_drm goes out for the resets
        # what must come back if the run stops halfway: nvidia_drm, with its parameters
        self.journal.set_modules([(a.target, a.parameters) for a in actions if isinstance(a, LoadModule)])

        def relevant(holder: GpuProcess) -> bool:
            if gpu_minors(holder) & minors:
                return True
            return drm_out and holds_drm(holder) and holder.comm != LOGIND_COMM

        def restart(step: Step) -> None:
            self._persistence_back(report)
            self._restart_or_fail(step.actions, report)

        self._run_plan(
            plan,
            report,
            {
                "stop_consumers": lambda step: self._stop_consumers(step.actions, relevant),
                "reset_gpus": lambda step: self._reset_gpus(step.actions, report),
                "verify": lambda step: self._verify(next(a for a in step.actions if isinstance(a, Verify))),
                "restart_consumers": restart,
            },
            lambda failed_step, interrupted: self._finish_reset(failed_step, report, interrupted),
        )
        self._summarize_undo(report)
        return self._finish(report)

    def _reset_gpus(self, actions: tuple[Action, ...], report: RunReport) -> None:
        for action in actions:
            if isinstance(action, (UnbindConsole, UnloadModule)):  # nvidia_drm out for the resets
                self._unload((action,))
                continue
            if isinstance(action, (LoadModule, RebindConsole)):  # and back
                self._after_reset(action, report)
                continue
            if isinstance(action, ResetGpu) and action.persistence:
                record = self.journal.intend("disable_persistence", action.target)
                self.target.disable_persistence(action.target)
                self.journal.mark(record, "done")
            action.perform(self.target)
            self.reporter.action(action, "done")

    def _persistence_back(self, report: RunReport) -> None:
        outstanding = self.journal.outstanding("disable_persistence")
        if not outstanding:
            return
        try:
            self.target.restore_persistence({r.target: True for r in outstanding})
        except HostError as exc:
            report.restart_failures.append(
                {
                    "action": "restore_persistence",
                    "target": ", ".join(r.target for r in outstanding),
                    "error": exc.message,
                }
            )
            return
        for record in outstanding:
            self.journal.mark(record, "undone")

    def _after_reset(self, action: Action, report: RunReport) -> None:
        """nvidia_drm back, or a console on it, once the GPUs are reset: one that fails is a restart
        failure (the GPUs are reset and work; `--start` tries again), not a failed reset."""
        if isinstance(action, RebindConsole) and self.journal.outstanding("unload_module"):
            return  # nvidia_drm is not back: its console cannot be either (the failure is named)
        try:
            self._load((action,), report)
        except HostError as exc:
            report.restart_failures.append({"action": action.kind, "target": action.target, "error": exc.message})
            self.reporter.action(action, "failed", exc.message)

    def _modules_back_after_reset(self, report: RunReport) -> None:
        """nvidia_drm (out for the resets) back with its parameters, then its consoles; one that
        will not load is a restart failure (`--start` tries again), not a lost GPU."""
        # this try's outcome replaces an earlier one's
        report.restart_failures[:] = [
            f for f in report.restart_failures if f["action"] not in ("load_module", "rebind_console")
        ]
        if self.journal.outstanding("unload_module") and not self._ensure_modules(report):
            return  # its consoles cannot come back without it (the failure is named)
        self._rebind_consoles(report)

    def _finish_reset(self, failed_step: str, report: RunReport, interrupted: bool) -> None:
        """After a failed or interrupted --reset: persistence and consumers back, and an honest
        outcome. An interrupted one ends as a killed one does after --rollback (_resume_reset): the
        consumers come back whichever step the signal landed in, the restart step included."""
        if interrupted:
            self._resume_reset(failed_step, report, resets_done=failed_step in ("verify", "restart_consumers"))
            return
        self.journal.begin_rollback()
        self._modules_back_after_reset(report)
        self._persistence_back(report)
        if failed_step != "restart_consumers":
            self._restart(restart_actions(self._stopped_as_actions()), report)
        settle(
            report,
            broken=failed_step == "verify",
            reached=Outcome.RESET if failed_step == "restart_consumers" else None,
        )

    def _resume_reset(self, last: str, report: RunReport, resets_done: bool) -> None:
        """A --reset that was killed or interrupted: a reset cannot be undone, so bring back
        persistence and what stopped, and say whether the GPUs work (killed during a reset, one may
        not have come back). Stopped before every reset was done, it is rolled back (exit 10): the
        consumers are as they were, and the reset is to be run again."""
        self.journal.begin_rollback()
        self._modules_back_after_reset(report)
        self._persistence_back(report)
        self._restart(restart_actions(self._stopped_as_actions()), report)
        gpus_ok = last == "stop_consumers" or not self._failed_checks({})
        settle(
            report,
            broken=not gpus_ok,
            reached=Outcome.RESET if resets_done else None,
            again="nvreload --reset" if last != "stop_consumers" else None,
        )

    # --stop / --start / --rollback --------------------------------------------------------
    def stop(self, plan: Plan) -> RunReport:
        report = RunReport(Outcome.STOPPED, steps=self._steps)

        def undo(_failed_step: str, _interrupted: bool) -> None:
            self._restart(restart_actions(self._stopped_as_actions()), report)
            settle(report, broken=False, reached=None)

        self._run_plan(plan, report, {"stop_consumers": lambda step: self._stop_consumers(step.actions)}, undo)
        self._summarize_undo(report)
        return self._finish(report)

    def resume(self) -> RunReport:
        """--start and --rollback: finish or undo what the journal says is outstanding."""
        report = RunReport(Outcome.ROLLED_BACK, steps=self._steps)
        last, last_status = self.journal.last_step or ("stop_consumers", "done")
        self.journal.best_effort = True  # putting the node back never waits for room on the disk
        previous = self._install(self._defer_signal)
        try:
            if self.journal.action == "stop":
                self._restart(restart_actions(self._stopped_as_actions()), report)
                settle(report, broken=False, reached=Outcome.STARTED)
            elif self.journal.action == "reset":
                done = last in ("verify", "restart_consumers") or (last == "reset_gpus" and last_status == "done")
                self._resume_reset(last, report, resets_done=done)
            elif last == "restart_consumers" or (last == "verify" and last_status == "done"):
                self._recreate_mig(self.journal.mig, report)
                self._restore_persistence(report)
                self._refresh_cdi(report)
                self._restart(restart_actions(self._stopped_as_actions()), report)
                settle(report, broken=False, reached=Outcome.RELOADED)
            else:
                self._rollback(last, report, interrupted=last_status in ("running", "interrupted"))
        finally:
            self._restore(previous)
        return self._finish(report)
