"""The one door to an NVIDIA `.run` installer: checked before a run starts, run between unload and
load."""

from __future__ import annotations

import os

from nvreload.errors import BadInputError, HostError
from nvreload.host.commands import CommandRunner
from nvreload.trusted_paths import open_trusted_file

ROOT_ONLY = frozenset({0})


def _open_checked(path: str) -> int:
    """An open descriptor of the .run, after every check on the file as opened: an NVIDIA makeself
    archive, owned by root and writable by nobody else, reached through directories and links only
    root controls (a user's symlink flipped between two opens never decides what root runs)."""
    try:
        fd = open_trusted_file(path, ROOT_ONLY, what="run it as root")
    except FileNotFoundError as exc:
        raise BadInputError(f"{path}: {exc.strerror}") from None
    try:
        head = os.pread(fd, 16384, 0)
        if b"makeself" not in head.lower() or b"NVIDIA" not in head:
            raise BadInputError(f"{path}: not an NVIDIA driver installer (.run makeself archive)")
    except BaseException:
        os.close(fd)
        raise
    return fd


def installer_version(path: str) -> str | None:
    """The driver version an NVIDIA .run installs, from its makeself label ("NVIDIA Accelerated
    Graphics Driver for Linux-x86_64 550.144.03"); None when the label does not say."""
    import re

    fd = _open_checked(path)
    try:
        head = os.pread(fd, 16384, 0).decode("latin-1")
    finally:
        os.close(fd)
    match = re.search(r'label="[^"\n]*Linux-[A-Za-z0-9_]+ ([0-9]+(?:\.[0-9]+)+)"', head)
    return match.group(1) if match else None


def check_installer(path: str) -> None:
    """A .run we would execute as root passes every check (for a dry run, which executes nothing)."""
    os.close(_open_checked(path))


def take_installer(path: str, private_dir: str) -> str:
    """Check the .run and copy it, through the one descriptor that was checked, into `private_dir`
    (root's alone): what runs minutes later, after the consumers are stopped, is what was checked,
    whatever happens to the original meanwhile. Returns the copy's path."""
    source = _open_checked(path)
    try:
        os.makedirs(private_dir, mode=0o700, exist_ok=True)
        os.chmod(private_dir, 0o700)
        copy = os.path.join(private_dir, os.path.basename(path))
        target = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o500)
        try:
            while chunk := os.read(source, 1 << 20):
                os.write(target, chunk)
        finally:
            os.close(target)
        return copy
    finally:
        os.close(source)


def check_archive(runner: CommandRunner, path: str) -> None:
    """The archive's own integrity check (makeself's checksums, `--check`): a truncated or altered
    download is refused before any consumer is stopped, not found out after the unload."""
    result = runner.run(["sh", path, "--check"], timeout=300)
    if not result.ok:
        detail = (result.stdout + result.stderr).strip().splitlines()
        raise BadInputError(
            f"{path}: the archive fails its integrity check ({detail[-1] if detail else f'exit {result.returncode}'})"
        )


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
        raise HostError(
            f"{installer_failure(result.stdout, result.stderr) or f'exit {result.returncode}'} "
            "(see /var/log/nvidia-installer.log)"
        )


def installer_failure(stdout: str, stderr: str) -> str | None:
    """The line that says why: nvidia-installer prints `ERROR: ...` on stdout, while the archive's
    header fills stderr with its extraction progress (backspaces and percentages)."""
    lines = [line.replace("\b", "").strip() for line in (stdout + "\n" + stderr).splitlines()]
    errors = [line for line in lines if line.startswith("ERROR")]
    if errors:
        return errors[0]
    meaningful = [line for line in stdout.splitlines() if line.strip()]
    return meaningful[-1].strip() if meaningful else None
