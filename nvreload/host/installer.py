"""The one door to an NVIDIA `.run` installer: checked before a run starts, run between unload and
load."""

from __future__ import annotations

import os
import stat

from nvreload.errors import BadInputError
from nvreload.host.commands import CommandRunner


def check_installer(path: str) -> None:
    """A .run we would execute as root: it must exist, be an NVIDIA makeself archive, and not be
    writable by anyone but its owner (root)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise BadInputError(f"{path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BadInputError(f"{path}: not a regular file")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise BadInputError(f"{path}: writable by group or others; refusing to run it as root")
    with open(path, "rb") as handle:
        head = handle.read(16384)
    if b"makeself" not in head.lower() or b"NVIDIA" not in head:
        raise BadInputError(f"{path}: not an NVIDIA driver installer (.run makeself archive)")


def run_installer(runner: CommandRunner, path: str) -> None:
    runner.check(["sh", path, "--silent", "--no-questions", "--ui=none"], timeout=1800)
