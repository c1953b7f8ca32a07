"""The driver message catalogue: every family classifies its own sample line, every family that
means the stack is broken gives its finding and action from that line alone, the rest give none,
and docs/driver-messages.md is the catalogue as generated."""

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import node_of
from snapshot_builder import Snapshot

from nvreload.diagnosis.findings import ACTION_PRIORITY, diagnose
from nvreload.diagnosis.messages import CODES, markdown
from nvreload.read import driver_messages
from nvreload.read.driver_messages import COMPONENTS, FAMILIES, classify, derive_keys, family

ROOT = Path(__file__).resolve().parents[2]
LOAD = "[    5.100000] NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  550.127.08  Release Build"
# a kernel fault's header says nothing of the module: its trace does
TRACE = ["[  900.000002] Call Trace:", "[  900.000003]  os_acquire_spinlock+0x12/0x30 [nvidia]"]
# the kernel's refusals of nvidia itself count only while nvidia is not loaded
REFUSED = {"module_load_failed", "module_signature_rejected"}
BROKEN = [f for f in FAMILIES if f.finding]
QUIET = [f for f in FAMILIES if not f.finding]


def contains(value: object, text: str) -> bool:
    if isinstance(value, str):
        return text in value
    if isinstance(value, dict):
        return any(contains(v, text) for v in value.values())
    if isinstance(value, list | tuple):
        return any(contains(v, text) for v in value)
    return False


def not_loaded_node(root: Path) -> Snapshot:
    """The installed 550 driver, its GPU on the bus with no driver, nvidia not loaded."""
    snap = Snapshot(root)
    snap.module("drm", refcount=0)  # an empty /proc/modules is one that could not be read
    snap.gpu("0000:3b:00.0", driver=None, in_proc=False)
    snap.on_disk_module("550.127.08")
    snap.userspace("550.127.08")
    snap.dkms("550.127.08", snap.release)
    return snap


def log_of(fam) -> list[str]:
    before = [f"[  900.000000] {family(fam.requires).sample}"] if fam.requires else []
    after = TRACE if fam.finding == "kernel_fault_in_nvidia_module" and "[nvidia]" not in fam.sample else []
    return [LOAD, *before, f"[  900.000001] {fam.sample}", *after]


def test_the_catalogue_has_at_least_sixty_families_each_classified_in_full():
    assert len(FAMILIES) >= 60
    assert len({f.name for f in FAMILIES}) == len(FAMILIES)
    for fam in FAMILIES:
        assert fam.component in COMPONENTS, fam.name
        assert fam.action in ACTION_PRIORITY, fam.name
        assert fam.meaning and fam.source and fam.sample, fam.name
        assert "(?P<" not in fam.pattern, fam.name  # the alternation names its own groups
        assert fam.requires is None or family(fam.requires).finding, fam.name


def test_a_family_without_a_finding_asks_for_nothing_and_one_with_a_finding_for_something():
    for fam in FAMILIES:
        assert (fam.finding is None) == (fam.action == "none"), fam.name


def test_every_family_the_catalogue_gives_a_finding_for_has_its_codes_action():
    for fam in BROKEN:
        if not fam.structured:
            assert fam.finding in CODES, fam.name
            assert CODES[fam.finding].action == fam.action, fam.name
    used = {f.finding for f in FAMILIES if not f.structured}
    assert set(CODES) <= used, set(CODES) - used  # no code without a family that gives it


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_each_sample_line_is_classified_as_its_own_family(fam):
    found = classify(f"[  812.420000] {fam.sample}")
    assert found is not None and found.name == fam.name


@pytest.mark.parametrize("fam", BROKEN, ids=lambda f: f.name)
def test_each_family_that_means_the_stack_is_broken_gives_its_finding_from_its_sample_line(fam, tmp_path, snapshot):
    snap = not_loaded_node(tmp_path / "bare") if fam.finding in REFUSED else snapshot
    if fam.finding == "gpu_bound_to_other_driver":
        snap.gpu("0000:5a:00.0", driver="nouveau", in_proc=False)
    snap.dmesg(log_of(fam))
    findings = {f.code: f for f in diagnose(node_of(snap)).findings}
    assert fam.finding in findings, (fam.name, sorted(findings))
    got = findings[fam.finding]
    assert got.action == fam.action
    assert contains(got.evidence, fam.sample.split(" [nvidia]")[0][:60]), got.evidence


