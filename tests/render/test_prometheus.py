"""`--status --format prometheus`: every status the tests can build, checked by the real `promtool check
metrics` and read back value by value; `--output`'s atomic write; the systemd units that run it."""

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from helpers import run_cli, status_of
from snapshot_builder import healthy_node

from nvreload.render.prometheus import JournalView, LastRun, render_prometheus

LOAD = "[ 5.100000] NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  550.127.08  Release Build"
XID79 = "[ 9001.000000] NVRM: Xid (PCI:0000:3b:00): 79, pid=2311, name=python3, GPU has fallen off the bus."
UNITS = Path(__file__).resolve().parents[2] / "packaging" / "systemd"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
# every node snapshot the tests hold: the real capture and each incident rebuilt from a public report
SNAPSHOTS = sorted(
    [FIXTURES / "h100-580-no-unload"]
    + [p / "snapshot.tar.gz" for p in (FIXTURES / "incidents").iterdir() if p.is_dir()]
)


def promtool_check(text: str) -> None:
    """The text passes `promtool check metrics` (parse and lint), or the test is skipped saying why."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; .ci/run installs it)")
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip() and not proc.stderr.strip(), (
        proc.stdout + proc.stderr + text
    )


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(name, labels): value}, label values unescaped the way Prometheus reads them."""
    found = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name, labels, value = _SAMPLE.match(line).groups()
        pairs = {}
        for key, raw in _LABEL.findall(labels or ""):
            pairs[key] = re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), raw)
        key = (name, frozenset(pairs.items()))
        assert key not in found, f"duplicate series {line}"
        found[key] = float(value)
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, frozenset(labels.items()))]


def of_name(found: dict, name: str) -> dict[frozenset, float]:
    return {labels: v for (n, labels), v in found.items() if n == name}


def mismatched(root: Path):
    snap = healthy_node(root)
    snap.userspace("550.144.03")
    snap.on_disk_module("550.144.03")
    return snap


def metrics_of(root) -> str:
    proc = run_cli("--status", "--format", "prometheus", "--root", str(root))
    assert proc.stdout, proc.stderr
    found = samples(proc.stdout)
    assert value(found, "nvreload_status") == proc.returncode  # the gauge is the exit code
    return proc.stdout


