"""The fleet role on a real kernel: the QEMU guest is an Ansible host reached over SSH (QEMU's user
network, its port 22 forwarded to this machine), and packaging/ansible/rolling_reload.yml reloads
its stand-in modules for real: rmmod and modprobe in the guest's kernel, nvidia-persistenced a real
unit, the journal on the guest's disk. A second run in the same boot changes nothing."""

import json
import os
import socket
import subprocess
import sys
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from harness import start_case
from test_real_kernel_reload import MISMATCHED_NODE, B, state_of

pytestmark = pytest.mark.realkernel

PLAYBOOK = Path(__file__).resolve().parents[2] / "packaging" / "ansible" / "rolling_reload.yml"
SCHEMA = json.loads(resources.files("nvreload").joinpath("schema/fleet-report.schema.json").read_text())

GUEST = (
    MISMATCHED_NODE
    + """
nic=$(ls /sys/class/net | grep -v '^lo$' | head -n1)
ip link set lo up && ip link set "$nic" up && ip addr add 10.0.2.15/24 dev "$nic"
mkdir -p /run/sshd /root/.ssh && cp /job/authorized_keys /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys
[ -f /etc/ssh/ssh_host_ed25519_key ] || ssh-keygen -q -A
/usr/sbin/sshd -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no -o UsePAM=no || exit 90
touch /job/ready
for _ in $(seq 1800); do [ -e /job/done ] && break; sleep 1; done
snapshot_state after
"""
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def inventory(tmp_path: Path, port: int) -> Path:
    python = [sys.executable, "-m", "nvreload.fleet"]
    host = {
        "ansible_host": "127.0.0.1",
        "ansible_port": port,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(tmp_path / "id_ed25519"),
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={tmp_path / 'known_hosts'} -o StrictHostKeyChecking=accept-new",
        "ansible_python_interpreter": "/usr/bin/python3",
        "nvreload_become": False,
        "nvreload_drain": "none",
        "nvreload_fleet_command": ["python3", "-m", "nvreload.fleet"],
        "nvreload_environment": {"PYTHONPATH": "/src", "NVRELOAD_NVML_TIMEOUT": "20"},
        "nvreload_fleet_controller_command": python,
    }
    path = tmp_path / "inventory.yml"
    path.write_text(json.dumps({"all": {"children": {"gpu_nodes": {"hosts": {"nvtest": host}}}}}))
    return path


def ansible_playbook(tmp_path: Path, inventory_file: Path) -> subprocess.CompletedProcess:
    config = tmp_path / "ansible.cfg"
    config.write_text(
        f"[defaults]\nlocal_tmp = {tmp_path / 'ansible-local'}\nretry_files_enabled = False\ntimeout = 60\n"
        "[ssh_connection]\npipelining = True\nssh_args = -o ControlMaster=auto -o ControlPersist=120s\n"
        f"control_path_dir = {tmp_path / 'cp'}\n"
    )
    tool = Path(sys.executable).parent / "ansible-playbook"
    argv = [str(tool) if tool.exists() else "ansible-playbook", "-i", str(inventory_file), str(PLAYBOOK)]
    argv += ["-e", json.dumps({"nvreload_run_root": str(tmp_path / "runs")})]
    env = {"ANSIBLE_CONFIG": str(config), "ANSIBLE_HOME": str(tmp_path / "ansible"), "ANSIBLE_NOCOLOR": "1"}
    return subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, timeout=900, cwd=tmp_path)


def latest_report(tmp_path: Path) -> dict:
    reports = sorted((tmp_path / "runs").glob("*/fleet-report.json"), key=lambda p: p.stat().st_mtime)
    report = json.loads(reports[-1].read_text())
    jsonschema.validate(report, SCHEMA)
    return report


def test_the_fleet_role_reloads_the_guests_modules_over_ssh_and_a_rerun_changes_nothing(vm_image, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id_ed25519")], check=True)
    port = free_port()
    case = start_case(
        vm_image,
        GUEST,
        files={"authorized_keys": (tmp_path / "id_ed25519.pub").read_text()},
        workdir=tmp_path,
        ssh_port=port,
        memory_mb=1536,
    )
    try:
        ready = case.wait_for("ready", 600)
        first = ansible_playbook(tmp_path, inventory(tmp_path, port)) if ready else None
        first_report = latest_report(tmp_path) if first is not None and first.returncode == 0 else None
        second = ansible_playbook(tmp_path, inventory(tmp_path, port)) if first_report else None
        second_report = latest_report(tmp_path) if second is not None and second.returncode == 0 else None
    finally:
        (case.job / "done").touch()
        run = case.finish(1500)
    assert ready, run.explain()
    assert first is not None and first.returncode == 0, first.stdout[-6000:] + first.stderr[-2000:] + run.explain()
    node = first_report["nodes"][0]
    assert (node["host"], node["state"]) == ("nvtest", "reloaded"), node
    assert node["driver_after"] == B and node["journal"] == "/var/lib/nvreload/journal.json"
    assert second is not None and second.returncode == 0, second.stdout[-6000:]
    assert second_report["nodes"][0]["state"] == "skipped_healthy"
    after = state_of(run, "after")
    assert after["loaded_version"] == B and after["persistenced"] == "active"
    assert after["journal_state"] == "reloaded"
