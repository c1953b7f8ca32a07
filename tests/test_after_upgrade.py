"""The package hooks' entry (--after-upgrade) and --reload --when-idle on the simulated node: a reload
that is not needed is not done, one that is due is done only when the policy and the GPUs allow it,
and otherwise recorded as pending where --status and the metrics show it. Nothing busy is touched."""

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from helpers import run_cli

DEFAULT_SCENARIO = json.loads(resources.files("nvreload").joinpath("scenarios/default.json").read_text())
DEFERRED = json.loads(resources.files("nvreload").joinpath("schema/deferred.schema.json").read_text())
STATUS = json.loads(resources.files("nvreload").joinpath("schema/status.schema.json").read_text())


def scenario(tmp_path: Path, idle: bool, mismatch: bool = True) -> str:
    data = json.loads(json.dumps(DEFAULT_SCENARIO))
    if idle:  # only the known services hold the GPUs
        data["containers"] = []
        data["processes"] = [p for p in data["processes"] if p.get("unit")]
    if not mismatch:
        data["driver"]["installed_version"] = data["driver"]["loaded_version"]
    path = tmp_path / f"scenario-{'idle' if idle else 'busy'}-{mismatch}.json"
    path.write_text(json.dumps(data))
    return str(path)


@pytest.fixture
def node(tmp_path):
    state = tmp_path / "state"
    env = {"NVRELOAD_STATE_DIR": str(state), "NVRELOAD_CONFIG": str(tmp_path / "nvreload.conf")}

    class Node:
        pending = state / "reload-pending.json"
        journal = state / "journal.json"

        @staticmethod
        def run(*args: str):
            return run_cli(*args, env=env, timeout=120)

        @staticmethod
        def policy(text: str) -> None:
            (tmp_path / "nvreload.conf").write_text(text)

        @staticmethod
        def status(scenario_file: str) -> dict:
            proc = run_cli("--status", "--simulate", scenario_file, "--json", env=env)
            document = json.loads(proc.stdout)
            jsonschema.Draft202012Validator(STATUS).validate(document)
            return document

    return Node


def untouched(node, scenario_file: str) -> None:
    """The node is as the scenario made it: old module loaded, the containers still running."""
    document = node.status(scenario_file)
    assert document["driver"]["kernel_module_version"] == DEFAULT_SCENARIO["driver"]["loaded_version"]
    assert {c["name"] for c in document["consumers"]["containers"]} >= {"train-llm", "triton-infer"}


def test_the_hook_reports_by_default_and_records_the_reload_as_pending_without_acting(node, tmp_path):
    busy = scenario(tmp_path, idle=False)
    proc = node.run("--after-upgrade", "apt", "--simulate", busy, "--json")
    assert proc.returncode == 13, proc.stderr
    document = json.loads(proc.stdout)
    jsonschema.Draft202012Validator(DEFERRED).validate(document)
    assert document["pending"]["reason"] == "policy_report" and document["pending"]["trigger"] == "apt"
    assert not node.journal.exists()  # no run started: nothing was stopped
    untouched(node, busy)


def test_when_idle_policy_on_a_busy_node_records_what_runs_and_signals_nothing(node, tmp_path):
    node.policy("on_upgrade = when-idle\n")
    busy = scenario(tmp_path, idle=False)
    proc = node.run("--after-upgrade", "apt", "--simulate", busy)
    assert proc.returncode == 13, proc.stderr
    assert "GPU work is running: container train-llm, container triton-infer, process python3 (pid 4242)" in (
        " ".join(proc.stdout.split())
    )
    record = json.loads(node.pending.read_text())
    assert record["reason"] == "busy" and {b["name"] for b in record["busy"]} == {
        "train-llm",
        "triton-infer",
        "python3",
    }
    assert not node.journal.exists()
    untouched(node, busy)


