"""The Debian package as built by packaging/build-deb (a real dpkg-buildpackage with dh-virtualenv),
read back with dpkg-deb and checked by a real lintian: every file where its tool looks, the
conffiles, the venv holding exactly the pinned wheels, the man page holding exactly the CLI's
options, and maintainer scripts that start only the metrics timer. Installing, upgrading, removing
and purging it for real is tests/vm/test_real_kernel_package.py."""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deb_builds import REPO, VERSION, built_deb

PACKAGING = REPO / "packaging"
VENV = "opt/venvs/nvreload"
SITE = f"{VENV}/lib/python3.11/site-packages"

pytestmark = pytest.mark.skipif(
    shutil.which("dpkg-buildpackage") is None or shutil.which("dh_virtualenv") is None,
    reason="debhelper and dh-virtualenv are not installed (.ci/run installs them)",
)


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    return built_deb(VERSION, tmp_path_factory.mktemp("deb"))


@pytest.fixture(scope="module")
def unpacked(deb, tmp_path_factory) -> Path:
    """The package's files (dpkg-deb -x) and its control files (DEBIAN/)."""
    root = tmp_path_factory.mktemp("unpacked")
    subprocess.run(["dpkg-deb", "-R", str(deb), str(root)], check=True, timeout=120)
    return root


def manpage_module():
    sys.path.insert(0, str(PACKAGING))
    try:
        import manpage
    finally:
        sys.path.remove(str(PACKAGING))
    return manpage


def test_the_deb_is_named_for_the_version_and_architecture_and_says_what_it_needs(deb, unpacked):
    assert re.fullmatch(rf"nvreload_{re.escape(VERSION)}_amd64\.deb", deb.name)
    control = (unpacked / "DEBIAN" / "control").read_text()
    assert f"Version: {VERSION}\n" in control and "Architecture: amd64\n" in control
    depends = re.search(r"^Depends: (.*)$", control, re.M).group(1).split(", ")  # type: ignore[union-attr]
    # the venv's interpreter is the system's python3, of the minor version its site-packages is for;
    # nothing of the system's Python packages (python3-click...) and no python3-venv at run time
    assert "python3 (>= 3.11~)" in depends and "python3 (<< 3.12)" in depends
    assert not [d for d in depends if d.startswith(("python3-", "python3.11-"))]


@pytest.mark.parametrize(
    "installed,source",
    [
        ("usr/lib/nvreload/post-invoke", "hooks/post-invoke"),
        ("usr/lib/nvreload/dpkg-status", "hooks/dpkg-status"),
        ("etc/apt/apt.conf.d/99nvreload", "apt/99nvreload"),
        ("etc/dpkg/dpkg.cfg.d/nvreload", "dpkg/nvreload"),
        ("etc/kernel/postinst.d/zz-nvreload", "kernel/zz-nvreload"),
        ("etc/nvreload/nvreload.conf", "etc/nvreload.conf"),
        ("lib/systemd/system/nvreload-metrics.service", "systemd/nvreload-metrics.service"),
        ("lib/systemd/system/nvreload-metrics.timer", "systemd/nvreload-metrics.timer"),
        ("lib/systemd/system/nvreload-reload.service", "systemd/nvreload-reload.service"),
    ],
)
def test_each_hook_unit_and_config_is_where_its_tool_looks_exactly_as_in_packaging(unpacked, installed, source):
    path = unpacked / installed
    assert path.read_bytes() == (PACKAGING / source).read_bytes()
    # apt, dpkg and run-parts run these: executable, as in the checkout
    assert bool(path.stat().st_mode & 0o111) == bool((PACKAGING / source).stat().st_mode & 0o111)


def test_every_file_under_etc_is_a_conffile_and_nothing_else_is(unpacked):
    conffiles = (unpacked / "DEBIAN" / "conffiles").read_text().split()
    under_etc = sorted("/" + str(p.relative_to(unpacked)) for p in (unpacked / "etc").rglob("*") if p.is_file())
    assert sorted(conffiles) == under_etc
    assert "/etc/nvreload/nvreload.conf" in conffiles


