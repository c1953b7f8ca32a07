"""The live target's module commands as the machine sees them: rmmod and modprobe are logging stubs
put first on PATH (the command runner looks there before /usr/sbin and /sbin), so the exact argv of a
reload's module cycle is checked without touching the kernel."""

import os
import textwrap

import pytest
from snapshot_builder import healthy_node

from nvreload.engine.engine import Engine
from nvreload.engine.journal import Journal, JournalContext
from nvreload.engine.live_target import LiveTarget
from nvreload.engine.planner import build_plan
from nvreload.errors import HostError
from nvreload.host.commands import CommandRunner
from nvreload.host.kmod import ModuleLoader
from nvreload.host.machine import Machine
from nvreload.model import Check
from nvreload.rootfs import open_root

STUB = textwrap.dedent("""\
    #!/bin/sh
    # records its argv, one line per call; fails with a modprobe-like error when told to
    line="$(basename "$0")"
    for arg in "$@"; do line="$line $arg"; done
    echo "$line" >> "$STUB_LOG"
    if [ -n "$STUB_FAIL" ] && [ "$(basename "$0")" = "${STUB_FAIL%%:*}" ]; then
        echo "${STUB_FAIL#*:}" >&2
        exit 1
    fi
    """)


@pytest.fixture
def commands(tmp_path, monkeypatch):
    """rmmod, modprobe and systemctl stubs first on PATH; returns a function reading their calls."""
    stubs = tmp_path / "stub-bin"
    stubs.mkdir()
    for name in ("rmmod", "modprobe", "systemctl"):
        (stubs / name).write_text(STUB)
        os.chmod(stubs / name, 0o755)
    log = tmp_path / "commands.log"
    monkeypatch.setenv("PATH", f"{stubs}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("STUB_LOG", str(log))
    monkeypatch.delenv("STUB_FAIL", raising=False)
    monkeypatch.delenv("NVRELOAD_SYSTEMCTL", raising=False)
    assert CommandRunner().which("modprobe") == str(stubs / "modprobe")  # not /usr/sbin/modprobe
    return lambda: log.read_text().splitlines() if log.exists() else []


class VerifiedTarget(LiveTarget):
    """Verify answers healthy: what is under test is the commands, not NVML or CUDA on this machine."""

    def verify(self, expected_persistence):
        return [Check("nvml", True, "NVML ok")]


def test_a_reload_unloads_by_the_holders_and_loads_back_with_the_parameters_modprobe_d_would_not_give(
    tmp_path, commands
):
    snap = healthy_node(tmp_path / "node")
    # nvidia runs with firmware off although modprobe.d says on; its power management is as configured
    snap.write("sys/module/nvidia/parameters/NVreg_EnableGpuFirmware", "0\n")
    snap.write("sys/module/nvidia/parameters/NVreg_DynamicPowerManagement", "0x02\n")
    snap.write(
        "etc/modprobe.d/nvidia.conf", "options nvidia NVreg_EnableGpuFirmware=1 NVreg_DynamicPowerManagement=0x02\n"
    )
    target = VerifiedTarget(Machine(open_root(str(snap.root)), runner=CommandRunner()), grace=0.1, settle=0)
    view = target.observe()
    plan = build_plan(view, target.configured_parameters())
    journal = Journal.start(str(tmp_path / "journal.json"), "reload", [], JournalContext("live"))
    report = Engine(target, journal).reload(plan)
    assert report.result == "reloaded", report.error
    assert commands() == [
        "rmmod nvidia_drm",
        "rmmod nvidia_modeset",
        "rmmod nvidia_uvm",
        "rmmod nvidia",
        # modprobe applies modprobe.d itself: only what differs from it is passed, and modeset=Y,
        # which no file says, comes back as the console had it
        "modprobe nvidia NVreg_EnableGpuFirmware=0",
        "modprobe nvidia_uvm",
        "modprobe nvidia_modeset",
        "modprobe nvidia_drm modeset=1",
    ]


def test_the_loader_passes_every_parameter_sorted_and_a_refusal_is_its_error_line(commands, monkeypatch):
    loader = ModuleLoader(CommandRunner())
    loader.load("nvidia", {"NVreg_RegistryDwords": "RMUseSwI2c=0x01", "NVreg_EnableGpuFirmware": "0"})
    assert commands() == ["modprobe nvidia NVreg_EnableGpuFirmware=0 NVreg_RegistryDwords=RMUseSwI2c=0x01"]
    monkeypatch.setenv("STUB_FAIL", "rmmod:rmmod: ERROR: Module nvidia is in use")
    with pytest.raises(HostError, match="^rmmod: ERROR: Module nvidia is in use$"):
        loader.unload("nvidia")
