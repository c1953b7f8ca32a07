"""The .run door: what is checked, what is run, and what a failure says."""

import os

import pytest

from nvreload.errors import BadInputError
from nvreload.host.installer import check_installer, installer_argv, installer_failure, take_installer


def test_the_installer_runs_unattended_leaves_the_load_to_nvreload_and_keeps_the_flavour():
    assert installer_argv("/x.run", "open") == [
        "sh",
        "/x.run",
        "--silent",
        "--no-questions",
        "--ui=none",
        "--skip-module-load",
        "--kernel-module-type=open",
    ]
    assert "--kernel-module-type" not in " ".join(installer_argv("/x.run", None))


def test_a_failed_install_is_reported_by_its_error_line_not_the_extraction_progress():
    progress = "0% \b\b\b\b 53% \b\b\b\b 100%   MD5 checksums are OK."
    stdout = "Verifying archive integrity... OK\nERROR: Unable to build the NVIDIA kernel module.\nmore\n"
    assert installer_failure(stdout, progress) == "ERROR: Unable to build the NVIDIA kernel module."
    assert installer_failure("last words\n", progress) == "last words"


HEADER = b"#!/bin/sh\n# This script was generated using Makeself 2.4.5\nlabel='NVIDIA Accelerated Graphics Driver'\n"


def a_run(directory, mode=0o755):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "NVIDIA-Linux-x86_64-580.119.02.run"
    path.write_bytes(HEADER + b"payload" * 1000)
    os.chmod(path, mode)
    return path


def test_an_installer_owned_by_another_user_is_refused_as_such(tmp_path):
    run = a_run(tmp_path / "dl")
    os.chown(run, 65534, 65534)
    with pytest.raises(BadInputError, match="owned by uid 65534, not root"):
        check_installer(str(run))


def test_an_installer_in_a_directory_others_can_write_is_refused_as_such(tmp_path):
    run = a_run(tmp_path / "shared")
    os.chmod(tmp_path / "shared", 0o777)
    with pytest.raises(BadInputError, match="shared is writable by group or others"):
        check_installer(str(run))


def test_a_sticky_directory_like_tmp_is_accepted_for_roots_own_file(tmp_path):
    run = a_run(tmp_path / "sticky")
    os.chmod(tmp_path / "sticky", 0o1777)
    check_installer(str(run))


def test_what_runs_is_the_copy_that_was_checked_not_the_file_as_it_is_later(tmp_path):
    run = a_run(tmp_path / "dl")
    private = tmp_path / "private"
    copy = take_installer(str(run), str(private))
    run.write_bytes(b"#!/bin/sh\nrm -rf /\n")  # replaced after the check
    assert open(copy, "rb").read().startswith(HEADER)
    assert (os.stat(private).st_mode & 0o777, os.stat(copy).st_mode & 0o777) == (0o700, 0o500)


def test_a_fifo_planted_at_the_path_is_refused_without_hanging(tmp_path):
    fifo = tmp_path / "NVIDIA-Linux-x86_64-580.119.02.run"
    os.mkfifo(fifo, 0o644)
    with pytest.raises(BadInputError, match="not a regular file"):
        check_installer(str(fifo))


def test_an_installer_writable_by_its_group_is_refused_as_such(tmp_path):
    run = a_run(tmp_path / "dl", mode=0o775)
    with pytest.raises(BadInputError, match="writable by group or others; refusing to run it as root"):
        check_installer(str(run))
