"""The contract of every --json document: real commands on the simulated node (and the H100 capture),
each document validated against its schema in nvreload/schema/, which allows no field it does not name."""

import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from helpers import run_cli, status_of
from snapshot_builder import healthy_node

DEFAULT_SCENARIO = Path(resources.files("nvreload").joinpath("scenarios/default.json"))
LOAD = "[ 5.100000] NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  550.127.08  Release Build"
XID79 = "[ 9001.000000] NVRM: Xid (PCI:0000:3b:00): 79, pid=2311, name=python3, GPU has fallen off the bus."


def schema(name: str) -> dict:
    return json.loads(resources.files("nvreload").joinpath(f"schema/{name}.schema.json").read_text())


def assert_valid(document: dict, name: str) -> None:
    jsonschema.Draft202012Validator(schema(name)).validate(document)


def scenario(tmp_path: Path, faults: list | None = None, **driver: str) -> str:
    """The built-in scenario with these faults and driver fields, as a file."""
    data = json.loads(DEFAULT_SCENARIO.read_text())
    data["faults"] = faults or []
    data["driver"].update(driver)
    path = tmp_path / f"scenario-{len(list(tmp_path.glob('scenario-*')))}.json"
    path.write_text(json.dumps(data))
    return str(path)


def json_of(state_dir: Path, *args: str, exit_code: int = 0) -> dict:
    proc = run_cli(*args, "--json", env={"NVRELOAD_STATE_DIR": str(state_dir)}, timeout=120)
    assert proc.returncode == exit_code, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize(
    "schema_name",
    ["status", "run-report", "plan", "nothing-to-do", "deferred", "kernel-check", "verify", "collect", "scenario"],
)
def test_each_schema_is_a_valid_draft_2020_12_schema(schema_name):
    jsonschema.Draft202012Validator.check_schema(schema(schema_name))


@pytest.mark.parametrize(
    "faults, result, exit_code",
    [
        ([], "reloaded", 0),
        ([{"at": "stop_consumers", "error": "injected", "times": -1}], "rolled_back", 10),
        ([{"at": "load_modules", "error": "injected", "times": -1}], "failed", 11),
        # the old module is gone from disk: the reload is finished instead of undone, with a warning
        ([{"at": "verify", "error": "injected", "times": -1}], "failed", 11),
        ([{"at": "restart_consumers", "error": "injected", "times": -1}], "failed", 12),
    ],
)
def test_every_reload_outcome_is_a_valid_run_report(tmp_path, faults, result, exit_code):
    document = json_of(
        tmp_path / "state", "--reload", "--simulate", scenario(tmp_path, faults), "--yes", exit_code=exit_code
    )
    assert_valid(document, "run-report")
    assert document["result"] == result
    if exit_code == 12:
        assert document["remaining_action"] == "nvreload --start" and document["restart_failures"]
    if exit_code == 11:
        assert document["remaining_action"] == "reboot"
    if faults and faults[0]["at"] == "verify":
        assert "finished instead of undone" in document["warnings"][0]["warning"]


def test_stop_then_start_then_a_rollback_with_nothing_to_do(tmp_path):
    state = tmp_path / "state"
    stopped = json_of(state, "--stop", "--simulate", "--yes")
    assert_valid(stopped, "run-report")
    assert stopped["result"] == "stopped" and stopped["killed"] and stopped["stopped"]
    started = json_of(state, "--start", "--simulate", "--yes")
    assert_valid(started, "run-report")
    assert started["result"] == "started"
    nothing = json_of(state, "--rollback", "--simulate", "--yes")
    assert_valid(nothing, "nothing-to-do")
    assert nothing == {"schema_version": 1, "result": "nothing_to_do", "journal_state": "started"}


