"""The run journal: what a run set out to do, each step's boundaries, and a typed undo log, in one
JSON file replaced atomically (temp file, rename) after every change, so whatever instant the
process dies the file is a complete journal of a consistent moment.

The undo log follows record-intent-then-done: an UndoRecord is written as `intended` before its
action runs and marked `done` after, so a crash between the action and its record still leaves
the record; rollback treats `intended` like `done` (starting a running unit or container, loading
a loaded module, binding a bound console are no-ops). When rollback (or the forward restart) has
put a thing back, its record is `undone`.

Step boundaries are made durable (fsync of the file and the directory) so they survive power
loss. The per-action records between them are not fsynced: a power loss reboots the node, which
reloads the driver and starts enabled units by itself, and an fsync per action would add tens of
milliseconds to every reload."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field

from nvreload.errors import JournalError
from nvreload.state_files import atomic_write_json

JOURNAL_SCHEMA_VERSION = 2
# A stopped run is unfinished on purpose: --start (or --rollback) brings its consumers back.
UNFINISHED = ("running", "rolling_back", "failed", "stopped")
FINISHED = ("reloaded", "rolled_back", "started")
UNDO_KINDS = ("stop_container", "stop_service", "quit_mps", "unbind_console", "unload_module")
RECORD_STATES = ("intended", "done", "undone")


@dataclass
class UndoRecord:
    """One change to the node that a rollback must put back."""

    seq: int
    kind: str  # one of UNDO_KINDS
    target: str
    detail: dict = field(default_factory=dict)
    state: str = "intended"  # intended -> done -> undone

    @property
    def outstanding(self) -> bool:
        return self.state != "undone"

    def as_dict(self) -> dict:
        # by hand: dataclasses.asdict deep-copies recursively, and the journal is saved after
        # every action (it was most of the engine's own time in bench/reload_overhead.py)
        return {"seq": self.seq, "kind": self.kind, "target": self.target, "detail": self.detail, "state": self.state}


@dataclass
class JournalContext:
    """What a run relied on, recorded when it starts."""

    host: str
    driver: str | None = None
    container_engine: dict | None = None
    module_version: str | None = None  # the nvidia module loaded before the run


class Journal:
    """One run's journal. Every mutation is saved before the method returns."""

    def __init__(self, path: str, data: dict) -> None:
        self.path = path
        self._data = data
        self._lock = threading.Lock()  # container stops record from worker threads
        self.undo = [UndoRecord(**r) for r in data.get("undo", [])]

    # creation and loading -------------------------------------------------------------------
    @classmethod
    def start(cls, path: str, action: str, plan: list[dict], context: JournalContext) -> "Journal":
        journal = cls(path, {
            "schema_version": JOURNAL_SCHEMA_VERSION,
            "run_id": uuid.uuid4().hex,
            "action": action,
            "pid": os.getpid(),
            "started": time.time(),
            "state": "running",
            "context": asdict(context),
            "plan": plan,
            "steps": [],
            "modules": [],
            "undo": [],
            "killed": [],
            "result": None,
        })
        journal.save()
        return journal

    @classmethod
    def load(cls, path: str) -> "Journal":
        try:
            with open(path) as handle:
                data = json.load(handle)
        except FileNotFoundError:
            raise JournalError(f"no journal at {path}: nothing was interrupted") from None
        except (OSError, ValueError) as exc:
            raise JournalError(f"{path} is not a readable journal ({exc}); inspect it, then remove it") from None
        problem = _shape_problem(data)
        if problem:
            raise JournalError(f"{path} is not an nvreload journal of schema version {JOURNAL_SCHEMA_VERSION} ({problem})")
        return cls(path, data)

    @classmethod
    def load_if_any(cls, path: str) -> "Journal | None":
        if not os.path.exists(path):
            return None
        return cls.load(path)

    # what it says ---------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return str(self._data.get("run_id"))

    @property
    def action(self) -> str:
        return str(self._data.get("action"))

    @property
    def state(self) -> str:
        return str(self._data.get("state"))

    @property
    def unfinished(self) -> bool:
        return self.state in UNFINISHED

    @property
    def modules(self) -> list[tuple[str, dict[str, str]]]:
        """The set of modules that must be loaded when the run ends, with their parameters."""
        return [(m["name"], dict(m.get("parameters", {}))) for m in self._data["modules"]]

    @property
    def module_version_before(self) -> str | None:
        context = self._data.get("context")
        return context.get("module_version") if isinstance(context, dict) else None

    @property
    def killed(self) -> list[dict]:
        return [dict(k) for k in self._data["killed"]]

    @property
    def last_step(self) -> tuple[str, str] | None:
        """(name, status) of the last step that started."""
        steps = self._data["steps"]
        return (steps[-1]["name"], steps[-1]["status"]) if steps else None

    def outstanding(self, *kinds: str) -> list[UndoRecord]:
        """Records not yet put back, of these kinds (all kinds when none given), in the order written."""
        return [r for r in self.undo if r.outstanding and (not kinds or r.kind in kinds)]

    def find(self, kind: str, target: str) -> UndoRecord | None:
        return next((r for r in reversed(self.undo) if r.kind == kind and r.target == target), None)

    # changes --------------------------------------------------------------------------------
    def save(self, durable: bool = True) -> None:
        self._data["updated"] = time.time()
        self._data["undo"] = [r.as_dict() for r in self.undo]
        atomic_write_json(self.path, self._data, durable=durable)

    def step_started(self, name: str) -> None:
        with self._lock:
            self._data["steps"].append({"name": name, "status": "running", "started": time.time()})
            self.save()

    def step_finished(self, name: str, status: str, error: str | None = None) -> None:
        with self._lock:
            for step in reversed(self._data["steps"]):
                if step["name"] == name:
                    step.update(status=status, finished=time.time(), error=error)
                    break
            self.save()

    def set_modules(self, modules: list[tuple[str, dict[str, str]]]) -> None:
        with self._lock:
            self._data["modules"] = [{"name": name, "parameters": dict(params)} for name, params in modules]
            self.save(durable=False)

    def intend(self, kind: str, target: str, detail: dict | None = None) -> UndoRecord:
        """Write down, before doing it, a change that rollback must put back."""
        if kind not in UNDO_KINDS:
            raise ValueError(f"not an undo kind: {kind}")
        with self._lock:
            record = UndoRecord(len(self.undo) + 1, kind, target, dict(detail or {}))
            self.undo.append(record)
            self.save(durable=False)
            return record

    def mark(self, record: UndoRecord, state: str) -> None:
        if state not in RECORD_STATES:
            raise ValueError(f"not a record state: {state}")
        with self._lock:
            record.state = state
            self.save(durable=False)

    def add_killed(self, entry: dict) -> None:
        """A process ended by signal: cannot be undone, reported."""
        with self._lock:
            self._data["killed"].append(dict(entry))
            self.save(durable=False)

    def begin_rollback(self) -> None:
        with self._lock:
            self._data["state"] = "rolling_back"
            self.save()

    def finish(self, state: str, result: dict) -> None:
        with self._lock:
            self._data["state"] = state
            self._data["result"] = result
            self._data["finished"] = time.time()
            self.save()


