"""The engine: runs a plan against a ReloadHost, journaling before and after every step, and on any
failure or signal undoes in reverse so the node ends fully reloaded or fully restored."""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from nvreload.engine.journal import Journal
from nvreload.engine.planner import restart_actions
from nvreload.engine.port import ReloadHost
from nvreload.engine.view import Action, Plan
from nvreload.errors import ExitCode, HostError, StepFailed

MODULE_STEPS = ("unload_modules", "install_driver", "load_modules", "verify")


class Interrupted(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


@dataclass
class RunReport:
    """What a run did and how it ended: the --json document of --reload, --stop, --start."""

    result: str  # "reloaded" | "rolled_back" | "failed" | "stopped" | "started" | "nothing_to_do"
    exit_code: int
    steps: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)
    stopped: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    restart_failures: list[dict] = field(default_factory=list)
    killed: list[dict] = field(default_factory=list)
    error: str | None = None
    remaining_action: str | None = None
    gpu_unavailable_seconds: float | None = None
    left_alone: list[dict] = field(default_factory=list)
    container_engine: dict | None = None

    def document(self) -> dict:
        return {
            "schema_version": 1,
            "result": self.result,
            "steps": self.steps,
            "final": self.final,
            "stopped": self.stopped,
            "restarted": self.restarted,
            "restart_failures": self.restart_failures,
            "killed": self.killed,
            "error": self.error,
            "remaining_action": self.remaining_action,
            "gpu_unavailable_seconds": self.gpu_unavailable_seconds,
            "left_alone": self.left_alone,
            "container_engine": self.container_engine,
        }


class Reporter:
    """Progress callbacks; the console renderer implements these, tests use this silent one."""

    def step(self, name: str, status: str, seconds: float | None = None, detail: str = "") -> None: ...
    def action(self, action: Action, status: str, detail: str = "") -> None: ...