def test_every_metric_has_help_and_type_lines_and_promtool_accepts_the_h100_capture(h100_root):
    text = metrics_of(h100_root)
    promtool_check(text)
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP")}
    assert names == {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert {n for (n, _) in samples(text)} <= names
    found = samples(text)
    assert (
        value(
            found,
            "nvreload_driver_info",
            kernel_module="580.159.04",
            on_disk="",
            userspace="580.159.04",
            flavor="open",
            nvml="ok",
        )
        == 1
    )
    assert value(found, "nvreload_reload_feasible") == 0  # this kernel cannot unload modules
    assert of_name(found, "nvreload_reload_blocker") == {
        frozenset({("code", "module_loading_disabled")}): 1,
        frozenset({("code", "module_unload_unsupported")}): 1,
    }
    assert value(found, "nvreload_gpus", seen_by="pci") == value(found, "nvreload_gpus", seen_by="nvml") == 1
    # a snapshot's journal is not on this machine: its families are documented but empty
    assert not of_name(found, "nvreload_journal_readable") and not of_name(found, "nvreload_last_run_info")


@pytest.mark.parametrize("snapshot", SNAPSHOTS, ids=[p.parent.name if p.suffix == ".gz" else p.name for p in SNAPSHOTS])
def test_promtool_accepts_the_metrics_of_every_test_snapshot_and_each_finding_is_a_series(snapshot):
    text = metrics_of(snapshot)
    promtool_check(text)
    document = json.loads(run_cli("--status", "--json", "--root", str(snapshot)).stdout)
    codes = {dict(labels)["code"] for labels in of_name(samples(text), "nvreload_finding")}
    assert codes == {f["code"] for f in document["findings"]}


def test_a_healthy_node_is_ok_with_no_finding_and_every_severity_at_zero(tmp_path):
    text = metrics_of(healthy_node(tmp_path / "node").root)
    promtool_check(text)
    found = samples(text)
    assert value(found, "nvreload_status") == 0
    assert not of_name(found, "nvreload_finding")
    assert {dict(k)["severity"]: v for k, v in of_name(found, "nvreload_findings").items()} == {
        "info": 0,
        "warning": 0,
        "critical": 0,
        "unknown": 0,
    }
    assert value(found, "nvreload_recommended_action_info", action="none") == 1
    assert value(found, "nvreload_reload_feasible") == 1


def test_a_version_mismatch_is_critical_with_its_finding_gauge_and_the_reload_action(tmp_path):
    text = metrics_of(mismatched(tmp_path / "node").root)
    promtool_check(text)
    found = samples(text)
    assert value(found, "nvreload_status") == 2
    assert value(found, "nvreload_finding", code="version_mismatch", severity="critical") == 1
    assert value(found, "nvreload_findings", severity="critical") == 1
    assert value(found, "nvreload_recommended_action_info", action="reload") == 1
    assert (
        value(
            found,
            "nvreload_driver_info",
            kernel_module="550.127.08",
            on_disk="550.144.03",
            userspace="550.144.03",
            flavor="open",
            nvml="unavailable",
        )
        == 1
    )


def test_a_gpu_fallen_off_the_bus_counts_its_xid_and_blocks_the_reload(tmp_path):
    snap = healthy_node(tmp_path / "node")
    snap.dmesg([LOAD, XID79, XID79.replace("9001", "9002")])
    text = metrics_of(snap.root)
    promtool_check(text)
    found = samples(text)
    assert value(found, "nvreload_status") == 2
    assert of_name(found, "nvreload_xid_events_since_driver_load") == {frozenset({("xid", "79")}): 2}
    assert value(found, "nvreload_finding", code="gpu_fallen_off_bus", severity="critical") == 1
    assert value(found, "nvreload_reload_feasible") == 0
    assert value(found, "nvreload_recommended_action_info", action="reboot") == 1


def test_xids_from_before_the_driver_loaded_are_not_counted(tmp_path):
    snap = healthy_node(tmp_path / "node")
    snap.dmesg([LOAD, XID79, LOAD.replace("5.100000", "9100.000000")])
    assert not of_name(samples(metrics_of(snap.root)), "nvreload_xid_events_since_driver_load")


def test_an_unreadable_node_is_unknown(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "sys").mkdir()
    text = metrics_of(tmp_path)
    promtool_check(text)
    found = samples(text)
    assert value(found, "nvreload_status") == 3
    assert value(found, "nvreload_finding", code="node_unreadable", severity="unknown") == 1
    assert (
        value(found, "nvreload_driver_info", kernel_module="", on_disk="", userspace="", flavor="", nvml="unavailable")
        == 1
    )


def test_a_hostname_with_a_quote_a_backslash_and_a_newline_is_escaped_and_reads_back_whole(tmp_path):
    document = status_of(mismatched(tmp_path / "node").root)
    document["node"]["hostname"] = 'gpu"07\nrack\\3'
    text = render_prometheus(document, None)
    assert 'hostname="gpu\\"07\\nrack\\\\3"' in text
    promtool_check(text)
    found = samples(text)
    assert value(found, "nvreload_node_info", hostname='gpu"07\nrack\\3', kernel_release="6.1.0-26-amd64") == 1
    assert value(found, "nvreload_status") == 2


def test_one_code_found_twice_is_one_series_with_its_count_and_worst_severity(tmp_path):
    document = status_of(healthy_node(tmp_path / "node").root)
    document["findings"] = [
        {"code": "gpu_driver_unbound", "severity": "warning", "message": "a", "action": "none", "evidence": {}},
        {"code": "gpu_driver_unbound", "severity": "critical", "message": "b", "action": "none", "evidence": {}},
    ]
    text = render_prometheus(document, JournalView())
    promtool_check(text)
    assert of_name(samples(text), "nvreload_finding") == {
        frozenset({("code", "gpu_driver_unbound"), ("severity", "critical")}): 2
    }


def test_the_last_run_comes_from_the_journal_with_its_times(tmp_path):
    document = status_of(healthy_node(tmp_path / "node").root)
    run = LastRun(
        action="reload", state="failed", unfinished=True, started=1700000000.5, updated=1700000060.25, finished=None
    )
    found = samples(render_prometheus(document, JournalView(last_run=run)))
    assert value(found, "nvreload_last_run_info", action="reload", state="failed") == 1
    assert value(found, "nvreload_last_run_unfinished") == 1
    assert value(found, "nvreload_last_run_started_timestamp_seconds") == 1700000000.5
    assert value(found, "nvreload_last_run_updated_timestamp_seconds") == 1700000060.25
    assert not of_name(found, "nvreload_last_run_finished_timestamp_seconds")  # not finished: no time to give


def sim(state_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, env={"NVRELOAD_STATE_DIR": str(state_dir)}, timeout=120)


def test_the_simulated_node_before_and_after_a_reload(tmp_path):
    before = sim(tmp_path, "--status", "--simulate", "--format", "prometheus")
    assert before.returncode == 2, before.stderr
    promtool_check(before.stdout)
    found = samples(before.stdout)
    assert value(found, "nvreload_finding", code="version_mismatch", severity="critical") == 1
    assert value(found, "nvreload_gpus", seen_by="pci") == 8 and value(found, "nvreload_gpus", seen_by="nvml") == 0
    assert value(found, "nvreload_journal_readable") == 1 and not of_name(found, "nvreload_last_run_info")

    assert sim(tmp_path, "--reload", "--simulate", "--yes", "--json").returncode == 0
    after = sim(tmp_path, "--status", "--simulate", "--format", "prometheus")
    assert after.returncode == 0, after.stderr
    promtool_check(after.stdout)
    found = samples(after.stdout)
    journal = json.loads((tmp_path / "journal.json").read_text())
    assert value(found, "nvreload_last_run_info", action="reload", state="reloaded") == 1
    assert value(found, "nvreload_last_run_unfinished") == 0
    assert value(found, "nvreload_last_run_finished_timestamp_seconds") == journal["finished"]
    assert value(found, "nvreload_last_run_updated_timestamp_seconds") == journal["updated"]
    assert value(found, "nvreload_gpus", seen_by="nvml") == 8


def test_an_unreadable_journal_is_a_metric_and_a_line_never_a_crash(tmp_path):
    (tmp_path / "journal.json").write_text("{not json")
    proc = sim(tmp_path, "--status", "--simulate", "--format", "prometheus")
    assert proc.returncode == 2  # still the node's status
    promtool_check(proc.stdout)
    found = samples(proc.stdout)
    assert value(found, "nvreload_journal_readable") == 0
    assert not of_name(found, "nvreload_last_run_info")
    assert proc.stderr.startswith("nvreload: journal unreadable: ") and "journal.json" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1


# --output: what the timer unit runs -----------------------------------------------------------------------------


def test_output_writes_the_metrics_readable_by_node_exporter_and_leaves_no_temp_file(tmp_path, h100_root):
    textfiles = tmp_path / "node-exporter"
    textfiles.mkdir()
    (textfiles / "nvreload.prom").write_text("old\n")
    proc = run_cli(
        "--status", "--format", "prometheus", "--output", str(textfiles / "nvreload.prom"), "--root", str(h100_root)
    )
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == "", proc.stderr
    written = (textfiles / "nvreload.prom").read_text()
    assert written == metrics_of(h100_root)
    assert stat.S_IMODE(os.stat(textfiles / "nvreload.prom").st_mode) == 0o644
    assert os.listdir(textfiles) == ["nvreload.prom"]


def test_output_keeps_the_status_exit_code(tmp_path):
    snap = mismatched(tmp_path / "node")
    proc = run_cli("--status", "--format=prometheus", f"--output={tmp_path / 'm.prom'}", "--root", str(snap.root))
    assert proc.returncode == 2
    assert value(samples((tmp_path / "m.prom").read_text()), "nvreload_status") == 2


def test_output_refuses_a_planted_symlink_and_leaves_its_target_alone(tmp_path, h100_root):
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    (tmp_path / "nvreload.prom").symlink_to(victim)
    proc = run_cli(
        "--status", "--format", "prometheus", "--output", str(tmp_path / "nvreload.prom"), "--root", str(h100_root)
    )
    assert proc.returncode == 66 and "is a symlink: --output writes a regular file" in proc.stderr, proc.stderr
    assert victim.read_text() == "root's file\n" and (tmp_path / "nvreload.prom").is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["nvreload.prom", "victim"]


def test_output_into_a_missing_directory_is_one_line_and_bad_input(tmp_path, h100_root):
    proc = run_cli(
        "--status", "--format", "prometheus", "--output", str(tmp_path / "none" / "m.prom"), "--root", str(h100_root)
    )
    assert proc.returncode == 66 and proc.stderr.startswith(f"nvreload: cannot write {tmp_path / 'none' / 'm.prom'}")
    assert len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "args, says",
    [
        (["--status", "--json", "--format", "prometheus"], "--json and --format prometheus conflict"),
        (["--status", "--output", "x.prom"], "--output writes the metrics of --status --format prometheus"),
        (["--status", "--json", "--output", "x.prom"], "--output writes the metrics of --status --format prometheus"),
        (["--verify", "--format", "prometheus"], "--format prometheus goes with --status, not --verify"),
        (["--reload", "--format", "prometheus"], "--format prometheus and --output go with --status, not --reload"),
        (["--status", "--format", "xml"], "'xml' is not one of 'human', 'json', 'prometheus'"),
    ],
)
def test_format_and_output_outside_status_metrics_are_usage_errors(tmp_path, args, says):
    proc = run_cli(*args, "--simulate")
    assert proc.returncode == 64 and says in proc.stderr, proc.stderr
    assert not (tmp_path / "x.prom").exists()


# the systemd units ---------------------------------------------------------------------------------------------


def test_the_metrics_service_runs_the_packaged_binary_without_a_shell_and_tolerates_status_codes():
    service = (UNITS / "nvreload-metrics.service").read_text()
    exec_start = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    assert exec_start == (
        "ExecStart=/usr/bin/nvreload --status --format prometheus "
        "--output /var/lib/prometheus/node-exporter/nvreload.prom"
    )
    assert (
        "SuccessExitStatus=1 2 3" in service.splitlines()
    )  # WARNING/CRITICAL/UNKNOWN are the node's, not a failed unit
    timer = (UNITS / "nvreload-metrics.timer").read_text()
    assert "OnUnitActiveSec=60s" in timer.splitlines() and "WantedBy=timers.target" in timer.splitlines()
