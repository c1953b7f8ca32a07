"""VT consoles on nvidia's framebuffer: found, unbound and rebound through a sysfs-shaped tree."""

import pytest
from snapshot_builder import Snapshot

from nvreload.errors import HostError
from nvreload.host.consoles import bind_console, framebuffer_consoles
from nvreload.rootfs import open_root


def console_tree(snap, fb_name="nvidia-drmdrmfb"):
    snap.write("sys/class/graphics/fb0/name", fb_name + "\n")
    snap.write("sys/class/vtconsole/vtcon0/name", "(S) dummy device\n")
    snap.write("sys/class/vtconsole/vtcon0/bind", "0\n")
    snap.write("sys/class/vtconsole/vtcon1/name", "(M) frame buffer device\n")
    snap.write("sys/class/vtconsole/vtcon1/bind", "1\n")


def test_framebuffer_consoles_on_nvidias_framebuffer_are_found(tmp_path):
    snap = Snapshot(tmp_path)
    console_tree(snap)
    assert framebuffer_consoles(open_root(str(tmp_path))) == ("vtcon1",)


def test_consoles_on_another_framebuffer_are_left_alone(tmp_path):
    snap = Snapshot(tmp_path)
    console_tree(snap, fb_name="EFI VGA")
    assert framebuffer_consoles(open_root(str(tmp_path))) == ()


def test_unbind_and_rebind_write_the_sysfs_bind_file(tmp_path):
    snap = Snapshot(tmp_path)
    console_tree(snap)
    fs = open_root(str(tmp_path))
    bind_console(fs, "vtcon1", False)
    assert (tmp_path / "sys/class/vtconsole/vtcon1/bind").read_text() == "0\n"
    bind_console(fs, "vtcon1", True)
    assert (tmp_path / "sys/class/vtconsole/vtcon1/bind").read_text() == "1\n"
    with pytest.raises(HostError, match="No such file"):
        bind_console(fs, "vtcon9", True)
