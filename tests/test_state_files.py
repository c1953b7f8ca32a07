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
        str(tmp_path / "journal.json"),
        str(tmp_path / "lock"),
        str(tmp_path / "modinfo-cache.json"),
    }


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


class FillsTheDisk:
    """A file object on a filesystem that fills up half-way through the write (ENOSPC)."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, text):
        self.handle.write(text[: len(text) // 2])
        self.handle.flush()
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.close()


def test_a_write_that_fails_half_way_leaves_the_old_journal_intact_and_no_temporary_file(tmp_path, monkeypatch):
    import os

    journal = tmp_path / "journal.json"
    atomic_write_json(str(journal), {"state": "running", "undo": [{"seq": 1}]})
    before = journal.read_bytes()
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, mode="r": FillsTheDisk(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match="No space left"):
        atomic_write_json(str(journal), {"state": "rolling_back", "undo": [{"seq": n} for n in range(100)]})
    assert journal.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["journal.json"]


def test_a_value_that_cannot_be_serialised_leaves_the_old_journal_intact(tmp_path):
    journal = tmp_path / "journal.json"
    atomic_write_json(str(journal), {"state": "running"})
    with pytest.raises(TypeError):
        atomic_write_json(str(journal), {"state": "failed", "result": {"when": object()}})
    assert json.loads(journal.read_text()) == {"state": "running"}
    assert [p.name for p in tmp_path.iterdir()] == ["journal.json"]


def test_a_durable_write_fsyncs_the_new_file_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    import os

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source, destination, **dir_fds):
        # names relative to the one directory opened for the write (write_new_file)
        events.append(("replace", str(source), str(destination)))
        real_replace(source, destination, **dir_fds)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    journal = str(tmp_path / "journal.json")
    atomic_write_json(journal, {"state": "running"})
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"], events
    (_, synced_file), (_, temporary, destination), (_, synced_directory) = events
    assert synced_file == str(tmp_path / temporary) and temporary.startswith(".nvreload-")
    assert destination == "journal.json" and synced_directory == str(tmp_path)
    events.clear()
    atomic_write_json(journal, {"state": "running"}, durable=False)  # the simulated node's: no fsync asked
    assert [e[0] for e in events] == ["replace"]
