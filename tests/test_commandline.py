"""The command line's contract is declared once (nvreload/commandline.py): click, the fast status
path, --help and the README all follow the declaration."""

import re
from pathlib import Path

import pytest

from nvreload import commandline
from nvreload.cli import _invoke
from nvreload.entry import status_request
from nvreload.errors import ExitCode, UsageError

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()

# each action's flag as a command line gives it, and a value for each modifier
ACTION_ARGS = {
    "status": ["--status"],
    "verify": ["--verify"],
    "check_kernel": ["--check-kernel", "6.1.0-26-amd64"],
    "reload": ["--reload"],
    "after_upgrade": ["--after-upgrade", "apt"],
    "reset": ["--reset"],
    "stop": ["--stop"],
    "start": ["--start"],
    "rollback": ["--rollback"],
    "collect": ["--collect", "/nonexistent/x.tar.gz"],
}
MODIFIER_ARGS = {
    "drain": ["--drain", "slurm"],
    "when_idle": ["--when-idle"],
    "driver": ["--driver", "/nonexistent/NVIDIA.run"],
    "restart_docker": ["--restart-docker"],
    "output": ["--output", "/nonexistent/metrics.prom"],
    "baseline": ["--baseline", "/nonexistent/baseline.json"],
    "dry_run": ["--dry-run"],
}


def test_every_action_and_modifier_of_the_declaration_has_a_command_line_here():
    assert set(ACTION_ARGS) == set(commandline.ACTIONS)
    assert set(MODIFIER_ARGS) == {m.name for m in commandline.MODIFIERS}


@pytest.mark.parametrize(
    "modifier, action",
    [(m.name, a) for m in commandline.MODIFIERS for a in commandline.ACTIONS if a not in m.goes_with],
)
def test_a_modifier_given_with_an_action_it_does_not_go_with_is_a_usage_error_before_anything_runs(modifier, action):
    with pytest.raises(UsageError) as refused:
        _invoke([*ACTION_ARGS[action], *MODIFIER_ARGS[modifier]])
    assert refused.value.exit_code == ExitCode.USAGE
    # the modifier's own line, or an earlier rule's (the first broken rule is the one said)
    lines = [line.format(action=commandline.flag(action), format=None) for _test, line in commandline.RULES]
    assert refused.value.message in lines


@pytest.mark.parametrize(
    "args",
    [
        ["--status", "--output", "/tmp/x.prom"],  # --output without --format prometheus
        ["--status", "--json", "--format", "prometheus"],
        ["--json", "--format", "human"],
    ],
)
def test_a_rule_broken_on_a_status_command_line_is_left_to_click_which_says_the_declared_line(args):
    assert status_request(args) is None  # the fast path does not take it ...
    with pytest.raises(UsageError) as refused:  # ... and the click way says the declaration's line
        _invoke(args)
    lines = [line.format(action="--status", format=commandline_format(args)) for _test, line in commandline.RULES]
    assert refused.value.message in lines


def commandline_format(args):
    return args[args.index("--format") + 1] if "--format" in args else None


def test_the_fast_path_takes_exactly_the_declared_status_options():
    request = status_request(["-s", "--format", "prometheus", "--output=/tmp/m.prom", "--root", "/snap", "-v"])
    assert request is not None
    assert (request.format, request.output, request.root, request.verbose) == (
        "prometheus",
        "/tmp/m.prom",
        "/snap",
        True,
    )
    assert status_request(["--status", "--simulate"]) is None  # not declared for the fast path: click's
    taken = {string for strings, _key, _value in commandline.FAST_STATUS_OPTIONS for string in strings}
    assert taken == {"--status", "-s", "--json", "--verbose", "-v", "--format", "--root", "--output", "--baseline"}


def test_help_and_the_readme_list_every_exit_code_the_declaration_has_and_no_other():
    declared = {code for codes, _meaning in commandline.EXIT_CODES for code in codes}
    assert declared == {value for name, value in vars(ExitCode).items() if name.isupper()}
    table = README.split("### Exit codes")[1].split("\n## ")[0].split("\n### ")[0]
    in_readme = {
        int(c) for row in re.findall(r"^\| ([\d, ]+?)(?:,? or [^|]*)? \|", table, re.M) for c in row.split(",")
    }
    assert in_readme == declared
    shown = [line.strip() for line in _help().split("Exit codes:")[1].split("Environment:")[0].splitlines()]
    assert [line for line in shown if line] == [line.strip() for line in commandline.exit_code_lines()]


def _help():
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert _invoke(["--help"]) == 0
    return out.getvalue()