@pytest.mark.parametrize("fam", QUIET, ids=lambda f: f.name)
def test_a_family_that_does_not_mean_the_stack_is_broken_gives_no_finding(fam, snapshot):
    snapshot.dmesg([LOAD, f"[  900.000001] {fam.sample}"])
    assert diagnose(node_of(snapshot)).findings == ()


def test_a_line_of_the_previous_driver_instance_gives_no_finding(snapshot):
    snapshot.dmesg([f"[  100.0] {family('gsp_heartbeat_timeout').sample}", LOAD])
    assert diagnose(node_of(snapshot)).findings == ()


def test_one_finding_per_code_with_every_family_and_line_of_it(snapshot):
    irq, msix = family("irq_not_found").sample, family("msix_failed").sample
    snapshot.dmesg([LOAD, f"[ 900.1] {irq}", f"[ 900.2] {msix}", f"[ 900.3] {irq}"])
    (found,) = [f for f in diagnose(node_of(snapshot)).findings if f.code == "gpu_interrupts_unavailable"]
    assert found.evidence["families"] == ["irq_not_found", "msix_failed"]
    assert found.evidence["lines"] == [f"[ 900.1] {irq}", f"[ 900.2] {msix}", f"[ 900.3] {irq}"]
    assert (found.action, found.blocks_reload) == ("fix_platform", False)


def test_the_probes_summary_gives_way_to_the_line_that_says_why(snapshot):
    probe = f"[ 900.2] {family('probe_failed').sample}"
    snapshot.dmesg([LOAD, probe])
    assert "gpu_probe_failed" in [f.code for f in diagnose(node_of(snapshot)).findings]
    snapshot.dmesg([LOAD, f"[ 900.1] {family('power_cables').sample}", probe])
    assert [f.code for f in diagnose(node_of(snapshot)).findings] == ["gpu_power_cables_missing"]


def test_a_catalogue_line_adds_to_the_finding_another_rule_already_gave(snapshot):
    snapshot.write("nvreload-snapshot/nv-fabricmanager-version.txt", "565.57.01\n")
    line = f"[ 900.1] {family('nvswitch_version_mismatch').sample}"
    snapshot.dmesg([LOAD, line])
    (found,) = [f for f in diagnose(node_of(snapshot)).findings if f.code == "fabric_manager_version_mismatch"]
    assert found.evidence["fabric_manager_version"] == "565.57.01"  # the version rule's finding
    assert found.evidence["driver_lines"] == [line]


