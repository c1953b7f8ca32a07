"""The package hooks for real: packaging/ installed in the guest as a package would install it, then
a real `apt-get install ./nvidia-stand-in-driver.deb` of a newer userspace and modules. The apt hook
runs nvreload --after-upgrade after the transaction: report (the default) records the reload as
pending, when-idle leaves a busy node pending without signalling anything and reloads an idle one,
a transaction dpkg failed is skipped (one that failed before it, outside apt, is not held against
it), dpkg's configuration left behind without its status logger breaks nothing, and each verdict is in
the system journal."""

import json

import pytest

pytestmark = pytest.mark.realkernel

A, B = "580.95.05", "580.105.08"

HOOKED_NODE = f"""
install_driver {A}
load_stack
persistenced_unit
# nvreload on PATH as a package installs it, and packaging/ where its README says
printf '#!/bin/sh\\nPYTHONPATH=/src exec python3 -m nvreload "$@"\\n' > /usr/local/bin/nvreload
chmod 755 /usr/local/bin/nvreload
mkdir -p /usr/lib/nvreload
install -m 0755 /src/packaging/hooks/post-invoke /src/packaging/hooks/dpkg-status /usr/lib/nvreload/
install -m 0644 /src/packaging/apt/99nvreload /etc/apt/apt.conf.d/99nvreload
install -m 0644 /src/packaging/dpkg/nvreload /etc/dpkg/dpkg.cfg.d/nvreload

# make_deb NAME VERSION POSTINST: a package of version B's modules and userspace (NAME
# nvidia-stand-in-driver), or of nothing with a failing postinst
make_deb() {{
    local root=/tmp/deb-$1
    rm -rf "$root"; mkdir -p "$root/DEBIAN"
    if [ "$1" = nvidia-stand-in-driver ]; then
        mkdir -p "$root$UPDATES" "$root$LIBDIR"
        cp /vm/modules/$2/nvidia*.ko "$root$UPDATES/"
        cp /vm/lib/$2/libnvidia-ml.so.$2 /vm/lib/$2/libcuda.so.$2 "$root$LIBDIR/"
        ln -s libnvidia-ml.so.$2 "$root$LIBDIR/libnvidia-ml.so.1"
        ln -s libcuda.so.$2 "$root$LIBDIR/libcuda.so.1"
    fi
    printf 'Package: %s\\nVersion: %s\\nArchitecture: amd64\\nMaintainer: nvreload tests <t@nvreload.invalid>\\nDescription: stand-in\\n' "$1" "$2" > "$root/DEBIAN/control"
    printf '#!/bin/sh\\n%s\\n' "$3" > "$root/DEBIAN/postinst"
    chmod 755 "$root/DEBIAN/postinst"
    dpkg-deb --build --root-owner-group "$root" "/tmp/$1.deb" > /dev/null
}}
make_deb nvidia-stand-in-driver {B} 'depmod -a && ldconfig'
make_deb nvreload-test-broken 1.0 'echo configuring fails; exit 1'

# apt_install NAME ARGS...: a real apt transaction; its output, exit code and the node after it in /job
apt_install() {{
    local name=$1; shift
    DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" > "/job/$name.log" 2>&1
    echo $? > "/job/$name.rc"
    echo "loaded_version=$(loaded_version)" > "/job/$name.state"
    echo "persistenced=$(systemctl is-active nvidia-persistenced.service)" >> "/job/$name.state"
    cp /var/lib/nvreload/reload-pending.json "/job/$name.pending.json" 2>/dev/null || true
    echo "== $name: apt rc $(cat /job/$name.rc), $(loaded_version)"; grep nvreload "/job/$name.log"
}}

# 1. the default policy (report) on an idle node: nothing acts, the reload is pending
apt_install report /tmp/nvidia-stand-in-driver.deb
record status_report --status --json

# 2. when-idle with a GPU job running: still pending, the job untouched
mkdir -p /etc/nvreload && echo 'on_upgrade = when-idle' > /etc/nvreload/nvreload.conf
start_holder
holder=$!
echo $holder > /job/holder.pid
apt_install busy --reinstall /tmp/nvidia-stand-in-driver.deb
kill -0 $holder && echo alive > /job/holder.after || echo gone > /job/holder.after

# 3. the job ends (the test's own process): the next transaction reloads
kill $holder; wait $holder 2>/dev/null
apt_install idle --reinstall /tmp/nvidia-stand-in-driver.deb
cp /var/lib/nvreload/journal.json /job/idle.journal.json 2>/dev/null || true

# 4. a transaction dpkg fails: the hook leaves the driver alone and says why
apt_install broken /tmp/nvreload-test-broken.deb

# 5. dpkg fails outside apt (by hand): the next apt transaction is still checked (Pre-Invoke forgets it)
dpkg -r nvreload-test-broken > /dev/null 2>&1
dpkg -i /tmp/nvreload-test-broken.deb > /dev/null 2>&1
ls /run/nvreload/dpkg-failed > /job/manual.mark 2>&1
dpkg -r nvreload-test-broken > /dev/null 2>&1
apt_install after_manual --reinstall /tmp/nvidia-stand-in-driver.deb

# 6. nvreload removed, its dpkg configuration kept: dpkg and apt still work
rm /usr/lib/nvreload/dpkg-status
apt_install logger_gone --reinstall /tmp/nvidia-stand-in-driver.deb

# what the hook runs said in the system journal, under its tag
journalctl -t nvreload --no-pager -o cat > /job/journal.txt 2>&1
"""


