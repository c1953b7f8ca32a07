"""What packaging/ ships: the systemd units (clean under systemd-analyze verify), the apt, dpkg and
dnf hooks, and the hook script they all run, run here for real with the simulated node behind it.
The real apt transaction is tests/vm/test_real_kernel_hooks.py."""

import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
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


def apt_config(path: Path) -> dict[str, list[str]]:
    """The hooks a file sets, as apt itself reads them (apt-config dump)."""
    tool = shutil.which("apt-config")
    if tool is None:
        pytest.skip("apt-config is not installed (Debian package apt)")
    dump = subprocess.run([tool, "-c", str(path), "dump"], capture_output=True, text=True, timeout=60, check=True)
    hooks: dict[str, list[str]] = {}
    for line in dump.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key in ("DPkg::Pre-Invoke::", "DPkg::Post-Invoke::") and "nvreload" in value:
            hooks.setdefault(key.strip(":"), []).append(value.rstrip(";").strip('"'))
    return hooks


def test_apt_clears_the_dpkg_mark_before_the_transaction_and_runs_the_hook_after_it():
    assert apt_config(PACKAGING / "apt" / "99nvreload") == {
        "DPkg::Pre-Invoke": ["if [ -x /usr/lib/nvreload/post-invoke ]; then /usr/lib/nvreload/post-invoke --begin; fi"],
        "DPkg::Post-Invoke": ["if [ -x /usr/lib/nvreload/post-invoke ]; then /usr/lib/nvreload/post-invoke apt; fi"],
    }


def status_logger() -> str:
    """The command packaging/dpkg/nvreload gives dpkg as its status logger."""
    (line,) = [line for line in (PACKAGING / "dpkg" / "nvreload").read_text().splitlines() if not line.startswith("#")]
    name, _, command = line.partition("=")
    assert name == "status-logger"
    return command


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


@pytest.mark.parametrize(
    "package",
    [
        "nvidia-driver",  # NVIDIA's CUDA repository
        "nvidia-driver-libs",
        "kmod-nvidia-latest-dkms",
        "cuda-drivers",
        "akmod-nvidia",  # RPM Fusion
        "kmod-nvidia",
        "xorg-x11-drv-nvidia",
        "xorg-x11-drv-nvidia-cuda-libs",
    ],
)
def test_a_dnf_4_transaction_that_brings_a_driver_package_runs_the_hook(package):
    filters = [line.split(":", 2)[0] for line in action_lines(PACKAGING / "dnf" / "nvreload.action")]
    assert any(fnmatch.fnmatchcase(package, glob) for glob in filters), (package, filters)


def test_a_dnf_4_transaction_of_other_packages_runs_no_hook():
    filters = [line.split(":", 2)[0] for line in action_lines(PACKAGING / "dnf" / "nvreload.action")]
    assert not [p for p in ("kernel-core", "bash", "python3-libs") if any(fnmatch.fnmatchcase(p, g) for g in filters)]


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
    # only logind's PreparingForShutdown is asked (busctl get-property): what a test sets
    busctl = bindir / "busctl"
    busctl.write_text('#!/bin/sh\ncat "$(dirname "$0")/preparing-for-shutdown" 2>/dev/null || echo "b false"\n')
    busctl.chmod(0o755)
    # the system log: what the hook hands logger(1), one line of arguments per call
    logger = bindir / "logger"
    logger.write_text('#!/bin/sh\necho "$*" >> "$(dirname "$0")/syslog"\n')
    logger.chmod(0o755)
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
    # and in the system log (the journal, on systemd) under the tag nvreload
    logged = (tmp / "bin" / "syslog").read_text().splitlines()
    assert [line for line in logged if line.startswith("-t nvreload -- reload pending: module 550.90.07, ")] == [
        "-t nvreload -- reload pending: module 550.90.07, userspace 550.127.08; not done because the upgrade "
        "policy (on_upgrade) is report; run nvreload --reload when the node is free"
    ], logged


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


@pytest.mark.parametrize(
    "answer,says",
    [
        ("system-state", "stopping\n"),  # systemd runs the shutdown jobs
        # unattended-upgrades installing on shutdown, its delay inhibitor holding the shutdown back:
        # systemd still says running, logind prepares for the shutdown
        ("preparing-for-shutdown", "b true\n"),
    ],
    ids=["systemd-stopping", "logind-preparing"],
)
def test_the_hook_does_nothing_while_the_system_shuts_down(hook_env, answer, says):
    env, tmp = hook_env
    (tmp / "bin" / answer).write_text(says)
    proc = run_hook(env, "apt")
    assert proc.returncode == 0 and "skipped: the system is shutting down" in proc.stderr
    assert not (tmp / "state").exists()


def test_a_dpkg_error_mark_left_before_the_transaction_is_forgotten_when_apt_begins(hook_env):
    env, tmp = hook_env
    run_hook(env, script=DPKG_STATUS, stdin="status: foo : error : dependency problems - leaving unconfigured\n")
    assert (tmp / "state" / "dpkg-failed").exists()  # a `dpkg -i` by hand, outside apt
    begin = run_hook(env, "--begin")
    assert begin.returncode == 0 and not begin.stdout + begin.stderr
    assert not (tmp / "state" / "dpkg-failed").exists()
    assert "reload pending" in run_hook(env, "apt").stderr  # this transaction was checked


