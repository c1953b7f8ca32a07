"""A reload that is due but was not done: `reload-pending.json` in the state directory.

Written when a package hook (or `--reload --when-idle`) finds that the node needs a reload and does
not do it: the policy says report, or GPU jobs are running. `--status` shows it, the metrics export
it, and the next successful reload (or a hook run that finds nothing to reload) removes it. One
small JSON document, replaced atomically; a record that cannot be read is reported as unreadable,
never acted on.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from nvreload.errors import BadInputError
from nvreload.state_files import UnreadableFile, atomic_write_json, read_json

SCHEMA_VERSION = 1
FILE_NAME = "reload-pending.json"
# report: the policy says never act; busy: GPU work is running; the next hook run or person decides
REASONS = ("policy_report", "busy")
TRIGGERS = ("apt", "dnf", "manual")


@dataclass(frozen=True)
class PendingReload:
    since: float  # when a reload first became due and was not done (seconds since the epoch)
    updated: float  # the last run that found it still due
    trigger: str  # one of TRIGGERS: what ran nvreload
    reason: str  # one of REASONS
    busy: tuple[dict, ...]  # what was running on the GPUs: {"kind", "name", "pid"?}
    loaded_version: str | None
    userspace_version: str | None

    def document(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "since": self.since,
            "updated": self.updated,
            "trigger": self.trigger,
            "reason": self.reason,
            "busy": [dict(b) for b in self.busy],
            "loaded_version": self.loaded_version,
            "userspace_version": self.userspace_version,
        }


def pending_path(state_dir: str) -> str:
    return os.path.join(state_dir, FILE_NAME)


MAX_RECORD_BYTES = 1 << 20


def read_pending(path: str) -> PendingReload | None:
    """The record, None when there is none; BadInputError when one is there but is not a record."""
    try:
        data = read_json(path, MAX_RECORD_BYTES)
    except UnreadableFile as exc:
        raise BadInputError(f"{path}: not a reload-pending record ({exc.why})") from None
    if data is None:
        return None
    problem = _problem(data)
    if problem:
        raise BadInputError(f"{path}: not a reload-pending record ({problem})")
    return PendingReload(
        since=float(data["since"]),
        updated=float(data["updated"]),
        trigger=data["trigger"],
        reason=data["reason"],
        busy=tuple(data["busy"]),
        loaded_version=data["loaded_version"],
        userspace_version=data["userspace_version"],
    )


def _problem(data: object) -> str | None:
    if not isinstance(data, dict):
        return "not an object"
    if data.get("schema_version") != SCHEMA_VERSION:
        return f"schema_version {data.get('schema_version')!r}"
    for key in ("since", "updated"):
        if not isinstance(data.get(key), (int, float)) or isinstance(data.get(key), bool):
            return f"{key} is not a time"
    if data.get("trigger") not in TRIGGERS:
        return f"trigger {data.get('trigger')!r}"
    if data.get("reason") not in REASONS:
        return f"reason {data.get('reason')!r}"
    if not isinstance(data.get("busy"), list) or not all(isinstance(b, dict) for b in data["busy"]):
        return "busy is not a list of objects"
    for key in ("loaded_version", "userspace_version"):
        if data.get(key) is not None and not isinstance(data.get(key), str):
            return f"{key} is not a string"
    return None


def record_pending(path: str, due: PendingReload) -> PendingReload:
    """Write the record; `since` stays that of a record already there for the same module and
    userspace versions (the same reload has been due since then), whatever keeps it pending now.
    A record of other versions is history (a reboot or a reload by hand came between, nothing ran
    that forgot it): the reload due now is due since now."""
    try:
        previous = read_pending(path)
    except BadInputError:
        previous = None  # replaced: the new record says what is true now
    if previous is not None and _versions(previous) == _versions(due):
        due = PendingReload(
            previous.since, due.updated, due.trigger, due.reason, due.busy, due.loaded_version, due.userspace_version
        )
    atomic_write_json(path, due.document())
    return due


def _versions(record: PendingReload) -> tuple[str | None, str | None]:
    return record.loaded_version, record.userspace_version


def clear_pending(path: str) -> bool:
    """Remove the record; True when there was one."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
