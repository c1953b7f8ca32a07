"""The userspace driver version: the file libnvidia-ml.so.1 resolves to in the library directories.

This must work when NVML itself refuses to start (that is exactly the version-mismatch case), so the
version comes from the file name the soname link points to, never from calling the library.
"""

from __future__ import annotations

import posixpath

from nvreload.model import UserspaceLibrary
from nvreload.rootfs import RootFS

SONAME = "libnvidia-ml.so.1"
_VERSIONED_PREFIX = "libnvidia-ml.so."

# The order the dynamic loader would try: ld.so.conf directories first, then the trusted defaults.
DEFAULT_LIBRARY_DIRS = (
    "usr/local/nvidia/lib64",  # NVIDIA's container and GPU-operator layout
    "usr/local/nvidia/lib",
    "usr/lib/x86_64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
    "lib/x86_64-linux-gnu",
    "lib/aarch64-linux-gnu",
    "usr/lib64",
    "lib64",
    "usr/lib",
    "lib",
)


def ld_so_conf_dirs(root: RootFS) -> list[str]:
    dirs: list[str] = []
    files = ["etc/ld.so.conf"] + [
        f"etc/ld.so.conf.d/{n}" for n in root.listdir("etc/ld.so.conf.d") if n.endswith(".conf")
    ]
    for name in files:
        for line in (root.read_text(name) or "").splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("/") and "*" not in line:
                dirs.append(line.strip("/"))
    return dirs


def library_dirs(root: RootFS) -> list[str]:
    seen: list[str] = []
    for directory in ld_so_conf_dirs(root) + list(DEFAULT_LIBRARY_DIRS):
        if directory not in seen:
            seen.append(directory)
    return seen


def _version_in_name(name: str) -> str | None:
    """The driver version a versioned library name carries ("libnvidia-ml.so.550.54.15"), or None.

    Checked by hand rather than with a regular expression: compiling one costs more start-up time
    than every name this runs on together.
    """
    if not name.startswith(_VERSIONED_PREFIX):
        return None
    version = name[len(_VERSIONED_PREFIX) :]
    parts = version.split(".")
    if len(parts) not in (2, 3) or not all(part.isdecimal() for part in parts):
        return None
    return version


def read_userspace(root: RootFS) -> UserspaceLibrary:
    for directory in library_dirs(root):
        link = f"{directory}/{SONAME}"
        if not root.exists(link) and root.link_target(link) is None:
            continue
        final = root.follow_stand_ins(link)
        if final is None:
            continue
        version = _version_in_name(posixpath.basename(final))
        if version is not None:
            return UserspaceLibrary(version, "/" + final, "/" + link)
        # A real file with no version in its name: a versioned sibling is how packages ship it.
        versions = [v for n in root.listdir(posixpath.dirname(final)) if (v := _version_in_name(n)) is not None]
        if len(versions) == 1:
            return UserspaceLibrary(versions[0], "/" + final, "/" + link)
        return UserspaceLibrary(None, "/" + final, "/" + link)
    return UserspaceLibrary(None, None, None)
