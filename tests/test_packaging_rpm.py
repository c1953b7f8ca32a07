"""The EL package (packaging/build-rpm: rpmbuild with packaging/nvreload.spec), held to the Debian
package: the same files where each system looks for them (dnf's hooks in place of apt's and dpkg's),
the same configuration files, the same venv, and scriptlets that do what the .deb's maintainer
scripts do. No EL system runs here: installing it on EL8/EL9 is untried (README: Install)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from deb_builds import REPO, VERSION, built_deb, built_rpm

pytestmark = pytest.mark.skipif(
    shutil.which("rpmbuild") is None
    or shutil.which("dpkg-buildpackage") is None
    or not Path("/usr/bin/python3.11").exists(),
    reason="rpmbuild, dpkg-buildpackage or /usr/bin/python3.11 is missing (.ci/run installs rpm and debhelper)",
)

# where each package puts what the other puts elsewhere, as the same file
RENAMED = {
    "lib/systemd/system/": "usr/lib/systemd/system/",  # Debian 12's debhelper; the same directory on a merged /usr
    "usr/share/zsh/vendor-completions/": "usr/share/zsh/site-functions/",  # Debian's zsh, EL's zsh
    "usr/share/doc/nvreload/copyright": "usr/share/licenses/nvreload/copyright",
}
ONLY_DEB = {
    "etc/apt/apt.conf.d/99nvreload",  # apt's hook
    "etc/dpkg/dpkg.cfg.d/nvreload",  # dpkg's status logger
    "usr/lib/nvreload/dpkg-status",
    "usr/share/doc/nvreload/changelog.gz",
    "usr/share/lintian/overrides/nvreload",
}
ONLY_RPM = {
    "etc/dnf/plugins/post-transaction-actions.d/nvreload.action",  # dnf 4 (EL8, EL9)
    "etc/dnf/libdnf5-plugins/actions.d/nvreload.actions",  # dnf5
    "usr/share/licenses/nvreload/LICENSE",
}


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> tuple[Path, Path]:
    workdir = tmp_path_factory.mktemp("packages")
    return built_deb(VERSION, workdir), built_rpm(workdir)


def deb_files(deb: Path) -> set[str]:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    paths = {line.split(None, 5)[5].split(" -> ")[0].removeprefix("./") for line in listing.splitlines()}
    return {p for p in paths if p and not p.endswith("/")}


def rpm_query(rpm: Path, *args: str) -> str:
    return subprocess.run(["rpm", "-qp", *args, str(rpm)], capture_output=True, text=True, check=True).stdout


def as_rpm_path(path: str) -> str:
    for old, new in RENAMED.items():
        if path.startswith(old):
            return new + path[len(old) :]
    return path.removesuffix(".gz") if path.startswith("usr/share/man/") else path


def test_the_rpm_carries_the_debs_files_where_el_looks_for_them(packages):
    deb, rpm = packages
    in_deb = {as_rpm_path(p) for p in deb_files(deb) - ONLY_DEB}
    in_rpm = {p.lstrip("/") for p in rpm_query(rpm, "-l").splitlines()}
    directories = {p for p in in_rpm if any(q.startswith(p + "/") for q in in_rpm)}
    assert in_rpm - directories - ONLY_RPM == in_deb
    assert ONLY_RPM <= in_rpm


def test_the_rpms_configuration_files_are_the_debs_conffiles_with_dnfs_hooks_for_apts(packages):
    deb, rpm = packages
    conffiles = subprocess.run(["dpkg-deb", "-f", str(deb), "Package"], capture_output=True, text=True).stdout
    assert conffiles.strip() == "nvreload"
    control = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True).stdout
    import io
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(control)) as tar:
        member = tar.extractfile("./conffiles")
        assert member is not None
        deb_conf = {line.lstrip("/") for line in member.read().decode().split()}
    rpm_conf = {line.lstrip("/") for line in rpm_query(rpm, "-c").split()}
    assert rpm_conf == (deb_conf - ONLY_DEB) | {p for p in ONLY_RPM if p.startswith("etc/")}


def scriptlets(rpm: Path) -> dict[str, str]:
    text = rpm_query(rpm, "--scripts")
    parts = re.split(r"^(\w+) scriptlet \(using /bin/sh\):\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_scriptlets_start_only_the_metrics_timer_and_keep_an_unfinished_journal_as_the_deb_does(packages):
    from nvreload.engine.journal import UNFINISHED

    _, rpm = packages
    scripts = scriptlets(rpm)
    assert set(scripts) == {"postinstall", "preuninstall", "postuninstall"}
    post = scripts["postinstall"]
    assert "systemctl enable --now nvreload-metrics.timer" in post and "daemon-reload" in post
    assert "systemctl disable --now nvreload-metrics.timer" in scripts["preuninstall"]
    assert not [name for name, text in scripts.items() if "nvreload-reload.service" in text]
    (line,) = [line for line in post.splitlines() if "rolling_back" in line]
    assert {s.strip() for s in line.strip().rstrip(")").split("|")} == {*UNFINISHED, "unknown"}
    # the .deb's postinst says the same words about it
    postinst = (REPO / "packaging" / "debian" / "nvreload.postinst").read_text()
    said = re.search(r'holds an unfinished run \(state \$state\), left as it is: [^"]+', post)
    assert said and said.group(0) in postinst
    # erase, as the .deb's remove: the stale metrics file and the venv's leftovers go, the state stays
    postun = scripts["postuninstall"]
    assert "rm -f /var/lib/prometheus/node-exporter/nvreload.prom" in postun and "/var/lib/nvreload" not in postun
    assert all(text.rstrip().endswith("exit 0") for text in scripts.values())  # never fail the transaction


def test_the_rpm_needs_the_systems_python_311_and_nothing_of_its_python_packages(packages):
    _, rpm = packages
    requires = {line.split()[0] for line in rpm_query(rpm, "--requires").splitlines()}
    assert requires - {"/bin/sh"} == {"python3.11", "systemd"} | {r for r in requires if r.startswith("rpmlib(")}
    assert rpm_query(rpm, "--queryformat", "%{VERSION}") == VERSION
