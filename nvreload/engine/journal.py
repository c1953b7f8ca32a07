"""The run journal: what a run set out to do, each step's boundaries, and a typed undo log.

Two files, so that the cost of a run stays linear in what it does:
- `journal.json`, the document, replaced atomically (temp file, fsync, rename, fsync of the
  directory) at every step boundary and at the end: whatever instant the process dies, it is a
  complete journal of a consistent moment;
- `journal.json.records`, an append-only log of what happened since that document was written
  (one JSON line per undo record, mark, killed process), folded into the document at the next
  boundary and removed. Loading replays it; a last line torn by a crash is ignored.
Rewriting the whole document per action made a reload of 2,000 containers write gigabytes.

The undo log follows record-intent-then-done: an UndoRecord is written as `intended` before its
action runs and marked `done` after, so a crash between the action and its record still leaves
the record; rollback treats `intended` like `done` (starting a running unit or container, loading
a loaded module, binding a bound console are no-ops). When rollback (or the forward restart) has
put a thing back, its record is `undone`.

Step boundaries are durable (fsync) so they survive power loss. The appended records between them
are not fsynced: a power loss reboots the node, which reloads the driver and starts enabled units
by itself, and an fsync per action would add milliseconds to every container of a reload."""

from __future__ import annotations

import errno
import json
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field

from nvreload.catalog import GPU_DAEMONS
from nvreload.engine.kinds import UNDO_TARGET_SHAPES
from nvreload.errors import BadInputError, JournalError, JournalWriteError
from nvreload.names import is_bus_id, is_module_name, is_parameter
from nvreload.state_files import UnreadableFile, atomic_write_json, read_json
from nvreload.trusted_paths import read_own_file

JOURNAL_SCHEMA_VERSION = 2
# A stopped run is unfinished on purpose: --start (or --rollback) brings its consumers back.
UNFINISHED = ("running", "rolling_back", "failed", "stopped")
FINISHED = ("reloaded", "rolled_back", "started", "reset")
UNDO_KINDS = tuple(UNDO_TARGET_SHAPES)  # each defined with its action kind (engine/kinds.py)
RECORD_STATES = ("intended", "done", "undone")
# A journal is kilobytes; a run of thousands of containers, a few megabytes. Anything far larger
# was not written by nvreload and is not read into memory.
MAX_JOURNAL_BYTES = 64 * 2**20


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
    mig: dict | None = None  # bus id -> MIG instances before the run (plan.mig_documents): recreated after the load
    # bus id -> persistence mode before the run: a new driver instance starts with it off, so every
    # path that loads the modules (forward, rollback, roll-forward, --rollback) sets it back
    persistence: dict | None = None


RECORDS_SUFFIX = ".records"
RESERVE_SUFFIX = ".reserve"
# The room a run keeps for its own journal on the state directory's filesystem, taken before the
# first step and given back the moment a journal write finds the disk full: a document is rewritten
# whole (a copy beside it until the rename), and a reload of 2,000 containers writes about 9 MB.
MIN_RESERVE_BYTES = 1 << 20
RESERVE_PER_PLANNED_BYTE = 8


