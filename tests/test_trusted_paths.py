"""The walk from / to a path root acts on: real directories and real symbolic links, owned by a real
other user (uid 65534) where the point is that someone else controls them."""

import os
import stat

import pytest

from nvreload.errors import BadInputError
from nvreload.trusted_paths import (
    TrustedWalk,
    open_own_file,
    open_trusted_directory,
    open_trusted_file,
    read_own_file,
)

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")


def walk(path, **kw):
    fd, name, real = TrustedWalk(str(path), **kw).parent()
    os.close(fd)
    return name, real


def test_a_path_of_roots_own_directories_resolves_to_its_last_name(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert walk(tmp_path / "a" / "b" / "file") == ("file", str(tmp_path / "a" / "b"))


def test_a_link_another_user_owns_is_never_followed(tmp_path):
    (tmp_path / "root-only").mkdir(mode=0o700)
    link = tmp_path / "via"
    link.symlink_to(tmp_path / "root-only")
    os.chown(link, NOBODY, NOBODY, follow_symlinks=False)
    with pytest.raises(BadInputError, match=f"{link} is a symbolic link owned by uid {NOBODY}"):
        walk(link / "out.prom")


def test_roots_link_in_a_directory_others_can_write_is_never_followed(tmp_path):
    # a root-owned link hard-linked into /tmp by a user would resolve relative to the user's directory
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "lib").symlink_to("elsewhere")
    with pytest.raises(BadInputError, match="is a symbolic link in a directory that others can write"):
        walk(shared / "lib" / "x")


def test_roots_link_in_roots_directory_is_followed_relative_to_where_it_is(tmp_path):
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    assert walk(tmp_path / "lib" / "x") == ("x", str(tmp_path / "usr" / "lib"))


def test_a_directory_another_user_owns_is_refused_when_directories_are_checked(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    walk(home / "x")  # without the check only links matter
    with pytest.raises(BadInputError, match=f"{home} is owned by uid {NOBODY}"):
        walk(home / "x", check_dirs=True)


def test_a_group_writable_directory_is_refused_and_a_sticky_one_is_not(tmp_path):
    (tmp_path / "g").mkdir()
    (tmp_path / "g").chmod(0o775)
    with pytest.raises(BadInputError, match="is writable by group or others"):
        walk(tmp_path / "g" / "x", check_dirs=True)
    (tmp_path / "t").mkdir()
    (tmp_path / "t").chmod(0o1777)
    walk(tmp_path / "t" / "x", check_dirs=True)


def test_a_state_directory_is_made_inside_checked_ones_and_must_be_the_users_alone(tmp_path):
    fd = open_trusted_directory(str(tmp_path / "state" / "sim"), create=True)
    os.close(fd)
    assert stat.S_IMODE(os.stat(tmp_path / "state" / "sim").st_mode) == 0o755
    os.chown(tmp_path / "state" / "sim", NOBODY, NOBODY)
    with pytest.raises(BadInputError, match=f"is owned by uid {NOBODY}, not the running user's alone"):
        open_trusted_directory(str(tmp_path / "state" / "sim"))


def test_a_file_another_user_owns_or_can_write_is_refused_and_so_is_a_fifo(tmp_path):
    mine = tmp_path / "scenario.json"
    mine.write_text("{}")
    os.close(open_trusted_file(str(mine)))
    os.chown(mine, NOBODY, NOBODY)
    with pytest.raises(BadInputError, match=f"owned by uid {NOBODY}, not root"):
        open_trusted_file(str(mine))
    os.chown(mine, 0, 0)
    mine.chmod(0o666)
    with pytest.raises(BadInputError, match="writable by group or others"):
        open_trusted_file(str(mine))
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(BadInputError, match="not a regular file"):
        open_trusted_file(str(tmp_path / "fifo"))


def test_an_own_file_that_is_a_link_is_refused_and_its_target_untouched(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "lock").symlink_to(victim)
    with pytest.raises(BadInputError, match="is a symbolic link"):
        open_own_file(str(tmp_path / "lock"), os.O_RDWR | os.O_CREAT)
    assert victim.read_text() == "precious"


def test_an_own_file_another_user_owns_is_refused_and_a_missing_one_is_none(tmp_path):
    journal = tmp_path / "journal.json"
    assert read_own_file(str(journal), 10) is None
    journal.write_text("{}")
    os.chown(journal, NOBODY, NOBODY)
    with pytest.raises(BadInputError, match=f"is owned by uid {NOBODY}, not the running user"):
        read_own_file(str(journal), 10)
