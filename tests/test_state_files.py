import json

import pytest

from nvreload.state_files import StatePaths, atomic_write_json


def test_the_journal_outlives_a_reboot_and_the_lock_and_cache_do_not():
    paths = StatePaths.from_environment({})
    assert paths.journal == "/var/lib/nvreload/journal.json"
    assert (paths.lock, paths.modinfo_cache) == ("/run/nvreload/lock", "/run/nvreload/modinfo-cache.json")


def test_one_variable_moves_every_file(tmp_path):
    paths = StatePaths.from_environment({"NVRELOAD_STATE_DIR": str(tmp_path)})
    assert {paths.journal, paths.lock, paths.modinfo_cache} == {
        str(tmp_path / "journal.json"), str(tmp_path / "lock"), str(tmp_path / "modinfo-cache.json")}


def test_an_atomic_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / "deep" / "state.json"
    atomic_write_json(str(path), {"a": 1})
    atomic_write_json(str(path), {"b": 2}, durable=False)
    assert json.loads(path.read_text()) == {"b": 2}
    assert [p.name for p in path.parent.iterdir()] == ["state.json"]


def test_a_failed_write_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "is-a-directory"
    target.mkdir()
    with pytest.raises(OSError):
        atomic_write_json(str(target), {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["is-a-directory"]
