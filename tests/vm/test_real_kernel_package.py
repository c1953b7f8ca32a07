"""The Debian package for real: nvreload_*.deb (packaging/build-deb) installed with a real, offline apt
in the Debian 12 guest, used, upgraded from a previous build, removed and purged, all in one boot
(each nvreload run costs seconds under TCG). Each step writes what it saw into /job; the test asserts
step by step.

The node: the stand-in driver A loaded, a persistenced unit holding it, node_exporter's textfile
directory present (as prometheus-node-exporter leaves it)."""

import re

import pytest
from deb_builds import PREVIOUS, built_debs

pytestmark = pytest.mark.realkernel

A, B = "580.95.05", "580.105.08"

CASE = f"""
export HOME=/root XDG_STATE_HOME=/tmp/simstate DEBIAN_FRONTEND=noninteractive
install_driver {A}
load_stack
persistenced_unit
mkdir -p /var/lib/prometheus/node-exporter

# the stand-in driver package of the hooks test: version B's modules and userspace
root=/tmp/deb-driver
mkdir -p "$root/DEBIAN" "$root$UPDATES" "$root$LIBDIR"
cp /vm/modules/{B}/nvidia*.ko "$root$UPDATES/"
cp /vm/lib/{B}/libnvidia-ml.so.{B} /vm/lib/{B}/libcuda.so.{B} "$root$LIBDIR/"
ln -s libnvidia-ml.so.{B} "$root$LIBDIR/libnvidia-ml.so.1"
ln -s libcuda.so.{B} "$root$LIBDIR/libcuda.so.1"
printf 'Package: nvidia-stand-in-driver\\nVersion: {B}\\nArchitecture: amd64\\nMaintainer: nvreload tests <t@nvreload.invalid>\\nDescription: stand-in\\n' > "$root/DEBIAN/control"
printf '#!/bin/sh\\ndepmod -a && ldconfig\\n' > "$root/DEBIAN/postinst"
chmod 755 "$root/DEBIAN/postinst"
dpkg-deb --build --root-owner-group "$root" /tmp/nvidia-stand-in-driver.deb > /dev/null

# every path on the root file system but the shares, the scratch space and the kernel's
tree() {{
    find / -xdev \\( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp -o -path /job \\
        -o -path /src -o -path /vm \\) -prune -o -print | sort
}}
tree > /tmp/before.list

# apt_get NAME ARGS...: a real apt-get transaction; its output, exit code and milliseconds in /job
apt_get() {{
    local name=$1; shift
    local t0; t0=$(date +%s%N)
    apt-get -y -o Dpkg::Use-Pty=0 "$@" > "/job/$name.log" 2>&1
    echo $? > "/job/$name.rc"
    echo $(( ($(date +%s%N) - t0) / 1000000 )) > "/job/$name.ms"
    echo "== apt-get $* -> rc $(cat /job/$name.rc) in $(cat /job/$name.ms) ms"
}}
# run NAME COMMAND...: any command's stdout, stderr and exit code in /job
run() {{
    local name=$1; shift
    "$@" > "/job/$name.out" 2> "/job/$name.err"
    echo $? > "/job/$name.rc"
    echo "== $* -> rc $(cat /job/$name.rc)"
}}

# 1. the previous build, offline (the guest has no network)
apt_get install install --no-install-recommends /job/previous.deb
run which readlink -f "$(command -v nvreload)"
run status nvreload --status --json
run simulate nvreload --reload --simulate --yes
# the venv's own click, and the system's Python as it was
run venv /opt/venvs/nvreload/bin/python -c 'import click, sys; print(click.__version__, click.__file__); print(sys.flags.no_site, [p for p in sys.path if "dist-packages" in p])'
run system_click python3 -c 'import click; print(click.__version__, click.__file__)'
MANPAGER=cat MANWIDTH=100 run man man nvreload
# TAB in an interactive login bash on a terminal: bash-completion loads the package's script
printf 'nvreload --stat\\t\\001echo COMPLETED: \\nexit\\n' | script -q -c 'bash -li' /dev/null > /job/tab.out 2>&1
run timer_enabled systemctl is-enabled nvreload-metrics.timer
run timer_active systemctl is-active nvreload-metrics.timer
run reload_unit systemctl is-active nvreload-reload.service
for _ in $(seq 60); do [ -s /var/lib/prometheus/node-exporter/nvreload.prom ] && break; sleep 2; done
cp /var/lib/prometheus/node-exporter/nvreload.prom /job/metrics.prom 2>/dev/null
systemctl show -p Result -p ExecMainStatus nvreload-metrics.service > /job/metrics_unit.txt

# 2. the apt hook fires on a later transaction: the driver's userspace upgraded, the reload pending
apt_get driver install /tmp/nvidia-stand-in-driver.deb

# 3. an upgrade from the previous build: an edited conffile and an unfinished run
echo '# node-17: kept on report until the fleet moves (edited by hand)' >> /etc/nvreload/nvreload.conf
run stop nvreload --stop --yes
sha256sum /var/lib/nvreload/journal.json > /job/journal.before
apt_get upgrade install /job/current.deb
sha256sum /var/lib/nvreload/journal.json > /job/journal.after
cp /etc/nvreload/nvreload.conf /job/conf.after
dpkg-query -W -f '${{Version}}' nvreload > /job/version.after
run persistenced_stopped systemctl is-active nvidia-persistenced.service
run rollback nvreload --rollback --yes --json
run persistenced_back systemctl is-active nvidia-persistenced.service

# 4. remove keeps the conffiles and the state; purge leaves nothing
apt_get remove remove nvreload
ls -d /etc/nvreload/nvreload.conf /etc/apt/apt.conf.d/99nvreload /etc/dpkg/dpkg.cfg.d/nvreload \\
    /etc/kernel/postinst.d/zz-nvreload /var/lib/nvreload /usr/bin/nvreload /opt/venvs/nvreload \\
    /var/lib/prometheus/node-exporter/nvreload.prom > /job/after_remove.txt 2>&1
run timer_after_remove systemctl is-active nvreload-metrics.timer
apt_get after_remove_driver install --reinstall /tmp/nvidia-stand-in-driver.deb
apt_get purge purge nvreload
tree > /tmp/after.list
comm -13 /tmp/before.list /tmp/after.list > /job/added.txt
comm -23 /tmp/before.list /tmp/after.list > /job/removed.txt
dpkg -L nvidia-stand-in-driver > /job/driver.files
ls -d /run/nvreload > /job/run_after_purge.txt 2>&1

# 5. purge with an unfinished run keeps its journal, and says so
apt_get again install /job/current.deb
run stop_again nvreload --stop --yes
apt_get purge_unfinished purge nvreload
ls -A /var/lib/nvreload > /job/kept.txt 2>&1
"""


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    return built_debs(tmp_path_factory.mktemp("debs"))


