"""Fleet drift: a node's --status against the fleet's intended state, on the keys the baseline keeps.
The baselines here are written the way an operator writes one: `nvreload --status --json` on a
known-good node (the real H100 capture), or a part of it."""

import copy
import json

import pytest
from helpers import run_cli

from nvreload.diagnosis.drift import drift_findings, load_baseline, with_drift
from nvreload.diagnosis.findings import Diagnosis, Finding
from nvreload.errors import BadInputError, ExitCode


@pytest.fixture
def good(h100_root) -> dict:
    """The known-good node's own document, as `nvreload --status --json > baseline.json` writes it."""
    proc = run_cli("--status", "--json", "--root", str(h100_root))
    return json.loads(proc.stdout)


def codes(found):
    return [f.code for f in found]


def test_a_node_against_its_own_status_document_has_no_drift(good):
    assert drift_findings(good, good) == []


def test_only_the_keys_the_baseline_keeps_are_judged(good):
    node = copy.deepcopy(good)
    node["driver"]["kernel_module_version"] = "550.127.08"
    node["gpus"][0]["persistence_mode"] = False
    assert codes(drift_findings(node, {"gpus": [{"persistence_mode": True}]})) == ["drift_persistence_mode"]
    assert codes(drift_findings(node, {"driver": {"kernel_module_version": "580.159.04"}})) == ["drift_driver_version"]
    assert drift_findings(node, {"driver": {"userspace_version": "580.159.04"}}) == []


def test_a_driver_of_another_version_is_a_reload_when_the_fleets_module_is_on_disk_else_an_install(good):
    node = copy.deepcopy(good)
    node["driver"]["kernel_module_version"] = "580.95.05"
    (finding,) = drift_findings(node, {"driver": {"kernel_module_version": "580.159.04"}})
    assert (finding.action, finding.severity) == ("install_driver", "warning")
    assert finding.evidence == {"key": "driver.kernel_module_version", "node": "580.95.05", "baseline": "580.159.04"}
    node["driver"]["on_disk_module_version"] = "580.159.04"
    (finding,) = drift_findings(node, {"driver": {"kernel_module_version": "580.159.04"}})
    assert finding.action == "reload" and "a reload loads it" in finding.message


def test_the_flavour_and_the_fabric_manager_are_a_driver_install(good):
    node = copy.deepcopy(good)
    node["driver"]["kernel_module_flavor"] = "proprietary"
    node["driver"]["fabric_manager_version"] = "580.95.05"
    wanted = {"driver": {"kernel_module_flavor": "open", "fabric_manager_version": "580.159.04"}}
    assert [(f.code, f.action) for f in drift_findings(node, wanted)] == [
        ("drift_driver_flavor", "install_driver"),
        ("drift_fabric_manager_version", "install_driver"),
    ]


def test_module_parameters_and_a_missing_module_differ_as_the_fleet_states_them(good):
    wanted = {
        "modules": [
            {"name": "nvidia", "parameters": {"NVreg_EnableGpuFirmware": "1"}},
            {"name": "nvidia_peermem", "parameters": {}},
        ]
    }
    (finding,) = drift_findings(good, wanted)
    assert (finding.code, finding.action) == ("drift_module_parameters", "reload")
    assert finding.evidence["differences"] == [
        {"module": "nvidia", "parameter": "NVreg_EnableGpuFirmware", "node": None, "baseline": "1"},
        {"module": "nvidia_peermem", "node": "not loaded", "baseline": "loaded"},
    ]
    assert (
        "nvidia.NVreg_EnableGpuFirmware=None (fleet: 1)" in finding.message
        and "nvidia_peermem not loaded" in finding.message
    )


def test_a_node_with_fewer_gpus_than_the_fleets_needs_service_and_is_critical(good):
    fleet = copy.deepcopy(good)
    fleet["gpus"] = fleet["gpus"] * 8  # the fleet's nodes are 8-GPU HGX boards
    (finding,) = drift_findings(good, {"gpus": [{"name": g["name"]} for g in fleet["gpus"]]})
    assert (finding.code, finding.severity, finding.action) == ("drift_gpu_inventory", "critical", "service_hardware")
    assert finding.message.startswith("1 GPU(s) here, the fleet's nodes have 8: 8x NVIDIA H100 80GB HBM3")


def test_a_fleet_setting_all_gpus_share_applies_to_every_gpu_here(good):
    node = copy.deepcopy(good)
    node["gpus"] = [dict(node["gpus"][0], pci_bus_id=f"0000:{n:02x}:00.0", mig_mode=n == 3) for n in range(4)]
    (finding,) = drift_findings(node, {"gpus": [{"mig_mode": False}]})
    assert (finding.code, finding.action) == ("drift_mig_mode", "reset_gpu")
    assert finding.evidence["gpus"] == [{"pci_bus_id": "0000:03:00.0", "node": True, "baseline": False}]


def test_drift_adds_to_the_diagnosis_and_the_most_drastic_action_still_wins():
    base = Diagnosis((Finding("version_mismatch", "critical", "m", "reload"),), "reload", ())
    drift = [Finding("drift_gpu_inventory", "critical", "m", "service_hardware")]
    merged = with_drift(base, drift)
    assert [f.code for f in merged.findings] == ["version_mismatch", "drift_gpu_inventory"]
    assert merged.recommended_action == "service_hardware" and merged.reload_blockers == ()
    assert with_drift(base, []) is base


def test_status_with_a_baseline_reports_drift_in_json_human_and_metrics(tmp_path, h100_root, good):
    wanted = {"driver": {"kernel_module_version": "580.200.01"}, "gpus": [{"persistence_mode": False}]}
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(wanted))
    fast = run_cli("--status", "--json", "--root", str(h100_root), "--baseline", str(path))  # the fast path
    assert fast.returncode == ExitCode.WARNING, fast.stderr
    document = json.loads(fast.stdout)
    assert [f["code"] for f in document["findings"] if f["code"].startswith("drift_")] == [
        "drift_driver_version",
        "drift_persistence_mode",
    ]
    assert document["recommended_action"] == "install_driver"
    click_way = run_cli("--status", "--json", "--root", str(h100_root), "--baseline", str(path), "-v")
    assert json.loads(click_way.stdout)["findings"] == document["findings"]
    human = run_cli("--status", "--root", str(h100_root), "--baseline", str(path))
    assert "the fleet's is 580.200.01" in human.stdout
    metrics = run_cli("--status", "--format", "prometheus", "--root", str(h100_root), "--baseline", str(path))
    assert 'nvreload_finding{code="drift_driver_version",severity="warning"} 1' in metrics.stdout


@pytest.mark.parametrize(
    "content, says",
    [
        ("not json", "not JSON"),
        ("[1, 2]", "no driver, modules or gpus to compare"),
        ('{"hostname": "x"}', "no driver, modules or gpus to compare"),
    ],
)
def test_a_baseline_that_is_not_one_is_one_line_and_bad_input(tmp_path, h100_root, content, says):
    path = tmp_path / "baseline.json"
    path.write_text(content)
    proc = run_cli("--status", "--root", str(h100_root), "--baseline", str(path))
    assert proc.returncode == ExitCode.BAD_INPUT and says in proc.stderr and len(proc.stderr.splitlines()) == 1
    with pytest.raises(BadInputError, match=says):
        load_baseline(str(path))


def test_a_baseline_with_another_action_is_a_usage_error(tmp_path):
    proc = run_cli("--reload", "--simulate", "--dry-run", "--baseline", str(tmp_path / "b.json"))
    assert proc.returncode == ExitCode.USAGE and "--baseline goes with --status, not --reload" in proc.stderr