class Engine:
    def __init__(self, host: ReloadHost, journal: Journal, reporter: Reporter | None = None,
                 peermem_wait: float = 300.0, workers: int = 16) -> None:
        self.host = host
        self.journal = journal
        self.reporter = reporter or Reporter()
        self.peermem_wait = peermem_wait
        self.workers = workers
        self._journal_lock = threading.Lock()
        self._steps: list[dict] = []
        self._pending_signal: int | None = None
        self._unload_started: float | None = None
        self._gpu_back: float | None = None

    # journal helpers (container stops run in threads) ----------------------------------------
    def _record(self, kind: str, value: object) -> None:
        with self._journal_lock:
            self.journal.record(kind, value)

    # signals ------------------------------------------------------------------------------
    def _raise_on_signal(self, signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    def _defer_signal(self, signum: int, _frame: object) -> None:
        self._pending_signal = signum  # rollback must finish; the signal is reported afterwards

    def _install(self, handler) -> dict:  # type: ignore[no-untyped-def]
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                previous[signum] = signal.signal(signum, handler)
        return previous

    def _restore(self, previous: dict) -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    # steps --------------------------------------------------------------------------------
    def _run_step(self, name: str, body) -> None:  # type: ignore[no-untyped-def]
        self.host.at_boundary(name, "before")
        started = time.monotonic()
        self.journal.step_started(name)
        self.reporter.step(name, "running")
        entry = {"name": name, "status": "running", "seconds": None, "error": None}
        self._steps.append(entry)
        try:
            body()
        except (StepFailed, HostError) as exc:
            entry.update(status="failed", seconds=round(time.monotonic() - started, 3), error=exc.message)
            self.journal.step_finished(name, "failed", exc.message)
            self.reporter.step(name, "failed", time.monotonic() - started, exc.message)
            raise StepFailed(name, exc.message) from None
        except Interrupted as exc:
            entry.update(status="interrupted", seconds=round(time.monotonic() - started, 3), error=str(exc))
            self.journal.step_finished(name, "interrupted", str(exc))
            self.reporter.step(name, "interrupted", time.monotonic() - started, str(exc))
            raise
        entry.update(status="done", seconds=round(time.monotonic() - started, 3))
        self.journal.step_finished(name, "done")
        self.reporter.step(name, "done", time.monotonic() - started)
        self.host.at_boundary(name, "after")

    def _stop_consumers(self, actions: tuple[Action, ...]) -> None:
        containers = [a for a in actions if a.action == "stop_container"]
        services = [a for a in actions if a.action == "stop_service"]
        errors: list[str] = []

        def stop_container(action: Action) -> None:
            try:
                self.host.stop_container(action.detail.get("id", action.target), action.detail.get("timeout"))
            except HostError as exc:
                errors.append(f"container {action.target}: {exc.message}")
                self.reporter.action(action, "failed", exc.message)
                return
            self._record("containers", {"id": action.detail.get("id", action.target), "name": action.target,
                                        "restart_policy": action.detail.get("restart_policy"), "was_running": True})
            self.reporter.action(action, "done")

        def stop_services() -> None:
            for action in services:
                try:
                    self.host.stop_service(action.target)
                except HostError as exc:
                    errors.append(f"service {action.target}: {exc.message}")
                    self.reporter.action(action, "failed", exc.message)
                    return  # the order matters: do not stop what depends on a unit still running
                self._record("services", {"name": action.target, "command": action.detail.get("command")})
                self.reporter.action(action, "done")

        # Containers stop in parallel with each other and with the service chain: the critical
        # path is the slowest container, not their sum.
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = [pool.submit(stop_container, a) for a in containers]
            if services:
                futures.append(pool.submit(stop_services))
            for future in futures:
                future.result()
        if errors:
            raise StepFailed("stop_consumers", "; ".join(errors))
        for action in actions:
            if action.action == "quit_mps":
                self.host.quit_mps()
                self._record("mps", True)
            elif action.action == "restart_service":
                self.host.restart_service(action.target)
            elif action.action == "kill_process":
                outcome = self.host.terminate_process(action.detail["pid"], action.detail.get("start_time"))
                self._record("killed", {"pid": action.detail["pid"], "comm": action.detail.get("comm"), "outcome": outcome})
                self.reporter.action(action, outcome)
                # A process that moved on (exited, released the GPU, pid reused) is fine; one we may
                # not signal, or one that survived SIGKILL, will keep the module busy.
                if outcome.startswith(("survived", "refused: never")) or "kernel thread" in outcome:
                    raise StepFailed("stop_consumers", f"pid {action.detail['pid']} ({action.detail.get('comm')}): {outcome}")

    def _unload(self, actions: tuple[Action, ...]) -> None:
        self._unload_started = time.monotonic()
        for action in actions:
            if action.action == "unbind_console":
                self.host.bind_console(action.target, False)
                self._record("consoles", action.target)
            else:
                self.host.unload_module(action.target)
                self._record("unloaded", action.target)
            self.reporter.action(action, "done")

    def _load_one(self, name: str, parameters: dict[str, str]) -> None:
        if name == "nvidia_peermem":
            deadline = time.monotonic() + self.peermem_wait
            while not self.host.mofed_ready():
                if time.monotonic() >= deadline:
                    raise HostError(f"MOFED not ready after {self.peermem_wait:g} s; nvidia_peermem not loaded")
                self.host.sleep(1.0)
        self.host.load_module(name, parameters)

    def _load(self, actions: tuple[Action, ...]) -> None:
        for action in actions:
            if action.action == "rebind_console":
                self.host.bind_console(action.target, True)
                self._record("restarted", f"console:{action.target}")
            else:
                self._load_one(action.target, action.detail.get("parameters", {}))
                self._record("loaded", action.target)
            self.reporter.action(action, "done")

    def _verify(self, action: Action) -> None:
        checks = self.host.verify(action.detail.get("persistence", {}))
        failed = [c for c in checks if not c.ok and c.severity == "critical"]
        if failed:
            raise StepFailed("verify", "; ".join(f"{c.name}: {c.detail}" for c in failed))
        self._gpu_back = time.monotonic()

    def _restart(self, actions: tuple[Action, ...] | list[Action], report: RunReport) -> None:
        done = set(self.journal.data["undo"].get("restarted", []))
        for action in actions:
            key = f"{action.action}:{action.detail.get('id', action.target)}"
            if key in done:
                continue
            try:
                if action.action == "start_service":
                    self.host.start_service(action.target, action.detail.get("command"))
                elif action.action == "start_mps":
                    self.host.start_mps()
                elif action.action == "start_container":
                    self.host.start_container(action.detail.get("id", action.target), action.detail.get("restart_policy"))
                elif action.action == "restart_container_engine":
                    self.host.restart_container_engine()
                else:
                    continue
            except HostError as exc:
                report.restart_failures.append({"action": action.action, "target": action.target, "error": exc.message})
                self.reporter.action(action, "failed", exc.message)
                continue
            self._record("restarted", key)
            report.restarted.append(action.target)
            # a retry that worked clears the earlier failure of the same target
            report.restart_failures[:] = [f for f in report.restart_failures if f["target"] != action.target]
            self.reporter.action(action, "done")

    # runs ---------------------------------------------------------------------------------
    def _final(self) -> dict:
        view = self.host.observe()
        return {
            "modules_loaded": [m.name for m in view.modules],
            "services_active": [s.name for s in view.services],
            "containers_running": [c.name for c in view.containers],
        }

    def reload(self, plan: Plan) -> RunReport:
        report = RunReport("reloaded", ExitCode.OK, steps=self._steps)
        self._record_modules(plan)
        previous = self._install(self._raise_on_signal)
        failed_step = None
        try:
            for step in plan.steps:
                failed_step = step.name
                if step.name == "stop_consumers":
                    self._run_step(step.name, lambda s=step: self._stop_consumers(s.actions))
                elif step.name == "unload_modules":
                    self._run_step(step.name, lambda s=step: self._unload(s.actions))
                elif step.name == "install_driver":
                    self._run_step(step.name, lambda s=step: self.host.install_driver(s.actions[0].target))
                elif step.name == "load_modules":
                    self._run_step(step.name, lambda s=step: self._load(s.actions))
                elif step.name == "verify":
                    self._run_step(step.name, lambda s=step: self._verify(s.actions[0]))
                elif step.name == "restart_consumers":
                    def restart(s=step) -> None:
                        self.host.restore_persistence(plan.step("verify").actions[0].detail.get("persistence", {}))
                        self._restart(s.actions, report)
                        if report.restart_failures:
                            raise StepFailed("restart_consumers", "; ".join(f"{f['target']}: {f['error']}" for f in report.restart_failures))
                    self._run_step(step.name, restart)
            failed_step = None
        except (StepFailed, Interrupted) as exc:
            self._install(self._defer_signal)
            report.error = str(exc) if isinstance(exc, Interrupted) else exc.message
            self._rollback(failed_step or "stop_consumers", report, interrupted=isinstance(exc, Interrupted))
        finally:
            self._restore(previous)
        self._summarize_undo(report)
        if self._unload_started is not None:
            report.gpu_unavailable_seconds = round((self._gpu_back or time.monotonic()) - self._unload_started, 3)
        report.final = self._final()
        state = {"reloaded": "reloaded", "rolled_back": "rolled_back"}.get(report.result, "failed")
        self.journal.finish(state, report.document())
        return report

    def _summarize_undo(self, report: RunReport) -> None:
        """What the journal says was stopped and killed, for the report."""
        undo = self.journal.data["undo"]
        report.stopped = [c["name"] for c in undo["containers"]] + [s["name"] for s in undo["services"]]
        report.killed = list(undo["killed"])

    def _record_modules(self, plan: Plan) -> None:
        load = plan.step("load_modules")
        if load is None:
            return
        with self._journal_lock:
            self.journal.record_all("modules", [
                {"name": action.target, "parameters": action.detail.get("parameters", {})}
                for action in load.actions if action.action == "load_module"
            ])

    def _rollback(self, failed_step: str, report: RunReport, interrupted: bool = False) -> None:
        """Undo in reverse: modules back, then consumers back. Killed processes stay dead (reported)."""
        self.journal.data["state"] = "rolling_back"
        self.journal.save()
        needs_reboot = False
        if failed_step in MODULE_STEPS or self.journal.data["undo"]["unloaded"]:
            needs_reboot = not self._ensure_modules(report)
        if not needs_reboot:
            self._rebind_consoles(report)
        if failed_step != "restart_consumers" or interrupted:
            # After a failed restart we do not retry in the same breath: what did not come back is
            # reported, and `--start` (or `--rollback`) retries it from the journal.
            self._restart(restart_actions(self._stopped_as_actions()), report)
        verify_failed = failed_step == "verify" and not interrupted
        if needs_reboot or verify_failed:
            report.result, report.exit_code, report.remaining_action = "failed", ExitCode.NEEDS_REBOOT, "reboot"
        elif failed_step == "restart_consumers" and not report.restart_failures:
            report.result, report.exit_code = "reloaded", ExitCode.OK
        elif report.restart_failures:
            report.result, report.exit_code, report.remaining_action = "failed", ExitCode.PARTIAL, "nvreload --start"
        else:
            report.result, report.exit_code = "rolled_back", ExitCode.ROLLED_BACK

    def _ensure_modules(self, report: RunReport) -> bool:
        """Load back every module of the original set that is not loaded now; False if any will not."""
        wanted = [(m["name"], m.get("parameters", {})) for m in self.journal.data["undo"]["modules"]]
        loaded = {m.name for m in self.host.observe().modules}
        ok = True
        for name, parameters in wanted:
            if name in loaded:
                continue
            try:
                self._load_one(name, parameters)
                self._record("loaded", name)
            except HostError as exc:
                report.restart_failures.append({"action": "load_module", "target": name, "error": exc.message})
                ok = False
                if name == "nvidia":
                    break  # nothing else can load without it
        return ok

    def _rebind_consoles(self, report: RunReport) -> None:
        done = set(self.journal.data["undo"]["restarted"])
        for vtcon in self.journal.data["undo"].get("consoles", []):
            if f"console:{vtcon}" in done:
                continue
            try:
                self.host.bind_console(vtcon, True)
                self._record("restarted", f"console:{vtcon}")
            except HostError as exc:
                report.restart_failures.append({"action": "rebind_console", "target": vtcon, "error": exc.message})

    def _stopped_as_actions(self) -> list[Action]:
        undo = self.journal.data["undo"]
        actions = [Action("stop_container", c["name"], {"id": c["id"], "restart_policy": c.get("restart_policy")})
                   for c in undo["containers"]]
        if undo.get("mps"):
            actions.append(Action("quit_mps", "nvidia-cuda-mps-control"))
        actions += [Action("stop_service", s["name"], {"command": s["command"]} if s.get("command") else {})
                    for s in undo["services"]]
        return actions

    # --stop / --start / --rollback --------------------------------------------------------
    def stop(self, plan: Plan) -> RunReport:
        report = RunReport("stopped", ExitCode.OK, steps=self._steps)
        previous = self._install(self._raise_on_signal)
        try:
            self._run_step("stop_consumers", lambda: self._stop_consumers(plan.steps[0].actions))
        except (StepFailed, Interrupted) as exc:
            self._install(self._defer_signal)
            report.error = str(exc) if isinstance(exc, Interrupted) else exc.message
            self._restart(restart_actions(self._stopped_as_actions()), report)
            report.result, report.exit_code = ("rolled_back", ExitCode.ROLLED_BACK) if not report.restart_failures else ("failed", ExitCode.PARTIAL)
        finally:
            self._restore(previous)
        self._summarize_undo(report)
        report.final = self._final()
        # a stop is "unfinished" on purpose: --start (or --rollback) brings things back
        self.journal.finish("running" if report.result == "stopped" else ("rolled_back" if report.result == "rolled_back" else "failed"), report.document())
        return report

    def resume(self) -> RunReport:
        """--start and --rollback: finish or undo what the journal says is outstanding."""
        report = RunReport("rolled_back", ExitCode.ROLLED_BACK, steps=self._steps)
        steps = self.journal.data.get("steps", [])
        last = steps[-1]["name"] if steps else "stop_consumers"
        last_status = steps[-1]["status"] if steps else "done"
        action = self.journal.data.get("action")
        previous = self._install(self._defer_signal)
        try:
            if action == "stop":
                self._restart(restart_actions(self._stopped_as_actions()), report)
                report.result, report.exit_code = ("started", ExitCode.OK) if not report.restart_failures else ("failed", ExitCode.PARTIAL)
            else:
                if last == "restart_consumers" or (last == "verify" and last_status == "done"):
                    self._restart(restart_actions(self._stopped_as_actions()), report)
                    report.result, report.exit_code = ("reloaded", ExitCode.OK) if not report.restart_failures else ("failed", ExitCode.PARTIAL)
                else:
                    self._rollback(last, report, interrupted=last_status in ("running", "interrupted"))
        finally:
            self._restore(previous)
        report.final = self._final()
        state = {"reloaded": "reloaded", "rolled_back": "rolled_back", "started": "started"}.get(report.result, "failed")
        self.journal.finish(state, report.document())
        return report

