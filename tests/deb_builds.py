"""The packages the package tests inspect and install: packaging/build-deb's own, for this checkout's
version and for an earlier one to upgrade from, and packaging/build-rpm's. .ci/run builds them into
dist/ once and names that directory in $NVRELOAD_DEBS; without it a test session builds what it
needs itself (about 30 s each)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD_DEB = REPO / "packaging" / "build-deb"
VERSION = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M).group(1)
# sorts before VERSION for dpkg: the "previous build" an upgrade starts from
PREVIOUS = f"{VERSION}~previous"


def deb_name(version: str) -> str:
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=True).stdout.strip()
    return f"nvreload_{version}_{arch}.deb"


def built_deb(version: str, workdir: Path) -> Path:
    """The package of `version`: from $NVRELOAD_DEBS when .ci/run built it there, else built now."""
    ready = os.environ.get("NVRELOAD_DEBS")
    if ready and (Path(ready) / deb_name(version)).is_file():
        return Path(ready) / deb_name(version)
    args = [str(BUILD_DEB), "--out", str(workdir)] + (["--version", version] if version != VERSION else [])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"packaging/build-deb failed:\n{proc.stdout}\n{proc.stderr}"
    return Path(proc.stdout.strip().splitlines()[-1])


def built_rpm(workdir: Path) -> Path:
    """The EL package of this checkout (packaging/build-rpm): from $NVRELOAD_DEBS, else built now."""
    ready = os.environ.get("NVRELOAD_DEBS")
    found = sorted(Path(ready).glob(f"nvreload-{VERSION}-1.*.rpm")) if ready else []
    if found:
        return found[0]
    proc = subprocess.run(
        [str(REPO / "packaging" / "build-rpm"), "--out", str(workdir)], capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, f"packaging/build-rpm failed:\n{proc.stdout}\n{proc.stderr}"
    return Path(proc.stdout.strip().splitlines()[-1])


def built_debs(workdir: Path) -> tuple[Path, Path]:
    """(the previous build, this checkout's)."""
    return built_deb(PREVIOUS, workdir), built_deb(VERSION, workdir)


if __name__ == "__main__":
    # .ci/run: python tests/deb_builds.py DIR builds all three into DIR, for every test run after it
    import sys

    for package in (*built_debs(Path(sys.argv[1])), built_rpm(Path(sys.argv[1]))):
        print(package)
