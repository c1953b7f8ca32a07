"""The controller's record of one rollout: a directory the role writes the nodes' documents into
and the plan, the gate and the report read back.

    RUN_DIR/facts/HOST.json     what `nvreload-fleet facts` printed on HOST (preflight)
    RUN_DIR/plan.json           the plan (`nvreload-fleet plan`)
    RUN_DIR/started/HOST.json   HOST's reload began (written before it, so a node that never
                                answered again is known to have been started)
    RUN_DIR/results/HOST.json   what `nvreload-fleet reload` printed on HOST
    RUN_DIR/fleet-report.json   the report (`nvreload-fleet report`)
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from nvreload.errors import BadInputError
from nvreload.state_files import UnreadableFile, atomic_write_json, read_json

DOCUMENT_LIMIT = 8 << 20  # a status document of a large node is ~100 KiB
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,252}$")


def host_name(text: str) -> str:
    """An inventory name used as a file name: no path in it."""
    if not _HOST.match(text) or ".." in text:
        raise BadInputError(f"{text!r}: not an inventory host name this report can keep")
    return text


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _doc(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    def read(self, *parts: str) -> dict | None:
        path = self._doc(*parts)
        try:
            data = read_json(str(path), DOCUMENT_LIMIT)
        except UnreadableFile as exc:
            raise BadInputError(f"{path}: {exc}") from None
        if data is not None and not isinstance(data, dict):
            raise BadInputError(f"{path}: not a JSON object")
        return data

    def write(self, data: dict, *parts: str) -> Path:
        path = self._doc(*parts)
        os.makedirs(path.parent, exist_ok=True)
        atomic_write_json(str(path), data)
        return path

    def facts(self, host: str) -> dict | None:
        return self.read("facts", f"{host_name(host)}.json")

    def result(self, host: str) -> dict | None:
        return self.read("results", f"{host_name(host)}.json")

    def started(self, host: str) -> bool:
        return self._doc("started", f"{host_name(host)}.json").exists()

    def plan(self) -> dict:
        plan = self.read("plan.json")
        if plan is None:
            raise BadInputError(f"{self.path}: no plan.json (nvreload-fleet plan makes it)")
        return plan


def dumps(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=False)
