"""The reload-pending record (nvreload/pending.py): written atomically, read strictly, its first time kept."""

import json

import pytest

from nvreload.errors import BadInputError
from nvreload.pending import PendingReload, clear_pending, read_pending, record_pending


def due(at: float, reason: str = "busy", trigger: str = "apt") -> PendingReload:
    busy = ({"kind": "container", "name": "trainer", "id": "abc"},) if reason == "busy" else ()
    return PendingReload(at, at, trigger, reason, busy, "550.90.07", "550.127.08")


def test_a_record_reads_back_as_written(tmp_path):
    path = str(tmp_path / "reload-pending.json")
    record_pending(path, due(100.0))
    assert read_pending(path) == due(100.0)


def test_a_second_record_keeps_the_time_the_reload_first_became_due(tmp_path):
    path = str(tmp_path / "reload-pending.json")
    record_pending(path, due(100.0))
    again = record_pending(path, due(250.0, reason="policy_report", trigger="dnf"))
    assert (again.since, again.updated, again.reason, again.trigger) == (100.0, 250.0, "policy_report", "dnf")
    assert read_pending(path) == again


def test_a_record_of_other_versions_is_history_and_the_new_one_is_due_since_now(tmp_path):
    # a reboot or a reload by hand came between, and no hook run forgot the old record
    path = str(tmp_path / "reload-pending.json")
    record_pending(path, due(100.0))
    later = PendingReload(900.0, 900.0, "apt", "busy", (), "550.127.08", "570.86.15")
    assert record_pending(path, later).since == 900.0
    assert read_pending(path) == later


def test_no_record_is_none_and_clearing_it_says_there_was_none(tmp_path):
    path = str(tmp_path / "reload-pending.json")
    assert read_pending(path) is None
    assert clear_pending(path) is False
    record_pending(path, due(1.0))
    assert clear_pending(path) is True and read_pending(path) is None


@pytest.mark.parametrize(
    "content, says",
    [
        ("{not json", "not JSON"),
        ("[]", "not an object"),
        (json.dumps({**due(1.0).document(), "schema_version": 2}), "schema_version 2"),
        (json.dumps({**due(1.0).document(), "since": "yesterday"}), "since is not a time"),
        (json.dumps({**due(1.0).document(), "reason": "because"}), "reason 'because'"),
        (json.dumps({**due(1.0).document(), "busy": ["trainer"]}), "busy is not a list of objects"),
    ],
)
def test_a_damaged_record_is_bad_input_naming_what_is_wrong(tmp_path, content, says):
    path = tmp_path / "reload-pending.json"
    path.write_text(content)
    with pytest.raises(BadInputError) as raised:
        read_pending(str(path))
    assert says in raised.value.message and str(path) in raised.value.message


def test_a_damaged_record_is_replaced_by_a_new_one_with_its_own_time(tmp_path):
    path = tmp_path / "reload-pending.json"
    path.write_text("{not json")
    assert record_pending(str(path), due(42.0)).since == 42.0
    assert read_pending(str(path)) == due(42.0)
