from snapshot_builder import Snapshot

from nvreload.read.kernel_modules import parse_proc_modules, read_kernel, read_modules
from nvreload.rootfs import open_root


def test_refcount_dash_means_the_kernel_cannot_unload():
    lines = parse_proc_modules("nvidia 14299136 - - Live 0xffffffffc0400000 (O)\n")
    assert lines[0].unload_supported is False and lines[0].refcount is None


def test_used_by_column_lists_holders():
    (line,) = parse_proc_modules("nvidia 100 3 nvidia_uvm,nvidia_modeset, Live 0x0 (POE)\n")
    assert line.holders == ("nvidia_uvm", "nvidia_modeset") and line.refcount == 3


def test_garbage_lines_in_proc_modules_are_skipped():
    text = "garbage\n\x00\x01\nnvidia notanumber 1 - Live 0x0\n  \nnvidia_uvm 10 0 - Live 0x0\n"
    assert [module.name for module in parse_proc_modules(text)] == ["nvidia_uvm"]


def test_holders_are_found_transitively_including_unlisted_modules(tmp_path):
    snap = Snapshot(tmp_path)
    snap.module("nvidia", "550.127.08", holders=("nvidia_modeset", "mystery_gpu_helper"), refcount=2)
    snap.module("nvidia_modeset", "550.127.08")
    snap.module("mystery_gpu_helper", None, holders=("outer_helper",), refcount=1)
    snap.module("outer_helper")
    fs = open_root(str(tmp_path))
    names = {m.name for m in read_modules(fs, parse_proc_modules(fs.read_text("proc/modules")))}
    assert {"nvidia", "nvidia_modeset", "mystery_gpu_helper", "outer_helper"} <= names


def test_no_proc_modules_means_no_module_support(tmp_path):
    Snapshot(tmp_path)
    (tmp_path / "proc/modules").unlink()
    kernel = read_kernel(open_root(str(tmp_path)), [], False)
    assert kernel.modules_supported is False and kernel.module_unload_supported is False


def _mod(name, refcount, holders=()):
    from nvreload.model import KernelModule

    return KernelModule(name, "live", refcount, tuple(holders), "550.127.08")


def test_the_scan_is_skipped_only_when_refcounts_are_all_holders():
    from nvreload.read.node import no_open_handles

    idle = (_mod("nvidia", 2, ("nvidia_uvm", "nvidia_modeset")), _mod("nvidia_uvm", 0), _mod("nvidia_modeset", 0))
    assert no_open_handles(idle) is True
    busy = (_mod("nvidia", 3, ("nvidia_uvm", "nvidia_modeset")), _mod("nvidia_uvm", 0), _mod("nvidia_modeset", 0))
    assert no_open_handles(busy) is False
    uvm_busy = (_mod("nvidia", 1, ("nvidia_uvm",)), _mod("nvidia_uvm", 4))
    assert no_open_handles(uvm_busy) is False
    unknown = (_mod("nvidia", None), _mod("nvidia_uvm", None))  # kernel without module unloading
    assert no_open_handles(unknown) is False
    assert no_open_handles(()) is False


def test_a_refcnt_in_superscript_digits_is_an_unknown_refcount_not_a_crash(tmp_path):
    # a module in /sys/module but not in /proc/modules has its refcount read from sys/module/<m>/refcnt;
    # str.isdigit() accepts '²', int() refuses it
    snap = Snapshot(tmp_path)
    snap.write("sys/module/nvidia/initstate", "live\n")
    snap.write("sys/module/nvidia/refcnt", "-²\n")
    (nvidia,) = read_modules(open_root(str(tmp_path)), [])
    assert nvidia.state == "live" and nvidia.refcount is None


def test_mofed_is_ready_with_both_its_modules_live_not_with_one(tmp_path):
    from nvreload.read.kernel_modules import mofed_ready, read_loaded_modules

    snap = Snapshot(tmp_path)
    snap.module("ib_core", None)
    root = open_root(str(snap.root))
    assert mofed_ready(root, read_loaded_modules(root)) is False  # ib_core alone: mlx5_core not there yet
    snap.module("mlx5_core", None)
    assert mofed_ready(root, read_loaded_modules(root)) is True


def test_proc_modules_lines_with_a_state_or_count_the_kernel_never_prints_are_skipped():
    # found by tests/fuzz: 'Weird' reached the status document as state "weird", '-1' as refcount -1,
    # both outside its schema
    text = (
        "nvidia 100 1 - Weird 0x0\nnvidia_uvm 100 -1 - Live 0x0\nnvidia_drm 1_0 0 - Live 0x0\n"
        "nvidia_modeset 100 0 - Live 0x0\n"
    )
    assert [(module.name, module.state) for module in parse_proc_modules(text)] == [("nvidia_modeset", "live")]


def test_an_initstate_the_kernel_never_writes_is_ignored(tmp_path):
    # found by tests/fuzz: initstate '0' became the module's state in the status document
    snap = Snapshot(tmp_path)
    snap.module("nvidia", "550.127.08", refcount=0)
    snap.write("sys/module/nvidia/initstate", "0\n")
    fs = open_root(str(tmp_path))
    (nvidia,) = read_modules(fs, parse_proc_modules(fs.read_text("proc/modules")))
    assert nvidia.state == "live"


def test_an_empty_osrelease_names_no_kernel_release(tmp_path):
    # found by tests/fuzz: an empty file gave kernel_release "", which the schema refuses (null or a name)
    Snapshot(tmp_path).write("proc/sys/kernel/osrelease", "")
    assert read_kernel(open_root(str(tmp_path)), [], True).release is None


def test_a_damaged_sysfs_module_version_is_no_version(tmp_path):
    # found by fuzzing: "\n⣰²" reached the status document's kernel_module_version, outside its schema
    from nvreload.read.kernel_modules import read_module
    from nvreload.rootfs import DirRoot

    for text, expected in (("580.95.05\n", "580.95.05"), ("\n⣰²", None), ("580.9x", None), ("５８０.１", None)):
        (tmp_path / "sys/module/nvidia").mkdir(parents=True, exist_ok=True)
        (tmp_path / "sys/module/nvidia/version").write_text(text)
        assert read_module(DirRoot(str(tmp_path)), "nvidia", None).version == expected, text
