"""The engine's loaders of files a person or a crash may have damaged, under hypothesis: the journal
(journal.json and its appended records) and a --simulate scenario. Whatever the files hold, loading
gives a journal or a scenario whose every part has the type the engine relies on, or one line of
JournalError / ScenarioError; never an exception that would end in exit 70."""

from __future__ import annotations

import json
from importlib import resources

import pytest
from fuzzing import FUZZ, NUMBERS, TRICKY, conforms, mutated_document, mutated_line
from hypothesis import given
from hypothesis import strategies as st

from nvreload.engine.journal import UNDO_KINDS, Journal, JournalContext, UndoRecord
from nvreload.engine.planner import build_plan
from nvreload.engine.sim import SimulatedNode, load_scenario
from nvreload.errors import JournalError, ScenarioError


def json_values() -> st.SearchStrategy[object]:
    scalar = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.sampled_from(NUMBERS + TRICKY + UNDO_KINDS)
        | st.text(max_size=16)
    )
    return st.recursive(
        scalar,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=6,
    )


def _paths(value: object, path: tuple = ()) -> list[tuple]:
    """Every place in a JSON document, as the keys and indexes that lead there."""
    found = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, path + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, path + (index,))
    return found


@st.composite
def mutated_json(draw: st.DrawFn, document: object) -> object:
    """`document` with up to three of its values replaced by any JSON value, removed, or repeated:
    the shape checks see a document that is right everywhere but there."""
    document = json.loads(json.dumps(document))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(document)))
        if not path:
            document = draw(json_values())
            continue
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(("replace", "replace", "remove", "repeat")))
        if op == "replace":
            parent[path[-1]] = draw(json_values())
        elif op == "remove":
            del parent[path[-1]]
        elif isinstance(parent, list):
            parent.insert(path[-1], parent[path[-1]])
        else:
            parent[path[-1] + "_"] = parent[path[-1]]
    return document


def file_text(document: object, lines: int = 1) -> st.SearchStrategy[str]:
    """A JSON file as it may be found: the document mutated, its text mutated, or any text."""
    text = json.dumps(document, indent=1 if lines > 1 else None)
    return st.one_of(
        mutated_json(document).map(json.dumps), mutated_document((text.splitlines(),)), st.text(max_size=400)
    )


# the journal ----------------------------------------------------------------------------------------


class RealJournal(tuple):
    """(document, records); its repr keeps hypothesis's report of a failing example readable."""

    def __repr__(self) -> str:
        return "<the journal of a crashed run>"


@pytest.fixture(scope="module")
def real_journal(tmp_path_factory) -> RealJournal:
    """A journal as a run leaves it after a crash: its document and the records appended since."""
    path = str(tmp_path_factory.mktemp("journal") / "journal.json")
    journal = Journal.start(
        path,
        "reload",
        [{"action": "stop_container", "target": "train"}],
        JournalContext("gpu-node-17", "550.127.08", {"live_restore": False}, "550.127.08"),
    )
    journal.step_started("stop_consumers")
    journal.save()  # a step boundary: what came before is in the document
    record = journal.intend("stop_container", "c0ffee", {"name": "train", "restart_policy": "always"})
    journal.mark(record, "done")
    journal.intend("unload_module", "nvidia_uvm", {"parameters": {"uvm_disable_hmm": "1"}})
    journal.add_killed({"pid": 4242, "comm": "python", "signal": "SIGTERM"})
    journal.set_modules([("nvidia", {"NVreg_EnableGpuFirmware": "0"}), ("nvidia_uvm", {})])
    journal.close()
    with open(path) as document, open(journal.records_path) as records:
        return RealJournal((json.load(document), [json.loads(line) for line in records.read().splitlines()]))


def _check_journal(journal: Journal) -> None:
    """What --rollback and --start read of a loaded journal has the types they rely on."""
    assert conforms(journal.run_id, str) and conforms(journal.action, str) and conforms(journal.state, str)
    assert conforms(journal.unfinished, bool)
    assert conforms(journal.modules, list[tuple[str, dict[str, str]]]), journal.modules
    assert conforms(journal.module_version_before, str | None)
    assert conforms(journal.killed, list[dict])
    assert conforms(journal.last_step, tuple[str, str] | None)
    for record in journal.outstanding():
        assert conforms(record, UndoRecord) and record.kind in UNDO_KINDS
        assert journal.find(record.kind, record.target) is not None


@st.composite
def record_log(draw: st.DrawFn, records: list[dict]) -> str:
    """journal.json.records as a crash or a hand may leave it: one record changed or gone, a line
    mangled, a last append torn."""
    lines = [json.dumps(r) for r in records]
    i = draw(st.integers(0, len(lines) - 1))
    op = draw(st.sampled_from(("keep", "change", "change", "drop", "mangle", "torn")))
    if op == "change":
        lines[i] = json.dumps(draw(mutated_json(records[i])))
    elif op == "drop":
        del lines[i]
    elif op == "mangle":
        lines[i] = draw(mutated_line(lines[i]))
    text = "".join(line + "\n" for line in lines)
    return text + '{"n": 99, "event": "int' if op == "torn" else text


@FUZZ
@given(st.data())
def test_a_damaged_journal_loads_whole_or_is_one_journal_error(tmp_path, real_journal, data):
    document, records = real_journal
    path = tmp_path / "journal.json"
    path.write_text(data.draw(file_text(document, lines=40), label="journal.json"))
    path.with_name("journal.json.records").write_text(
        data.draw(record_log(records) | st.text(max_size=300), label="journal.json.records")
    )
    try:
        journal = Journal.load(str(path))
    except JournalError as exc:
        assert exc.message and "\n" not in exc.message
        return
    _check_journal(journal)


# the scenario ---------------------------------------------------------------------------------------

DEFAULT_SCENARIO = json.loads(resources.files("nvreload").joinpath("scenarios/default.json").read_text())


@FUZZ
@given(file_text(DEFAULT_SCENARIO, lines=200))
def test_a_damaged_scenario_is_one_scenario_error_or_a_node_that_plans(tmp_path, text):
    path = tmp_path / "scenario.json"
    path.write_text(text)
    try:
        scenario = load_scenario(str(path))
    except ScenarioError as exc:
        assert exc.message and "\n" not in exc.message
        return
    node = SimulatedNode(scenario, str(tmp_path / "state"), replace=True, persist=False)
    build_plan(node.observe())
