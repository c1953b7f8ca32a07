"""read_node: the read model of a whole node carries what of it could be read."""

from helpers import node_of

from nvreload.host.machine import Machine
from nvreload.read.node import read_node
from nvreload.rootfs import open_root


def test_the_h100_capture_reads_every_input(h100_root):
    node = read_node(Machine(open_root(str(h100_root))))
    assert {i.state for i in node.readable.inputs().values()} == {"read"}


def test_a_snapshot_with_proc_version_but_no_osrelease_knows_its_kernel(snapshot):
    (snapshot.root / "proc/sys/kernel/osrelease").unlink()
    snapshot.write("proc/version", f"Linux version {snapshot.release} (debian-kernel@lists.debian.org) #1 SMP\n")
    node = node_of(snapshot)
    assert node.kernel.release == snapshot.release and node.readable.kernel_release.read
    assert node.kernel.modules_tree_present  # looked up for the release /proc/version gave
    assert node.on_disk is not None and node.on_disk.version == "550.127.08"


def test_a_snapshot_missing_only_proc_modules_says_so(snapshot):
    (snapshot.root / "proc/modules").unlink()
    node = node_of(snapshot)
    assert node.readable.proc_modules.state == "absent"
    assert [i.paths for i in node.readable.essential_missing()] == [("/proc/modules",)]
