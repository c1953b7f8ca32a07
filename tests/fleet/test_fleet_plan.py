from fleet_documents import status, write_facts

from nvreload.fleet.amounts import Amount, parse_serial
from nvreload.fleet.plan import FleetPolicy, make_plan
from nvreload.fleet.rundir import RunDir


def policy(max_unavailable="25%", canary=1, batches='[1, "10%", "25%"]') -> FleetPolicy:
    return FleetPolicy(Amount.parse(max_unavailable, "m"), canary, parse_serial(batches))


def fleet(tmp_path, hosts=("n1", "n2", "n3", "n4"), **per_host) -> RunDir:
    run_dir = RunDir(tmp_path / "run")
    for host in hosts:
        if per_host.get(host) != "unreachable":
            write_facts(run_dir, host, **(per_host.get(host) or {}))
    return run_dir


def test_nodes_needing_a_reload_are_targets_in_inventory_order_the_canary_first(tmp_path):
    run_dir = fleet(tmp_path, n2={"doc": status(loaded="550.127.08", action="none")})
    plan = make_plan(["n1", "n2", "n3", "n4"], run_dir, policy())
    assert plan.targets == ["n1", "n3", "n4"] and plan.document()["canary"] == ["n1"]
    assert plan.nodes["n2"].verdict == "healthy" and plan.batches == [1, 1, 1]
    assert plan.refused is None


def test_a_node_without_facts_is_unreachable_and_counts_as_out_of_service(tmp_path):
    run_dir = fleet(tmp_path, n3="unreachable")
    plan = make_plan(["n1", "n2", "n3", "n4"], run_dir, policy(max_unavailable="50%"))
    assert plan.nodes["n3"].verdict == "unreachable" and plan.out_at_once == 2


def test_the_rollout_is_refused_when_nodes_already_out_and_a_batch_exceed_max_unavailable(tmp_path):
    run_dir = fleet(tmp_path, n4={"slurm": ("IDLE+DRAIN", "disk swap (admin)")})
    plan = make_plan(["n1", "n2", "n3", "n4"], run_dir, policy(max_unavailable="25%"))
    assert plan.nodes["n4"].drained_by == "admin"
    assert plan.refused is not None and "2 of 4 nodes would be out of service at once" in plan.refused
    assert "n4" in plan.refused and "nvreload_max_unavailable=25%" in plan.refused


def test_the_same_rollout_is_allowed_when_max_unavailable_leaves_room(tmp_path):
    run_dir = fleet(tmp_path, n4={"slurm": ("IDLE+DRAIN", "disk swap (admin)")})
    assert make_plan(["n1", "n2", "n3", "n4"], run_dir, policy(max_unavailable="2")).refused is None


def test_an_admin_drained_node_in_a_batch_adds_nothing_to_what_is_out(tmp_path):
    # batches of two: n1 (drained already) and n2, then n3. At most n1 and one other node are out
    # at once; counting n1 again in its batch would make it three and refuse a rollout that fits
    run_dir = fleet(tmp_path, hosts=("n1", "n2", "n3"), n1={"slurm": ("IDLE+DRAIN", "admin")})
    plan = make_plan(["n1", "n2", "n3"], run_dir, policy(max_unavailable="2", canary=0, batches="[2]"))
    assert plan.batches == [2, 1] and plan.out_at_once == 2 and plan.refused is None


def test_a_blocked_node_is_never_a_target(tmp_path):
    run_dir = fleet(tmp_path, n2={"doc": status(action="service_hardware", findings=[])})
    plan = make_plan(["n1", "n2", "n3", "n4"], run_dir, policy())
    assert "n2" not in plan.targets and plan.nodes["n2"].verdict == "blocked"
    assert "service hardware" in plan.nodes["n2"].why


def test_a_healthy_node_an_earlier_run_left_drained_is_a_target_so_it_is_finished(tmp_path):
    run_dir = fleet(
        tmp_path,
        n2={
            "doc": status(loaded="550.127.08", action="none"),
            "slurm": ("IDLE+DRAIN", "nvreload: driver reload (run 1)"),
        },
    )
    plan = make_plan(["n1", "n2", "n3", "n4"], run_dir, policy(max_unavailable="50%"))
    assert "n2" in plan.targets and plan.nodes["n2"].drained_by == "nvreload"


def test_a_node_an_earlier_run_still_holds_is_a_target_that_names_that_run(tmp_path):
    # its reload step counts that run as this rollout's when the run's journal says it reloaded
    run_dir = fleet(tmp_path, n2={"busy": True, "journal_unfinished": True, "unfinished_run": "R-7"})
    plan = make_plan(["n1", "n2", "n3", "n4"], run_dir, policy(max_unavailable="50%"))
    assert "n2" in plan.targets and plan.nodes["n2"].earlier_run == "R-7"
    assert plan.document()["nodes"]["n2"]["earlier_run"] == "R-7" and plan.nodes["n1"].earlier_run is None


def test_drift_findings_are_listed_per_node(tmp_path):
    drifted = status(
        findings=[
            {"code": "version_mismatch", "action": "reload", "message": "m"},
            {"code": "drift_driver_version", "action": "reload", "message": "d"},
        ]
    )
    run_dir = fleet(tmp_path, n1={"doc": drifted})
    assert make_plan(["n1", "n2", "n3", "n4"], run_dir, policy()).nodes["n1"].drift == ["drift_driver_version"]
