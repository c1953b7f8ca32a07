"""The two ways in: status-only command lines skip click, and must say exactly what click's way says."""

import json
import os
import subprocess
import sys

import pytest

from nvreload.entry import status_request
from nvreload.requests import StatusRequest

ENTRY = "from nvreload.entry import main; main(sys.argv[1:])"
CLICK = "from nvreload.cli import main; main(sys.argv[1:])"
# The console script's way: main() with no argv, which ends a status run without the teardown
CONSOLE = "from nvreload.entry import main; main()"


def run_way(way: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import sys; " + way, *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--status"],
        ["--status", "--json"],
        ["-s", "--json", "-v"],
        ["--json", "--verbose"],
        ["--json"],
        [],
    ],
)
def test_status_only_command_lines_take_the_fast_way(args):
    assert status_request(args + ["--root", "/x"]) == StatusRequest(
        root="/x", format="json" if "--json" in args else "human", verbose="-v" in args or "--verbose" in args
    )


@pytest.mark.parametrize(
    "args, request_",
    [
        (["--status", "--format", "prometheus"], StatusRequest(format="prometheus")),
        (["--format=prometheus", "--output", "/m.prom"], StatusRequest(format="prometheus", output="/m.prom")),
        (["-s", "--format", "prometheus", "--output=/m.prom"], StatusRequest(format="prometheus", output="/m.prom")),
        (["--format", "json"], StatusRequest(format="json")),
        (["--json", "--format", "json"], StatusRequest(format="json")),
        (["--format", "human", "-v"], StatusRequest(format="human", verbose=True)),
    ],
)
def test_the_monitoring_formats_take_the_fast_way_too(args, request_):
    assert status_request(args) == request_


@pytest.mark.parametrize(
    "args",
    [
        ["--reload"],
        ["--status", "--reload"],
        ["--help"],
        ["--version"],
        ["-sv"],
        ["--status", "--root"],
        ["--root", "--json"],
        ["--collect", "x.tar.gz"],
        ["--status", "--dry-run"],
        ["status"],
        ["--format", "xml"],
        ["--format"],
        ["--format", "--json"],
        ["--json", "--format", "prometheus"],
        ["--output"],
        ["--output", "-v"],
        ["--verify", "--format", "prometheus"],
    ],
)
def test_anything_else_goes_through_click(args):
    assert status_request(args) is None


def test_root_may_be_given_with_an_equals_sign():
    assert status_request(["--status", "--root=/snap"]).root == "/snap"


def _path_env() -> dict[str, str]:
    """The environment with the installed nvreload's directory as the whole import path (for -S)."""
    import nvreload

    return {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(os.path.abspath(nvreload.__file__)))}


@pytest.mark.parametrize("fmt", [["--json"], ["--format", "prometheus"]])
def test_the_fast_way_imports_neither_click_nor_pynvml_nor_typing(h100_root, fmt):
    code = (
        "import sys, io, contextlib\nfrom nvreload.entry import main\n"
        "out = io.StringIO()\n"
        f"try:\n    with contextlib.redirect_stdout(out):\n        main(['--status', *{fmt!r}, '--root', {str(h100_root)!r}])\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in ('click', 'pynvml', 'rich', 'docker', 'typing') if m in sys.modules))"
    )
    # -S: a site (a .pth of an editable install, sitecustomize) may import typing itself
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=60, env=_path_env()
    )
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def _cases(h100_root, tmp_path):
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(b"\x1f\x8b\x08\x00" + b"\x00" * 20)
    return [
        ["--status", "--json", "--root", str(h100_root)],
        ["--json", f"--root={h100_root}"],
        ["--status", "--root", str(h100_root)],
        ["-s", "-v", "--root", str(h100_root)],
        ["--status", "--json", "--root", str(tmp_path / "missing")],
        ["--status", "--json", "--root", str(truncated)],
        ["--status", "--format", "prometheus", "--root", str(h100_root)],
        ["--format=json", "--root", str(h100_root)],
        ["--status", "--format", "prometheus", "--root", str(tmp_path / "missing")],
        ["--status", "--output", str(tmp_path / "m.prom"), "--root", str(h100_root)],
        [
            "--status",
            "--format",
            "prometheus",
            "--output",
            str(tmp_path / "no-dir" / "m.prom"),
            "--root",
            str(h100_root),
        ],
    ]


def _outcome(proc: subprocess.CompletedProcess) -> tuple[int, str, str]:
    return proc.returncode, proc.stdout, proc.stderr


def test_both_fast_ways_print_the_same_and_exit_the_same_as_click(h100_root, tmp_path):
    # ENTRY: main(argv), which raises SystemExit; CONSOLE: the console script's main(), whose
    # status run ends at os._exit without the interpreter's teardown
    codes = set()
    for args in _cases(h100_root, tmp_path):
        through_click = _outcome(run_way(CLICK, *args))
        for way in (ENTRY, CONSOLE):
            assert _outcome(run_way(way, *args)) == through_click, (way, args)
        codes.add(through_click[0])
    assert len(codes) > 1  # a failing run's code survives the quick exit, not only success


def test_the_console_scripts_status_run_skips_the_interpreters_teardown(h100_root):
    # an exit handler is the teardown's first step: a status run that ends at os._exit never runs it
    way = "import atexit; atexit.register(print, 'torn down'); " + CONSOLE
    proc = run_way(way, "--status", "--json", "--root", str(h100_root))
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads(proc.stdout), dict)  # the whole document is out before the exit
    assert "torn down" not in proc.stdout
    # and any other run keeps it: only a status run is known to hold nothing a handler must release
    assert "torn down" in run_way(way, "--version").stdout


def test_every_run_but_a_status_run_keeps_the_garbage_collector():
    # the status path turns it off for its short life; a reload runs for minutes and must have it
    way = "import atexit, gc; atexit.register(lambda: print('collector on:', gc.isenabled())); " + CONSOLE
    assert "collector on: True" in run_way(way, "--version").stdout


def test_both_ways_write_the_same_metrics_file(h100_root, tmp_path):
    for way, name in ((ENTRY, "fast.prom"), (CLICK, "click.prom")):
        proc = run_way(
            way, "--status", "--format", "prometheus", "--output", str(tmp_path / name), "--root", str(h100_root)
        )
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    assert (tmp_path / "fast.prom").read_text() == (tmp_path / "click.prom").read_text()
    assert "nvreload_status 0\n" in (tmp_path / "fast.prom").read_text()


def test_bad_flags_still_get_clicks_one_line_and_the_usage_code():
    proc = run_way(ENTRY, "--status", "--no-such-flag")
    assert proc.returncode == 64
    assert proc.stderr.startswith("nvreload: ") and len(proc.stderr.strip().splitlines()) == 1
