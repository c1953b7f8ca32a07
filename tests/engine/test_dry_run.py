"""--dry-run shows what the real run would do, in the words of a plan: the same refusals and exit
codes, steps that are "planned" (never "done"), and a --rollback or --start dry run that walks the
journal as the real one would, writing nothing."""

import json

from helpers import run_cli
from sim_helpers import node_state


def _env(tmp_path) -> dict:
    return {"NVRELOAD_STATE_DIR": str(tmp_path / "state")}


def test_a_dry_run_rollback_of_a_stopped_run_lists_what_it_would_start_and_writes_nothing(tmp_path):
    env = _env(tmp_path)
    assert run_cli("--stop", "--simulate", "--yes", "--json", env=env).returncode == 0
    journal_before = (tmp_path / "state" / "journal.json").read_bytes()
    node_before = node_state(tmp_path / "state")
    proc = run_cli("--rollback", "--simulate", "--dry-run", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    plan = [(p["action"], p["target"]) for p in json.loads(proc.stdout)["plan"]]
    assert sorted(a for a, _ in plan) == ["start_container"] * 2 + ["start_service"] * 2
    assert ("start_service", "nvidia-persistenced.service") in plan
    assert (tmp_path / "state" / "journal.json").read_bytes() == journal_before
    assert node_state(tmp_path / "state") == node_before


def test_a_dry_run_rollback_with_nothing_unfinished_says_so_like_the_real_one(tmp_path):
    env = _env(tmp_path)
    assert run_cli("--reload", "--simulate", "--yes", "--json", env=env).returncode == 0
    dry = run_cli("--rollback", "--simulate", "--dry-run", "--json", env=env)
    real = run_cli("--rollback", "--simulate", "--json", env=env)
    assert dry.returncode == real.returncode == 0, dry.stderr
    assert (
        json.loads(dry.stdout)
        == json.loads(real.stdout)
        == {"schema_version": 1, "result": "nothing_to_do", "journal_state": "reloaded"}
    )
    assert "would be resumed" not in dry.stderr


def test_the_steps_of_a_dry_run_are_planned_never_done(tmp_path):
    proc = run_cli("--reload", "--simulate", "--dry-run", env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    steps = [
        line.split()[:2] for line in proc.stderr.splitlines() if line.startswith(("stop_consumers", "unload_modules"))
    ]
    assert steps == [["stop_consumers", "planned"], ["unload_modules", "planned"]]
    assert " done (" not in proc.stderr


def test_a_dry_run_neither_takes_nor_waits_for_the_node_lock(tmp_path):
    """A real run holds the lock for minutes; a dry run beside it reads and plans, and never writes
    the lock file of a state directory it was pointed at."""
    import fcntl

    held, fresh = tmp_path / "held", tmp_path / "fresh"
    held.mkdir()
    with open(held / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a real run's, in our own process
        proc = run_cli("--reload", "--simulate", "--dry-run", "--json", env={"NVRELOAD_STATE_DIR": str(held)})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["plan"]
    assert run_cli("--reload", "--simulate", "--dry-run", env={"NVRELOAD_STATE_DIR": str(fresh)}).returncode == 0
    assert not (fresh / "lock").exists()