def test_a_reset_is_a_valid_run_report(tmp_path):
    same = scenario(tmp_path, installed_version="550.90.07")  # NVML answers: the loaded driver is the installed one
    document = json_of(tmp_path / "state", "--reset", "--simulate", same, "--yes")
    assert_valid(document, "run-report")
    assert document["result"] == "reset" and "reset_gpus" in [s["name"] for s in document["steps"]]


def test_a_dry_run_is_a_valid_plan_with_details(tmp_path):
    document = json_of(tmp_path / "state", "--reload", "--simulate", "--dry-run")
    assert_valid(document, "plan")
    assert "refused" not in document
    assert {"stop_container", "unload_module", "load_module", "start_container"} <= {
        a["action"] for a in document["plan"]
    }
    assert any("detail" in a for a in document["plan"])


def test_a_refused_dry_run_is_a_valid_plan_that_says_why(tmp_path):
    data = json.loads(DEFAULT_SCENARIO.read_text())
    data["kernel"]["modules_disabled"] = True
    (tmp_path / "blocked.json").write_text(json.dumps(data))
    document = json_of(
        tmp_path / "state", "--reload", "--simulate", str(tmp_path / "blocked.json"), "--dry-run", exit_code=77
    )
    assert_valid(document, "plan")
    assert "module_loading_disabled" in document["refused"]


def test_verify_is_a_valid_document_before_and_after_a_reload(tmp_path):
    state = tmp_path / "state"
    before = json_of(state, "--verify", "--simulate", exit_code=2)
    assert_valid(before, "verify")
    assert before["healthy"] is False
    json_of(state, "--reload", "--simulate", "--yes")
    after = json_of(state, "--verify", "--simulate")
    assert_valid(after, "verify")
    assert after["healthy"] is True


def test_collect_is_a_valid_document(tmp_path, h100_root):
    document = json_of(tmp_path / "state", "--collect", str(tmp_path / "node.tgz"), "--root", str(h100_root))
    assert_valid(document, "collect")
    assert document["collected"] == str(tmp_path / "node.tgz") and document["manifest"]["live"] is False


def test_a_field_the_schema_does_not_name_is_refused(tmp_path):
    document = json_of(tmp_path / "state", "--reload", "--simulate", "--yes")
    document["final"]["surprise"] = []
    with pytest.raises(jsonschema.ValidationError, match="surprise"):
        assert_valid(document, "run-report")


# --status: every document the tests can produce -----------------------------------------------------------------


def _status_documents(tmp_path: Path, h100_root: Path) -> dict[str, dict]:
    mismatch = healthy_node(tmp_path / "mismatch")
    mismatch.userspace("550.144.03")
    mismatch.on_disk_module("550.144.03")
    fallen = healthy_node(tmp_path / "fallen")
    fallen.dmesg([LOAD, XID79])
    fallen.gpu("0000:86:00.0", on_bus=False, minor=1)
    busy = healthy_node(tmp_path / "busy")
    busy.gpu("0000:af:00.0", driver=None, minor=2)
    busy.module("nvidia_peermem", "550.127.08")
    unreadable = tmp_path / "unreadable"
    (unreadable / "proc").mkdir(parents=True)
    (unreadable / "sys").mkdir()
    documents = {
        name: status_of(root)
        for name, root in (
            ("h100", h100_root),
            ("healthy", healthy_node(tmp_path / "healthy").root),
            ("mismatch", mismatch.root),
            ("fallen", fallen.root),
            ("busy", busy.root),
            ("unreadable", unreadable),
        )
    }
    state = tmp_path / "state"
    documents["simulated"] = json_of(state, "--status", "--simulate", exit_code=2)
    json_of(state, "--reload", "--simulate", "--yes")
    documents["simulated-reloaded"] = json_of(state, "--status", "--simulate")
    return documents


def test_every_status_document_is_valid_against_the_closed_status_schema(tmp_path, h100_root):
    for name, document in _status_documents(tmp_path, h100_root).items():
        try:
            assert_valid(document, "status")
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{name}: {exc.message} at {list(exc.absolute_path)}")
