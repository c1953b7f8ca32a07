"""Faults on the real kernel: a module that refuses to load, a holder that ignores SIGTERM, a unit
that will not start again, nvreload killed at every step boundary, an unload that stops halfway,
nothing loaded at all, nvidia_peermem without MOFED. Each ends fully reloaded or fully restored,
or says plainly that it cannot, with the exit code the README gives."""

import pytest
from test_real_kernel_reload import MISMATCHED_NODE, A, B, state_of

pytestmark = pytest.mark.realkernel

BROKEN = "580.126.09"  # tests/vm/build.sh: its nvidia.ko fails in probe, like a GPU the driver cannot init


def test_a_new_module_that_refuses_to_load_with_the_old_one_gone_from_disk_says_reboot(run_vm):
    run = run_vm(f"""
install_driver {A}
load_stack
persistenced_unit
install_driver {BROKEN}
record reload --reload --yes --json
snapshot_state after
dmesg | grep -E 'NVRM|nvidia' | tail -5
""")
    assert run.rc == 0, run.explain()
    assert run.text("reload.rc").strip() == "11", run.explain()
    report = run.json("reload.json")
    assert report["result"] == "failed" and report["remaining_action"] == "reboot"
    assert "No such device" in report["error"]  # the kernel's own refusal, through modprobe
    assert any(f["target"] == "nvidia" and f["action"] == "load_module" for f in report["restart_failures"])
    after = state_of(run, "after")
    assert after["loaded_version"] == "none" and after["journal_state"] == "failed"


def test_a_holder_that_ignores_sigterm_is_killed_and_the_child_it_forked_meanwhile_too(run_vm):
    run = run_vm(
        MISMATCHED_NODE
        + """
start_stubborn_holder
echo $! > /job/stubborn.pid
sleep 0.5
record reload --reload --yes --json
snapshot_state after
"""
    )
    assert run.rc == 0, run.explain()
    assert run.text("reload.rc").strip() == "0", run.explain()
    stubborn = int(run.text("stubborn.pid"))
    killed = run.json("reload.json")["killed"]
    assert {k["pid"]: k["outcome"] for k in killed}[stubborn].startswith("killed: ignored SIGTERM"), killed
    # the `sleep 300` it forked on SIGTERM inherited /dev/nvidia-uvm: found by the rescan, ended
    assert any(k.get("late") and k["comm"] == "sleep" and k["outcome"].startswith("terminated") for k in killed), killed
    assert state_of(run, "after")["loaded_version"] == B


def test_a_unit_that_will_not_start_again_is_named_and_start_brings_it_back_once_fixed(run_vm):
    run = run_vm(f"""
install_driver {A}
load_stack
persistenced_unit "/bin/sh -c 'test ! -e /run/persistenced-broken'"
install_driver {B}
touch /run/persistenced-broken
record reload --reload --yes --json
snapshot_state partial
rm /run/persistenced-broken
record start --start --json
snapshot_state after
""")
    assert run.rc == 0, run.explain()
    assert run.text("reload.rc").strip() == "12", run.explain()
    report = run.json("reload.json")
    assert report["remaining_action"] == "nvreload --start"
    assert [f["target"] for f in report["restart_failures"]] == ["nvidia-persistenced.service"]
    partial = state_of(run, "partial")
    assert (
        partial["loaded_version"] == B and partial["persistenced"] != "active" and partial["journal_state"] == "failed"
    )
    assert run.text("start.rc").strip() == "0", run.explain()
    after = state_of(run, "after")
    assert after["persistenced"] == "active" and after["journal_state"] == "reloaded"


BOUNDARIES = [
    (step, phase)
    for step in ("stop_consumers", "unload_modules", "load_modules", "verify", "restart_consumers")
    for phase in ("running", "done")
]

# Kill nvreload with SIGKILL the moment its journal says step STEP is PHASE, then --rollback; once
# per boundary, the node set back to the mismatch before each.
KILL_AT_EACH_BOUNDARY = (
    MISMATCHED_NODE
    + """
reset_node() {
    systemctl stop nvidia-persistenced.service
    pkill -9 -f 'sleep infinity' || true
    rm -f /var/lib/nvreload/journal.json
    modprobe -r nvidia_drm nvidia_modeset nvidia_uvm nvidia 2>/dev/null || true
    install_driver """
    + A
    + """
    load_stack
    systemctl start nvidia-persistenced.service
    start_holder
    install_driver """
    + B
    + """
}
kill_at() {
    nvr --reload --yes --json > /dev/null 2>&1 &
    local run=$!
    python3 - "$1" "$2" <<'PY'
import json, os, signal, sys, time
step, phase = sys.argv[1], sys.argv[2]
deadline = time.time() + 120
while time.time() < deadline:
    try:
        journal = json.load(open("/var/lib/nvreload/journal.json"))
    except (OSError, ValueError):
        time.sleep(0.005); continue
    if any(s["name"] == step and s["status"] == phase for s in journal["steps"]):
        try:
            os.kill(journal["pid"], signal.SIGKILL)
            print("killed at", step, phase)
        except ProcessLookupError:
            print("the run had already ended at", step, phase)  # after the last step: nothing to undo
            sys.exit(3)
        sys.exit(0)
    if journal["state"] != "running":
        print("the run ended before", step, phase); sys.exit(1)
    time.sleep(0.005)
sys.exit(2)
PY
    echo $? > "/job/kill-$1-$2.rc"
    wait "$run"
}
for boundary in """
    + " ".join(f"{s}:{p}" for s, p in BOUNDARIES)
    + """; do
    step=${boundary%:*}; phase=${boundary#*:}
    kill_at "$step" "$phase"
    record "rollback-$step-$phase" --rollback --json
    snapshot_state "after-$step-$phase"
    reset_node
done
"""
)


