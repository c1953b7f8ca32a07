"""Node documents for the fleet's unit tests, shaped as nvreload and nvreload-fleet print them
(the schemas are the contract; tests/fleet/test_fleet_contract.py checks these against the real
commands' output)."""

from __future__ import annotations

from nvreload.fleet.rundir import RunDir


def status(
    loaded: str = "550.90.07",
    userspace: str = "550.127.08",
    action: str = "reload",
    feasible: bool = True,
    findings: list[dict] | None = None,
) -> dict:
    return {
        "driver": {"kernel_module_version": loaded, "userspace_version": userspace},
        "findings": findings
        if findings is not None
        else ([{"code": "version_mismatch", "action": "reload", "message": "m"}] if action == "reload" else []),
        "recommended_action": action,
        "reload": {
            "feasible": feasible,
            "blockers": [] if feasible else [{"code": "display_server", "message": "Xorg"}],
        },
    }


def facts(host: str, doc: dict | None = None, slurm: tuple[str, str | None] | None = None, **extra) -> dict:
    return {
        "schema_version": 1,
        "host": host,
        "status": doc if doc is not None else status(),
        "status_exit": 2,
        "error": None,
        "slurm": {"node": host, "state": slurm[0], "reason": slurm[1]}
        if slurm
        else {"node": host, "state": "IDLE", "reason": None},
        "busy": False,
        "journal_unfinished": False,
        **extra,
    }


def write_facts(run_dir: RunDir, host: str, **kwargs) -> None:
    run_dir.write(facts(host, **kwargs), "facts", f"{host}.json")


def result(host: str, outcome: str, **extra) -> dict:
    return {
        "schema_version": 1,
        "host": host,
        "outcome": outcome,
        "driver_before": "550.90.07",
        "driver_after": "550.127.08" if outcome == "reloaded" else None,
        "wanted_version": "550.127.08",
        "exit_code": 0 if outcome == "reloaded" else 10,
        "drained_by_run": True,
        "left_drained": None,
        "gpu_unavailable_seconds": 4.2,
        "seconds": 30.0,
        "error": None if outcome == "reloaded" else "unload_modules: rmmod: ERROR: Module nvidia is in use",
        "journal": "/var/lib/nvreload/journal.json",
        "run_id": "r-" + host,
        "notes": [],
        **extra,
    }
