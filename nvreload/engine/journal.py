"""The run journal: JSON, schema-versioned, replaced atomically (temp file, rename) before and after
every step and after every action that needs undoing, so whatever instant the process dies the file
is a complete journal of a consistent moment.

Step boundaries are also made durable (fsync of the file and the directory) so they survive power
loss. The per-action records between them are not fsynced: a power loss reboots the node, which
reloads the driver and starts enabled units by itself, and an fsync per action would add tens of
milliseconds to every reload."""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field

from nvreload.errors import JournalError
from nvreload.state_files import atomic_write_json

JOURNAL_SCHEMA_VERSION = 1
JOURNAL_NAME = "journal.json"
UNFINISHED = ("running", "rolling_back", "failed")


@dataclass
class Journal:
    """Mutable record of one run; every mutation is followed by save()."""

    path: str
    data: dict = field(default_factory=dict)

    @classmethod
    def start(cls, directory: str, action: str, plan: list[dict], context: dict) -> "Journal":
        journal = cls(os.path.join(directory, JOURNAL_NAME))
        journal.data = {
            "schema_version": JOURNAL_SCHEMA_VERSION,
            "run_id": uuid.uuid4().hex,
            "action": action,
            "pid": os.getpid(),
            "started": time.time(),
            "state": "running",
            "context": context,
            "plan": plan,
            "steps": [],
            "undo": {"containers": [], "services": [], "mps": False, "modules": [], "unloaded": [],
                     "loaded": [], "killed": [], "restarted": [], "consoles": []},
            "result": None,
        }
        journal.save()
        return journal

    @classmethod
    def load(cls, directory: str) -> "Journal":
        path = os.path.join(directory, JOURNAL_NAME)
        try:
            with open(path) as handle:
                data = json.load(handle)
        except FileNotFoundError:
            raise JournalError(f"no journal at {path}: nothing was interrupted") from None
        except (OSError, ValueError) as exc:
            raise JournalError(f"{path} is not a readable journal ({exc}); inspect it, then remove it") from None
        if not isinstance(data, dict) or data.get("schema_version") != JOURNAL_SCHEMA_VERSION or "undo" not in data:
            raise JournalError(f"{path} is not an nvreload journal of schema version {JOURNAL_SCHEMA_VERSION}")
        return cls(path, data)

    @classmethod
    def load_if_any(cls, directory: str) -> "Journal | None":
        if not os.path.exists(os.path.join(directory, JOURNAL_NAME)):
            return None
        return cls.load(directory)

    @property
    def unfinished(self) -> bool:
        return self.data.get("state") in UNFINISHED

    def save(self, durable: bool = True) -> None:
        self.data["updated"] = time.time()
        atomic_write_json(self.path, self.data, durable=durable)

    def step_started(self, name: str) -> None:
        self.data["steps"].append({"name": name, "status": "running", "started": time.time()})
        self.save()

    def step_finished(self, name: str, status: str, error: str | None = None) -> None:
        for step in reversed(self.data["steps"]):
            if step["name"] == name:
                step.update(status=status, finished=time.time(), error=error)
                break
        self.save()

    def record(self, kind: str, value: object) -> None:
        """Remember something that must be undone (or that was undone), durably, right away."""
        if kind == "mps":
            self.data["undo"]["mps"] = bool(value)
        else:
            self.data["undo"][kind].append(value)
        self.save(durable=False)

    def record_all(self, kind: str, values: list) -> None:
        """Several undo records of one kind in one write."""
        self.data["undo"][kind].extend(values)
        self.save(durable=False)

    def finish(self, state: str, result: dict) -> None:
        self.data["state"] = state
        self.data["result"] = result
        self.data["finished"] = time.time()
        self.save()


class NullJournal(Journal):
    """For --dry-run: the same interface, nothing written anywhere."""

    def __init__(self) -> None:
        super().__init__(path="", data={"undo": {"containers": [], "services": [], "mps": False, "modules": [],
                                                  "unloaded": [], "loaded": [], "killed": [], "restarted": [], "consoles": []},
                                         "steps": [], "state": "running"})

    def save(self, durable: bool = True) -> None:
        pass