class Journal:
    """One run's journal. Every mutation is written down before the method returns."""

    def __init__(self, path: str, data: dict) -> None:
        self.path = path
        self._data = data
        self._lock = threading.Lock()  # container stops record from worker threads
        self.undo = [UndoRecord(**r) for r in data.get("undo", [])]
        self._events = int(data.get("events", 0))  # appended records already folded into the document
        self._log_fd: int | None = None
        # After a write has failed (even with the reserve given back) the run is rolling back: the
        # journal keeps everything in memory, tries every later write, and says why it could not.
        self.write_error: str | None = None
        self.best_effort = False

    @property
    def records_path(self) -> str:
        return self.path + RECORDS_SUFFIX

    @property
    def reserve_path(self) -> str:
        return self.path + RESERVE_SUFFIX

    # creation and loading -------------------------------------------------------------------
    @classmethod
    def start(cls, path: str, action: str, plan: list[dict], context: JournalContext) -> Journal:
        reserve(path + RESERVE_SUFFIX, max(MIN_RESERVE_BYTES, RESERVE_PER_PLANNED_BYTE * len(json.dumps(plan))))
        journal = cls(
            path,
            {
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
                "events": 0,
            },
        )
        journal.save()
        return journal

    @classmethod
    def load(cls, path: str) -> Journal:
        """The journal at `path` with its appended records replayed, validated whole before anything
        acts on it: JournalError (bad input) when any part of it is not a journal of this version."""
        try:
            data = read_json(path, MAX_JOURNAL_BYTES, own=True)
        except UnreadableFile as exc:  # a link, a file another user owns or can write, not JSON
            raise JournalError(f"{path} is not a readable journal ({exc.why})") from None
        if data is None:
            raise JournalError(f"no journal at {path}: nothing was interrupted")
        problem = _shape_problem(data)
        if problem:
            raise JournalError(
                f"{path} is not an nvreload journal of schema version {JOURNAL_SCHEMA_VERSION} ({problem})"
            )
        journal = cls(path, data)
        journal._replay()
        return journal

    @classmethod
    def load_if_any(cls, path: str) -> Journal | None:
        if not os.path.lexists(path):
            return None
        return cls.load(path)

    def _replay(self) -> None:
        try:
            raw = read_own_file(self.records_path, MAX_JOURNAL_BYTES)
        except BadInputError as exc:
            raise JournalError(exc.message) from None
        except OSError as exc:
            raise JournalError(f"{self.records_path}: {exc.strerror}") from None
        if raw is None:
            return
        if len(raw) > MAX_JOURNAL_BYTES:
            raise JournalError(f"{self.records_path} is larger than {MAX_JOURNAL_BYTES // 2**20} MiB: not a journal's")
        lines = raw.split(b"\n")
        complete, torn = lines[:-1], lines[-1]  # after the last newline: empty, or a write cut short
        del torn  # a crash in the middle of an append: that record's action never ran past it
        for number, line in enumerate(complete, 1):
            try:
                event = json.loads(line)
            except (ValueError, RecursionError):
                raise JournalError(f"{self.records_path}, line {number}: not a journal record") from None
            problem = self._apply(event)
            if problem:
                raise JournalError(f"{self.records_path}, line {number}: {problem}")

    def _apply(self, event: object) -> str | None:
        """Fold one appended record into the document; what is wrong with it, or None."""
        if not isinstance(event, dict) or not isinstance(event.get("n"), int) or isinstance(event.get("n"), bool):
            return "a record without its number"
        if event["n"] <= self._events:
            return None  # folded into the document already (a crash between its rewrite and the truncation)
        if event["n"] != self._events + 1:
            return f"record {event['n']} follows record {self._events}: records are missing"
        kind = event.get("event")
        if kind == "intend":
            record = event.get("record")
            if not isinstance(record, dict) or _record_problem(record) or record["seq"] != len(self.undo) + 1:
                return f"an undo record of the wrong shape: {record!r}"
            self.undo.append(UndoRecord(**record))
        elif kind == "mark":
            seq, state = event.get("seq"), event.get("state")
            if not isinstance(seq, int) or not 1 <= seq <= len(self.undo) or state not in RECORD_STATES:
                return f"a mark of the wrong shape: {event!r}"
            self.undo[seq - 1].state = state
        elif kind == "killed":
            if not isinstance(event.get("entry"), dict):
                return f"a killed process of the wrong shape: {event!r}"
            self._data["killed"].append(event["entry"])
        elif kind == "plan":
            candidate = {**self._data, "plan": event.get("plan"), "context": event.get("context")}
            problem = _shape_problem(candidate)
            if problem:
                return f"a plan of the wrong shape ({problem})"
            self._data["plan"], self._data["context"] = candidate["plan"], candidate["context"]
        elif kind == "modules":
            modules = event.get("modules")
            if not isinstance(modules, list) or any(_module_problem(m) for m in modules):
                return f"a module list of the wrong shape: {event!r}"
            self._data["modules"] = modules
        else:
            return f"an unknown record {kind!r}"
        self._events = event["n"]
        return None

    # what it says ---------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return str(self._data.get("run_id"))

    def reference(self) -> dict | None:
        """Where this run's journal is and its id, for the run's report; None for a dry run's
        journal, which is written nowhere."""
        if not self.path:
            return None
        return {"path": self.path, "run_id": self.run_id}

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
    def persistence(self) -> dict[str, bool]:
        context = self._data.get("context")
        persistence = context.get("persistence") if isinstance(context, dict) else None
        return dict(persistence) if isinstance(persistence, dict) else {}

    @property
    def mig(self) -> dict[str, list[dict]]:
        context = self._data.get("context")
        mig = context.get("mig") if isinstance(context, dict) else None
        return mig if isinstance(mig, dict) else {}

    def time_of(self, event: str) -> float | None:
        """When the run "started", last wrote this document ("updated") or "finished" (None until
        it has), in seconds since the epoch; None where the document holds no number for it."""
        value = self._data.get(event)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def result(self) -> dict:
        """The report the run ended with ({} until it has ended)."""
        result = self._data.get("result")
        return dict(result) if isinstance(result, dict) else {}

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
    def save(self) -> None:
        """Write the whole document (durably) with every record folded in, then empty the log."""
        self._data["updated"] = time.time()
        self._data["undo"] = [r.as_dict() for r in self.undo]
        self._data["events"] = self._events
        if self._write(lambda: atomic_write_json(self.path, self._data)):
            # After the document: a crash in between leaves records the document already holds,
            # which the replay skips by their numbers.
            self.close()
            if os.path.lexists(self.records_path):
                os.unlink(self.records_path)

    def _append(self, kind: str, **fields: object) -> None:
        """One record at the end of the log, in one write() (O_APPEND: never interleaved)."""
        self._events += 1
        line = (json.dumps({"n": self._events, "event": kind, **fields}, sort_keys=True) + "\n").encode()
        self._write(lambda: self._append_line(line))

    def _append_line(self, line: bytes) -> None:
        if self._log_fd is None:
            self._log_fd = os.open(
                self.records_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
            )
        size = os.fstat(self._log_fd).st_size
        try:
            if os.write(self._log_fd, line) != len(line):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            os.ftruncate(self._log_fd, size)  # no half line for a later record to follow
            raise

    def _write(self, write) -> bool:
        """Run one write of the journal; on a failure give back the reserve and try once more. A
        write that still fails raises JournalWriteError the first time (the run stops and rolls
        back) and is only recorded after that (the rollback goes on, keeping the journal in memory
        and writing what it can). True when written."""
        try:
            write()
            return True
        except OSError as exc:
            failure = exc
        if self.release_reserve():
            try:
                write()
                return True
            except OSError as exc:
                failure = exc
        self.write_error = f"cannot write the journal {self.path}: {failure.strerror or failure}"
        if not self.best_effort:
            self.best_effort = True
            raise JournalWriteError(self.write_error)
        return False

    def release_reserve(self) -> bool:
        """Give the reserved room back to the filesystem; True when there was some to give."""
        try:
            os.unlink(self.reserve_path)
            return True
        except OSError:
            return False

    def close(self) -> None:
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None

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

    def replan(self, plan: list[dict], context: JournalContext) -> None:
        """The plan made again once the run's first step is over (the node drained: the jobs that
        held the GPUs are gone), with what it relied on then."""
        with self._lock:
            self._data["plan"], self._data["context"] = plan, asdict(context)
            self._append("plan", plan=plan, context=self._data["context"])

    def set_modules(self, modules: list[tuple[str, dict[str, str]]]) -> None:
        with self._lock:
            self._data["modules"] = [{"name": name, "parameters": dict(params)} for name, params in modules]
            self._append("modules", modules=self._data["modules"])

    def intend(self, kind: str, target: str, detail: dict | None = None) -> UndoRecord:
        """Write down, before doing it, a change that rollback must put back."""
        if kind not in UNDO_KINDS:
            raise ValueError(f"not an undo kind: {kind}")
        with self._lock:
            record = UndoRecord(len(self.undo) + 1, kind, target, dict(detail or {}))
            self.undo.append(record)
            self._append("intend", record=record.as_dict())
            return record

    def mark(self, record: UndoRecord, state: str) -> None:
        if state not in RECORD_STATES:
            raise ValueError(f"not a record state: {state}")
        with self._lock:
            record.state = state
            self._append("mark", seq=record.seq, state=state)

    def add_killed(self, entry: dict) -> None:
        """A process ended by signal: cannot be undone, reported."""
        with self._lock:
            self._data["killed"].append(dict(entry))
            self._append("killed", entry=dict(entry))

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
            if state in FINISHED:
                self.release_reserve()


