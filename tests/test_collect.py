"""--collect writes what --root reads: a round trip gives the same status document."""

import json
import os
import stat
import tarfile

import pytest
from helpers import run_cli, status_of

from nvreload.app import App
from nvreload.errors import BadInputError, ExitCode


def without_volatile(doc):
    doc = json.loads(json.dumps(doc))
    doc["node"].pop("live", None)
    return doc


def test_collect_from_the_h100_capture_round_trips_to_the_same_status(tmp_path, h100_root):
    archive = tmp_path / "bundle.tgz"
    App(root=str(h100_root)).collect(str(archive))
    assert without_volatile(status_of(archive)) == without_volatile(status_of(h100_root))


def test_collect_round_trips_a_version_mismatch_with_a_compressed_module(tmp_path, snapshot):
    snapshot.resident_driver("550.90.07")
    snapshot.on_disk_module("550.127.08", compression="zst")
    (snapshot.root / f"lib/modules/{snapshot.release}/updates/dkms/nvidia.ko").unlink()
    archive = tmp_path / "bundle.tgz"
    proc = run_cli("--root", str(snapshot.root), "--collect", str(archive))
    assert proc.returncode == 0, proc.stderr
    assert status_of(archive) == status_of(snapshot.root)
    assert status_of(archive)["driver"]["on_disk_module_version"] == "550.127.08"


def test_collect_keeps_only_the_documented_layout(tmp_path, snapshot):
    snapshot.write("etc/shadow", "root:$6$secret:19000:0:99999:7:::\n")
    snapshot.write("proc/1/environ", "AWS_SECRET_ACCESS_KEY=hunter2\0")
    snapshot.write("home/alice/.ssh/id_rsa", "-----BEGIN PRIVATE KEY-----\n")
    archive = tmp_path / "bundle.tgz"
    App(root=str(snapshot.root)).collect(str(archive))
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        blob = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())
    allowed = (
        "proc/",
        "sys/",
        "lib/",
        "usr/",
        "etc/modprobe.d",
        "etc/modules",
        "etc/ld.so.conf",
        "etc/os-release",
        "var/lib/dkms/",
        "run/mellanox/",
        "nvreload-snapshot/",
    )

    def documented(name):
        return name.startswith(allowed) or any(a.startswith(name + "/") for a in allowed)

    assert [n for n in names if not documented(n)] == []
    assert b"hunter2" not in blob and b"secret" not in blob and b"PRIVATE KEY" not in blob


def test_collect_to_an_unwritable_place_is_bad_input(tmp_path, h100_root):
    proc = run_cli("--root", str(h100_root), "--collect", str(tmp_path / "no/such/dir/bundle.tgz"))
    assert proc.returncode == 66
    assert "cannot write" in proc.stderr and "Traceback" not in proc.stderr


def test_collect_refuses_a_symlink_planted_at_dest_and_leaves_its_target_alone(tmp_path, h100_root):
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    (tmp_path / "bundle.tgz").symlink_to(victim)
    proc = run_cli("--collect", str(tmp_path / "bundle.tgz"), "--root", str(h100_root))
    assert proc.returncode == ExitCode.BAD_INPUT and "is a symlink" in proc.stderr, proc.stderr
    assert victim.read_text() == "root's file\n" and (tmp_path / "bundle.tgz").is_symlink()


def test_collect_refuses_a_device_or_a_directory_as_dest(tmp_path, h100_root):
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    full = tmp_path / "full"  # a /dev/full of the test's own: a broken check must not replace the machine's
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    device = run_cli("--collect", str(full), "--root", str(h100_root))
    assert device.returncode == ExitCode.BAD_INPUT and "is a character device" in device.stderr
    assert stat.S_ISCHR(os.lstat(full).st_mode)
    directory = run_cli("--collect", str(tmp_path), "--root", str(h100_root))
    assert directory.returncode == ExitCode.USAGE and "is a directory" in directory.stderr  # click says it first
    with pytest.raises(BadInputError, match="is a directory"):
        App(root=str(h100_root)).collect(str(tmp_path))


def test_collect_leaves_only_the_archive_readable_by_root_alone(tmp_path, h100_root):
    proc = run_cli("--collect", str(tmp_path / "bundle.tgz"), "--root", str(h100_root))
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["bundle.tgz"]  # no temporary file left
    assert stat.S_IMODE(os.stat(tmp_path / "bundle.tgz").st_mode) == 0o600


def test_a_live_collect_records_the_gpu_daemons_it_sees_without_their_arguments_or_environment(tmp_path):
    """A real process named like a GPU daemon, with a secret in its arguments and its environment:
    the snapshot records the daemon (what the live scan saw), never the secret."""
    import subprocess
    import time

    secret = "hunter2-" + tmp_path.name
    # a daemon is root's process whose executable is the daemon's (never a name argv gives)
    sbin = tmp_path / "sbin"
    sbin.mkdir(mode=0o755)
    (tmp_path / "daemon.c").write_text("#include <unistd.h>\nint main(void){sleep(30);return 0;}\n")
    subprocess.run(["gcc", "-o", str(sbin / "nv-hostengine"), str(tmp_path / "daemon.c")], check=True)
    daemon = subprocess.Popen(
        [str(sbin / "nv-hostengine"), f"--token={secret}"], env={**os.environ, "NVRELOAD_TEST_SECRET": secret}
    )
    try:
        deadline = time.monotonic() + 10
        while not open(f"/proc/{daemon.pid}/comm", "rb").read().startswith(b"nv-hostengine"):
            assert time.monotonic() < deadline, "the stand-in daemon did not start"
            time.sleep(0.02)
        archive = tmp_path / "live.tgz"
        proc = run_cli("--collect", str(archive))
        assert proc.returncode == 0, proc.stderr
    finally:
        daemon.kill()
        daemon.wait()
    with tarfile.open(archive) as tar:
        blob = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())
        record = json.loads(tar.extractfile("nvreload-snapshot/consumers.json").read())
    assert secret.encode() not in blob
    with open("/proc/1/comm") as comm:
        systemd = comm.read().strip() == "systemd"
    if not systemd:  # without systemd the services are the GPU daemons found by name in /proc
        assert {"name": "nv-hostengine", "active": "active", "enabled": None} in record["services"]
        assert {"name": "nv-hostengine", "active": "active", "enabled": None} in status_of(archive)["consumers"][
            "services"
        ]
    assert status_of(archive)["consumers"]["scanned"] is True
