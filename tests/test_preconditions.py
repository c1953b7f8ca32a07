"""The checks that refuse a run, each for its own reason, in their order."""

import os

import pytest

from nvreload.action_request import ActionRequest
from nvreload.engine.plan import ReloadView
from nvreload.model import GpuProcess
from nvreload.preconditions import (
    AFTER_READING,
    BEFORE_READING,
    Facts,
    fabric_manager_matches_installer,
    first_refusal,
    needs_root,
    no_blocking_finding,
)


def view(**fields) -> ReloadView:
    return ReloadView(modules=(), processes=(), services=(), containers=(), **fields)


@pytest.fixture
def not_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


def test_a_live_run_by_a_user_who_is_not_root_is_refused_as_not_root_before_anything_is_read(not_root):
    refusal = first_refusal(BEFORE_READING, Facts(ActionRequest("reload")))
    assert refusal == "--reload needs root (it stops services and unloads kernel modules); run it with sudo"
    assert needs_root(Facts(ActionRequest("reset"))) == (
        "--reset needs root (it stops services and resets GPUs); run it with sudo"
    )


def test_a_simulation_or_a_snapshot_needs_no_root(not_root):
    assert needs_root(Facts(ActionRequest("reload", simulate=""))) is None
    assert needs_root(Facts(ActionRequest("reload", root="/tmp/snapshot", dry_run=True))) is None


def test_a_blocking_finding_refuses_a_reload_and_names_it():
    facts = Facts(ActionRequest("reload"), view(blockers=("module_built_for_another_kernel",)))
    assert no_blocking_finding(facts) == (
        "reload refused: module_built_for_another_kernel (nvreload --status explains)"
    )
    assert no_blocking_finding(Facts(ActionRequest("stop"), facts.view)) is None  # a --stop unloads nothing


def test_a_display_server_blocks_a_reload_unless_forced():
    xorg = GpuProcess(900, 4242, "Xorg", "", ("/dev/nvidia0",), None, None, "procfs")
    blocked = Facts(ActionRequest("reload"), view(display_processes=(xorg,)))
    assert no_blocking_finding(blocked) == "reload refused: display_server_active (nvreload --status explains)"
    forced = Facts(
        ActionRequest("reload", force_display=True),
        view(display_processes=(xorg,), blockers=("display_server_active",)),
    )
    assert no_blocking_finding(forced) is None


def test_a_fabric_manager_of_another_version_than_the_installer_refuses_the_reload(monkeypatch):
    monkeypatch.setattr("nvreload.preconditions.installer_version", lambda path: "580.95.05")
    facts = Facts(ActionRequest("reload"), view(fabric_manager_version="570.172.08"), "/tmp/x/NVIDIA.run")
    refusal = fabric_manager_matches_installer(facts)
    assert refusal is not None and refusal.startswith(
        "reload refused: NVIDIA.run installs driver 580.95.05, but nvidia-fabricmanager is 570.172.08"
    )
    same = Facts(ActionRequest("reload"), view(fabric_manager_version="580.95.05"), "/tmp/x/NVIDIA.run")
    assert fabric_manager_matches_installer(same) is None


def test_the_first_refusal_in_the_list_wins(monkeypatch):
    monkeypatch.setattr("nvreload.preconditions.installer_version", lambda path: "580.95.05")
    facts = Facts(
        ActionRequest("reload"),
        view(blockers=("reboot_required",), fabric_manager_version="570.172.08"),
        "/tmp/x/NVIDIA.run",
    )
    assert [p.name for p in AFTER_READING] == ["blocking findings", "fabric manager version"]
    assert first_refusal(AFTER_READING, facts) == "reload refused: reboot_required (nvreload --status explains)"
