"""The one door to VT consoles: which are bound to nvidia's framebuffer, and (un)binding them.
fbcon on nvidia-drmdrmfb holds nvidia_drm until its consoles are unbound."""

from __future__ import annotations

from nvreload.errors import HostError
from nvreload.rootfs import RootFS


def framebuffer_consoles(fs: RootFS) -> tuple[str, ...]:
    """VT consoles bound to a framebuffer console, when a framebuffer is nvidia's (nvidia-drmdrmfb)."""
    nvidia_fb = any(
        "nvidia" in (fs.read_line(f"sys/class/graphics/{fb}/name") or "")
        for fb in fs.listdir("sys/class/graphics")
        if fb.startswith("fb")
    )
    if not nvidia_fb:
        return ()
    return tuple(
        vtcon
        for vtcon in fs.listdir("sys/class/vtconsole")
        if "frame buffer" in (fs.read_line(f"sys/class/vtconsole/{vtcon}/name") or "")
        and fs.read_line(f"sys/class/vtconsole/{vtcon}/bind") == "1"
    )


def bind_console(fs: RootFS, vtcon: str, bind: bool) -> None:
    path = fs.host_path(f"sys/class/vtconsole/{vtcon}/bind")
    if path is None:
        raise HostError(f"/sys/class/vtconsole/{vtcon}/bind: No such file or directory")
    try:
        with open(path, "w") as handle:
            handle.write("1\n" if bind else "0\n")
    except OSError as exc:
        raise HostError(f"/sys/class/vtconsole/{vtcon}/bind: {exc.strerror or exc}") from None
