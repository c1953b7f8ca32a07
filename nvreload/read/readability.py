"""How much of a node could be read: each input the findings draw on, and whether it was read.

A snapshot made by copying /proc with cp or tar holds empty files (procfs reports size 0); a user
other than root may be denied /sys/module or a hardened /proc/modules; a directory we may not list
makes every file under it look absent. None of these says anything about the node itself. Only on
the live root are a missing or an empty /proc or /sys file the kernel's own answer (no /proc/modules:
a kernel built without module support; an empty one: no module loaded).
"""

from __future__ import annotations

import posixpath

from nvreload.model import NodeInput, Readability
from nvreload.rootfs import RootFS


def _why_missing(fs: RootFS, rel: str, kernel_answers: bool) -> str:
    """'unreadable', 'not_in_kernel' or 'absent' for a path that gave nothing to read."""
    if "/" + rel in fs.denied or fs.exists(rel):
        return "unreadable"  # there, but denied, not a regular file, or too large to read
    # Under a directory we may not list, a file is invisible, not absent: ask the nearest directory
    # that is there (listing it records the denial in fs.denied, which `unreadable` then shows).
    parent = posixpath.dirname(rel)
    while parent and not fs.is_dir(parent):
        parent = posixpath.dirname(parent)
    denied = len(fs.denied)
    fs.listdir(parent)
    if len(fs.denied) > denied:
        return "unreadable"
    return "not_in_kernel" if kernel_answers and fs.is_live else "absent"


def file_input(fs: RootFS, rel: str, text: str | None, kernel_answers: bool = True) -> NodeInput:
    """`rel` as read (`text`: what fs.read_text gave for it). `kernel_answers`: whether the live
    kernel's lacking the file tells something (it does not for the kernel release: every kernel has one)."""
    if text is None:
        return NodeInput(("/" + rel,), _why_missing(fs, rel, kernel_answers))
    return NodeInput(("/" + rel,), "read" if text.strip() or (kernel_answers and fs.is_live) else "empty")


def dir_input(fs: RootFS, rel: str) -> NodeInput:
    if fs.listdir(rel):
        return NodeInput(("/" + rel,), "read")
    if "/" + rel in fs.denied:
        return NodeInput(("/" + rel,), "unreadable")
    if fs.is_dir(rel):
        return NodeInput(("/" + rel,), "read" if fs.is_live else "empty")
    return NodeInput(("/" + rel,), _why_missing(fs, rel, True))


def release_from_proc_version(text: str | None) -> str | None:
    """The release in /proc/version's 'Linux version 6.1.0-26-amd64 (builder@host) ...'."""
    fields = (text or "").split()
    return fields[2] if len(fields) > 2 and fields[:2] == ["Linux", "version"] else None


def _worst(states: list[str]) -> str:
    """The state to report for an input none of whose sources was read: the one that most needs a person."""
    return next(s for s in ("unreadable", "empty", "absent") if s in states)


def kernel_release_input(fs: RootFS) -> tuple[NodeInput, str | None]:
    """The running kernel's release (osrelease, else /proc/version's) and how it was found."""
    osrelease = fs.read_line("proc/sys/kernel/osrelease")
    if osrelease:
        return NodeInput(("/proc/sys/kernel/osrelease",), "read"), osrelease
    version_text = fs.read_text("proc/version", 4096)
    release = release_from_proc_version(version_text)
    paths = ("/proc/sys/kernel/osrelease", "/proc/version")
    if release:
        return NodeInput(paths, "read"), release
    states = [
        file_input(fs, "proc/sys/kernel/osrelease", osrelease, kernel_answers=False).state,
        # a /proc/version that is not the kernel's banner says no more than an empty one
        "empty" if version_text is not None else _why_missing(fs, "proc/version", False),
    ]
    return NodeInput(paths, _worst(states)), None


def read_readability(fs: RootFS, proc_modules_text: str | None, kernel_release: NodeInput) -> Readability:
    """Readability of the node's inputs; `proc_modules_text` as read_node read it."""
    return Readability(
        proc_modules=file_input(fs, "proc/modules", proc_modules_text),
        kernel_release=kernel_release,
        modules_disabled=file_input(
            fs, "proc/sys/kernel/modules_disabled", fs.read_line("proc/sys/kernel/modules_disabled")
        ),
        proc_devices=file_input(fs, "proc/devices", fs.read_text("proc/devices")),
        sys_module=dir_input(fs, "sys/module"),
        pci_devices=dir_input(fs, "sys/bus/pci/devices"),
    )
