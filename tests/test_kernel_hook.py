"""Before the reboot, not after: an installed kernel newer than the running one without a matching
nvidia module is a finding of --status, the answer of --check-kernel, and what the kernel hook
(packaging/kernel/zz-nvreload, for /etc/kernel/postinst.d) says at install time, on snapshot trees
with a second kernel."""

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from helpers import codes, run_cli, status_of
from snapshot_builder import healthy_node

HOOK = Path(__file__).resolve().parents[1] / "packaging" / "kernel" / "zz-nvreload"
NVRELOAD = Path(sys.executable).parent / "nvreload"
NEXT = "6.1.0-28-amd64"  # the node runs 6.1.0-26-amd64


def node_with_next_kernel(root: Path, module: str | None, subdir: str = "updates/dkms", name: str = "nvidia"):
    snap = healthy_node(root)  # 550.127.08 loaded, on disk and in userspace
    snap.modules_tree(NEXT)
    snap.write(f"boot/vmlinuz-{NEXT}", b"kernel image")
    if module:
        snap.on_disk_module(module, release=NEXT, subdir=subdir, name=name)
    return snap


def finding(document: dict, code: str) -> dict:
    return next(f for f in document["findings"] if f["code"] == code)


def test_a_next_kernel_dkms_built_the_module_for_is_fine(tmp_path):
    doc = status_of(node_with_next_kernel(tmp_path / "n", "550.127.08").root)
    assert not {"no_module_for_next_kernel", "next_kernel_module_version_differs"} & set(codes(doc))
    assert doc["recommended_action"] == "none"


def test_a_next_kernel_without_a_module_is_a_warning_that_keeps_the_recommendation(tmp_path):
    snap = node_with_next_kernel(tmp_path / "n", None)
    snap.userspace("550.144.03")  # the running driver needs a reload too: that stays the recommendation
    snap.on_disk_module("550.144.03")
    doc = status_of(snap.root)
    missing = finding(doc, "no_module_for_next_kernel")
    assert missing["severity"] == "warning" and missing["evidence"]["kernels"] == [NEXT]
    assert f"dkms autoinstall -k {NEXT}" in missing["message"]
    assert doc["recommended_action"] == "reload"


def test_a_next_kernel_with_a_module_of_another_version_is_a_warning(tmp_path):
    doc = status_of(node_with_next_kernel(tmp_path / "n", "550.90.07").root)
    differs = finding(doc, "next_kernel_module_version_differs")
    assert differs["evidence"]["kernels"] == [
        {"release": NEXT, "module": f"/lib/modules/{NEXT}/updates/dkms/nvidia.ko", "version": "550.90.07"}
    ]


def test_a_module_under_another_file_name_counts_as_modprobe_finds_it(tmp_path):
    snap = node_with_next_kernel(tmp_path / "n", "550.127.08", subdir="updates/dkms", name="nvidia-current")
    snap.write(f"lib/modules/{NEXT}/modules.dep", "updates/dkms/nvidia-current.ko:\n")
    snap.write("etc/modprobe.d/nvidia.conf", "alias nvidia nvidia-current\n")
    assert "no_module_for_next_kernel" not in codes(status_of(snap.root))


def test_an_older_kernel_or_a_tree_without_a_boot_image_is_not_what_boots_next(tmp_path):
    snap = healthy_node(tmp_path / "n")
    snap.modules_tree("6.1.0-9-amd64")  # older: still installed, no module, not booted by default
    snap.write("boot/vmlinuz-6.1.0-9-amd64", b"old kernel")
    snap.modules_tree(NEXT)  # a tree a removed kernel left behind: no boot image
    assert "no_module_for_next_kernel" not in codes(status_of(snap.root))


def test_check_kernel_answers_for_one_release_with_its_exit_code(tmp_path):
    root = node_with_next_kernel(tmp_path / "n", None).root
    proc = run_cli("--check-kernel", NEXT, "--root", str(root), "--json")
    assert proc.returncode == 1
    schema = json.loads(resources.files("nvreload").joinpath("schema/kernel-check.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(json.loads(proc.stdout))
    assert json.loads(proc.stdout) == {
        "schema_version": 1,
        "kernel_release": NEXT,
        "module": None,
        "userspace_version": "550.127.08",
        "findings": [json.loads(proc.stdout)["findings"][0]],
    }
    assert json.loads(proc.stdout)["findings"][0]["code"] == "no_module_for_next_kernel"
    fine = run_cli("--check-kernel", "6.1.0-26-amd64", "--root", str(root))
    assert fine.returncode == 0 and "OK" in fine.stdout


@pytest.mark.parametrize(
    "release, code, says",
    [
        ("6.9.9-nope", 66, "no /lib/modules/6.9.9-nope: kernel 6.9.9-nope is not installed"),
        ("../../etc", 64, "--check-kernel takes a kernel release"),
        ("6.1.0-26-amd64 --simulate", 64, "--check-kernel reads a real node's module tree"),
    ],
)
def test_check_kernel_of_a_kernel_that_is_not_there_is_one_line(tmp_path, release, code, says):
    release, *more = release.split()
    root = ["--root", str(healthy_node(tmp_path / "n").root)] if not more else []
    proc = run_cli("--check-kernel", release, *root, *more)
    assert proc.returncode == code and says in proc.stderr and len(proc.stderr.splitlines()) == 1


def run_hook(tmp_path: Path, root: Path, *args: str) -> subprocess.CompletedProcess:
    if not NVRELOAD.exists():
        pytest.skip(f"no nvreload console script beside {sys.executable}")
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    (bindir / "nvreload").write_text(f'#!/bin/sh\nexec {NVRELOAD} "$@" --root {root}\n')
    (bindir / "nvreload").chmod(0o755)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(["sh", str(HOOK), *args], capture_output=True, text=True, env=env, timeout=60)


def test_the_kernel_hook_warns_at_install_time_and_never_fails_the_install(tmp_path):
    root = node_with_next_kernel(tmp_path / "n", None).root
    proc = run_hook(tmp_path, root, NEXT, f"/boot/vmlinuz-{NEXT}")
    assert proc.returncode == 0
    assert f"nvreload: WARNING no_module_for_next_kernel: kernel {NEXT} is installed but has no nvidia module" in (
        " ".join(proc.stderr.split())
    )


def test_the_kernel_hook_is_quiet_when_the_kernel_has_its_module(tmp_path):
    root = node_with_next_kernel(tmp_path / "n", "550.127.08").root
    proc = run_hook(tmp_path, root, NEXT, f"/boot/vmlinuz-{NEXT}")
    assert proc.returncode == 0 and proc.stderr == ""


def test_the_kernel_hook_without_a_release_checks_nothing_and_says_so(tmp_path):
    proc = run_hook(tmp_path, healthy_node(tmp_path / "n").root)
    assert proc.returncode == 0 and "called without a kernel release" in proc.stderr
