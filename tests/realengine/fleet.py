"""A fleet on this machine for the fleet cases: one real slurmctld and N real slurmd nodes, each
node in its own network namespace (a veth into a bridge of the host) with its own host name (a UTS
namespace: `hostname -s` on the node says its name, as nvreload's --drain slurm expects) and its own
sshd, reached by a real `ansible-playbook` over the stock ssh connection. The nodes share the
filesystem: each runs nvreload on its own simulated node (its own NVRELOAD_STATE_DIR).

Everything lives under one temp dir and in names that start `nvrf-` (netns, links), which start()
clears first when a crashed session left them. No change to the host's Slurm or SSH configuration.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "nvrf-"
BRIDGE = f"{PREFIX}br0"
SUBNET = "10.87.0"
HOST_ADDRESS = f"{SUBNET}.1"
GROUP = "gpu_nodes"


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "the fleet cases need root (network namespaces, sshd, slurmd)"
    for tool in ("slurmctld", "slurmd", "scontrol", "sbatch", "ip", "unshare", "ssh", "ssh-keygen", "ansible-playbook"):
        found = shutil.which(tool) or (Path(sys.executable).parent / tool).exists()
        if not found and not Path("/usr/sbin", tool).exists():
            return f"{tool} is not installed (.ci/run installs slurm-wlm, openssh-server, iproute2 and ansible-core)"
    if not Path("/usr/sbin/sshd").exists():
        return "sshd is not installed (apt-get install openssh-server; .ci/run does it)"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, check=check, **kw)


@dataclass
class FleetNode:
    name: str
    address: str
    state_dir: str
    env: dict[str, str] = field(default_factory=dict)
    sshd: subprocess.Popen | None = None

    @property
    def netns(self) -> str:
        return f"{PREFIX}{self.name}"

    @property
    def host_link(self) -> str:
        return f"{PREFIX}h{self.name.removeprefix('fleet')}"


class FleetTestbed:
    def __init__(self, base: Path, count: int = 4) -> None:
        self.base = base
        self.slurm_conf = base / "slurm.conf"
        self.controller = socket.gethostname().split(".", 1)[0]
        self.nodes = [
            FleetNode(f"fleet{i}", f"{SUBNET}.{10 + i}", str(base / "nodes" / f"fleet{i}" / "state"))
            for i in range(1, count + 1)
        ]
        for node in self.nodes:
            node.env = {"NVRELOAD_STATE_DIR": node.state_dir, "SLURM_CONF": str(self.slurm_conf)}
        self.env = {**os.environ, "SLURM_CONF": str(self.slurm_conf)}

    # --- start and stop ------------------------------------------------------------------------
    def start(self) -> None:
        clear_leftovers()
        for sub in ("state", "spool", "log", "run", "jobs", "ssh", "ansible/local", "ansible/remote", "ansible/async"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        self._network()
        self._keys()
        self._slurm_conf()
        run("slurmctld", "-i", env=self.env)
        for node in self.nodes:
            self._start_node(node)
        for node in self.nodes:
            self._wait_state(node.name, lambda s: s.startswith("IDLE"), "the node to come up idle")
        self._wait_ssh()

    def _network(self) -> None:
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{HOST_ADDRESS}/24", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        for node in self.nodes:
            peer = f"{PREFIX}p{node.name.removeprefix('fleet')}"
            run("ip", "netns", "add", node.netns)
            run("ip", "link", "add", node.host_link, "type", "veth", "peer", "name", peer)
            run("ip", "link", "set", node.host_link, "master", BRIDGE, "up")
            run("ip", "link", "set", peer, "netns", node.netns)
            inside = ("ip", "netns", "exec", node.netns)
            run(*inside, "ip", "link", "set", peer, "name", "eth0")
            run(*inside, "ip", "addr", "add", f"{node.address}/24", "dev", "eth0")
            run(*inside, "ip", "link", "set", "eth0", "up")
            run(*inside, "ip", "link", "set", "lo", "up")

    def _keys(self) -> None:
        ssh = self.base / "ssh"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "host_ed25519"))
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "id_ed25519"))
        shutil.copy(ssh / "id_ed25519.pub", ssh / "authorized_keys")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory

    def _slurm_conf(self) -> None:
        b = self.base
        nodes = "\n".join(f"NodeName={n.name} NodeAddr={n.address} CPUs=1 State=UNKNOWN" for n in self.nodes)
        names = ",".join(n.name for n in self.nodes)
        self.slurm_conf.write_text(
            f"""ClusterName=nvfleet
