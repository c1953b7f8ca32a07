"""Bad input gets one line and a documented exit code, never a traceback."""

import os
import tarfile

from helpers import run_cli

from nvreload.errors import ExitCode


def one_clean_line(proc):
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_missing_root_is_bad_input(tmp_path):
    proc = run_cli("--status", "--root", str(tmp_path / "missing"))
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "no such file" in one_clean_line(proc)


def test_a_root_that_is_not_a_snapshot_is_bad_input(tmp_path):
    (tmp_path / "home").mkdir()
    proc = run_cli("--status", "--json", "--root", str(tmp_path))
    assert proc.returncode == ExitCode.BAD_INPUT
    assert proc.stdout == ""
    assert "not a node snapshot" in one_clean_line(proc)


def test_a_truncated_tar_gz_is_bad_input(tmp_path, h100_root):
    archive = tmp_path / "node.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(h100_root, arcname=".")
    archive.write_bytes(archive.read_bytes()[:2000])
    proc = run_cli("--status", "--root", str(archive))
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "not a readable .tar.gz snapshot" in one_clean_line(proc)


def test_a_file_that_is_not_gzip_is_bad_input(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"PK\x03\x04 this is a zip")
    proc = run_cli("--status", "--root", str(junk))
    assert proc.returncode == ExitCode.BAD_INPUT
    one_clean_line(proc)


def test_a_corrupt_module_and_garbage_proc_files_still_give_a_status(tmp_path, snapshot):
    snapshot.write(f"lib/modules/{snapshot.release}/updates/dkms/nvidia.ko", b"\x7fELF" + os.urandom(200))
    snapshot.write("proc/modules", "\x00\x01garbage line\nnvidia 1 x y z\n")
    snapshot.write("nvreload-snapshot/dmesg.txt", os.urandom(4000))
    snapshot.write("proc/driver/nvidia/version", "garbage\n")
    proc = run_cli("--status", "--json", "--root", str(snapshot.root))
    assert "Traceback" not in proc.stderr
    assert proc.returncode in (ExitCode.WARNING, ExitCode.CRITICAL)
    assert "on_disk_module_unreadable" in proc.stdout


def test_conflicting_actions_are_a_usage_error():
    proc = run_cli("--status", "--reload")
    assert proc.returncode == ExitCode.USAGE
    assert "conflict" in one_clean_line(proc)


def test_an_unknown_flag_is_a_usage_error():
    proc = run_cli("--frobnicate")
    assert proc.returncode == ExitCode.USAGE
    one_clean_line(proc)


def test_driver_without_reload_is_a_usage_error(tmp_path):
    proc = run_cli("--status", "--driver", str(tmp_path / "x.run"))
    assert proc.returncode == ExitCode.USAGE


def test_actions_on_a_snapshot_are_refused_as_usage_errors(h100_root):
    proc = run_cli("--stop", "--root", str(h100_root))
    assert proc.returncode == ExitCode.USAGE
    assert "--root reads a snapshot" in one_clean_line(proc)


def test_verify_on_a_snapshot_is_a_usage_error(h100_root):
    proc = run_cli("--verify", "--root", str(h100_root))
    assert proc.returncode == ExitCode.USAGE


def unprivileged(*args):
    import subprocess
    import sys

    from helpers import as_nobody

    return subprocess.run(
        as_nobody() + [sys.executable, "-m", "nvreload", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": "/tmp"},
    )


def test_status_works_unprivileged_and_says_what_it_could_not_read(tmp_path, snapshot):
    secret = snapshot.root / "nvreload-snapshot/dmesg.txt"
    os.chmod(secret, 0o600)
    for parent in [snapshot.root, *snapshot.root.parents]:
        if str(parent) in ("/", "/tmp"):
            break
        os.chmod(parent, 0o755)
    proc = unprivileged("--status", "--json", "--root", str(snapshot.root))
    assert "Traceback" not in proc.stderr
    import json

    doc = json.loads(proc.stdout)
    assert "/nvreload-snapshot/dmesg.txt" in doc["unreadable"]


def test_reload_as_an_unprivileged_user_is_refused_with_one_line():
    proc = unprivileged("--reload", "--yes")
    assert proc.returncode == ExitCode.REFUSED
    # refused as not root, before anything else is looked at (not by a state directory it cannot write)
    assert one_clean_line(proc).endswith(
        "--reload needs root (it stops services and unloads kernel modules); run it with sudo"
    ), proc.stderr


def test_help_lists_every_exit_code_the_environment_and_examples():
    import re

    from nvreload.errors import ExitCode

    proc = run_cli("--help")
    assert proc.returncode == 0
    codes_block = proc.stdout.split("Exit codes:")[1].split("Environment:")[0]
    # each line: the code(s) ("1, 2, 3"), two spaces or more, the meaning
    listed = {
        int(code) for first in re.findall(r"^\s+(\d+(?:, \d+)*)\s{2,}", codes_block, re.M) for code in first.split(", ")
    }
    documented = {value for name, value in vars(ExitCode).items() if name.isupper()}
    assert documented <= listed, documented - listed
    for variable in ("NVRELOAD_STATE_DIR", "NVRELOAD_NVML_TIMEOUT", "NVRELOAD_SYSTEMCTL", "XDG_STATE_HOME"):
        assert variable in proc.stdout.split("Environment:")[1]
    assert "sudo nvreload --reload --yes" in proc.stdout.split("Examples:")[1]
    assert "not implemented" not in proc.stdout
