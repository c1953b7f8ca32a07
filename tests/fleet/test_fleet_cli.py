"""nvreload-fleet's bad input: one line, exit 66, no traceback; a refused plan: exit 77 with the
report written."""

import json
import subprocess
import sys

from fleet_documents import write_facts

from nvreload.fleet.rundir import RunDir


def fleet_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "nvreload.fleet", *args], input=stdin, capture_output=True, text=True, timeout=60
    )


def test_a_node_document_that_is_not_json_is_one_line_and_exit_66(tmp_path):
    done = fleet_cli("record", "--run-dir", str(tmp_path), "--host", "n1", "--kind", "result", stdin="Traceback...")
    assert done.returncode == 66 and "n1: the node printed no JSON document" in done.stderr
    assert "Traceback (most recent" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_host_name_that_is_a_path_is_refused(tmp_path):
    done = fleet_cli("record", "--run-dir", str(tmp_path), "--host", "../../etc/x", "--kind", "started")
    assert done.returncode == 66 and "not an inventory host name" in done.stderr
    assert not (tmp_path.parent.parent / "etc").exists()


def test_a_refused_plan_exits_77_and_still_writes_the_report(tmp_path):
    run_dir = RunDir(tmp_path)
    for host in ("n1", "n2"):
        write_facts(run_dir, host)
    write_facts(run_dir, "n3", slurm=("DOWN+DRAIN", "psu"))
    done = fleet_cli("plan", "--run-dir", str(tmp_path), "--hosts", '["n1", "n2", "n3"]', "--max-unavailable", "1")
    assert done.returncode == 77 and "refused: 2 of 3 nodes would be out of service at once" in done.stderr
    report = json.loads((tmp_path / "fleet-report.json").read_text())
    assert report["result"] == "refused" and report["totals"]["not_attempted"] == 3


def test_a_batch_list_that_is_not_one_is_refused_naming_it(tmp_path):
    done = fleet_cli("plan", "--run-dir", str(tmp_path), "--hosts", "[]", "--batches", '["x"]')
    assert done.returncode == 66 and "nvreload_batches" in done.stderr
