"""The status document on the real H100 capture and on built snapshots, checked against its schema."""

import json
import os
from importlib import resources

import jsonschema
import pytest
from helpers import codes, run_cli, status_of
from snapshot_builder import healthy_node

SCHEMA = json.loads(resources.files("nvreload").joinpath("schema/status.schema.json").read_text())


def assert_valid(document):
    jsonschema.validate(document, SCHEMA)


def test_h100_capture_reports_open_580_everywhere_and_an_impossible_reload(h100_root):
    doc = status_of(h100_root)
    assert_valid(doc)
    assert doc["driver"]["kernel_module_version"] == "580.159.04"
    assert doc["driver"]["userspace_version"] == "580.159.04"
    assert doc["driver"]["kernel_module_flavor"] == "open"
    assert [g["pci_bus_id"] for g in doc["gpus"]] == ["0000:00:06.0"]
    assert doc["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert sorted(codes(doc)) == ["module_loading_disabled", "module_unload_unsupported"]
    assert doc["reload"] == {"feasible": False, "blockers": ["module_unload_unsupported", "module_loading_disabled"]}
    assert doc["kernel"] == {
        "module_unload_supported": False,
        "module_loading_disabled": True,
        "modules_supported": True,
    }
    assert doc["recommended_action"] == "none"
    assert {i["state"] for i in doc["inputs"].values()} == {"read"}


def test_h100_capture_through_the_cli_prints_one_json_document_and_exits_ok(h100_root):
    proc = run_cli("--status", "--json", "--root", str(h100_root))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert_valid(doc)
    assert doc["schema_version"] == 1


def test_builtin_mofed_modules_show_as_builtin_not_loaded(h100_root):
    doc = status_of(h100_root)
    # ib_core/mlx5_core appear in /sys/module of that node only if captured; nvidia is live there
    states = {m["name"]: m["state"] for m in doc["modules"]}
    assert states["nvidia"] == "live" and states["nvidia_uvm"] == "live"


def test_a_consistent_node_has_no_findings_and_exits_zero(snapshot):
    doc = status_of(snapshot.root)
    assert_valid(doc)
    assert codes(doc) == []
    assert doc["recommended_action"] == "none"
    assert doc["reload"]["feasible"] is True
    assert run_cli("--status", "--root", str(snapshot.root)).returncode == 0


def test_classic_version_mismatch_recommends_a_reload_with_both_versions_as_evidence(snapshot):
    snapshot.resident_driver("550.90.07")
    for name in ("nvidia", "nvidia_uvm", "nvidia_modeset", "nvidia_drm"):
        snapshot.write(f"sys/module/{name}/version", "550.90.07\n")
    doc = status_of(snapshot.root)
    assert_valid(doc)
    assert codes(doc) == ["version_mismatch"]
    finding = doc["findings"][0]
    assert finding["severity"] == "critical"
    assert finding["evidence"]["kernel_module_version"] == "550.90.07"
    assert finding["evidence"]["userspace_version"] == "550.127.08"
    assert finding["evidence"]["on_disk_module_version"] == "550.127.08"
    assert doc["recommended_action"] == "reload"
    assert doc["driver"]["kernel_module_version"] == "550.90.07"
    drm = next(m for m in doc["modules"] if m["name"] == "nvidia_drm")
    assert drm["parameters"] == {"modeset": "Y"}
    assert run_cli("--status", "--root", str(snapshot.root)).returncode == 2


def test_kernel_upgrade_without_a_dkms_build_for_the_new_kernel_recommends_rebuild(tmp_path):
    old = healthy_node(tmp_path / "node")
    new_release = "6.1.0-27-amd64"
    old.write("proc/sys/kernel/osrelease", new_release + "\n")
    old.write("proc/modules", "ext4 1003520 1 - Live 0xffffffffc0a00000\n")  # booted: its other modules are there
    for name in ("nvidia", "nvidia_uvm", "nvidia_modeset", "nvidia_drm"):
        import shutil

        shutil.rmtree(old.root / f"sys/module/{name}")
    (old.root / "proc/driver/nvidia/version").unlink()
    old.modules_tree(new_release)
    doc = status_of(old.root)
    assert_valid(doc)
    assert "no_module_for_running_kernel" in codes(doc)
    assert "driver_not_loaded" in codes(doc)
    finding = next(f for f in doc["findings"] if f["code"] == "no_module_for_running_kernel")
    assert "6.1.0-26-amd64" in finding["message"]  # DKMS built it for the previous kernel only
    assert doc["recommended_action"] == "rebuild_module"
    assert doc["driver"]["loaded"] is False


def test_module_built_for_another_kernel_is_caught_by_vermagic(snapshot):
    snapshot.on_disk_module("550.127.08", vermagic_release="6.1.0-25-amd64")
    doc = status_of(snapshot.root)
    assert "module_built_for_other_kernel" in codes(doc)
    finding = next(f for f in doc["findings"] if f["code"] == "module_built_for_other_kernel")
    assert finding["evidence"]["vermagic"].startswith("6.1.0-25-amd64 ")
    assert doc["recommended_action"] == "rebuild_module"


XID79 = "[ 9001.000000] NVRM: Xid (PCI:0000:3b:00): 79, pid=2311, name=python3, GPU has fallen off the bus."
LOAD = "[ 5.100000] NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  550.127.08  Release Build"


def test_xid_79_after_the_driver_loaded_means_reboot_and_blocks_reload(snapshot):
    snapshot.dmesg([LOAD, XID79])
    doc = status_of(snapshot.root)
    assert_valid(doc)
    assert "gpu_fallen_off_bus" in codes(doc)
    assert doc["recommended_action"] == "reboot"
    assert doc["reload"]["feasible"] is False
    assert doc["xid_events"] == [
        {
            "xid": 79,
            "pci_bus_id": "0000:3b:00.0",
            "message": "pid=2311, name=python3, GPU has fallen off the bus.",
            "since_driver_load": True,
        }
    ]


def test_xid_79_before_a_later_driver_load_belongs_to_the_old_instance(snapshot):
    snapshot.dmesg([LOAD, XID79, LOAD.replace("5.100000", "9100.000000")])
    doc = status_of(snapshot.root)
    assert "gpu_fallen_off_bus" not in codes(doc)
    assert doc["xid_events"][0]["since_driver_load"] is False
    assert doc["recommended_action"] == "none"


def test_reset_bucket_xids_recommend_a_gpu_reset(snapshot):
    snapshot.dmesg(
        [
            LOAD,
            "[ 700.1] NVRM: Xid (PCI:0000:3b:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error",
        ]
    )
    doc = status_of(snapshot.root)
    assert "xid_reset_required" in codes(doc)
    assert doc["recommended_action"] == "reset_gpu"


def test_a_gpu_with_no_driver_bound_is_reported_with_its_bus_id(snapshot):
    snapshot.gpu("0000:86:00.0", driver=None, minor=1)
    doc = status_of(snapshot.root)
    assert_valid(doc)
    unbound = next(g for g in doc["gpus"] if g["pci_bus_id"] == "0000:86:00.0")
    assert unbound["driver_bound"] is False
    assert "gpu_driver_unbound" in codes(doc)
    finding = next(f for f in doc["findings"] if f["code"] == "gpu_driver_unbound")
    assert finding["evidence"]["pci_bus_ids"] == ["0000:86:00.0"]


def test_a_gpu_that_vanished_from_the_bus_is_fallen_off(snapshot):
    snapshot.gpu("0000:86:00.0", on_bus=False, minor=1)
    doc = status_of(snapshot.root)
    assert "gpu_fallen_off_bus" in codes(doc)
    assert next(f for f in doc["findings"] if f["code"] == "gpu_fallen_off_bus")["evidence"]["vanished"] == [
        "0000:86:00.0"
    ]


def test_peermem_wanted_without_mofed_ready_warns(snapshot):
    snapshot.module("nvidia_peermem", "550.127.08")
    assert "peermem_without_mofed" in codes(status_of(snapshot.root))
    snapshot.write("run/mellanox/drivers/.driver-ready", "")
    assert "peermem_without_mofed" not in codes(status_of(snapshot.root))


def test_peermem_counts_mofed_ready_when_ib_core_and_mlx5_core_are_builtin(snapshot):
    snapshot.module("nvidia_peermem", "550.127.08")
    snapshot.builtin_module("ib_core")
    snapshot.builtin_module("mlx5_core")
    doc = status_of(snapshot.root)
    assert "peermem_without_mofed" not in codes(doc)
    assert {m["name"]: m["state"] for m in doc["modules"]}["ib_core"] == "builtin"


def test_fabric_manager_of_another_version_is_critical(snapshot):
    snapshot.write("nvreload-snapshot/nv-fabricmanager-version.txt", "Fabric Manager version is : 550.90.07\n")
    doc = status_of(snapshot.root)
    assert "fabric_manager_version_mismatch" in codes(doc)


def test_userspace_and_on_disk_module_of_different_versions_need_a_driver_install(snapshot):
    snapshot.userspace("550.144.03")
    doc = status_of(snapshot.root)
    assert {"version_mismatch", "on_disk_module_differs_from_userspace"} <= set(codes(doc))
    assert doc["recommended_action"] == "install_driver"


def test_unknown_versions_are_null_never_empty_strings(tmp_path):
    from snapshot_builder import Snapshot

    snap = Snapshot(tmp_path / "bare")
    doc = status_of(snap.root)
    assert_valid(doc)
    for key in ("kernel_module_version", "on_disk_module_version", "userspace_version", "kernel_module_flavor"):
        assert doc["driver"][key] is None
    assert doc["driver"]["nvml"] == "unavailable"


def test_status_json_on_a_node_without_a_container_engine_does_not_import_the_docker_sdk(tmp_path):
    import os
    import subprocess
    import sys

    if any(os.path.exists(p) for p in ("/var/run/docker.sock", "/run/docker.sock", "/run/podman/podman.sock")):
        pytest.skip("a container engine socket exists on this machine")
    code = (
        "import sys, io, contextlib\nfrom nvreload.entry import main\n"
        "out = io.StringIO()\n"
        "try:\n    with contextlib.redirect_stdout(out):\n        main(['--status', '--json'])\nexcept SystemExit:\n    pass\n"
        "print('docker' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    env["XDG_RUNTIME_DIR"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.split()[0] == "False", proc.stdout + proc.stderr


def test_nvml_that_hung_or_crashed_on_a_live_node_is_unknown_not_ok(snapshot):
    from dataclasses import replace

    from helpers import node_of

    from nvreload.model import NvmlReport
    from nvreload.status import status_document, status_exit_code

    node = node_of(snapshot)
    assert status_exit_code(status_document(node)) == 0
    hung = NvmlReport(status="error", source="nvml", error="NVML did not answer within 30 s: a GPU may be wedged")
    document = status_document(replace(node, nvml=hung))
    assert_valid(document)
    assert document["driver"]["nvml_error"].startswith("NVML did not answer")
    assert status_exit_code(document) == 3


def test_a_warning_only_node_exits_1_and_the_worst_finding_decides(snapshot):
    snapshot.module("nvidia_peermem", "550.127.08")  # wanted, MOFED not ready: a warning, nothing worse
    doc = status_of(snapshot.root)
    assert {f["severity"] for f in doc["findings"]} == {"warning"}
    proc = run_cli("--status", "--json", "--root", str(snapshot.root))
    assert proc.returncode == 1 and json.loads(proc.stdout)["findings"][0]["code"] == "peermem_without_mofed"
    snapshot.dmesg([LOAD, XID79])  # a critical finding beside the warning: CRITICAL wins
    assert run_cli("--status", "--json", "--root", str(snapshot.root)).returncode == 2


def unknown_status(root, *named):
    """--status --json on `root` through the CLI: exit 3, a valid document, and one node_unreadable
    finding that names each of `named` ("/proc/modules: empty"), recommending no reload, no reboot."""
    proc = run_cli("--status", "--json", "--root", str(root))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert_valid(doc)
    finding = next(f for f in doc["findings"] if f["code"] == "node_unreadable")
    assert finding["severity"] == "unknown"
    for what in named:
        assert what in finding["message"], finding["message"]
    assert doc["recommended_action"] == "check_access"
    assert "node_unreadable" in doc["reload"]["blockers"]
    return doc


def test_an_empty_proc_and_sys_are_unknown_not_ok_and_conclude_nothing_from_missing_files(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "sys").mkdir()
    doc = unknown_status(tmp_path, "/proc/modules: absent", "/proc/sys/kernel/osrelease or /proc/version: absent")
    # absent files are no evidence of a kernel that cannot unload or load modules
    assert codes(doc) == ["node_unreadable"]
    assert doc["kernel"] == {
        "module_unload_supported": None,
        "module_loading_disabled": None,
        "modules_supported": None,
    }
    assert doc["inputs"]["proc_modules"] == {"paths": ["/proc/modules"], "state": "absent"}


def test_an_empty_proc_modules_is_unknown(snapshot):
    snapshot.write("proc/modules", "")  # what `cp /proc/modules` or tar of /proc gives: procfs says size 0
    unknown_status(snapshot.root, "/proc/modules: empty")


def test_an_empty_proc_version_without_osrelease_is_unknown(snapshot):
    (snapshot.root / "proc/sys/kernel/osrelease").unlink()
    snapshot.write("proc/version", "")
    unknown_status(snapshot.root, "/proc/sys/kernel/osrelease or /proc/version: empty")


def test_a_snapshot_missing_only_proc_modules_is_unknown_even_on_a_mismatched_node(snapshot):
    snapshot.userspace("550.144.03")
    snapshot.on_disk_module("550.144.03")  # a real mismatch: with /proc/modules it is CRITICAL, reload
    assert run_cli("--status", "--root", str(snapshot.root)).returncode == 2
    (snapshot.root / "proc/modules").unlink()
    doc = unknown_status(snapshot.root, "/proc/modules: absent")
    assert not {"module_unload_unsupported", "module_loading_disabled"} & set(codes(doc))


def test_the_human_status_names_what_it_could_not_read(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "sys").mkdir()
    proc = run_cli("--status", "--root", str(tmp_path))
    assert proc.returncode == 3
    assert "UNKNOWN" in proc.stdout and "node_unreadable" in proc.stdout
    assert "recommended action: check_access" in proc.stdout
    assert "nothing concluded from" in proc.stdout and "/sys/module: absent" in proc.stdout


def test_proc_and_sys_unreadable_to_the_reading_user_are_unknown(snapshot):
    import shutil
    import subprocess
    import sys

    command = [sys.executable, "-m", "nvreload", "--status", "--json", "--root", str(snapshot.root)]
    if os.geteuid() == 0:
        # root reads through any mode: read as nobody, the way an unprivileged monitoring agent does
        # (with setpriv, as tests/test_cli.py does: a preexec setuid cannot even exec a venv whose
        # interpreter sits under root's 0700 home, where setpriv here can)
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("needs setpriv to read as user nobody")
        nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
        probe = subprocess.run(
            nobody + [sys.executable, "-c", "import nvreload"], capture_output=True, text=True, timeout=60
        )
        if probe.returncode != 0:
            pytest.skip(
                f"user nobody cannot run {sys.executable} with nvreload (a venv under a 0700 home?): "
                + probe.stderr.strip()[-200:]
            )
        for parent in snapshot.root.parents:  # pytest's base temp directory is 0700
            if str(parent) in ("/", "/tmp"):
                break
            os.chmod(parent, os.stat(parent).st_mode | 0o001)
        command = nobody + command
    os.chmod(snapshot.root, 0o755)
    for name in ("proc", "sys"):
        os.chmod(snapshot.root / name, 0o000)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": "/tmp"})
    finally:
        for name in ("proc", "sys"):
            os.chmod(snapshot.root / name, 0o755)  # so that pytest can remove them
    assert proc.returncode == 3, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    assert_valid(doc)
    finding = doc["findings"][0]
    assert finding["code"] == "node_unreadable"
    assert "/proc/modules: unreadable" in finding["message"]
    assert "/proc/sys/kernel/osrelease or /proc/version: unreadable" in finding["message"]
    assert {"/proc", "/sys"} <= set(doc["unreadable"])
    assert doc["recommended_action"] == "check_access"


def _upgraded_userspace_and_module(snapshot, new="550.144.03"):
    """An unattended upgrade replaced userspace and the module on disk; the old module is resident."""
    snapshot.on_disk_module(new)
    snapshot.userspace(new)


def test_a_fabric_manager_upgraded_with_the_driver_is_no_finding_the_reload_fixes_it(snapshot):
    _upgraded_userspace_and_module(snapshot)
    snapshot.write("nvreload-snapshot/nv-fabricmanager-version.txt", "Fabric Manager version is : 550.144.03\n")
    doc = status_of(snapshot.root)
    assert "fabric_manager_version_mismatch" not in codes(doc)
    assert doc["recommended_action"] == "reload" and doc["reload"]["feasible"]


def test_a_fabric_manager_left_at_the_old_version_blocks_the_reload_that_would_strand_the_fabric(snapshot):
    _upgraded_userspace_and_module(snapshot)
    snapshot.write("nvreload-snapshot/nv-fabricmanager-version.txt", "Fabric Manager version is : 550.127.08\n")
    doc = status_of(snapshot.root)
    finding = next(f for f in doc["findings"] if f["code"] == "fabric_manager_version_mismatch")
    assert finding["evidence"] == {"fabric_manager_version": "550.127.08", "driver_version": "550.144.03"}
    assert "fabric_manager_version_mismatch" in doc["reload"]["blockers"]
