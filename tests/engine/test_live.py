"""Pieces of the live host that can run for real here: sysfs console binding on a sysfs-shaped
tree, and the modprobe.d parameter reader."""

from nvreload.engine.live import LiveReloadHost, framebuffer_consoles, modprobe_options
from nvreload.errors import HostError
from nvreload.host.local import LocalHost
from nvreload.host.rootfs import open_root
from snapshot_builder import Snapshot

import pytest


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
    host = LiveReloadHost(LocalHost(open_root(str(tmp_path))))
    host.bind_console("vtcon1", False)
    assert (tmp_path / "sys/class/vtconsole/vtcon1/bind").read_text() == "0\n"
    host.bind_console("vtcon1", True)
    assert (tmp_path / "sys/class/vtconsole/vtcon1/bind").read_text() == "1\n"
    with pytest.raises(HostError, match="No such file"):
        host.bind_console("vtcon9", True)


def test_modprobe_d_and_the_kernel_command_line_give_the_configured_parameters(tmp_path):
    snap = Snapshot(tmp_path)
    snap.write("etc/modprobe.d/nvidia.conf", "# comment\noptions nvidia NVreg_EnableGpuFirmware=0 NVreg_DynamicPowerManagement=0x02\n")
    snap.write("proc/cmdline", "BOOT_IMAGE=/vmlinuz nvidia-drm.modeset=1 quiet\n")
    options = modprobe_options(LocalHost(open_root(str(tmp_path))))
    assert options["nvidia"] == {"NVreg_EnableGpuFirmware": "0", "NVreg_DynamicPowerManagement": "0x02"}
    assert options["nvidia_drm"] == {"modeset": "1"}


def test_the_reload_set_is_the_nvidia_modules_not_mofed_or_nouveau(tmp_path):
    from snapshot_builder import healthy_node

    snap = healthy_node(tmp_path / "node")
    snap.module("nvidia_peermem", "550.127.08")
    snap.module("ib_core", None, holders=("nvidia_peermem",), refcount=1)
    snap.module("mlx5_core", None)
    snap.module("nouveau", None)
    snap.write("proc/modules", (snap.root / "proc/modules").read_text())
    # a snapshot root is not live, so observe() reads modules without scanning processes
    view = LiveReloadHost(LocalHost(open_root(str(snap.root)))).observe()
    assert {m.name for m in view.modules} == {"nvidia", "nvidia_uvm", "nvidia_modeset", "nvidia_drm", "nvidia_peermem"}
