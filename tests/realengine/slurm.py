"""Start a real Slurm cluster of one node for the tests (Debian's slurm-wlm): slurmctld and slurmd,
everything under one temp dir (state, spool, logs, pid files), on free local ports, reached through
SLURM_CONF. No change to the host's Slurm configuration. auth/none: a cluster on 127.0.0.1 that
lives for one test session needs no munge key.

The node is named after the short host name, as on a real cluster, so that nvreload's default
(--slurm-node unset) is what gets exercised."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def why_not() -> str | None:
    if os.geteuid() != 0:
        return "the Slurm tests need root (slurmd runs jobs as their users)"
    for tool in ("slurmctld", "slurmd", "scontrol", "squeue", "sbatch"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install slurm-wlm; .ci/run does it)"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SlurmCluster:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.node = socket.gethostname().split(".", 1)[0]
        self.conf = base / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self) -> None:
        for sub in ("state", "spool", "log", "run", "jobs"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        b = self.base
        self.conf.write_text(
            f"""ClusterName=nvtest
SlurmctldHost={self.node}(127.0.0.1)
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
StateSaveLocation={b}/state
SlurmdSpoolDir={b}/spool
SlurmctldPidFile={b}/run/slurmctld.pid
SlurmdPidFile={b}/run/slurmd.pid
SlurmctldLogFile={b}/log/slurmctld.log
SlurmdLogFile={b}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SlurmdTimeout=60
MinJobAge=3600
NodeName={self.node} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=gpu Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
"""
        )
        subprocess.run(["slurmctld", "-i"], env=self.env, check=True, timeout=60)
        subprocess.run(["slurmd"], env=self.env, check=True, timeout=60)
        self.wait_state(lambda s: s.startswith("IDLE"), "the node to come up idle")

    def scontrol(self, *args: str) -> str:
        return subprocess.run(
            ["scontrol", *args], env=self.env, capture_output=True, text=True, check=True, timeout=60
        ).stdout

    def node_state(self) -> tuple[str, str]:
        """(State=, Reason=) of the node."""
        line = self.scontrol("--oneliner", "show", "node", self.node)
        state = next(t for t in line.split() if t.startswith("State=")).removeprefix("State=")
        reason = line.split(" Reason=", 1)[1].strip() if " Reason=" in line else ""
        return state, reason

    def wait_state(self, wanted, what: str, seconds: float = 60) -> str:
        deadline = time.monotonic() + seconds
        while True:
            state = self.node_state()[0]
            if wanted(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"waited {seconds} s for {what}; the node is {state}\n{self.logs()}")
            time.sleep(0.2)

    def submit(self, seconds: float) -> str:
        out = subprocess.run(
            [
                "sbatch",
                "--parsable",
                f"--chdir={self.base / 'jobs'}",
                "--output=/dev/null",
                "--wrap",
                f"sleep {seconds}",
            ],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
        return out.strip().split(";")[0]

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

    def reset(self) -> None:
        """Between tests: no jobs, the node idle and not drained."""
        subprocess.run(["scancel", "--nodelist", self.node], env=self.env, capture_output=True, timeout=60)
        if "DRAIN" in self.node_state()[0] or "DOWN" in self.node_state()[0]:
            self.scontrol("update", f"nodename={self.node}", "state=resume")
        self.wait_state(lambda s: s.startswith("IDLE") and "DRAIN" not in s, "the node to be idle again")

    def logs(self) -> str:
        text = ""
        for name in ("slurmctld.log", "slurmd.log"):
            path = self.base / "log" / name
            if path.exists():
                text += f"--- {name} (tail) ---\n{path.read_text()[-2000:]}\n"
        return text

    def stop(self) -> None:
        """Stop the daemons this fixture started (by their pid files, nothing else)."""
        for daemon in ("slurmd", "slurmctld"):
            pid_file = self.base / "run" / f"{daemon}.pid"
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