def test_usr_bin_nvreload_runs_the_venv_which_sees_no_system_python_packages(unpacked):
    link = unpacked / "usr/bin/nvreload"
    assert link.is_symlink() and str(link.readlink()) == f"/{VENV}/bin/nvreload"
    for script in ("nvreload", "nvreload-fleet"):
        assert (unpacked / VENV / "bin" / script).read_text().startswith(f"#!/{VENV}/bin/python\n"), script
    cfg = (unpacked / VENV / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg
    assert str((unpacked / VENV / "bin/python3").readlink()) == "/usr/bin/python3"
    # nothing points back at the build: no build directory in a script, a record or the bytecode's names
    leaks = subprocess.run(["grep", "-rl", "dist/", "--include=*.py", "--include=RECORD", str(unpacked / VENV / "bin")])
    assert leaks.returncode == 1
    assert not list((unpacked / SITE).glob("*.dist-info/direct_url.json"))


def pins() -> dict[str, str]:
    text = (PACKAGING / "requirements.txt").read_text()
    return {name.lower().replace("_", "-"): v for name, v in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", text, re.M)}


def distributions(unpacked: Path) -> dict[str, str]:
    found = {}
    for info in (unpacked / SITE).glob("*.dist-info"):
        meta = (info / "METADATA").read_text()
        name = re.search(r"^Name: (.+)$", meta, re.M).group(1)  # type: ignore[union-attr]
        found[name.lower().replace("_", "-")] = re.search(r"^Version: (.+)$", meta, re.M).group(1)  # type: ignore[union-attr]
    return found


def test_the_venv_holds_exactly_the_pinned_wheels_and_nvreload_without_pip_or_setuptools(unpacked):
    assert distributions(unpacked) == {**pins(), "nvreload": VERSION.split("~")[0]}


def test_the_copyright_file_names_the_license_of_every_bundled_distribution(unpacked):
    copyright_text = (unpacked / "usr/share/doc/nvreload/copyright").read_text()
    assert copyright_text.startswith("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
    for info in (unpacked / SITE).glob("*.dist-info"):
        if info.name.startswith("nvreload-"):
            continue
        # the top-level modules a distribution installs, from its RECORD
        tops = {line.split("/")[0].split(",")[0] for line in (info / "RECORD").read_text().splitlines()}
        tops = {t.removesuffix(".py") for t in tops if not t.endswith((".dist-info", ".pth", "__pycache__", ".."))}
        tops.discard("example")  # nvidia-ml-py's example.py, beside pynvml.py
        assert tops, info.name
        for top in tops:
            assert f"site-packages/{top}" in copyright_text, f"{info.name}: {top} is not in debian/copyright"


def test_completion_is_where_bash_zsh_and_fish_look_for_it(unpacked):
    bash = (unpacked / "usr/share/bash-completion/completions/nvreload").read_text()
    assert "complete -o nosort -F _nvreload_completion nvreload" in bash
    assert (unpacked / "usr/share/zsh/vendor-completions/_nvreload").read_text().startswith("#compdef nvreload")
    assert (
        "complete --no-files --command nvreload"
        in (unpacked / "usr/share/fish/vendor_completions.d/nvreload.fish").read_text()
    )


def cli_options() -> set[str]:
    import click

    from nvreload.cli import command

    ctx = click.Context(command, info_name="nvreload", **command.context_settings)
    return {opt for param in command.get_params(ctx) for opt in [*param.opts, *param.secondary_opts]}


def help_options() -> set[str]:
    """The options `nvreload --help` lists: the heads of its "Options:" lines."""
    from helpers import run_cli

    result = run_cli("--help", env={"COLUMNS": "100"})
    assert result.returncode == 0, result.stderr
    section = result.stdout.split("Options:\n", 1)[1].split("\n\n", 1)[0]
    heads = [line[2:].split("  ")[0] for line in section.splitlines() if re.match(r"^  -", line)]
    return {opt for head in heads for opt in re.findall(r"(?<![\w-])--?[a-z][\w-]*", head)}


def test_the_packaged_man_page_is_the_generators_for_the_command_it_ships_with(unpacked):
    shipped = gzip.decompress((unpacked / "usr/share/man/man8/nvreload.8.gz").read_bytes()).decode()
    assert shipped.startswith('.TH NVRELOAD 8 "')
    body = lambda text: text.split("\n", 1)[1]  # noqa: E731 (the .TH line carries the build's date)
    assert body(shipped) == body(manpage_module().page())
    assert manpage_module().option_names(shipped) == cli_options()


def test_the_man_page_renders_without_a_groff_warning(unpacked):
    if shutil.which("man") is None:
        pytest.skip("man-db is not installed")
    page = unpacked / "usr/share/man/man8/nvreload.8.gz"
    proc = subprocess.run(
        ["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", str(page)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin", "MANWIDTH": "80"},
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def systemd_lines(unpacked: Path, script: str) -> list[str]:
    text = (unpacked / "DEBIAN" / script).read_text()
    return [line.strip() for line in text.splitlines() if "deb-systemd-" in line and "'" in line]


def test_the_package_starts_and_enables_only_the_metrics_timer_never_the_reload_service(unpacked):
    for script in ("postinst", "prerm", "postrm"):
        lines = systemd_lines(unpacked, script)
        units = {unit for line in lines for unit in re.findall(r"'([\w.@-]+)'", line)}
        assert lines and units == {"nvreload-metrics.timer"}, (script, lines)
    postinst = (unpacked / "DEBIAN" / "postinst").read_text()
    assert "deb-systemd-helper enable 'nvreload-metrics.timer'" in postinst
    assert "deb-systemd-invoke $_dh_action 'nvreload-metrics.timer'" in postinst
    assert "systemctl --system daemon-reload" in postinst


def test_lintian_finds_nothing_that_is_not_overridden_and_every_override_says_why(deb):
    lintian = shutil.which("lintian")
    if lintian is None:
        pytest.skip("lintian is not installed (.ci/run installs it)")
    proc = subprocess.run(
        [lintian, "--pedantic", "--fail-on", "error,warning,info,pedantic", str(deb)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    tags = [line for line in proc.stdout.splitlines() if re.match(r"^[EWIPX]: ", line)]
    assert proc.returncode == 0 and tags == [], proc.stdout + proc.stderr
    # each override (or run of overrides) comes after the comment that gives its reason
    overrides = (PACKAGING / "debian" / "nvreload.lintian-overrides").read_text().splitlines()
    for i, line in enumerate(overrides):
        if line.startswith("nvreload: "):
            before = [o for o in overrides[:i] if not o.startswith("nvreload: ")]
            assert before and before[-1].startswith("# ") and overrides[i - 1].startswith(("# ", "nvreload: ")), line


def test_build_deb_refuses_a_version_dpkg_would_not_take_in_one_line(tmp_path):
    proc = subprocess.run(
        [str(PACKAGING / "build-deb"), "--version", "1.0 beta", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 64 and proc.stderr == "build-deb: not a Debian version of a native package: '1.0 beta'\n"
    assert not list(tmp_path.iterdir())