def _shape_problem(data: object) -> str | None:
    """What makes `data` not a journal this version can act on, or None."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if data.get("schema_version") != JOURNAL_SCHEMA_VERSION:
        return f"schema_version {data.get('schema_version')!r}"
    if data.get("state") not in UNFINISHED + FINISHED:
        return f"state {data.get('state')!r}"
    for key, kind in (("steps", list), ("modules", list), ("undo", list), ("killed", list), ("plan", list)):
        if not isinstance(data.get(key), kind):
            return f"'{key}' missing or not a list"
    for record in data["undo"]:
        if not isinstance(record, dict) or set(record) != {"seq", "kind", "target", "detail", "state"} \
                or record["kind"] not in UNDO_KINDS or record["state"] not in RECORD_STATES:
            return f"an undo record of the wrong shape: {record!r}"
    for step in data["steps"]:
        if not isinstance(step, dict) or not isinstance(step.get("name"), str) or not isinstance(step.get("status"), str):
            return f"a step of the wrong shape: {step!r}"
    for module in data["modules"]:
        if not isinstance(module, dict) or not isinstance(module.get("name"), str):
            return f"a module of the wrong shape: {module!r}"
    return None


class NullJournal(Journal):
    """For --dry-run: the same interface, nothing written anywhere."""

    def __init__(self) -> None:
        super().__init__("", {"steps": [], "modules": [], "undo": [], "killed": [], "state": "running", "plan": []})

    def save(self, durable: bool = True) -> None:
        pass