def test_a_kernel_log_compiles_only_the_patterns_of_families_whose_keys_its_lines_hold():
    code = (
        "from nvreload.read import driver_messages\n"
        "from nvreload.read.kernel_log import parse_kernel_log\n"
        "log = '\\n'.join(f'[ {i}.0] e1000e 0000:00:1f.6 eth0: NIC Link is Up' for i in range(2000))\n"
        "parse_kernel_log(log, 'dmesg')\n"
        "assert not driver_messages._COMPILED, driver_messages._COMPILED\n"
        "parsed = parse_kernel_log(log + '\\n[ 1.0] NVRM: loading NVIDIA x', 'dmesg')\n"
        "assert parsed.last_driver_load and not driver_messages._COMPILED\n"  # a literal pattern: str.find
        "mismatch = 'nvidia-modeset: Version mismatch: nvidia.ko(1) nvidia-modeset.ko(2)'\n"
        "parsed = parse_kernel_log(log + '\\n[ 1.0] NVRM: loading NVIDIA x\\n[ 2.0] ' + mismatch, 'dmesg')\n"
        "assert [m.family for m in parsed.driver_messages] == ['driver_loading', 'modeset_version_mismatch']\n"
        "assert list(driver_messages._COMPILED) == ['modeset_version_mismatch'], driver_messages._COMPILED\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_a_kernel_log_without_nvidia_lines_does_not_even_import_the_catalogue():
    code = (
        "import sys\n"
        "from nvreload.read.kernel_log import parse_kernel_log\n"
        "parse_kernel_log('[ 1.0] e1000e 0000:00:1f.6 eth0: NIC Link is Up', 'dmesg')\n"
        "assert 'nvreload.read.driver_messages' not in sys.modules\n"
        "parse_kernel_log('[ 1.0] NVRM: loading NVIDIA x', 'dmesg')\n"
        "assert 'nvreload.read.driver_messages' in sys.modules\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_the_kernel_logs_prefilter_holds_every_word_the_catalogue_tests_for():
    from nvreload.read import kernel_log

    assert set(kernel_log._DRIVER_WORDS) == set(driver_messages._PREFIXES + driver_messages._FAULT_WORDS)


def test_importing_the_catalogue_compiles_nothing():
    assert driver_messages.might_match("e1000e: NIC Link is Up") is False
    code = "from nvreload.read import driver_messages as m\nassert not m._COMPILED\n"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("fam", FAMILIES, ids=lambda f: f.name)
def test_each_familys_keys_are_the_literal_text_of_its_pattern_and_found_in_its_sample(fam):
    assert fam.keys == derive_keys(fam.pattern)
    assert all(len(key) >= 5 for key in fam.keys), fam.keys  # a key that short would compile it on most lines
    assert any(key in fam.sample for key in fam.keys)


def test_a_key_is_the_longest_literal_run_outside_groups_classes_and_quantified_characters():
    pattern = r"NVRM:? .*(?:abc|defghijklmnop)[^)]*\(long literal\)x+|second"
    assert derive_keys(pattern) == ("(long literal)", "second")


def test_the_docs_table_is_the_catalogue_as_generated():
    assert (ROOT / "docs" / "driver-messages.md").read_text() == markdown(), (
        "regenerate: python -m nvreload.diagnosis.messages --markdown > docs/driver-messages.md"
    )


def test_the_generator_prints_the_table_and_refuses_anything_else():
    run = subprocess.run(
        [sys.executable, "-m", "nvreload.diagnosis.messages", "--markdown"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0 and run.stdout == markdown()
    run = subprocess.run(
        [sys.executable, "-m", "nvreload.diagnosis.messages"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and run.stderr.startswith("usage:") and "Traceback" not in run.stderr


def test_a_clients_api_mismatch_the_version_rule_explains_goes_into_its_finding(snapshot):
    line = f"[ 900.1] {family('api_mismatch').sample}"
    snapshot.dmesg([LOAD, line])
    (found,) = [f for f in diagnose(node_of(snapshot)).findings]
    assert (found.code, found.action) == ("client_version_mismatch", "install_driver")  # the node agrees with itself
    snapshot.userspace("550.144.03")  # the node's own userspace moved on: the version rule says it, a reload fixes it
    codes = {f.code: f for f in diagnose(node_of(snapshot)).findings}
    assert "client_version_mismatch" not in codes
    assert codes["version_mismatch"].evidence["driver_lines"] == [line]


def test_a_frame_with_the_modules_build_id_is_the_modules_frame():
    from nvreload.read.kernel_log import parse_kernel_log

    log = [
        LOAD,
        "[ 9001.0] BUG: kernel NULL pointer dereference, address: 0000000000000030",
        "[ 9001.1] Call Trace:",
        "[ 9001.2]  nvidia_unlocked_ioctl+0x335/0x770 [nvidia a327008b008edacc83cb1b1cb50e0a682b54775d]",
    ]
    (fault,) = parse_kernel_log("\n".join(log), "dmesg").kernel_faults
    assert fault.modules == ("nvidia",)


def test_a_line_longer_than_any_driver_message_is_classified_by_its_start():
    from nvreload.read.kernel_log import parse_kernel_log

    cables = family("power_cables").sample
    assert [m.family for m in parse_kernel_log(f"{LOAD}\n[ 9.0] {cables}", "dmesg").driver_messages] == [
        "driver_loading",
        "power_cables",
    ]
    hostile = "[ 9.0] " + "x" * 3000 + cables  # past the first 2048 characters of its line
    assert [m.family for m in parse_kernel_log(f"{LOAD}\n{hostile}", "dmesg").driver_messages] == ["driver_loading"]
