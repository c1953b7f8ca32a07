"""The journal's undo log: each change written as intended before it happens and marked done after,
so a crash between the two still leaves what rollback needs; a journal of the wrong shape is refused
before anything acts on it."""

import json

import pytest

from helpers import run_cli
from nvreload.engine.engine import Engine
from nvreload.engine.journal import Journal, JournalContext
from nvreload.engine.planner import build_plan
from nvreload.engine.sim import SimulatedNode
from nvreload.errors import ExitCode, JournalError
from sim_helpers import assert_consistent, node_state, write_scenario


class ProcessDied(BaseException):
    """Stands for the death of the process (SIGKILL, power loss) between an action and its record."""


def test_a_stop_is_recorded_as_intended_before_the_container_is_touched(tmp_path):
    scenario = json.loads(open(write_scenario(tmp_path)).read())
    journal_path = tmp_path / "state" / "journal.json"
    seen = []

    class Watching(SimulatedNode):
        def stop_container(self, container_id, timeout):
            on_disk = json.loads(journal_path.read_text())["undo"]
            seen.append([(r["kind"], r["target"], r["state"]) for r in on_disk if r["target"] == container_id])
            super().stop_container(container_id, timeout)

    node = Watching(scenario, str(tmp_path / "state"))
    journal = Journal.start(str(journal_path), "stop", [], JournalContext("simulated"))
    report = Engine(node, journal).stop(build_plan(node.observe(), stop_only=True))
    assert report.result == "stopped"
    assert seen and all(records == [("stop_container", records[0][1], "intended")] for records in seen)
    after = json.loads(journal_path.read_text())["undo"]
    assert {r["state"] for r in after if r["kind"] == "stop_container"} == {"done"}


def test_a_crash_between_a_container_stop_and_its_record_still_brings_the_container_back(tmp_path):
    scenario = json.loads(open(write_scenario(tmp_path)).read())
    state = tmp_path / "state"
    journal_path = state / "journal.json"

    class DiesAfterStopping(SimulatedNode):
        def stop_container(self, container_id, timeout):
            super().stop_container(container_id, timeout)
            raise ProcessDied()  # stopped, and the process is gone before it could say so

    node = DiesAfterStopping(scenario, str(state))
    journal = Journal.start(str(journal_path), "reload", [], JournalContext("simulated"))
    with pytest.raises(ProcessDied):
        Engine(node, journal, workers=1).reload(build_plan(node.observe()))
    stopped = [c["name"] for c in node_state(state)["containers"] if not c["running"]]
    assert stopped  # the crash left a container down
    on_disk = json.loads(journal_path.read_text())
    assert on_disk["state"] == "running"
    assert any(r["kind"] == "stop_container" and r["state"] == "intended" for r in on_disk["undo"])

    report = Engine(SimulatedNode(scenario, str(state)), Journal.load(str(journal_path))).resume()
    assert report.result == "rolled_back"
    assert_consistent(node_state(state))
    assert json.loads(journal_path.read_text())["state"] == "rolled_back"


@pytest.mark.parametrize("change,problem", [
    ({"undo": {"containers": []}}, "'undo' missing or not a list"),
    ({"state": "paused"}, "state 'paused'"),
    ({"schema_version": 1}, "schema_version 1"),
    ({"undo": [{"seq": 1, "kind": "format_disk", "target": "/", "detail": {}, "state": "done"}]}, "undo record of the wrong shape"),
])
def test_a_journal_of_the_wrong_shape_is_refused_before_anything_acts_on_it(tmp_path, change, problem):
    state = tmp_path / "state"
    state.mkdir()
    good = {"schema_version": 2, "run_id": "x", "action": "reload", "state": "running", "plan": [], "steps": [],
            "modules": [], "undo": [], "killed": [], "context": {}}
    (state / "journal.json").write_text(json.dumps(good | change))
    before = (state / "journal.json").read_text()
    proc = run_cli("--rollback", "--simulate", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
    assert problem in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert (state / "journal.json").read_text() == before  # not set to rolling_back, not rewritten
    with pytest.raises(JournalError, match="not an nvreload journal"):
        Journal.load(str(state / "journal.json"))


def test_intent_and_mark_reject_what_is_not_an_undo_kind_or_a_record_state(tmp_path):
    journal = Journal.start(str(tmp_path / "journal.json"), "reload", [], JournalContext("simulated"))
    with pytest.raises(ValueError, match="not an undo kind"):
        journal.intend("killed", "42")
    record = journal.intend("stop_service", "nvidia-persistenced.service")
    with pytest.raises(ValueError, match="not a record state"):
        journal.mark(record, "half-done")
