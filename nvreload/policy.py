"""What a package hook may do: /etc/nvreload/nvreload.conf (NVRELOAD_CONFIG names another file).

    # after a driver package upgrade: report (the default) or when-idle
    on_upgrade = report

report: never act; a reload that is due is recorded as pending (--status, the metrics) for a person
or a scheduler to do. when-idle: reload at once if nothing but the known GPU services uses the GPUs,
else record it as pending. There is no "always": an unattended upgrade must never end a GPU job.
A file that is there but wrong is an error (exit 66), not a silent default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from nvreload.errors import BadInputError
from nvreload.state_files import UnreadableFile, read_capped

CONFIG_VARIABLE = "NVRELOAD_CONFIG"
DEFAULT_CONFIG = "/etc/nvreload/nvreload.conf"
ON_UPGRADE = ("report", "when-idle")
_MAX_BYTES = 64 << 10  # a few lines; a larger file is not this one


@dataclass(frozen=True)
class UpgradePolicy:
    on_upgrade: str = "report"  # one of ON_UPGRADE
    source: str | None = None  # the file it came from; None: the default (no file)


def config_path(environ: Mapping[str, str] = os.environ) -> str:
    return environ.get(CONFIG_VARIABLE) or DEFAULT_CONFIG


def load_policy(path: str) -> UpgradePolicy:
    """The policy in `path`; the default (report) when there is no such file."""
    try:
        raw = read_capped(path, _MAX_BYTES)
        text = None if raw is None else raw.decode("utf-8")
    except UnreadableFile as exc:
        raise BadInputError(f"{path}: {exc.why}: not an nvreload configuration") from None
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{path}: cannot be read ({exc})") from None
    if text is None:
        return UpgradePolicy()
    return parse_policy(text, path)


def parse_policy(text: str, path: str) -> UpgradePolicy:
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, equals, value = line.partition("=")
        key, value = key.strip(), value.strip().strip('"')
        # What the file says is never echoed: NVRELOAD_CONFIG may name a file its reader must not
        # see (root's, read for a user of sudo -E), so only the line number and the rule are told.
        if not equals or not key:
            raise BadInputError(f"{path}:{number}: not an nvreload setting (expected 'key = value')")
        if key != "on_upgrade":
            raise BadInputError(f"{path}:{number}: an unknown setting (known: on_upgrade)")
        if value not in ON_UPGRADE:
            raise BadInputError(f"{path}:{number}: on_upgrade must be one of {', '.join(ON_UPGRADE)}")
        if key in values:
            raise BadInputError(f"{path}:{number}: {key} is set twice")
        values[key] = value
    return UpgradePolicy(values.get("on_upgrade", "report"), path)
