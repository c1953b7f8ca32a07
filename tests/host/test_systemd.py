"""Unit actions through systemctl, against a runner that answers as systemd would."""

import pytest

from nvreload.errors import HostError
from nvreload.host.commands import CommandResult
from nvreload.host.systemd import Systemd, parse_systemctl_show


class Systemctl:
    """Answers `systemctl start` and `is-active` from a script; records every call."""

    def __init__(self, start=(0, ""), is_active="active"):
        self.start, self.is_active = list(start) if isinstance(start, list) else [start], is_active
        self.calls = []

    def run(self, argv, timeout=30.0, input_text=None):
        self.calls.append(tuple(argv[1:]))
        verb = argv[1]
        if verb == "start":
            code, stderr = self.start.pop(0) if len(self.start) > 1 else self.start[0]
            return CommandResult(tuple(argv), code, "", stderr)
        if verb == "is-active":
            return CommandResult(tuple(argv), 0 if self.is_active == "active" else 3, self.is_active + "\n", "")
        return CommandResult(tuple(argv), 0, "", "")


@pytest.fixture(autouse=True)
def plain_systemctl(monkeypatch):
    monkeypatch.delenv("NVRELOAD_SYSTEMCTL", raising=False)


@pytest.mark.parametrize("state", ["failed", "inactive"])
def test_a_unit_that_is_down_right_after_its_start_did_not_come_back(state):
    runner = Systemctl(is_active=state)
    with pytest.raises(HostError, match=f"^nvidia-persistenced.service: {state} right after start"):
        Systemd(runner, settle=0).start("nvidia-persistenced.service")


def test_a_start_limit_is_cleared_once_and_the_start_tried_again():
    runner = Systemctl(start=[(1, "Job for x failed: start request repeated too often"), (0, "")])
    Systemd(runner, settle=0).start("nvidia-dcgm.service")
    assert runner.calls[:3] == [
        ("start", "nvidia-dcgm.service"),
        ("reset-failed", "nvidia-dcgm.service"),
        ("start", "nvidia-dcgm.service"),
    ]


def test_show_output_gives_each_units_state_and_drops_nothing_it_knows():
    states = parse_systemctl_show(
        "Id=a.service\nLoadState=loaded\nActiveState=active\nUnitFileState=enabled\n\n"
        "Id=b.service\nLoadState=not-found\nActiveState=inactive\n"
    )
    assert [(s.name, s.active, s.enabled) for s in states] == [
        ("a.service", "active", "enabled"),
        ("b.service", "not-found", None),
    ]