def test_when_idle_policy_on_an_idle_node_reloads_and_clears_the_pending_record(node, tmp_path):
    idle = scenario(tmp_path, idle=True)
    assert node.run("--after-upgrade", "apt", "--simulate", idle).returncode == 13  # report: pending
    assert node.pending.exists()
    node.policy("on_upgrade = when-idle\n")
    proc = node.run("--after-upgrade", "dnf", "--simulate", idle, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["result"] == "reloaded"
    assert not node.pending.exists()
    assert node.status(idle)["driver"]["kernel_module_version"] == DEFAULT_SCENARIO["driver"]["installed_version"]


def test_an_upgrade_that_needs_no_reload_does_nothing_and_forgets_a_stale_pending_record(node, tmp_path):
    node.pending.parent.mkdir(parents=True)
    node.pending.write_text("{stale")
    healthy = scenario(tmp_path, idle=False, mismatch=False)
    proc = node.run("--after-upgrade", "apt", "--simulate", healthy, "--json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    jsonschema.Draft202012Validator(DEFERRED).validate(document)
    assert document == {"schema_version": 1, "result": "not_needed", "recommended_action": "none"}
    assert not node.pending.exists() and not node.journal.exists()


def test_reload_when_idle_without_a_hook_reloads_an_idle_node_and_defers_on_a_busy_one(node, tmp_path):
    busy = scenario(tmp_path, idle=False)
    proc = node.run("--reload", "--when-idle", "--simulate", busy, "--yes")
    assert proc.returncode == 13 and json.loads(node.pending.read_text())["trigger"] == "manual"
    untouched(node, busy)
    idle = scenario(tmp_path, idle=True)
    assert node.run("--reload", "--when-idle", "--simulate", idle, "--yes").returncode == 0
    assert not node.pending.exists()


def test_status_and_the_metrics_show_a_pending_reload(node, tmp_path):
    busy = scenario(tmp_path, idle=False)
    node.run("--after-upgrade", "apt", "--simulate", busy)
    pending = node.status(busy)["reload"]["pending"]
    assert pending["reason"] == "policy_report" and pending["loaded_version"] == "550.90.07"
    human = node.run("--status", "--simulate", busy)
    assert "reload pending since" in human.stdout and "(apt)" in human.stdout
    metrics = node.run("--status", "--simulate", busy, "--format", "prometheus").stdout
    assert "\nnvreload_reload_pending 1\n" in metrics
    assert 'nvreload_reload_pending_since_seconds{trigger="apt",reason="policy_report"}' in metrics


def test_a_dry_run_of_the_hook_says_pending_and_writes_nothing(node, tmp_path):
    proc = node.run("--after-upgrade", "apt", "--simulate", scenario(tmp_path, idle=False), "--dry-run", "--json")
    assert proc.returncode == 13 and json.loads(proc.stdout)["result"] == "reload_pending"
    assert not node.pending.exists()


def test_a_wrong_policy_file_is_one_line_and_bad_input(node, tmp_path):
    node.policy("on_upgrade = always\n")
    proc = node.run("--after-upgrade", "apt", "--simulate", scenario(tmp_path, idle=False))
    assert proc.returncode == 66
    assert proc.stderr.strip().splitlines() == [
        f"nvreload: {tmp_path / 'nvreload.conf'}:1: on_upgrade must be one of report, when-idle"
    ]


@pytest.mark.parametrize(
    "args, says",
    [
        (["--status", "--when-idle"], "--when-idle goes with --reload, not --status"),
        (["--stop", "--when-idle"], "--when-idle goes with --reload, not --stop"),
        (["--after-upgrade", "apt", "--reload"], "--reload and --after-upgrade conflict"),
        (["--after-upgrade", "apt", "--driver", "x.run"], "no --driver"),
        (["--after-upgrade", "yum"], "'yum' is not one of"),
    ],
)
def test_flags_that_do_not_go_together_are_a_usage_error(node, args, says):
    proc = node.run(*args, "--simulate")
    assert proc.returncode == 64 and says in proc.stderr and "Traceback" not in proc.stderr
