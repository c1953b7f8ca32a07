import json
from importlib import resources

import jsonschema
from fleet_documents import result, status, write_facts

from nvreload.fleet.amounts import Amount, parse_serial
from nvreload.fleet.gate import decide_gate
from nvreload.fleet.plan import FleetPolicy, make_plan
from nvreload.fleet.report import build_report, table
from nvreload.fleet.rundir import RunDir

SCHEMA = json.loads(resources.files("nvreload").joinpath("schema/fleet-report.schema.json").read_text())
HOSTS = ["n1", "n2", "n3", "n4", "n5"]


def planned(tmp_path, **per_host) -> RunDir:
    run_dir = RunDir(tmp_path / "run")
    for host in HOSTS:
        if per_host.get(host) != "unreachable":
            write_facts(run_dir, host, **(per_host.get(host) or {}))
    policy = FleetPolicy(Amount.parse("100%", "m"), 1, parse_serial("[1, 2]"))
    run_dir.write(make_plan(HOSTS, run_dir, policy, "fleet-1").document(), "plan.json")
    return run_dir


def ran(run_dir: RunDir, host: str, outcome: str | None, **extra) -> None:
    run_dir.write({"schema_version": 1, "host": host}, "started", f"{host}.json")
    if outcome is not None:
        run_dir.write(result(host, outcome, **extra), "results", f"{host}.json")


def test_a_failed_canary_halts_whatever_the_failure_budget(tmp_path):
    run_dir = planned(tmp_path)
    ran(run_dir, "n1", "rolled_back")
    decision = decide_gate(run_dir, max_fail_percentage=100)
    assert decision.halt and "the canary failed (n1)" in decision.why


def test_a_failed_node_after_the_canary_halts_at_the_default_budget_and_names_it(tmp_path):
    run_dir = planned(tmp_path)
    ran(run_dir, "n1", "reloaded")
    ran(run_dir, "n2", "reloaded")
    ran(run_dir, "n3", "failed")
    decision = decide_gate(run_dir, max_fail_percentage=0)
    assert decision.halt and "1 of 3 started nodes failed (n3)" in decision.why


def test_a_failure_within_the_budget_lets_the_rollout_go_on(tmp_path):
    run_dir = planned(tmp_path)
    ran(run_dir, "n1", "reloaded")
    ran(run_dir, "n2", "reloaded")
    ran(run_dir, "n3", "failed")
    assert not decide_gate(run_dir, max_fail_percentage=50).halt


def test_a_started_node_with_no_result_counts_as_failed(tmp_path):
    run_dir = planned(tmp_path)
    ran(run_dir, "n1", "reloaded")
    ran(run_dir, "n2", None)
    decision = decide_gate(run_dir, max_fail_percentage=0)
    assert decision.halt and "(n2)" in decision.why


def test_the_report_gives_every_node_its_state_and_fails_when_one_failed(tmp_path):
    run_dir = planned(
        tmp_path,
        n4={"doc": status(loaded="550.127.08", action="none")},
        n5="unreachable",
    )
    ran(run_dir, "n1", "reloaded")
    ran(run_dir, "n2", "rolled_back", left_drained="nvreload: driver reload failed, rolled back (run r-n2)")
    report = build_report(run_dir, halted="1 of 2 started nodes failed (n2)")
    states = {n.host: n.state for n in report.nodes}
    assert states == {
        "n1": "reloaded",
        "n2": "rolled_back",
        "n3": "not_attempted",
        "n4": "skipped_healthy",
        "n5": "unreachable",
    }
    assert report.failed and report.result == "failed"
    document = report.document()
    jsonschema.validate(document, SCHEMA)
    assert document["totals"]["not_attempted"] == 1 and document["nodes"][1]["left_drained"].startswith("nvreload:")


def test_the_table_has_a_line_per_node_and_says_why_the_rollout_halted(tmp_path):
    run_dir = planned(tmp_path)
    ran(run_dir, "n1", "reloaded")
    ran(run_dir, "n2", "failed")
    text = table(build_report(run_dir, halted="1 of 2 started nodes failed (n2)"))
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["NODE", "STATE"]
    assert any(line.startswith("n2") and "failed" in line and "rmmod" in line for line in lines)
    assert "halted: 1 of 2 started nodes failed (n2)" in text


def test_a_rollout_where_every_node_was_reloaded_or_skipped_is_done(tmp_path):
    run_dir = planned(tmp_path, n2={"doc": status(loaded="550.127.08", action="none")})
    for host in ("n1", "n3", "n4", "n5"):
        ran(run_dir, host, "reloaded")
    report = build_report(run_dir)
    assert report.result == "done" and not report.failed
