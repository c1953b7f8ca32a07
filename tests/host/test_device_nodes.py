"""gdrdrv's /dev node is made again for the major the module has after a reload; real mknod under a
test root (never /dev), and nothing that is not a device node is ever replaced."""

import os
import stat

import pytest

from nvreload.errors import HostError
from nvreload.host.device_nodes import remake_device_node

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root (CI runs as root)")


def root_with(tmp_path, devices: str):
    (tmp_path / "proc").mkdir()
    (tmp_path / "dev").mkdir()
    (tmp_path / "proc" / "devices").write_text(
        "Character devices:\n  1 mem\n195 nvidia-frontend\n" + devices + "\nBlock devices:\n  8 sd\n"
    )
    return tmp_path


@needs_root
def test_gdrdrv_gets_a_node_for_its_new_major_readable_and_writable_by_all(tmp_path):
    root = root_with(tmp_path, "237 gdrdrv")
    path = remake_device_node("gdrdrv", str(root))
    st = os.lstat(path)
    assert path == str(root / "dev" / "gdrdrv") and stat.S_ISCHR(st.st_mode)
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (237, 0) and stat.S_IMODE(st.st_mode) == 0o666


@needs_root
def test_a_node_left_from_the_old_major_is_replaced(tmp_path):
    root = root_with(tmp_path, "238 gdrdrv")
    os.mknod(root / "dev" / "gdrdrv", stat.S_IFCHR | 0o666, os.makedev(237, 0))
    remake_device_node("gdrdrv", str(root))
    assert os.major(os.lstat(root / "dev" / "gdrdrv").st_rdev) == 238


def test_what_is_not_a_device_node_is_never_replaced(tmp_path):
    root = root_with(tmp_path, "237 gdrdrv")
    (root / "dev" / "gdrdrv").write_text("someone's file")
    with pytest.raises(HostError, match="is not a character device; not replacing it"):
        remake_device_node("gdrdrv", str(root))
    assert (root / "dev" / "gdrdrv").read_text() == "someone's file"


def test_a_loaded_gdrdrv_that_registered_no_device_is_an_error_naming_it(tmp_path):
    root = root_with(tmp_path, "")
    with pytest.raises(HostError, match="gdrdrv is loaded but registered no 'gdrdrv' character device"):
        remake_device_node("gdrdrv", str(root))


def test_modules_that_make_their_own_nodes_are_left_to_do_so(tmp_path):
    assert remake_device_node("nvidia_uvm", str(root_with(tmp_path, ""))) is None
    assert not os.listdir(tmp_path / "dev")
