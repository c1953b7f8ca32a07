"""The one door to an NVIDIA `.run` installer: checked before a run starts, run between unload and
load."""

from __future__ import annotations

import os
import stat

from nvreload.errors import BadInputError, HostError
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


def check_archive(runner: CommandRunner, path: str) -> None:
    """The archive's own integrity check (makeself's checksums, `--check`): a truncated or altered
    download is refused before any consumer is stopped, not found out after the unload."""
    result = runner.run(["sh", path, "--check"], timeout=300)
    if not result.ok:
        detail = (result.stdout + result.stderr).strip().splitlines()
        raise BadInputError(f"{path}: the archive fails its integrity check ({detail[-1] if detail else f'exit {result.returncode}'})")


def installer_argv(path: str, module_type: str | None) -> list[str]:
    """Unattended, and without loading the module itself: nvreload loads it, with the parameters the
    old one had. The module flavour (open or proprietary) stays the one the node ran."""
    argv = ["sh", path, "--silent", "--no-questions", "--ui=none", "--skip-module-load"]
    if module_type:
        argv.append(f"--kernel-module-type={module_type}")
    return argv


def run_installer(runner: CommandRunner, path: str, module_type: str | None = None) -> None:
    result = runner.run(installer_argv(path, module_type), timeout=1800)
    if not result.ok:
        raise HostError(f"{installer_failure(result.stdout, result.stderr) or f'exit {result.returncode}'} "
                        "(see /var/log/nvidia-installer.log)")


def installer_failure(stdout: str, stderr: str) -> str | None:
    """The line that says why: nvidia-installer prints `ERROR: ...` on stdout, while the archive's
    header fills stderr with its extraction progress (backspaces and percentages)."""
    lines = [line.replace("\b", "").strip() for line in (stdout + "\n" + stderr).splitlines()]
    errors = [line for line in lines if line.startswith("ERROR")]
    if errors:
        return errors[0]
    meaningful = [line for line in stdout.splitlines() if line.strip()]
    return meaningful[-1].strip() if meaningful else None