def state(run, name: str) -> dict:
    return dict(line.split("=", 1) for line in run.text(f"{name}.state").splitlines())


def test_apt_hooks_report_by_default_wait_for_a_busy_node_and_reload_an_idle_one(run_vm):
    run = run_vm(HOOKED_NODE, timeout=600)
    assert run.rc == 0, run.explain()

    # 1. report: the transaction succeeded, nothing was stopped, the reload is pending and --status says so
    assert run.text("report.rc").strip() == "0", run.explain() + run.text("report.log")
    assert "nvreload: reload pending: module 580.95.05, userspace 580.105.08" in run.text("report.log")
    assert state(run, "report") == {"loaded_version": A, "persistenced": "active"}
    assert run.json("report.pending.json")["reason"] == "policy_report"
    assert run.json("status_report.json")["reload"]["pending"]["trigger"] == "apt"

    # 2. when-idle, busy: pending again, naming the job, which is still running
    assert run.text("busy.rc").strip() == "0", run.explain() + run.text("busy.log")
    busy = run.json("busy.pending.json")
    holder = int(run.text("holder.pid"))
    # the job, with the unit it runs in (the case's own, which nvreload does not know)
    assert busy["reason"] == "busy" and [(b["kind"], b["name"], b["pid"]) for b in busy["busy"]] == [
        ("process", "sleep", holder)
    ]
    assert busy["since"] == run.json("report.pending.json")["since"]  # due since the first transaction
    assert run.text("holder.after").strip() == "alive"
    assert state(run, "busy")["loaded_version"] == A

    # 3. when-idle, idle: reloaded within the transaction, the unit back, nothing pending any more
    assert run.text("idle.rc").strip() == "0", run.explain() + run.text("idle.log")
    assert state(run, "idle") == {"loaded_version": B, "persistenced": "active"}, run.explain() + run.text("idle.log")
    assert not (run.job / "idle.pending.json").exists()
    assert json.loads(run.text("idle.journal.json"))["state"] == "reloaded"

    # 4. dpkg failed: apt says so, the hook skipped, the driver as it was
    assert run.text("broken.rc").strip() != "0"
    assert "nvreload: skipped: dpkg reported an error in this transaction" in run.text("broken.log"), run.text(
        "broken.log"
    )
    assert state(run, "broken")["loaded_version"] == B

    # 5. a dpkg error outside apt left its mark; the next apt transaction was checked all the same
    assert run.text("manual.mark").strip() == "/run/nvreload/dpkg-failed"
    after_manual = run.text("after_manual.log")
    assert run.text("after_manual.rc").strip() == "0" and "nvreload: no reload needed" in after_manual, after_manual
    assert "skipped" not in after_manual

    # 6. the status logger gone, its dpkg configuration kept: the transaction still succeeds (no SIGPIPE)
    assert run.text("logger_gone.rc").strip() == "0", run.text("logger_gone.log")

    # each hook run's verdict is in the system journal too (tag nvreload), where an operator finds it
    journal = run.text("journal.txt").splitlines()
    pending = [line for line in journal if line.startswith("reload pending: module 580.95.05, userspace 580.105.08;")]
    assert len(pending) == 2, journal  # report, then busy
    assert "the upgrade policy (on_upgrade) is report" in pending[0], journal
    assert "GPU work is running: " in pending[1] and str(holder) in pending[1], journal
    assert "skipped: dpkg reported an error in this transaction" in journal, journal
