"""XIDs sorted into NVIDIA's catalog buckets (Immediate Action)."""

import pytest

from nvreload.diagnosis.xid_catalog import bucket


@pytest.mark.parametrize(
    "xid, expected",
    [
        (79, "reboot"),
        (48, "reset_gpu"),
        (62, "reset_gpu"),
        (64, "reset_gpu"),
        (95, "reset_gpu"),
        (109, "reset_gpu"),
        (110, "reset_gpu"),
        (119, "reset_gpu"),
        (120, "reset_gpu"),
        (13, "restart_application"),
        (31, "restart_application"),
        (43, "restart_application"),
        (63, "reset_gpu"),
        (92, None),
        (1, None),
    ],
)
def test_xids_fall_into_the_catalogs_buckets(xid, expected):
    assert bucket(xid) == expected


@pytest.mark.parametrize(
    "message, expected",
    [
        ("GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)", "reset_gpu"),
        ("GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)", "reboot"),
        ("GPU recovery action changed from 0x1 (GPU Reset Required) to 0x0 (None)", None),
        ("something else entirely", None),
    ],
)
def test_xid_154_says_its_own_recovery_action(message, expected):
    assert bucket(154, message) == expected