def reserve(path: str, size: int) -> None:
    """Take `size` bytes of the filesystem for the journal before a run changes anything: a disk
    too full for it refuses the run then (RefusedError), not in the middle of it."""
    from nvreload.errors import RefusedError

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise RefusedError(f"cannot reserve room for the journal at {path}: {exc.strerror}") from None
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.write(fd, bytes(size))  # a filesystem without fallocate: the same room, written
    except OSError as exc:
        os.close(fd)
        os.unlink(path)
        raise RefusedError(
            f"{os.path.dirname(path)} has no room for the run's journal ({size // 1024} KiB: "
            f"{exc.strerror}); nothing was changed: free some space there first"
        ) from None
    os.close(fd)


def move_aside(path: str) -> str:
    """Keep a journal that cannot be acted on out of a new run's way, never overwritten: renamed
    with the time (and its record log with it). Returns where it went."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = f"{path}.unusable-{stamp}"
    suffix = 0
    while os.path.lexists(aside):
        suffix += 1
        aside = f"{path}.unusable-{stamp}.{suffix}"
    os.rename(path, aside)
    if os.path.lexists(path + RECORDS_SUFFIX):
        os.rename(path + RECORDS_SUFFIX, aside + RECORDS_SUFFIX)
    return aside


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
    if not isinstance(data.get("events", 0), int) or isinstance(data.get("events"), bool):
        return "'events' is not a number"
    if not isinstance(data.get("action"), str) or not isinstance(data.get("run_id"), str):
        return "'action' or 'run_id' missing"
    context = data.get("context")
    if context is not None:
        if not isinstance(context, dict):
            return "'context' is not an object"
        # what rollback decides by (went forward?) must be a version or nothing, never a guess
        for key in ("host", "driver", "module_version"):
            if context.get(key) is not None and not isinstance(context[key], str):
                return f"context '{key}' is not a string"
        if context.get("mig") is not None and _mig_problem(context["mig"]):
            return "context 'mig' is not MIG geometry"
        persistence = context.get("persistence")
        if persistence is not None and not (
            isinstance(persistence, dict) and all(is_bus_id(k) and isinstance(v, bool) for k, v in persistence.items())
        ):
            return "context 'persistence' is not bus id -> true/false"
    for number, record in enumerate(data["undo"], 1):
        if _record_problem(record) or record["seq"] != number:
            return f"an undo record of the wrong shape: {record!r}"
    for step in data["steps"]:
        if (
            not isinstance(step, dict)
            or not isinstance(step.get("name"), str)
            or not isinstance(step.get("status"), str)
        ):
            return f"a step of the wrong shape: {step!r}"
    for module in data["modules"]:
        if _module_problem(module):
            return f"a module of the wrong shape: {module!r}"
    if not all(isinstance(k, dict) for k in data["killed"]):
        return "a killed process that is not an object"
    return None


def _mig_problem(mig: object) -> bool:
    def number(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not isinstance(mig, dict):
        return True
    for bus, instances in mig.items():
        if not isinstance(bus, str) or not isinstance(instances, list):
            return True
        for instance in instances:
            if not (
                isinstance(instance, dict)
                and all(number(instance.get(k)) for k in ("profile_id", "start", "size"))
                and isinstance(instance.get("compute", []), list)
                and all(
                    isinstance(c, list) and len(c) == 3 and all(number(v) for v in c)
                    for c in instance.get("compute", [])
                )
            ):
                return True
    return False


def _record_problem(record: object) -> bool:
    return not (
        isinstance(record, dict)
        and set(record) == {"seq", "kind", "target", "detail", "state"}
        and isinstance(record["seq"], int)
        and record["kind"] in UNDO_KINDS
        and UNDO_TARGET_SHAPES[record["kind"]](record["target"])
        and isinstance(record["detail"], dict)
        and not (record["kind"] == "stop_service" and _command_problem(record["target"], record["detail"]))
        and record["state"] in RECORD_STATES
    )


def _command_problem(name: str, detail: dict) -> bool:
    """A daemon's command line (where PID 1 is not systemd, --start runs it as root): only the
    absolute path of that daemon's own executable, with string arguments. Where the file is and
    who owns it is checked again when it is started (host/processes.start_daemon)."""
    command = detail.get("command")
    if command is None:
        return False
    return not (
        isinstance(command, list)
        and command
        and all(isinstance(part, str) and "\0" not in part for part in command)
        and command[0].startswith("/")
        and os.path.basename(command[0]) == name
        and name in GPU_DAEMONS
    )


def _module_problem(module: object) -> bool:
    return not (
        isinstance(module, dict)
        and is_module_name(module.get("name"))
        and isinstance(module.get("parameters", {}), dict)
        and all(is_parameter(k, v) for k, v in module.get("parameters", {}).items())
    )


class DetachedJournal(Journal):
    """A loaded journal whose changes stay in memory: a dry run of --rollback or --start walks it
    exactly as the real run would, and the file is left as it was."""

    def save(self) -> None:
        pass

    def _append(self, kind: str, **fields: object) -> None:
        pass

    def release_reserve(self) -> bool:
        return False


class NullJournal(Journal):
    """For --dry-run: the same interface, nothing written anywhere."""

    def __init__(self) -> None:
        super().__init__("", {"steps": [], "modules": [], "undo": [], "killed": [], "state": "running", "plan": []})

    def save(self) -> None:
        pass

    def _append(self, kind: str, **fields: object) -> None:
        pass

    def release_reserve(self) -> bool:
        return False
