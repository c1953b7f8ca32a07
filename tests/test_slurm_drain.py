"""--drain slurm against a real slurmctld + slurmd (tests/realengine/slurm.py), the reload itself on
the simulated node: the node is drained, the reload waits for its jobs, and the node is resumed
after a reload or a rollback, left drained when a reboot is needed, left as an admin left it, and
resumed by --rollback after a run killed while it waited. The drain is a step of the run's journal
with its own undo record: the journal alone says what a rollback must put back."""

import json
import os
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from helpers import run_cli

from nvreload.engine.journal import Journal

pytestmark = pytest.mark.realengine

DEFAULT_SCENARIO = json.loads(resources.files("nvreload").joinpath("scenarios/default.json").read_text())
RUN_REPORT = json.loads(resources.files("nvreload").joinpath("schema/run-report.schema.json").read_text())


def scenario(tmp_path: Path, faults: list | None = None) -> str:
    data = json.loads(json.dumps(DEFAULT_SCENARIO))
    data["faults"] = faults or []
    path = tmp_path / f"scenario-{len(list(tmp_path.glob('scenario-*')))}.json"
    path.write_text(json.dumps(data))
    return str(path)


def env_of(slurm, tmp_path: Path) -> dict:
    return {"SLURM_CONF": str(slurm.conf), "NVRELOAD_STATE_DIR": str(tmp_path / "state")}


def journal_of(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "state" / "journal.json").read_text())


def drain_records(tmp_path: Path) -> list[dict]:
    """The drain's undo records, with the appended ones folded in (as nvreload reads them)."""
    return [r.as_dict() for r in Journal.load(str(tmp_path / "state" / "journal.json")).undo if r.kind == "drain_slurm"]


def reload_json(slurm, tmp_path, *extra: str, scenario_file: str | None = None, exit_code: int = 0) -> dict:
    proc = run_cli(
        "--reload",
        "--drain",
        "slurm",
        "--simulate",
        scenario_file or scenario(tmp_path),
        "--yes",
        "--json",
        *extra,
        env=env_of(slurm, tmp_path),
        timeout=180,
    )
    assert proc.returncode == exit_code, proc.stdout + proc.stderr + slurm.logs()
    document = json.loads(proc.stdout)
    jsonschema.Draft202012Validator(RUN_REPORT).validate(document)
    return document


