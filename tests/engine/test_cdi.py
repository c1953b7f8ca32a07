"""CDI: a spec names the driver's libraries by version, so after a version change every container
that gets its GPUs through CDI fails to start on files the upgrade removed, until the spec is
generated again. The reload does that before the first container starts; on the simulated node
and with nvidia-ctk as a logging stub on PATH for the live door."""

import os
import stat

import pytest
from helpers import run_cli
from sim_helpers import assert_consistent, node_state, write_scenario

from nvreload.engine.sim import default_scenario
from nvreload.errors import HostError
from nvreload.host.commands import CommandRunner
from nvreload.host.nvidia_tools import refresh_cdi_specs


def cdi_node(tmp_path, **changes):
    containers = default_scenario()["containers"]
    containers[0]["markers"] = ["cdi:nvidia.com/gpu=all"]
    return write_scenario(tmp_path, **({"cdi_specs": ["/etc/cdi/nvidia.yaml"], "containers": containers} | changes))


def test_a_version_change_regenerates_the_cdi_spec_before_cdi_containers_start(tmp_path):
    state = tmp_path / "state"
    proc = run_cli(
        "--reload", "--simulate", cdi_node(tmp_path), "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(state)}
    )
    assert proc.returncode == 0, proc.stdout
    node = node_state(state)
    assert node["cdi_version"] == node["loaded_version"] == "550.127.08"
    assert_consistent(node, reloaded=True)


def _stub(directory, name, body):
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def stub_path(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def test_the_live_door_writes_each_spec_the_node_has_with_nvidia_ctk(tmp_path, stub_path):
    root = tmp_path / "root"
    (root / "etc/cdi").mkdir(parents=True)
    (root / "etc/cdi/nvidia.yaml").write_text("cdiVersion: 0.5.0\n")
    log = tmp_path / "ctk.log"
    _stub(stub_path, "nvidia-ctk", f'echo "$@" >> {log}\n')
    assert refresh_cdi_specs(CommandRunner(), str(root)) == [str(root / "etc/cdi/nvidia.yaml")]
    assert log.read_text() == f"cdi generate --output={root / 'etc/cdi/nvidia.yaml'}\n"


def test_a_node_without_cdi_specs_runs_nothing(tmp_path, stub_path):
    _stub(stub_path, "nvidia-ctk", f"touch {tmp_path / 'ran'}\n")
    assert refresh_cdi_specs(CommandRunner(), str(tmp_path)) == []
    assert not (tmp_path / "ran").exists()


def test_a_failing_nvidia_ctk_is_an_error_naming_the_spec_and_its_last_line(tmp_path, stub_path):
    (tmp_path / "var/run/cdi").mkdir(parents=True)
    (tmp_path / "var/run/cdi/nvidia.yaml").write_text("")
    _stub(stub_path, "nvidia-ctk", 'echo "level=error msg=\\"failed to locate libcuda.so\\"" >&2; exit 1\n')
    with pytest.raises(HostError, match=r"nvidia\.yaml: level=error msg=\"failed to locate libcuda\.so\""):
        refresh_cdi_specs(CommandRunner(), str(tmp_path))
