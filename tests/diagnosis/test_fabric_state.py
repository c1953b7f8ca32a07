"""NVSwitch GPUs whose fabric is not Completed while the driver is loaded: a finding with the cause
the node shows and its action, and a failed --verify."""

from dataclasses import replace

from helpers import node_of

from nvreload.diagnosis.findings import diagnose
from nvreload.diagnosis.health import run_checks, verify_exit_code
from nvreload.errors import ExitCode
from nvreload.host.nvml_session import _fabric
from nvreload.model import Consumers, ServiceState
from nvreload.read.smi_xml import parse_smi_xml

GPU = """  <gpu id="{bus}">
    <product_name>{name}</product_name>
    <pci><pci_bus_id>{bus}</pci_bus_id></pci>
    <mig_mode><current_mig>N/A</current_mig><pending_mig>N/A</pending_mig></mig_mode>
    <fabric><state>{state}</state><status>{status}</status></fabric>
  </gpu>
"""


def smi(gpus, version="550.127.08"):
    body = "".join(GPU.format(**g) for g in gpus)
    return f"<nvidia_smi_log><driver_version>{version}</driver_version>{body}</nvidia_smi_log>"


def fabric_node(snapshot, state, status="N/A", name="NVIDIA H100 80GB HBM3", services=None):
    snapshot.write(
        "nvreload-snapshot/nvidia-smi-q.xml",
        smi([{"bus": "00000000:3B:00.0", "name": name, "state": state, "status": status}]),
    )
    node = node_of(snapshot)
    if services is not None:
        node = replace(node, consumers=Consumers(services=tuple(services), scanned=True))
    return node


def fabric_finding(node):
    found = [f for f in diagnose(node).findings if f.code == "fabric_not_ready"]
    return found[0] if found else None


def test_smi_reads_the_fabric_state_and_status_and_na_is_no_fabric():
    (gpu,) = parse_smi_xml(smi([{"bus": "0", "name": "x", "state": "In Progress", "status": "N/A"}])).devices
    assert (gpu.fabric_state, gpu.fabric_status) == ("In Progress", None)
    (gpu,) = parse_smi_xml(smi([{"bus": "0", "name": "x", "state": "N/A", "status": "N/A"}])).devices
    assert gpu.fabric_state is None


def test_nvml_fabric_states_read_as_nvidia_smi_prints_them():
    class Info:
        def __init__(self, state, status):
            self.state, self.status = state, status

    assert _fabric(Info(0, 0)) == {}  # NOT_SUPPORTED: no NVSwitch fabric
    assert _fabric(Info(3, 0)) == {"fabric_state": "Completed", "fabric_status": "Success"}
    assert _fabric(Info(1, 999)) == {"fabric_state": "Not Started", "fabric_status": "NVML status 999"}
    assert _fabric(None) == {}


def test_a_completed_fabric_is_no_finding_and_passes_verify(snapshot):
    node = fabric_node(snapshot, "Completed", "Success")
    assert fabric_finding(node) is None
    (check,) = [c for c in run_checks(node, None) if c.name == "fabric_completed"]
    assert check.ok


def test_a_gpu_without_a_fabric_adds_no_check(snapshot):
    node = fabric_node(snapshot, "N/A")
    assert fabric_finding(node) is None
    assert "fabric_completed" not in [c.name for c in run_checks(node, None)]


def test_a_fabric_not_set_up_fails_verify(snapshot):
    node = fabric_node(snapshot, "Not Started")
    (check,) = [c for c in run_checks(node, None) if c.name == "fabric_completed"]
    assert not check.ok and "Not Started" in check.detail
    assert verify_exit_code([check]) == ExitCode.CRITICAL


def test_a_snapshot_that_does_not_show_why_asks_for_a_reload(snapshot):
    found = fabric_finding(fabric_node(snapshot, "Not Started"))
    assert (found.action, found.evidence["cause"]) == ("reload", "unknown")
    assert found.evidence["gpus"] == [{"pci_bus_id": "0000:3b:00.0", "state": "Not Started"}]


def test_a_fabric_manager_of_another_version_needs_its_own_version_installed(snapshot):
    snapshot.write("nvreload-snapshot/nv-fabricmanager-version.txt", "565.57.01\n")
    found = fabric_finding(fabric_node(snapshot, "Not Started"))
    assert (found.action, found.evidence["cause"]) == ("install_driver", "fabric_manager_other_version")
    assert "565.57.01" in found.message


def test_an_nvlink5_node_without_ib_umad_needs_the_platform_fixed(snapshot):
    found = fabric_node(snapshot, "Not Started", name="NVIDIA B200")
    found = fabric_finding(found)
    assert (found.action, found.evidence["cause"]) == ("fix_platform", "ib_umad_not_loaded")
    snapshot.module("ib_umad", refcount=0)
    found = fabric_finding(fabric_node(snapshot, "Not Started", name="NVIDIA B200"))
    assert found.evidence["cause"] == "unknown"


def test_a_fabric_manager_that_failed_or_is_stopped_is_named_and_a_reload_starts_it(snapshot):
    fm = "nvidia-fabricmanager.service"
    found = fabric_finding(fabric_node(snapshot, "Not Started", services=[ServiceState(fm, "failed")]))
    assert (found.action, found.evidence["cause"], found.evidence["fabric_manager"]) == (
        "reload",
        "fabric_manager_failed",
        "failed",
    )
    found = fabric_finding(fabric_node(snapshot, "Not Started", services=[ServiceState(fm, "inactive")]))
    assert (found.action, found.evidence["cause"]) == ("reload", "fabric_manager_not_running")


def test_a_fabric_training_under_a_running_fabric_manager_is_a_warning_to_wait(snapshot):
    fm = ServiceState("nvidia-fabricmanager.service", "active")
    found = fabric_finding(fabric_node(snapshot, "In Progress", services=[fm]))
    assert (found.action, found.severity, found.evidence["cause"]) == ("none", "warning", "fabric_training")


def test_no_fabric_finding_while_the_driver_is_not_loaded(snapshot):
    node = fabric_node(snapshot, "Not Started")
    node = replace(node, modules=tuple(m for m in node.modules if not m.name.startswith("nvidia")))
    assert fabric_finding(node) is None
