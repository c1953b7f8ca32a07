"""A snapshot's record of the live consumer scan (--collect's consumers.json): what it keeps, what it
leaves out, and that --status --root draws the live node's findings from it."""

import json

import pytest
from helpers import node_of

from nvreload.diagnosis.findings import diagnose
from nvreload.model import Consumers, ContainerState, GpuProcess, ServiceState
from nvreload.read.recorded_consumers import parse_record, to_record

XORG = GpuProcess(
    pid=2311,
    start_time=88123,
    comm="Xorg",
    cmdline="/usr/lib/xorg/Xorg\0-auth\0/run/user/1000/gdm/Xauthority\0-background\0none",
    devices=("/dev/nvidia0", "/dev/nvidiactl"),
    container_id=None,
    systemd_unit="gdm.service",
    source="procfs",
)
SCAN = Consumers(
    processes=(XORG,),
    services=(
        ServiceState("nvidia-fabricmanager.service", "failed", "enabled", ("/usr/bin/nv-fabricmanager", "-c", "x")),
    ),
    containers=(ContainerState("c0ffee", "trainer", True, ("env:NVIDIA_VISIBLE_DEVICES=GPU-1234", "runtime:nvidia")),),
    scanned=True,
)


def record(snapshot, consumers: Consumers = SCAN) -> None:
    snapshot.write("nvreload-snapshot/consumers.json", json.dumps(to_record(consumers)))


def test_the_record_keeps_the_program_name_and_no_argument_environment_or_service_command():
    text = json.dumps(to_record(SCAN))
    for secret in ("Xauthority", "-auth", "GPU-1234", "-c"):
        assert secret not in text, secret
    (process,) = to_record(SCAN)["processes"]
    assert (process["program"], process["devices"]) == ("Xorg", ["/dev/nvidia0", "/dev/nvidiactl"])
    assert to_record(SCAN)["containers"][0]["markers"] == ["env:NVIDIA_VISIBLE_DEVICES", "runtime:nvidia"]


def test_a_recorded_scan_reads_back_as_scanned_consumers_without_a_start_time():
    consumers = parse_record(json.dumps(to_record(SCAN)))
    assert consumers is not None and consumers.scanned
    (process,) = consumers.processes
    assert (process.pid, process.comm, process.cmdline, process.start_time) == (2311, "Xorg", "Xorg", None)
    assert consumers.services == (ServiceState("nvidia-fabricmanager.service", "failed", "enabled"),)


@pytest.mark.parametrize(
    "text",
    [
        None,
        "",
        "not json",
        "[]",
        '"x"',
        "[" * 100000,
        '{"processes": 7}',
        '{"processes": [{"pid": true, "comm": "x"}]}',
    ],
)
def test_a_malformed_record_is_no_record_or_no_entry_never_an_error(text):
    consumers = parse_record(text)
    assert consumers is None or consumers.processes == ()


def test_status_on_a_snapshot_sees_the_display_server_the_live_scan_saw(snapshot):
    assert "display_server_active" not in [f.code for f in diagnose(node_of(snapshot)).findings]
    record(snapshot)
    diagnosis = diagnose(node_of(snapshot))
    (display,) = [f for f in diagnosis.findings if f.code == "display_server_active"]
    assert display.evidence["processes"][0]["pid"] == 2311
    assert "display_server_active" in diagnosis.reload_blockers


def test_status_on_a_snapshot_names_the_failed_fabric_manager_the_live_scan_saw(snapshot):
    snapshot.write(
        "nvreload-snapshot/nvidia-smi-q.xml",
        "<nvidia_smi_log><driver_version>550.127.08</driver_version><gpu id='00000000:3B:00.0'>"
        "<pci><pci_bus_id>00000000:3B:00.0</pci_bus_id></pci><fabric><state>In Progress</state></fabric>"
        "</gpu></nvidia_smi_log>",
    )
    record(snapshot, Consumers(services=SCAN.services, scanned=True))
    (fabric,) = [f for f in diagnose(node_of(snapshot)).findings if f.code == "fabric_not_ready"]
    assert (fabric.evidence["cause"], fabric.action) == ("fabric_manager_failed", "reload")
