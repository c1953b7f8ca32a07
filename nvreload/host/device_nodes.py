"""The one door to device nodes nvreload makes itself: those of modules that take a dynamic major
and leave the node to their install script (gdrcopy's gdrdrv: `insmod`, then `mknod /dev/gdrdrv`).
After a reload the module has a new major, and the old node leads nowhere until it is made again."""

from __future__ import annotations

import os
import stat

from nvreload.errors import HostError
from nvreload.read.devices import character_major

# module: (its name in /proc/devices, the node under the root, minor, mode). gdrcopy's own script
# makes /dev/gdrdrv readable and writable by everyone: unprivileged CUDA jobs open it.
DYNAMIC_NODES = {"gdrdrv": ("gdrdrv", "dev/gdrdrv", 0, 0o666)}


def remake_device_node(module: str, root: str = "/") -> str | None:
    """Make `module`'s device node again for the major it has now; returns its path, or None when
    the module makes its own. A node that already leads to the right device is left alone."""
    spec = DYNAMIC_NODES.get(module)
    if spec is None:
        return None
    registered, relative, minor, mode = spec
    try:
        with open(os.path.join(root, "proc/devices")) as handle:
            major = character_major(handle.read(), registered)
    except OSError as exc:
        raise HostError(f"/proc/devices: {exc.strerror}") from None
    if major is None:
        raise HostError(f"{module} is loaded but registered no '{registered}' character device")
    path = os.path.join(root, relative)
    wanted = os.makedev(major, minor)
    try:
        current = os.lstat(path)
    except FileNotFoundError:
        current = None
    except OSError as exc:
        raise HostError(f"{path}: {exc.strerror}") from None
    if current is not None:
        if stat.S_ISCHR(current.st_mode) and current.st_rdev == wanted and stat.S_IMODE(current.st_mode) == mode:
            return path
        if not stat.S_ISCHR(current.st_mode):
            # never replace what is not a device node (a file, a link someone made): say so instead
            raise HostError(f"{path} exists and is not a character device; not replacing it")
    try:
        if current is not None:
            os.unlink(path)
        os.mknod(path, stat.S_IFCHR | mode, wanted)
        os.chmod(path, mode)  # mknod's mode is masked by the umask
    except OSError as exc:
        raise HostError(f"mknod {path} c {major} {minor}: {exc.strerror}") from None
    return path
