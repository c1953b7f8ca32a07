"""The live target over a snapshot-shaped tree: the reload set it observes."""

from nvreload.engine.live_target import LiveTarget
from nvreload.host.machine import Machine
from nvreload.host.rootfs import open_root


def test_the_reload_set_is_the_nvidia_modules_not_mofed_or_nouveau(tmp_path):
    from snapshot_builder import healthy_node

    snap = healthy_node(tmp_path / "node")
    snap.module("nvidia_peermem", "550.127.08")
    snap.module("ib_core", None, holders=("nvidia_peermem",), refcount=1)
    snap.module("mlx5_core", None)
    snap.module("nouveau", None)
    snap.write("proc/modules", (snap.root / "proc/modules").read_text())
    # a snapshot root is not live, so observe() reads modules without scanning processes
    view = LiveTarget(Machine(open_root(str(snap.root)))).observe()
    assert {m.name for m in view.modules} == {"nvidia", "nvidia_uvm", "nvidia_modeset", "nvidia_drm", "nvidia_peermem"}