def lines(run, name: str) -> list[str]:
    return run.text(name).splitlines()


def apt_ok(run, name: str) -> str:
    log = run.text(f"{name}.log")
    assert run.text(f"{name}.rc").strip() == "0", f"apt {name} failed:\n{log}\n{run.explain()}"
    return log


# What may be new on the root after install, use, remove and purge, and why: the package manager's
# and man-db's own records, the stand-in driver's files and the caches its postinst rebuilt, and the
# shared directories systemd's helpers create (empty once nvreload's links are gone).
SHARED = [
    r"/var/lib/(dpkg|apt|ucf)(/.*)?",
    r"/var/cache/(apt|man|debconf|ldconfig)(/.*)?",
    r"/var/log(/.*)?",
    r"/etc/ld\.so\.cache",
    r"/lib/modules/[^/]+/modules\.[a-z.]+",
    r"/var/lib/systemd/deb-systemd-(helper-enabled|helper-masked|user-helper-enabled)",
    r"/etc/systemd/system/timers\.target\.wants",
    r"/var/lib/systemd/timers(/.*)?",
    r"/root/\.bash_history",
]


def test_the_deb_installs_offline_works_upgrades_and_removes_without_leftovers(run_vm, debs):
    previous, current = debs
    run = run_vm(CASE, files={"previous.deb": previous.read_bytes(), "current.deb": current.read_bytes()}, timeout=900)
    assert run.rc == 0, run.explain()

    # 1. installed offline, from the package alone (python3 was there; nothing else was fetched)
    install = apt_ok(run, "install")
    assert "Setting up nvreload (" + PREVIOUS in install and "Err:" not in install
    assert run.text("which.out").strip() == "/opt/venvs/nvreload/bin/nvreload"
    status_rc = run.text("status.rc").strip()
    assert status_rc in ("0", "1", "2"), run.text("status.err")
    assert run.json("status.out")["schema_version"] == 1
    assert run.text("simulate.rc").strip() == "0", run.text("simulate.err")
    # the venv's own click, not Debian's (8.1.3), without the system's dist-packages
    version, path = lines(run, "venv.out")[0].split()
    assert version == "8.5.1" and path.startswith("/opt/venvs/nvreload/lib/python3.11/site-packages/")
    assert lines(run, "venv.out")[1] == "0 []"
    assert run.text("system_click.out").startswith("8.1.3 /usr/lib/python3/dist-packages/click/")
    # man nvreload: the page generated from the command's help
    man = run.text("man.out")
    assert run.text("man.rc").strip() == "0" and "NVRELOAD(8)" in man and "--after-upgrade" in man, man
    # TAB: the line became `nvreload --status ` in bash's readline
    assert "COMPLETED: nvreload --status" in run.text("tab.out"), run.text("tab.out")
    # the metrics timer: enabled, started, and its first run wrote the textfile; the reload unit idle
    assert run.text("timer_enabled.out").strip() == "enabled"
    assert run.text("timer_active.out").strip() == "active"
    assert run.text("reload_unit.out").strip() == "inactive"
    assert "nvreload_status " in run.text("metrics.prom"), run.text("metrics_unit.txt")
    assert "Result=success" in run.text("metrics_unit.txt")

    # 2. the apt hook of the package fired after the driver's transaction
    driver = apt_ok(run, "driver")
    assert f"nvreload: reload pending: module {A}, userspace {B}" in driver, driver

    # 3. the upgrade: the edited conffile kept without a question, the unfinished journal untouched,
    # named, and finished by the new version
    assert run.text("stop.rc").strip() == "0", run.text("stop.err")
    upgrade = apt_ok(run, "upgrade")
    assert "Unpacking nvreload (" + current.name.split("_")[1] + ") over (" + PREVIOUS + ")" in upgrade, upgrade
    assert "holds an unfinished run (state stopped), left as it is" in upgrade, upgrade
    # the apt hook ran the new nvreload, which refused (77: the unfinished run): said, and apt succeeded
    assert "nvreload: nvreload --after-upgrade apt exited 77" in upgrade, upgrade
    assert run.text("journal.before") == run.text("journal.after")
    assert run.text("conf.after").endswith("# node-17: kept on report until the fleet moves (edited by hand)\n")
    assert "Configuration file '/etc/nvreload/nvreload.conf'" not in upgrade  # no prompt
    assert run.text("persistenced_stopped.out").strip() == "inactive"
    assert run.text("rollback.rc").strip() == "0", run.text("rollback.err")
    assert run.text("persistenced_back.out").strip() == "active"

    # 4. remove: the conffiles and the state stay, the program, the venv and the metrics file go;
    # the hooks left behind (conffiles) do nothing on the next transaction
    apt_ok(run, "remove")
    remains = run.text("after_remove.txt")
    for kept in ("/etc/nvreload/nvreload.conf", "/etc/apt/apt.conf.d/99nvreload", "/var/lib/nvreload"):
        assert re.search(rf"^{re.escape(kept)}$", remains, re.M), remains
    for gone in ("/usr/bin/nvreload", "/opt/venvs/nvreload", "/var/lib/prometheus/node-exporter/nvreload.prom"):
        assert f"cannot access '{gone}'" in remains, remains
    assert run.text("timer_after_remove.out").strip() == "inactive"
    assert "nvreload" not in apt_ok(run, "after_remove_driver").replace("nvidia-stand-in-driver", "")
    # purge: nothing of nvreload anywhere on the root file system, nothing else but shared records
    apt_ok(run, "purge")
    driver_files = set(lines(run, "driver.files"))
    added = [p for p in lines(run, "added.txt") if p not in driver_files]
    assert [p for p in added if "nvreload" in p] == []
    assert lines(run, "removed.txt") == []  # /opt among them once: dpkg took it with the package
    assert [p for p in added if not any(re.fullmatch(pattern, p) for pattern in SHARED)] == []
    assert "No such file" in run.text("run_after_purge.txt")

    # 5. purge with an unfinished run: its journal kept, the rest of the state gone, and named
    assert run.text("stop_again.rc").strip() == "0", run.text("stop_again.err")
    purge = apt_ok(run, "purge_unfinished")
    assert "nvreload: purge kept /var/lib/nvreload/journal.json: it holds an unfinished run (state stopped)" in purge
    assert set(lines(run, "kept.txt")) <= {"journal.json", "journal.json.records"}
    assert "journal.json" in lines(run, "kept.txt")