def test_sigkill_at_every_step_boundary_then_rollback_ends_fully_reloaded_or_fully_restored(run_vm):
    run = run_vm(KILL_AT_EACH_BOUNDARY, timeout=600)
    assert run.rc == 0, run.explain()
    for step, phase in BOUNDARIES:
        name = f"{step}-{phase}"
        # killed at the boundary; only after the last step may the run have ended first
        allowed = ("0", "3") if (step, phase) == ("restart_consumers", "done") else ("0",)
        assert run.text(f"kill-{name}.rc").strip() in allowed, (name, run.explain())
        rollback = run.json(f"rollback-{name}.json")
        after = state_of(run, f"after-{name}")
        modules = after["modules"].split()
        assert modules == ["nvidia", "nvidia_drm", "nvidia_modeset", "nvidia_uvm"], (name, after)
        assert after["persistenced"] == "active", (name, after)
        if rollback["result"] in ("reloaded", "nothing_to_do"):
            assert after["loaded_version"] == B and after["journal_state"] == "reloaded", (name, after)
        else:
            assert rollback["result"] == "rolled_back", (name, rollback)
            assert after["loaded_version"] == A and after["journal_state"] == "rolled_back", (name, after)
            assert run.text(f"rollback-{name}.rc").strip() == "10", name


def test_an_unload_that_stops_at_nvidia_puts_back_the_modules_it_had_removed(run_vm):
    # A process opens /dev/nvidia0 after the scan, once nvidia_drm is gone: rmmod of the dependents
    # works, rmmod nvidia fails "in use", and the half-unloaded stack must be loaded back.
    run = run_vm(f"""
install_driver {A}
load_stack
persistenced_unit
setsid bash -c 'while grep -q "^nvidia_drm " /proc/modules; do sleep 0.002; done; exec sleep infinity < /dev/nvidia0' &
record reload --reload --yes --json
snapshot_state after
""")
    assert run.rc == 0, run.explain()
    report = run.json("reload.json")
    assert run.text("reload.rc").strip() == "10", run.explain()
    assert report["result"] == "rolled_back" and "in use" in report["error"], report["error"]
    after = state_of(run, "after")
    assert after["modules"].split() == ["nvidia", "nvidia_drm", "nvidia_modeset", "nvidia_uvm"]
    assert after["loaded_version"] == A and after["persistenced"] == "active"


def test_a_node_with_nothing_loaded_is_loaded_from_what_is_on_disk(run_vm):
    run = run_vm(f"""
install_driver {A}
record before --status --json
record reload --reload --yes --json
snapshot_state after
""")
    assert run.rc == 0, run.explain()
    before = run.json("before.json")
    assert "driver_not_loaded" in [f["code"] for f in before["findings"]] and before["recommended_action"] == "reload"
    assert run.text("reload.rc").strip() == "0", run.explain()
    after = state_of(run, "after")
    assert after["loaded_version"] == A
    assert after["modules"].split() == ["nvidia", "nvidia_drm", "nvidia_modeset", "nvidia_uvm"]


def test_peermem_without_mofed_is_waited_for_once_and_skipped_with_a_warning(run_vm):
    # peermem is loaded with version A (next to B's nvidia it would refuse: "API mismatch")
    with_peermem = MISMATCHED_NODE.replace("modprobe nvidia_uvm\n", "modprobe nvidia_uvm && modprobe nvidia_peermem\n")
    assert with_peermem != MISMATCHED_NODE
    run = run_vm(
        with_peermem
        + """
grep -q '^nvidia_peermem ' /proc/modules || { echo "nvidia_peermem did not load with version A"; exit 9; }
SECONDS=0
record reload --reload --yes --json --peermem-wait 3
echo "seconds=$SECONDS" > /job/took
snapshot_state after
"""
    )
    assert run.rc == 0, run.explain()
    assert run.text("reload.rc").strip() == "0", run.explain()
    report = run.json("reload.json")
    assert report["result"] == "reloaded"
    assert [w["module"] for w in report["warnings"]] == ["nvidia_peermem"] and "MOFED not ready" in report["warnings"][
        0
    ]["warning"]
    after = state_of(run, "after")
    assert after["loaded_version"] == B and "nvidia_peermem" not in after["modules"].split()
    assert int(run.text("took").split("=")[1]) < 60  # one bounded wait, not two of five minutes
