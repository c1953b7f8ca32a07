"""The journal's undo log: each change written as intended before it happens and marked done after,
so a crash between the two still leaves what rollback needs; a journal of the wrong shape is refused
before anything acts on it."""

import json
import os

import pytest
from helpers import run_cli
from sim_helpers import assert_consistent, node_state, write_scenario

from nvreload.engine.engine import Engine
from nvreload.engine.journal import Journal, JournalContext
from nvreload.engine.planner import build_plan
from nvreload.engine.sim import SimulatedNode
from nvreload.errors import ExitCode, JournalError


class ProcessDied(BaseException):
    """Stands for the death of the process (SIGKILL, power loss) between an action and its record."""


TRAIN, INFER = "7a" * 32, "1f" * 32  # container ids as the engine journals them


def test_a_stop_is_recorded_as_intended_before_the_container_is_touched(tmp_path):
    scenario = json.loads(open(write_scenario(tmp_path)).read())
    journal_path = tmp_path / "state" / "journal.json"
    seen = []

    class Watching(SimulatedNode):
        def stop_container(self, container_id, timeout):
            on_disk = [r.as_dict() for r in Journal.load(str(journal_path)).undo]  # the document and its records
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
    on_disk = Journal.load(str(journal_path))
    assert on_disk.state == "running"
    assert any(r.kind == "stop_container" and r.state == "intended" for r in on_disk.undo)

    report = Engine(SimulatedNode(scenario, str(state)), Journal.load(str(journal_path))).resume()
    assert report.result == "rolled_back"
    assert_consistent(node_state(state))
    assert json.loads(journal_path.read_text())["state"] == "rolled_back"


