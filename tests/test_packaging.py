"""What packaging/ ships: the systemd units (clean under systemd-analyze verify), the apt, dpkg and
dnf hooks, and the hook script they all run, run here for real with the simulated node behind it.
The real apt transaction is tests/vm/test_real_kernel_hooks.py."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGING = Path(__file__).resolve().parents[1] / "packaging"
POST_INVOKE = PACKAGING / "hooks" / "post-invoke"
DPKG_STATUS = PACKAGING / "hooks" / "dpkg-status"
NVRELOAD = Path(sys.executable).parent / "nvreload"


def test_systemd_analyze_verify_finds_nothing_wrong_with_any_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    units = sorted((PACKAGING / "systemd").glob("nvreload-*"))
    assert {u.name for u in units} >= {"nvreload-metrics.service", "nvreload-metrics.timer", "nvreload-reload.service"}
    # nvreload is not installed at the packaged path here: the units run an executable stand-in there
    stand_in = tmp_path / "nvreload"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    for unit in units:
        (tmp_path / unit.name).write_text(unit.read_text().replace("/usr/bin/nvreload ", f"{stand_in} "))
    proc = subprocess.run(
        [analyze, "verify", *(str(tmp_path / u.name) for u in units)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and not proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_no_unit_watches_a_file_to_reload_and_the_reload_unit_follows_the_upgrade_policy():
    assert not list((PACKAGING / "systemd").glob("*.path"))  # fired while dpkg was still unpacking
    service = (PACKAGING / "systemd" / "nvreload-reload.service").read_text().splitlines()
    assert "ExecStart=/usr/bin/nvreload --after-upgrade manual" in service
    assert "SuccessExitStatus=13" in service and not [line for line in service if line.startswith("ExecCondition")]


def test_apt_runs_the_hook_after_the_transaction_and_dpkg_feeds_the_status_logger():
    apt = (PACKAGING / "apt" / "99nvreload").read_text()
    assert (
        'DPkg::Post-Invoke { "if [ -x /usr/lib/nvreload/post-invoke ]; then /usr/lib/nvreload/post-invoke apt; fi"; };'
        in apt
    )
    assert "status-logger=/usr/lib/nvreload/dpkg-status" in (PACKAGING / "dpkg" / "nvreload").read_text().splitlines()


def action_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_the_dnf_action_files_have_the_fields_their_plugins_read_and_run_the_hook():
    for line in action_lines(PACKAGING / "dnf" / "nvreload.action"):  # dnf 4: filter:state:command
        package_filter, state, command = line.split(":", 2)
        assert package_filter and state == "in" and command == "/usr/lib/nvreload/post-invoke dnf", line
    (line,) = action_lines(PACKAGING / "dnf" / "nvreload.actions")  # dnf5: callback:filter:direction:options:command
    callback, package_filter, direction, options, command = line.split(":", 4)
    assert (callback, package_filter, direction, options) == ("post_transaction", "", "", "")
    assert command == "/usr/lib/nvreload/post-invoke dnf"


def test_the_example_policy_is_the_default_and_parses():
    from nvreload.policy import load_policy

    policy = load_policy(str(PACKAGING / "etc" / "nvreload.conf"))
    assert policy.on_upgrade == "report" and policy.source is not None


# the hook script, run for real ----------------------------------------------------------------------------------


@pytest.fixture
def hook_env(tmp_path):
    """PATH with the real nvreload, behind it a simulated node with a version mismatch (the scenario
    through a wrapper: the hook passes only the trigger), a state dir and a policy file of the test's."""
    if not NVRELOAD.exists():
        pytest.skip(f"no nvreload console script beside {sys.executable} (install the package)")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "nvreload"
    wrapper.write_text(f'#!/bin/sh\nexec {NVRELOAD} "$@" --simulate\n')
    wrapper.chmod(0o755)
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "NVRELOAD_STATE_DIR": str(tmp_path / "state"),
        "NVRELOAD_CONFIG": str(tmp_path / "nvreload.conf"),
        "NVRELOAD_SYSTEMCTL": str(bindir / "systemctl"),
    }
    systemctl = bindir / "systemctl"  # only is-system-running is asked: the state a test sets
    systemctl.write_text('#!/bin/sh\ncat "$(dirname "$0")/system-state" 2>/dev/null || echo running\n')
    systemctl.chmod(0o755)
    return env, tmp_path


def run_hook(env: dict, *args: str, script: Path = POST_INVOKE, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(["sh", str(script), *args], input=stdin, capture_output=True, text=True, env=env, timeout=120)


def test_the_hook_reports_a_due_reload_as_pending_and_never_fails_the_transaction(hook_env):
    env, tmp = hook_env
    proc = run_hook(env, "apt")
    assert proc.returncode == 0, proc.stderr
    assert "nvreload: reload pending: module 550.90.07, userspace 550.127.08" in proc.stderr
    assert (tmp / "state" / "reload-pending.json").exists()
    assert "exited" not in proc.stderr  # 13 (pending) is an expected answer


def test_the_hook_says_when_nvreload_fails_and_still_exits_0(hook_env):
    env, tmp = hook_env
    (tmp / "nvreload.conf").write_text("on_upgrade = always\n")
    proc = run_hook(env, "dnf")
    assert proc.returncode == 0
    assert "on_upgrade must be one of report, when-idle" in proc.stderr
    assert "nvreload --after-upgrade dnf exited 66" in proc.stderr


def test_a_transaction_dpkg_failed_is_skipped_once_and_the_next_one_is_checked(hook_env):
    env, tmp = hook_env
    logger = run_hook(
        env,
        script=DPKG_STATUS,
        stdin="status: nvidia-driver : half-configured\n"
        "status: nvidia-driver : error : subprocess installed post-installation script returned error exit status 1\n",
    )
    assert logger.returncode == 0 and (tmp / "state" / "dpkg-failed").exists()
    proc = run_hook(env, "apt")
    assert proc.returncode == 0 and "skipped: dpkg reported an error in this transaction" in proc.stderr
    assert not (tmp / "state" / "reload-pending.json").exists()
    assert "reload pending" in run_hook(env, "apt").stderr  # the mark was for that transaction only


def test_the_status_logger_ignores_a_transaction_without_errors(hook_env):
    env, tmp = hook_env
    lines = "status: nvidia-driver : unpacked\nstatus: nvidia-driver : installed\nprocessing: configure: x\n"
    assert run_hook(env, script=DPKG_STATUS, stdin=lines).returncode == 0
    assert not (tmp / "state" / "dpkg-failed").exists()


def test_the_hook_does_nothing_while_the_system_shuts_down(hook_env):
    env, tmp = hook_env
    (tmp / "bin" / "system-state").write_text("stopping\n")
    proc = run_hook(env, "apt")
    assert proc.returncode == 0 and "skipped: the system is shutting down" in proc.stderr
    assert not (tmp / "state").exists()


def test_the_hook_without_nvreload_on_path_says_so(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "NVRELOAD_STATE_DIR": str(tmp_path), "NVRELOAD_SYSTEMCTL": "/bin/false"}
    if shutil.which("nvreload", path=env["PATH"]):
        pytest.skip("an nvreload is installed in /usr/bin here")
    proc = run_hook(env, "apt")
    assert proc.returncode == 0 and "skipped: nvreload is not on PATH" in proc.stderr


def test_the_shipped_scripts_are_executable():
    for script in (POST_INVOKE, DPKG_STATUS, PACKAGING / "kernel" / "zz-nvreload"):
        assert os.access(script, os.X_OK), script
