"""What packaging/ generates and runs, checked without building a package (seconds, for .ci/mutate):
the man page generator against the command's own options, the states the maintainer scripts keep
a journal for, the postrm run for real on a state directory of each kind, the rpm's configuration
files. The built packages: tests/test_packaging_deb.py and
tests/test_packaging_rpm.py."""

from __future__ import annotations

import json
import os

import pytest
from test_packaging_deb import PACKAGING, cli_options, help_options, manpage_module

REPO = PACKAGING.parent


def test_the_man_page_generator_lists_exactly_the_options_of_the_cli_and_its_help():
    manpage = manpage_module()
    page = manpage.page()
    assert manpage.option_names(page) == cli_options() == help_options()
    for heading in ('.SH "EXIT STATUS"', ".SH ENVIRONMENT", ".SH EXAMPLES", ".SH FILES"):
        assert heading in page
    assert ".TP\n\\fB77\\fR\n" in page and "NVRELOAD_STATE_DIR" in page


def test_a_man_page_generator_fails_on_an_epilog_section_it_does_not_place(monkeypatch):
    manpage = manpage_module()
    monkeypatch.setattr(manpage, "HELP_EPILOG", manpage.HELP_EPILOG + "\n\b\nSee also:\n  nvidia-smi  the tool\n")
    with pytest.raises(SystemExit, match="'See also'"):
        manpage.page()


def unfinished_patterns(script: str) -> set[str]:
    """The states a maintainer script treats as an unfinished run (its `case` line for them)."""
    text = (PACKAGING / "debian" / script).read_text()
    (line,) = [line for line in text.splitlines() if "rolling_back" in line]
    return {state.strip() for state in line.strip().rstrip(")").split("|")}


def test_the_maintainer_scripts_keep_every_state_the_journal_calls_unfinished_and_an_unreadable_one():
    from nvreload.engine.journal import UNFINISHED

    for script in ("nvreload.postinst", "nvreload.postrm"):
        assert unfinished_patterns(script) == {*UNFINISHED, "unknown"}, script


def test_every_rpm_configuration_file_is_kept_as_edited_across_an_upgrade():
    # noreplace: the operator's file stays and the packaged one lands beside it as .rpmnew, as dpkg
    # keeps an edited conffile; without it rpm replaces the file and saves the edit as .rpmsave
    spec = (REPO / "packaging" / "nvreload.spec").read_text()
    configs = [line for line in spec.splitlines() if line.startswith("%config")]
    assert configs and [line for line in configs if not line.startswith("%config(noreplace) ")] == []


# the postrm run for real, as root, in a mount namespace of its own where /var/lib and /run are empty
# tmpfs: the state directory the test makes there is the only one the script can see or remove

POSTRM = PACKAGING / "debian" / "nvreload.postrm"


def run_postrm(tmp_path, action: str, journal: str | None) -> tuple[str, set[str], str]:
    """postrm ACTION over a state directory holding `journal` (None: no journal) with its record log,
    a pending record, the metrics file and a /run/nvreload: (its stderr, what is left under
    /var/lib, what is left in /run)."""
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) (util-linux) for a mount namespace")
    (tmp_path / "journal.json").write_text(journal or "")
    script = f"""
set -e
mount -t tmpfs tmpfs /var/lib
mount -t tmpfs tmpfs /run
mkdir -p /var/lib/nvreload /run/nvreload /var/lib/prometheus/node-exporter
{"cp " + str(tmp_path / "journal.json") + " /var/lib/nvreload/journal.json" if journal is not None else ":"}
echo '{{}}' > /var/lib/nvreload/reload-pending.json
{"echo > /var/lib/nvreload/journal.json.records" if journal is not None else ":"}
echo 'nvreload_status 0' > /var/lib/prometheus/node-exporter/nvreload.prom
echo lock > /run/nvreload/lock
set +e
sh {POSTRM} {action} 2> {tmp_path}/stderr
echo $? > {tmp_path}/rc
(cd /var/lib && find . -mindepth 1 | sort) > {tmp_path}/varlib
ls -A /run > {tmp_path}/run
"""
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "rc").read_text().strip() == "0"  # a maintainer script never fails the transaction
    left = {line.removeprefix("./") for line in (tmp_path / "varlib").read_text().split()}
    return (tmp_path / "stderr").read_text(), left, (tmp_path / "run").read_text()


PROMETHEUS = {"prometheus", "prometheus/node-exporter"}


@pytest.mark.parametrize("journal", [None, '{"state": "reloaded"}', '{"state": "rolled_back"}', '{"state": "started"}'])
def test_purge_removes_the_state_directory_and_the_run_directory_when_no_run_is_unfinished(tmp_path, journal):
    said, left, run = run_postrm(tmp_path, "purge", journal)
    # the metrics file went with remove (below); purge takes the state and the runtime directory
    assert left == PROMETHEUS | {"prometheus/node-exporter/nvreload.prom"} and said == ""
    assert "nvreload" not in run


@pytest.mark.parametrize("state", ["running", "rolling_back", "failed", "stopped"])
def test_purge_keeps_and_names_the_journal_of_an_unfinished_run_with_its_record_log(tmp_path, state):
    said, left, _ = run_postrm(tmp_path, "purge", json.dumps({"state": state, "action": "reload"}))
    assert left - PROMETHEUS - {"prometheus/node-exporter/nvreload.prom"} == {
        "nvreload",
        "nvreload/journal.json",
        # its appended records: a killed --drain run's drain among them (--rollback resumes the node)
        "nvreload/journal.json.records",
    }
    assert said == (
        f"nvreload: purge kept /var/lib/nvreload/journal.json: it holds an unfinished run (state {state}); "
        "reinstall nvreload and run nvreload --rollback, or remove /var/lib/nvreload once the node is as it should be\n"
    )


@pytest.mark.parametrize("journal", ["{not json", '{"action": "reload"}', "\x00\x01"])
def test_purge_keeps_a_journal_it_cannot_read_rather_than_guess(tmp_path, journal):
    said, left, _ = run_postrm(tmp_path, "purge", journal)
    assert "nvreload/journal.json" in left and "(state unknown)" in said


def test_remove_deletes_the_metrics_file_and_keeps_the_state_and_the_conffiles(tmp_path):
    said, left, run = run_postrm(tmp_path, "remove", '{"state": "reloaded"}')
    assert left == PROMETHEUS | {
        "nvreload",
        "nvreload/journal.json",
        "nvreload/journal.json.records",
        "nvreload/reload-pending.json",
    }
    assert said == "" and "nvreload" in run  # /run/nvreload is purge's (and the reboot's)