# dpkg for real, in a root of the test's own: a package whose postinst fails, the shipped logger line
@pytest.fixture
def dpkg_root(tmp_path):
    dpkg = shutil.which("dpkg")
    if dpkg is None or shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg is not installed")
    root = tmp_path / "root"
    (root / "var" / "lib" / "dpkg" / "info").mkdir(parents=True)
    (root / "var" / "lib" / "dpkg" / "updates").mkdir()
    (root / "var" / "lib" / "dpkg" / "status").touch()
    package = tmp_path / "package"
    (package / "DEBIAN").mkdir(parents=True)
    (package / "DEBIAN" / "control").write_text(
        "Package: nvreload-test-broken\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: nvreload tests <t@nvreload.invalid>\nDescription: its postinst fails\n"
    )
    postinst = package / "DEBIAN" / "postinst"
    postinst.write_text("#!/bin/sh\necho configuring fails\nexit 1\n")
    postinst.chmod(0o755)
    deb = tmp_path / "broken.deb"
    subprocess.run(
        ["dpkg-deb", "--build", "--root-owner-group", str(package), str(deb)],
        check=True,
        timeout=60,
        capture_output=True,
    )

    def install(logger: str, env: dict) -> subprocess.CompletedProcess:
        args = [dpkg, f"--root={root}", "--force-script-chrootless", "--force-not-root", "--log=/dev/null"]
        return subprocess.run(
            [*args, f"--status-logger={logger}", "-i", str(deb)],
            capture_output=True,
            text=True,
            env={**env, "PATH": env["PATH"] + ":/usr/sbin:/sbin"},  # dpkg wants ldconfig, start-stop-daemon
            timeout=120,
        )

    return install


def test_real_dpkg_feeds_a_failed_postinst_to_the_status_logger_and_the_hook_skips(hook_env, dpkg_root):
    env, tmp = hook_env
    logger = status_logger().replace("/usr/lib/nvreload/dpkg-status", str(DPKG_STATUS))
    proc = dpkg_root(logger, env)
    assert proc.returncode == 1 and "configuring fails" in proc.stdout + proc.stderr, proc.stderr
    assert (tmp / "state" / "dpkg-failed").exists()
    assert "skipped: dpkg reported an error in this transaction" in run_hook(env, "apt").stderr


def test_the_dpkg_configuration_left_behind_without_its_logger_does_not_break_dpkg(hook_env, dpkg_root):
    # nvreload removed, its conffile in /etc/dpkg/dpkg.cfg.d kept: dpkg must not die writing to nothing
    env, tmp = hook_env
    if os.path.exists("/usr/lib/nvreload/dpkg-status"):
        pytest.skip("nvreload's dpkg-status is installed here")
    proc = dpkg_root(status_logger(), env)
    assert proc.returncode == 1 and "configuring fails" in proc.stdout + proc.stderr, proc.stderr  # not 141: SIGPIPE
    assert "Errors were encountered while processing:\n nvreload-test-broken" in proc.stderr  # dpkg ran to its end


def test_the_dnf_plugins_run_the_hook_as_they_document_and_it_records_the_reload_as_pending(hook_env):
    # no dnf transaction can run on Debian: the commands, run the way each plugin runs them
    env, tmp = hook_env
    (line, *_) = action_lines(PACKAGING / "dnf" / "nvreload.action")
    dnf4 = line.split(":", 2)[2].replace("/usr/lib/nvreload/post-invoke", str(POST_INVOKE))
    proc = subprocess.run(["/bin/sh", "-c", dnf4], capture_output=True, text=True, env=env, timeout=120)  # a shell
    assert proc.returncode == 0 and "nvreload: reload pending" in proc.stderr, proc.stderr
    assert json.loads((tmp / "state" / "reload-pending.json").read_text())["trigger"] == "dnf"
    (line,) = action_lines(PACKAGING / "dnf" / "nvreload.actions")
    dnf5 = line.split(":", 4)[4].replace("/usr/lib/nvreload/post-invoke", str(POST_INVOKE)).split(" ")  # no shell
    proc = subprocess.run(dnf5, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and "nvreload: reload pending" in proc.stderr, proc.stderr


def test_the_hook_without_nvreload_on_path_says_so(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "NVRELOAD_STATE_DIR": str(tmp_path), "NVRELOAD_SYSTEMCTL": "/bin/false"}
    if shutil.which("nvreload", path=env["PATH"]):
        pytest.skip("an nvreload is installed in /usr/bin here")
    proc = run_hook(env, "apt")
    assert proc.returncode == 0 and "skipped: nvreload is not on PATH" in proc.stderr


def test_the_shipped_scripts_are_executable():
    for script in (POST_INVOKE, DPKG_STATUS, PACKAGING / "kernel" / "zz-nvreload"):
        assert os.access(script, os.X_OK), script


def test_a_hung_nvreload_never_hangs_the_package_transaction(hook_env):
    env, tmp = hook_env
    hung = tmp / "bin" / "nvreload"
    hung.write_text("#!/bin/sh\nexec sleep 600\n")  # a FIFO read, an NFS stall: it never answers
    started = time.monotonic()
    proc = run_hook({**env, "NVRELOAD_HOOK_TIMEOUT": "1"}, "apt")
    assert proc.returncode == 0 and time.monotonic() - started < 30
    assert "nvreload --after-upgrade apt did not finish in 1 s and was stopped" in proc.stderr