SlurmctldHost={self.controller}({HOST_ADDRESS})
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool/%n
SlurmctldPidFile={b}/run/slurmctld.pid
SlurmdPidFile={b}/run/slurmd-%n.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SlurmdTimeout=300
MinJobAge=3600
{nodes}
PartitionName=gpu Nodes={names} Default=YES MaxTime=INFINITE State=UP
"""
        )

    def _sshd_config(self, node: FleetNode) -> Path:
        ssh = self.base / "ssh"
        path = ssh / f"sshd-{node.name}.conf"
        path.write_text(
            f"""ListenAddress {node.address}
Port 22
HostKey {ssh / "host_ed25519"}
PidFile {self.base / "run" / f"sshd-{node.name}.pid"}
AuthorizedKeysFile {ssh / "authorized_keys"}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
LogLevel ERROR
"""
        )
        return path

    def _start_node(self, node: FleetNode) -> None:
        """slurmd and sshd in the node's network and UTS namespaces: slurmd daemonizes and stays
        there; sshd runs in the foreground as this process's child, so the testbed can stop and
        start it (an unreachable node) without touching slurmd."""
        Path(node.state_dir).parent.mkdir(parents=True, exist_ok=True)
        (self.base / "spool" / node.name).mkdir(parents=True, exist_ok=True)
        script = (
            f"hostname {node.name} && slurmd -N {node.name} && exec /usr/sbin/sshd -D -e -f {self._sshd_config(node)}"
        )
        log = open(self.base / "log" / f"sshd-{node.name}.log", "ab")
        node.sshd = subprocess.Popen(
            # nsenter, not `ip netns exec`: that one mounts a sysfs of its own, without the cgroup
            # filesystem slurmd needs
            ["nsenter", f"--net=/run/netns/{node.netns}", "unshare", "--uts", "sh", "-c", script],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )

    def _wait_ssh(self, seconds: float = 60) -> None:
        for node in self.nodes:
            deadline = time.monotonic() + seconds
            while not self._ssh_answers(node):
                if time.monotonic() > deadline:
                    raise AssertionError(f"sshd on {node.name} does not answer\n{self.logs()}")
                time.sleep(0.2)

    def _ssh_answers(self, node: FleetNode) -> bool:
        try:
            with socket.create_connection((node.address, 22), timeout=1):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        for node in self.nodes:
            if node.sshd is not None and node.sshd.poll() is None:
                node.sshd.terminate()
                node.sshd.wait(timeout=20)
        pid_files = [*(self.base / "run").glob("slurmd-*.pid"), self.base / "run" / "slurmctld.pid"]
        for pid_file in pid_files:
            stop_pid_file(pid_file)
        clear_leftovers()

    # --- Ansible ---------------------------------------------------------------------------------
    def write_inventory(
        self,
        path: Path,
        hosts: list[str] | None = None,
        group_vars: dict | None = None,
        host_vars: dict[str, dict] | None = None,
    ) -> Path:
        ssh = self.base / "ssh"
        chosen = [n for n in self.nodes if hosts is None or n.name in hosts]
        common = {
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(ssh / "id_ed25519"),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={ssh / 'known_hosts'} -o StrictHostKeyChecking=accept-new",
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_async_dir": str(self.base / "ansible" / "async"),
            "nvreload_command": [sys.executable, "-m", "nvreload"],
            **(group_vars or {}),
        }
        inventory = {
            "all": {
                "children": {
                    GROUP: {
                        "vars": common,
                        "hosts": {
                            n.name: {
                                "ansible_host": n.address,
                                "nvreload_environment": n.env,
                                **((host_vars or {}).get(n.name) or {}),
                            }
                            for n in chosen
                        },
                    }
                }
            }
        }
        path.write_text(json.dumps(inventory, indent=2))  # JSON is YAML
        return path

    def ansible_env(self) -> dict[str, str]:
        config = self.base / "ansible" / "ansible.cfg"
        config.write_text(
            f"""[defaults]