@pytest.mark.parametrize(
    "change,problem",
    [
        ({"undo": {"containers": []}}, "'undo' missing or not a list"),
        ({"state": "paused"}, "state 'paused'"),
        ({"schema_version": 1}, "schema_version 1"),
        (
            {"undo": [{"seq": 1, "kind": "format_disk", "target": "/", "detail": {}, "state": "done"}]},
            "undo record of the wrong shape",
        ),
    ],
)
def test_a_journal_of_the_wrong_shape_is_refused_before_anything_acts_on_it(tmp_path, change, problem):
    state = tmp_path / "state"
    state.mkdir()
    good = {
        "schema_version": 2,
        "run_id": "x",
        "action": "reload",
        "state": "running",
        "plan": [],
        "steps": [],
        "modules": [],
        "undo": [],
        "killed": [],
        "context": {},
    }
    (state / "journal.json").write_text(json.dumps(good | change))
    before = (state / "journal.json").read_text()
    proc = run_cli("--rollback", "--simulate", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
    assert problem in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert (state / "journal.json").read_text() == before  # not set to rolling_back, not rewritten
    with pytest.raises(JournalError, match="not an nvreload journal"):
        Journal.load(str(state / "journal.json"))


@pytest.mark.parametrize(
    "content", ['{"schema_version": 2, "state": "mystery"}', "{truncated", '{"schema_version": 2}']
)
def test_a_reload_over_a_journal_it_cannot_read_moves_it_aside_and_stops_there(tmp_path, content):
    # an unknown or missing state is not "finished": the record of what an earlier run stopped is kept
    state = tmp_path / "state"
    state.mkdir()
    (state / "journal.json").write_text(content)
    proc = run_cli("--reload", "--simulate", "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    assert proc.returncode == ExitCode.BAD_INPUT, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "moved to " in proc.stderr
    aside = proc.stderr.split("moved to ")[1].split(":")[0]
    assert os.path.dirname(aside) == str(state) and os.path.basename(aside).startswith("journal.json.unusable-")
    assert open(aside).read() == content
    assert not (state / "journal.json").exists()
    if (state / "sim-node.json").exists():
        assert_consistent(node_state(state))  # nothing was stopped
    again = run_cli("--reload", "--simulate", "--yes", "--json", env={"NVRELOAD_STATE_DIR": str(state)})
    assert again.returncode == 0, again.stderr
    assert open(aside).read() == content  # the new run's journal went beside it, not over it


def test_intent_and_mark_reject_what_is_not_an_undo_kind_or_a_record_state(tmp_path):
    journal = Journal.start(str(tmp_path / "journal.json"), "reload", [], JournalContext("simulated"))
    with pytest.raises(ValueError, match="not an undo kind"):
        journal.intend("killed", "42")
    record = journal.intend("stop_service", "nvidia-persistenced.service")
    with pytest.raises(ValueError, match="not a record state"):
        journal.mark(record, "half-done")


def _journal(tmp_path) -> Journal:
    return Journal.start(str(tmp_path / "journal.json"), "reload", [], JournalContext("simulated"))


def test_the_records_of_a_run_are_appended_while_the_document_is_left_alone(tmp_path):
    # the document rewritten per record made 2,000 containers write gigabytes: each record costs one line
    journal = _journal(tmp_path)
    document = os.stat(journal.path)
    for number in range(500):
        journal.mark(journal.intend("stop_container", f"{number:064x}"), "done")
    journal.add_killed({"pid": 7, "comm": "python3", "outcome": "terminated"})
    after = os.stat(journal.path)
    assert (after.st_ino, after.st_size) == (document.st_ino, document.st_size)
    assert len(open(journal.records_path, "rb").read().splitlines()) == 1001
    loaded = Journal.load(journal.path)
    assert [(r.target, r.state) for r in loaded.undo[:2]] == [(f"{0:064x}", "done"), (f"{1:064x}", "done")] and len(
        loaded.undo
    ) == 500
    assert loaded.killed == [{"pid": 7, "comm": "python3", "outcome": "terminated"}]


def test_a_step_boundary_folds_the_records_into_the_document_and_removes_the_log(tmp_path):
    journal = _journal(tmp_path)
    journal.intend("stop_service", "nvidia-persistenced.service")
    journal.step_finished("stop_consumers", "done")
    assert not os.path.exists(journal.records_path)
    assert [r["target"] for r in json.loads(open(journal.path).read())["undo"]] == ["nvidia-persistenced.service"]


def test_a_record_torn_by_a_crash_is_dropped_and_the_ones_before_it_are_kept(tmp_path):
    journal = _journal(tmp_path)
    journal.intend("stop_container", TRAIN)
    journal.intend("stop_container", INFER)
    with open(journal.records_path, "ab") as log:
        log.write(b'{"event": "mark", "n": 3, "se')  # the process died inside this write
    assert [(r.target, r.state) for r in Journal.load(journal.path).undo] == [
        (TRAIN, "intended"),
        (INFER, "intended"),
    ]


def test_records_the_document_already_holds_are_not_replayed_twice(tmp_path):
    # a crash after the document was rewritten at a boundary, before the log was emptied
    journal = _journal(tmp_path)
    journal.intend("stop_container", TRAIN)
    left_over = open(journal.records_path, "rb").read()
    journal.step_finished("stop_consumers", "done")
    with open(journal.records_path, "wb") as log:
        log.write(left_over)
    assert [r.target for r in Journal.load(journal.path).undo] == [TRAIN]


@pytest.mark.parametrize(
    "line,problem",
    [
        (b"not json\n", "line 1: not a journal record"),
        (b'{"n": 1, "event": "format_disk"}\n', "an unknown record 'format_disk'"),
        (b'{"n": 5, "event": "killed", "entry": {}}\n', "record 5 follows record 0: records are missing"),
        (b'{"n": 1, "event": "mark", "seq": 9, "state": "done"}\n', "a mark of the wrong shape"),
    ],
)
def test_a_damaged_record_log_is_refused_as_bad_input_naming_the_line(tmp_path, line, problem):
    journal = _journal(tmp_path)
    with open(journal.records_path, "wb") as log:
        log.write(line)
    with pytest.raises(JournalError, match=problem):
        Journal.load(journal.path)
