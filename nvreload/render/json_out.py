"""One JSON document on stdout: the only thing --json ever writes there."""

from __future__ import annotations

import json
import sys


def emit_json(document: dict) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()