local_tmp = {self.base / "ansible" / "local"}
remote_tmp = {self.base / "ansible" / "remote"}
retry_files_enabled = False
timeout = 5
forks = 16
stdout_callback = default
[ssh_connection]
pipelining = True
ssh_args = -o ControlMaster=no -o ControlPath=none
"""
        )
        venv_bin = str(Path(sys.executable).parent)
        return {
            **os.environ,
            "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_HOME": str(self.base / "ansible"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
        }

    def _playbook_argv(self, playbook: Path, inventory: Path, *args: str) -> list[str]:
        tool = Path(sys.executable).parent / "ansible-playbook"
        return [str(tool) if tool.exists() else "ansible-playbook", "-i", str(inventory), str(playbook), *args]

    def ansible_playbook(self, playbook: Path, inventory: Path, *args: str, timeout: float = 300):
        return subprocess.run(
            self._playbook_argv(playbook, inventory, *args),
            env=self.ansible_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.base,
        )

    def start_playbook(
        self, playbook: Path, inventory: Path, *args: str, output: Path | None = None
    ) -> subprocess.Popen:
        """In the background, in its own process group (a test kills the whole controller); its
        output goes to `output` when given."""
        with open(output or os.devnull, "wb") as out:
            return subprocess.Popen(
                self._playbook_argv(playbook, inventory, *args),
                env=self.ansible_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.base,
                start_new_session=True,
            )

    # --- what a case does to the fleet -----------------------------------------------------------
    def node(self, name: str) -> FleetNode:
        return next(n for n in self.nodes if n.name == name)

    def make_unreachable(self, name: str) -> None:
        """The node's link goes down: SSH times out (its slurmd keeps running)."""
        run("ip", "link", "set", self.node(name).host_link, "down")

    def make_reachable(self, name: str) -> None:
        run("ip", "link", "set", self.node(name).host_link, "up")

    def scontrol(self, *args: str) -> str:
        return run("scontrol", *args, env=self.env).stdout

    def node_state(self, name: str) -> tuple[str, str]:
        line = self.scontrol("--oneliner", "show", "node", name)
        state = next(t for t in line.split() if t.startswith("State=")).removeprefix("State=")
        reason = line.split(" Reason=", 1)[1].strip() if " Reason=" in line else ""
        return state, reason

    def drain(self, name: str, reason: str) -> None:
        self.scontrol("update", f"nodename={name}", "state=drain", f"reason={reason}")

    def resume(self, name: str) -> None:
        self.scontrol("update", f"nodename={name}", "state=resume")

    def submit(self, name: str, seconds: float) -> str:
        out = run(
            "sbatch",
            "--parsable",
            "-w",
            name,
            f"--chdir={self.base / 'jobs'}",
            "--output=/dev/null",
            "--wrap",
            f"sleep {seconds}",
            env=self.env,
        ).stdout
        return out.strip().split(";")[0]

    def cancel(self, job: str) -> None:
        run("scancel", job, env=self.env)

    def job_state(self, job: str) -> str:
        line = self.scontrol("--oneliner", "show", "job", job)
        return next(t for t in line.split() if t.startswith("JobState=")).removeprefix("JobState=")

    def wait_job(self, job: str, states: set[str], seconds: float = 60) -> str:
        deadline = time.monotonic() + seconds
        while (state := self.job_state(job)) not in states:
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job} is {state}, waited {seconds} s for {states}\n{self.logs()}")
            time.sleep(0.2)
        return state

    def _wait_state(self, name: str, wanted, what: str, seconds: float = 60) -> str:
        deadline = time.monotonic() + seconds
        while True:
            state = self.node_state(name)[0]
            if wanted(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {seconds} s for {what} ({name} is {state})\n{self.logs()}")
            time.sleep(0.2)

    def reset(self) -> None:
        """Between cases: no jobs, every node reachable, resumed, idle, with a fresh simulated node."""
        run("scancel", "--partition", "gpu", env=self.env, check=False)
        for node in self.nodes:
            self.make_reachable(node.name)
            if any(flag in self.node_state(node.name)[0] for flag in ("DRAIN", "DOWN")):
                self.resume(node.name)
            shutil.rmtree(node.state_dir, ignore_errors=True)
        for node in self.nodes:
            self._wait_state(node.name, lambda s: s.startswith("IDLE") and "DRAIN" not in s, "the node to be idle")

    def logs(self) -> str:
        text = ""
        for path in sorted((self.base / "log").glob("*.log")):
            text += f"--- {path.name} (tail) ---\n{path.read_text(errors='replace')[-1500:]}\n"
        return text


def stop_pid_file(pid_file: Path) -> None:
    """Stop a daemon this testbed started, by its pid file (nothing else is signalled)."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def clear_leftovers() -> None:
    """Network namespaces and links of this testbed's names (a crashed session's): removed."""
    listed = run("ip", "netns", "list", check=False).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            run("ip", "netns", "delete", name, check=False)
    links = run("ip", "-o", "link", "show", check=False).stdout
    for line in links.splitlines():
        parts = line.split(":")
        if len(parts) > 1 and parts[1].strip().split("@")[0].startswith(PREFIX):
            run("ip", "link", "delete", parts[1].strip().split("@")[0], check=False)
