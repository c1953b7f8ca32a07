"""The live target over a snapshot-shaped tree: the reload set it observes."""

from nvreload.engine.live_target import LiveTarget
from nvreload.host.machine import Machine
from nvreload.rootfs import open_root


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


class AnsweringRunner:
    """Every command succeeds and is written down: rmmod, modprobe and the CUDA probe act on no
    kernel here; what this test counts is how often the node is read, not what the kernel does."""

    def __init__(self):
        from nvreload.host.commands import CommandRunner

        self.commands = []
        self._real = CommandRunner()

    def which(self, name):
        return f"/usr/bin/{name}"

    def run(self, argv, timeout=30.0, input_text=None):
        from nvreload.host.commands import CommandResult

        self.commands.append(tuple(argv))
        return CommandResult(tuple(argv), 0, "ok\n", "")

    def check(self, argv, timeout=30.0, input_text=None):
        return self.run(argv, timeout, input_text).stdout


def reload_counting_reads(tmp_path, monkeypatch, nvml_ok: bool):
    from snapshot_builder import healthy_node

    import nvreload.engine.live_target as live
    from nvreload.engine.engine import Engine
    from nvreload.engine.journal import Journal, JournalContext
    from nvreload.engine.planner import build_plan

    snap = healthy_node(tmp_path / "node")
    if nvml_ok:
        snap.write(
            "nvreload-snapshot/nvidia-smi-q.xml",
            '<nvidia_smi_log><driver_version>550.127.08</driver_version><gpu id="00000000:3B:00.0">'
            "<product_name>NVIDIA H100 80GB HBM3</product_name><pci><pci_bus_id>00000000:3B:00.0</pci_bus_id></pci>"
            "<persistence_mode>Disabled</persistence_mode></gpu></nvidia_smi_log>",
        )
    reads = []
    real_read_node = live.read_node
    monkeypatch.setattr(live, "read_node", lambda machine, **kw: reads.append(kw) or real_read_node(machine, **kw))
    runner = AnsweringRunner()
    target = LiveTarget(Machine(open_root(str(snap.root)), runner=runner), grace=0.1, settle=0)
    view = target.observe()
    plan = build_plan(view, target.configured_parameters())
    journal = Journal.start(str(tmp_path / "journal.json"), "reload", [], JournalContext("live"))
    report = Engine(target, journal).reload(plan)
    return report, reads, target, runner


def test_a_live_reload_reads_the_whole_node_before_and_after_and_no_more(tmp_path, monkeypatch):
    report, reads, target, runner = reload_counting_reads(tmp_path, monkeypatch, nvml_ok=True)
    assert report.result == "reloaded", report.error
    assert len(reads) == target.node_reads == 2  # observe, then verify after the load
    assert ("rmmod", "nvidia") in runner.commands and ("modprobe", "nvidia") in runner.commands


def test_a_live_reload_that_rolls_back_still_reads_the_whole_node_only_twice(tmp_path, monkeypatch):
    report, reads, target, _ = reload_counting_reads(tmp_path, monkeypatch, nvml_ok=False)
    assert report.result == "failed" and "nvml" in report.error  # verify failed: NVML not captured
    assert len(reads) == target.node_reads == 2  # rollback asked narrow questions only