def test_the_reload_waits_for_the_running_job_while_new_jobs_wait_then_resumes_the_node(slurm, tmp_path):
    running = slurm.submit(6)
    slurm.wait_job(running, {"RUNNING"})
    args = ["--reload", "--drain", "slurm", "--simulate", scenario(tmp_path), "--yes", "--json"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nvreload", *args],
        env={**slurm.env, **env_of(slurm, tmp_path)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        slurm.wait_state(lambda s: "DRAIN" in s, "nvreload to drain the node")
        queued = slurm.submit(1)  # a new job does not start on a draining node
        assert slurm.job_state(queued) == "PENDING"
        # nothing stopped while the job runs: the journal holds the drain step and nothing else
        journal = journal_of(tmp_path)
        assert [s["name"] for s in journal["steps"]] == ["drain_slurm"] and journal["steps"][0]["status"] == "running"
        assert [r.kind for r in Journal.load(str(tmp_path / "state" / "journal.json")).undo] == ["drain_slurm"]
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err + slurm.logs()
    report = json.loads(out)
    assert report["result"] == "reloaded"
    assert report["slurm"]["drained"] and report["slurm"]["resumed"] and report["slurm"]["left_drained"] is None
    assert running in report["slurm"]["jobs_waited_for"]
    assert slurm.job_state(running) == "COMPLETED"  # it ended by itself: nvreload signals no Slurm job
    assert "DRAIN" not in slurm.node_state()[0]
    slurm.wait_job(queued, {"RUNNING", "COMPLETED"})  # the queue moves again


def test_a_rolled_back_reload_resumes_the_node(slurm, tmp_path):
    failing = scenario(tmp_path, [{"at": "stop_consumers", "error": "injected", "times": -1}])
    report = reload_json(slurm, tmp_path, scenario_file=failing, exit_code=10)
    assert report["result"] == "rolled_back" and report["slurm"]["resumed"]
    assert "DRAIN" not in slurm.node_state()[0]


def test_a_node_that_needs_a_reboot_stays_drained_and_says_why(slurm, tmp_path):
    broken = scenario(tmp_path, [{"at": "load_modules", "error": "injected", "times": -1}])
    report = reload_json(slurm, tmp_path, scenario_file=broken, exit_code=11)
    assert not report["slurm"]["resumed"] and "reboot" in report["slurm"]["left_drained"]
    state, reason = slurm.node_state()
    assert "DRAIN" in state and reason.startswith("nvreload: driver reload failed, reboot needed")


def test_a_node_an_admin_drained_stays_drained_with_the_admins_reason(slurm, tmp_path):
    slurm.scontrol("update", f"nodename={slurm.node}", "state=drain", "reason=bad fan")
    report = reload_json(slurm, tmp_path)
    assert report["result"] == "reloaded"
    assert report["slurm"]["drained"] is False and report["slurm"]["resumed"] is False
    state, reason = slurm.node_state()
    assert "DRAIN" in state and reason.startswith("bad fan")


def test_jobs_that_outlast_the_timeout_refuse_the_reload_and_give_the_node_back(slurm, tmp_path):
    long = slurm.submit(120)
    slurm.wait_job(long, {"RUNNING"})
    proc = run_cli(
        "--reload",
        "--drain",
        "slurm",
        "--drain-timeout",
        "1",
        "--simulate",
        scenario(tmp_path),
        "--yes",
        env=env_of(slurm, tmp_path),
        timeout=120,
    )
    assert proc.returncode == 77, proc.stderr
    assert f"1 job(s) still running on {slurm.node} after 1 s ({long}); nothing was stopped; the node is resumed" in (
        proc.stderr
    )
    assert "DRAIN" not in slurm.node_state()[0] and slurm.job_state(long) == "RUNNING"
    # the journal says the run ended before it began, its drain undone
    journal = journal_of(tmp_path)
    assert journal["state"] == "rolled_back" and "still running" in journal["result"]["error"]
    assert [s["name"] for s in journal["steps"]] == ["drain_slurm"]
    assert [(r["target"], r["state"]) for r in drain_records(tmp_path)] == [(slurm.node, "undone")]


def test_a_run_killed_while_it_waits_leaves_the_node_drained_and_rollback_resumes_it(slurm, tmp_path):
    long = slurm.submit(120)
    slurm.wait_job(long, {"RUNNING"})
    env = {**slurm.env, **env_of(slurm, tmp_path)}
    args = ["--reload", "--drain", "slurm", "--simulate", scenario(tmp_path), "--yes"]
    proc = subprocess.Popen([sys.executable, "-m", "nvreload", *args], env=env, stderr=subprocess.PIPE, text=True)
    try:
        slurm.wait_state(lambda s: "DRAIN" in s, "nvreload to drain the node")
        deadline = time.monotonic() + 30
        while not (
            (tmp_path / "state" / "journal.json").exists() and [r["state"] for r in drain_records(tmp_path)] == ["done"]
        ):
            assert time.monotonic() < deadline, "nvreload did not journal its drain"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)  # our own child: nvreload killed mid-wait
        proc.wait(timeout=30)
    state, reason = slurm.node_state()
    assert "DRAIN" in state and reason.startswith("nvreload: driver reload (run ")
    assert journal_of(tmp_path)["run_id"] in reason  # the reason names the run whose journal says the rest
    rollback = run_cli("--rollback", "--simulate", "--json", env=env_of(slurm, tmp_path), timeout=120)
    assert rollback.returncode == 10, rollback.stdout + rollback.stderr
    document = json.loads(rollback.stdout)
    assert document["result"] == "rolled_back" and document["slurm"]["resumed"] is True, document
    assert "DRAIN" not in slurm.node_state()[0]
    assert [r["state"] for r in drain_records(tmp_path)] == ["undone"]
    assert journal_of(tmp_path)["state"] == "rolled_back"


def test_a_node_slurm_does_not_know_is_one_line_and_nothing_is_drained(slurm, tmp_path):
    proc = run_cli(
        "--reload",
        "--drain",
        "slurm",
        "--slurm-node",
        "no-such-node",
        "--simulate",
        scenario(tmp_path),
        "--yes",
        env=env_of(slurm, tmp_path),
    )
    assert proc.returncode == 66
    assert (
        proc.stderr.startswith("nvreload: Slurm does not know node no-such-node") and len(proc.stderr.splitlines()) == 1
    )
    assert "DRAIN" not in slurm.node_state()[0]


@pytest.mark.parametrize(
    "args, says",
    [
        (["--stop", "--drain", "slurm"], "--drain goes with --reload or --reset, not --stop"),
        (["--reload", "--drain", "slurm", "--when-idle"], "--drain and --when-idle conflict"),
        (["--reload", "--slurm-node", "n1"], "--slurm-node and --drain-timeout go with --drain slurm"),
        (["--reload", "--drain", "pbs"], "'pbs' is not"),
    ],
)
def test_drain_flags_out_of_place_are_usage_errors(args, says):
    proc = run_cli(*args, "--simulate")
    assert proc.returncode == 64 and says in proc.stderr


# crash windows and the ends a drained run can come to (issue 18, point 12) ------------------------------------
def test_a_run_that_ends_partial_resumes_the_node(slurm, tmp_path):
    partial = scenario(tmp_path, [{"at": "restart_consumers", "error": "container will not start", "times": -1}])
    report = reload_json(slurm, tmp_path, scenario_file=partial, exit_code=12)
    assert report["result"] == "failed" and report["remaining_action"] == "nvreload --start"
    assert report["slurm"]["resumed"] and report["slurm"]["left_drained"] is None
    assert "DRAIN" not in slurm.node_state()[0]


def test_a_run_killed_between_its_drain_record_and_the_drain_leaves_the_node_as_it_was(slurm, tmp_path):
    """scontrol is made to hang on the drain (a wrapper ahead of it on PATH), and nvreload is killed
    there: the record says drained, Slurm says idle. --rollback must not resume (or fail on) a node
    that was never drained, and must not leave the record behind."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    real = subprocess.run(["sh", "-c", "command -v scontrol"], capture_output=True, text=True).stdout.strip()
    (bin_dir / "scontrol").write_text(
        "#!/bin/sh\n"
        'case "$*" in *state=drain*) touch "$0.hung"; while kill -0 $PPID 2>/dev/null; do sleep 0.1; done; exit 1;; esac\n'
        f'exec {real} "$@"\n'
    )
    (bin_dir / "scontrol").chmod(0o755)
    env = {**slurm.env, **env_of(slurm, tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    args = ["--reload", "--drain", "slurm", "--simulate", scenario(tmp_path), "--yes"]
    proc = subprocess.Popen([sys.executable, "-m", "nvreload", *args], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (bin_dir / "scontrol.hung").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [r["state"] for r in drain_records(tmp_path)] == ["intended"]
    finally:
        proc.send_signal(signal.SIGKILL)  # our own child, killed inside the window
        proc.wait(timeout=30)
    slurm.scontrol("update", f"nodename={slurm.node}", "state=drain", "reason=admin: bad fan")  # an admin, since
    rollback = run_cli("--rollback", "--simulate", "--json", env=env_of(slurm, tmp_path), timeout=120)
    assert rollback.returncode == 10, rollback.stdout + rollback.stderr
    document = json.loads(rollback.stdout)
    assert document["result"] == "rolled_back" and "slurm" not in document  # nothing of Slurm's was touched
    state, reason = slurm.node_state()
    assert "DRAIN" in state and reason.startswith("admin: bad fan")  # the admin's drain stays
    assert [r["state"] for r in drain_records(tmp_path)] == ["undone"]  # the record is settled all the same


def test_the_reboot_needed_drain_is_lifted_by_the_rollback_after_the_reboot(slurm, tmp_path):
    broken = scenario(tmp_path, [{"at": "load_modules", "error": "injected", "times": 2}])
    report = reload_json(slurm, tmp_path, scenario_file=broken, exit_code=11)
    assert "reboot" in report["slurm"]["left_drained"]
    assert "DRAIN" in slurm.node_state()[0]
    # the reboot: the modules load again (the injected fault is spent); the operator finishes the run
    rollback = run_cli("--rollback", "--simulate", "--json", env=env_of(slurm, tmp_path), timeout=120)
    assert rollback.returncode in (0, 10), rollback.stdout + rollback.stderr
    document = json.loads(rollback.stdout)
    assert document["slurm"] == {**document["slurm"], "node": slurm.node, "resumed": True}
    assert "DRAIN" not in slurm.node_state()[0]
    assert [r["state"] for r in drain_records(tmp_path)] == ["undone"]


def test_a_rollback_that_still_needs_a_reboot_leaves_the_node_drained(slurm, tmp_path):
    broken = scenario(tmp_path, [{"at": "load_modules", "error": "injected", "times": -1}])
    reload_json(slurm, tmp_path, scenario_file=broken, exit_code=11)
    rollback = run_cli("--rollback", "--simulate", "--json", env=env_of(slurm, tmp_path), timeout=120)
    assert rollback.returncode == 11, rollback.stdout + rollback.stderr
    state, reason = slurm.node_state()
    assert "DRAIN" in state and reason.startswith("nvreload: driver reload failed, reboot needed")
    # outstanding still, for the rollback after the reboot
    assert [r["state"] for r in drain_records(tmp_path)] == ["done"]
