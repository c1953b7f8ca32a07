"""What of a node could be read: each input read, empty, unreadable, absent, or lacking in the live kernel."""

from snapshot_builder import Snapshot, healthy_node

from nvreload.read.readability import kernel_release_input, read_readability, release_from_proc_version
from nvreload.rootfs import DirRoot, RootFS


class DeniedRoot(DirRoot):
    """A snapshot directory whose `denied` paths raise PermissionError, as they do for a user other
    than root: the same exception RootFS turns into `fs.denied`, whoever runs the tests."""

    def __init__(self, path, denied=(), live=False):
        super().__init__(path)
        self.refused = tuple(denied)
        self.is_live = live  # judged as the live root is; still read under `path`

    def _check(self, rel):
        if any(rel == d or rel.startswith(d + "/") for d in self.refused):
            raise PermissionError(13, "Permission denied", rel)

    def _lkind(self, rel):
        # lstat() of anything inside a directory we may not search fails, as if it were not there
        if any(rel.startswith(d + "/") for d in self.refused):
            return None
        return super()._lkind(rel)

    def _read(self, rel, limit):
        self._check(rel)
        return super()._read(rel, limit)

    def _list(self, rel):
        self._check(rel)
        return super()._list(rel)

    # the live root's own shortcuts read the real `/`; the generic ones read under `path`
    resolve = RootFS.resolve
    _resolved_file = RootFS._resolved_file


def readability_of(fs):
    release, _ = kernel_release_input(fs)
    return read_readability(fs, fs.read_text("proc/modules"), release)


def states(readability):
    return {name: i.state for name, i in readability.inputs().items()}


def test_a_whole_snapshot_reads_every_input(tmp_path):
    readability = readability_of(DirRoot(healthy_node(tmp_path).root))
    assert set(states(readability).values()) == {"read"}
    assert readability.essential_missing() == ()


def test_empty_proc_files_as_cp_or_tar_copies_them_are_empty_not_read(tmp_path):
    snap = Snapshot(tmp_path)  # no module: its proc/modules is an empty file
    snap.write("proc/sys/kernel/osrelease", "")
    readability = readability_of(DirRoot(tmp_path))
    assert readability.proc_modules.state == "empty" and readability.kernel_release.state == "empty"
    assert [i.paths for i in readability.essential_missing()] == [
        ("/proc/modules",),
        ("/proc/sys/kernel/osrelease", "/proc/version"),
    ]


def test_an_empty_proc_and_sys_give_absent_inputs(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "sys").mkdir()
    assert set(states(readability_of(DirRoot(tmp_path))).values()) == {"absent"}


def test_a_file_denied_to_the_reader_is_unreadable_and_recorded(tmp_path):
    healthy_node(tmp_path)
    fs = DeniedRoot(tmp_path, denied=("proc/modules",))
    readability = readability_of(fs)
    assert readability.proc_modules.state == "unreadable"
    assert "/proc/modules" in fs.denied


def test_a_file_under_a_directory_the_reader_may_not_list_is_unreadable_not_absent(tmp_path):
    healthy_node(tmp_path)
    fs = DeniedRoot(tmp_path, denied=("proc", "sys"))
    found = states(readability_of(fs))
    assert found == dict.fromkeys(found, "unreadable")
    assert {"/proc", "/sys"} <= set(fs.denied)  # and --status lists them as unreadable


def test_a_directory_where_proc_modules_should_be_is_unreadable(tmp_path):
    healthy_node(tmp_path)
    (tmp_path / "proc/modules").unlink()
    (tmp_path / "proc/modules").mkdir()
    assert readability_of(DirRoot(tmp_path)).proc_modules.state == "unreadable"


def test_on_the_live_node_a_missing_proc_modules_is_the_kernel_saying_it_has_no_module_support(tmp_path):
    healthy_node(tmp_path)
    (tmp_path / "proc/modules").unlink()
    (tmp_path / "proc/sys/kernel/modules_disabled").unlink()
    readability = readability_of(DeniedRoot(tmp_path, live=True))
    assert readability.proc_modules.state == "not_in_kernel" and readability.proc_modules.known
    assert readability.modules_disabled.state == "not_in_kernel"
    assert readability.essential_missing() == ()


def test_on_the_live_node_an_empty_proc_modules_means_no_module_is_loaded(tmp_path):
    Snapshot(tmp_path)
    assert readability_of(DeniedRoot(tmp_path, live=True)).proc_modules.state == "read"
    assert readability_of(DirRoot(tmp_path)).proc_modules.state == "empty"  # a snapshot's copy proves nothing


def test_on_the_live_node_unprivileged_a_denied_proc_modules_or_sys_module_is_unreadable(tmp_path):
    healthy_node(tmp_path)
    fs = DeniedRoot(tmp_path, denied=("proc/modules", "sys/module"), live=True)
    readability = readability_of(fs)
    assert (readability.proc_modules.state, readability.sys_module.state) == ("unreadable", "unreadable")
    assert readability.essential_missing() == (readability.proc_modules,)


def test_on_the_live_node_a_missing_kernel_release_is_not_an_answer(tmp_path):
    healthy_node(tmp_path)
    (tmp_path / "proc/sys/kernel/osrelease").unlink()
    release, value = kernel_release_input(DeniedRoot(tmp_path, live=True))
    assert (release.state, value) == ("absent", None)


def test_the_kernel_release_falls_back_to_proc_version(tmp_path):
    healthy_node(tmp_path)
    (tmp_path / "proc/sys/kernel/osrelease").unlink()
    (tmp_path / "proc/version").write_text("Linux version 6.1.0-26-amd64 (debian-kernel@lists.debian.org) #1 SMP\n")
    release, value = kernel_release_input(DirRoot(tmp_path))
    assert (release.state, value) == ("read", "6.1.0-26-amd64")
    assert release.paths == ("/proc/sys/kernel/osrelease", "/proc/version")


def test_a_kernel_release_in_neither_place_names_the_worst_of_both(tmp_path):
    healthy_node(tmp_path)
    (tmp_path / "proc/sys/kernel/osrelease").unlink()
    (tmp_path / "proc/version").write_text("")
    assert kernel_release_input(DirRoot(tmp_path))[0].state == "empty"
    assert kernel_release_input(DeniedRoot(tmp_path, denied=("proc/version",)))[0].state == "unreadable"


def test_only_the_kernels_banner_in_proc_version_gives_a_release():
    assert release_from_proc_version("Linux version 6.18.44-fc (builder@x) (gcc 15) #1 SMP") == "6.18.44-fc"
    assert release_from_proc_version("garbage here and there") is None
    assert release_from_proc_version(None) is None
