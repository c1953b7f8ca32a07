"""What packaging/ generates and runs, checked without building a package (seconds, for .ci/mutate):
the man page generator against the command's own options, the states the maintainer scripts keep
a journal for, the rpm's configuration files. The built packages: tests/test_packaging_deb.py and
tests/test_packaging_rpm.py."""

from __future__ import annotations

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
