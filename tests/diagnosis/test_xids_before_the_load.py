"""XIDs belong to the driver instance that logged them: one logged before the last `NVRM: loading`
line was the old instance's (a reload or a reboot since cleared it), and never drives a finding, an
action or a failed --verify. Each case is also shown after the load line, so the test fails for the
reason its name gives."""

import pytest
from helpers import node_of

from nvreload.diagnosis import xid_catalog
from nvreload.diagnosis.findings import diagnose
from nvreload.diagnosis.health import run_checks

LOAD = "[ 5.100000] NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  550.127.08  Release Build"


def xid_line(xid: int) -> str:
    return f"[ 4.0] NVRM: Xid (PCI:0000:3b:00): {xid}, pid=77, name=python3, an event of the old instance"


# one XID of every bucket the catalog knows, and the remap XIDs, which have a rule of their own
CASES = [
    (8, "restart_application"),
    (46, "reset_gpu"),
    (54, "service_hardware"),
    (78, "install_driver"),
    (xid_catalog.FALLEN_OFF_BUS, "reboot"),
    *[(xid, "reset_gpu") for xid in sorted(xid_catalog.REMAP_XIDS)],
]


@pytest.mark.parametrize("xid,action", CASES)
def test_an_xid_from_before_the_current_driver_load_never_drives_an_action(snapshot, xid, action):
    snapshot.dmesg([xid_line(xid), LOAD])
    before = diagnose(node_of(snapshot))
    assert before.recommended_action == "none", [f.code for f in before.findings]
    assert not [f for f in before.findings if f.action == action]
    assert all(c.ok for c in run_checks(node_of(snapshot), None) if c.name == "no_new_xids")

    snapshot.dmesg([LOAD, xid_line(xid)])  # the same line, logged by the instance in memory
    after = diagnose(node_of(snapshot))
    assert after.recommended_action == action, [f.code for f in after.findings]
    assert not next(c for c in run_checks(node_of(snapshot), None) if c.name == "no_new_xids").ok
