import json

import pytest

from nvreload.engine.lock import lock_path
from nvreload.host.modinfo_cache import default_cache_path
from nvreload.state_files import atomic_write_json, runtime_dir, state_dir


def test_the_journal_outlives_a_reboot_and_the_lock_and_cache_do_not(monkeypatch):
    monkeypatch.delenv("NVRELOAD_STATE_DIR", raising=False)
    assert state_dir() == "/var/lib/nvreload"
    assert (runtime_dir(), lock_path(), default_cache_path()) == (
        "/run/nvreload", "/run/nvreload/lock", "/run/nvreload/modinfo-cache.json")


def test_one_variable_moves_every_file(monkeypatch, tmp_path):
    monkeypatch.setenv("NVRELOAD_STATE_DIR", str(tmp_path))
    assert state_dir() == runtime_dir() == str(tmp_path)
    assert lock_path() == str(tmp_path / "lock")


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
