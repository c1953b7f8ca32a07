"""The userspace driver version, from the file libnvidia-ml.so.1 resolves to (never from NVML)."""

from nvreload.read.userspace import read_userspace
from nvreload.rootfs import open_root


def test_the_h100_capture_resolves_through_usr_local_nvidia(h100_root):
    library = read_userspace(open_root(str(h100_root)))
    assert library.version == "580.159.04"
    assert library.link == "/usr/local/nvidia/lib64/libnvidia-ml.so.1"
    assert library.path == "/usr/local/nvidia/lib64/libnvidia-ml.so.580.159.04"


def test_an_ld_so_conf_directory_comes_before_the_defaults(snapshot):
    snapshot.userspace("550.127.08")  # in usr/lib/x86_64-linux-gnu
    snapshot.userspace("560.35.03", directory="opt/nvidia/lib64")
    snapshot.write("etc/ld.so.conf.d/nvidia.conf", "# the driver's own directory\n/opt/nvidia/lib64\n")
    library = read_userspace(open_root(str(snapshot.root)))
    assert (library.version, library.link) == ("560.35.03", "/opt/nvidia/lib64/libnvidia-ml.so.1")


def test_an_absolute_link_resolves_inside_the_snapshot_not_on_this_machine(snapshot):
    snapshot.write("usr/lib64/libnvidia-ml.so.535.183.01", b"\x7fELF")
    snapshot.link("usr/lib64/libnvidia-ml.so.1", "/usr/lib64/libnvidia-ml.so.535.183.01")
    snapshot.link("usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1", "/nonexistent/libnvidia-ml.so.1")
    library = read_userspace(open_root(str(snapshot.root)))
    assert library.version == "535.183.01"


def test_no_library_anywhere_is_none_not_an_empty_string(tmp_path):
    (tmp_path / "proc").mkdir()
    library = read_userspace(open_root(str(tmp_path)))
    assert (library.version, library.path, library.link) == (None, None, None)


def test_a_soname_that_is_a_real_file_takes_its_one_versioned_siblings_version(tmp_path):
    # the soname's own '.1' is no driver version
    (tmp_path / "proc").mkdir()
    lib = tmp_path / "usr/lib64"
    lib.mkdir(parents=True)
    (lib / "libnvidia-ml.so.1").write_bytes(b"\x7fELF\x02")
    (lib / "libnvidia-ml.so.550.54.15").write_bytes(b"\x7fELF\x02")
    library = read_userspace(open_root(str(tmp_path)))
    assert (library.version, library.path) == ("550.54.15", "/usr/lib64/libnvidia-ml.so.1")
