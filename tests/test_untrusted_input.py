"""What an unprivileged user controls never decides what root runs, writes or trusts: scenario
files, symlinks flipped under an installer path, state directories and journals, --output's
directories; and bad input of every kind is one line and its documented exit code. A real other
user (uid 65534, files given to it with chown) where the point is about another user."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from engine.sim_helpers import node_state, write_scenario
from helpers import WITH_SIGINT, as_nobody, run_cli

from nvreload.engine.sim import default_scenario
from nvreload.errors import ExitCode

NOBODY = 65534
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="giving files to another user needs root")


def one_line(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# 2. a simulation never touches the machine ------------------------------------------------------
def test_a_scenario_cannot_ask_for_the_machines_own_consumers(tmp_path):
    scenario = write_scenario(tmp_path, consumers="live")
    proc = run_cli("--reload", "--simulate", scenario, "--yes", env={"NVRELOAD_STATE_DIR": str(tmp_path / "s")})
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "Additional properties are not allowed ('consumers' was unexpected)" in one_line(proc)
    assert not (tmp_path / "s" / "journal.json").exists()


@root_only
def test_a_scenario_another_user_owns_is_refused_like_an_installer(tmp_path):
    scenario = write_scenario(tmp_path)
    os.chown(scenario, NOBODY, NOBODY)
    proc = run_cli("--reload", "--simulate", scenario, "--yes", env={"NVRELOAD_STATE_DIR": str(tmp_path / "s")})
    assert proc.returncode == ExitCode.BAD_INPUT
    assert f"owned by uid {NOBODY}, not root; refusing to take it as a scenario" in one_line(proc)


def test_a_scenario_others_can_write_is_refused(tmp_path):
    scenario = write_scenario(tmp_path)
    os.chmod(scenario, 0o666)
    proc = run_cli("--status", "--simulate", scenario, env={"NVRELOAD_STATE_DIR": str(tmp_path / "s")})
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "writable by group or others; refusing to take it as a scenario" in one_line(proc)


# 3. the installer's --check runs on the checked copy ----------------------------------------------
@root_only
def test_an_installer_reached_through_another_users_symlink_is_refused(tmp_path, installer):
    link = tmp_path / "flip.run"
    link.symlink_to(installer)
    os.chown(link, NOBODY, NOBODY, follow_symlinks=False)
    proc = run_cli(
        "--reload", "--simulate", "--driver", str(link), "--dry-run", env={"NVRELOAD_STATE_DIR": str(tmp_path / "s")}
    )
    assert proc.returncode == ExitCode.BAD_INPUT
    assert f"{link} is a symbolic link owned by uid {NOBODY}" in one_line(proc)


@pytest.mark.parametrize("mode", ["dry_run", "simulate"])
def test_the_archive_check_runs_on_a_private_copy_never_on_the_path(tmp_path, installer, monkeypatch, mode):
    """What `sh PATH --check` runs is the copy taken through the checked descriptor: the path, which
    a user could point elsewhere once it is checked, is never handed to a shell."""
    import nvreload.actions as actions
    from nvreload.engine.engine import Reporter
    from nvreload.state_files import StatePaths

    checked = []
    real_check = actions.check_archive

    def spy(runner, path):
        checked.append(
            (path, Path(path).read_bytes() == installer.read_bytes(), oct(os.stat(Path(path).parent).st_mode))
        )
        real_check(runner, path)

    monkeypatch.setattr(actions, "check_archive", spy)
    request = actions.ActionRequest("reload", simulate="", driver=str(installer), dry_run=mode == "dry_run", yes=True)
    actions.run_action(request, StatePaths(str(tmp_path / "s"), str(tmp_path / "s")), Reporter(), None)
    [(path, same_bytes, directory_mode)] = checked
    assert path != str(installer) and Path(path).name == installer.name and same_bytes
    assert directory_mode.endswith("700") and not Path(path).exists()  # root's own directory, gone after


# 4. the state directory, its lock and its journal ---------------------------------------------------------
@root_only
def test_a_state_directory_in_another_users_home_is_refused_before_anything(tmp_path):
    home = tmp_path / "home"
    (home / ".local" / "state").mkdir(parents=True)
    for directory in (home, home / ".local", home / ".local" / "state"):
        os.chown(directory, NOBODY, NOBODY)
    env = {"NVRELOAD_STATE_DIR": "", "XDG_STATE_HOME": str(home / ".local" / "state"), "HOME": str(home)}
    proc = run_cli("--stop", "--simulate", "--yes", env=env)
    assert proc.returncode == ExitCode.BAD_INPUT
    assert f"{home} is owned by uid {NOBODY}" in one_line(proc)
    assert not (home / ".local" / "state" / "nvreload").exists()


def test_a_lock_that_is_a_symlink_is_refused_and_its_target_never_truncated(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    victim = tmp_path / "shadow"
    victim.write_text("root:secret:0:0\n")
    (state / "lock").symlink_to(victim)
    proc = run_cli("--stop", "--simulate", "--yes", env={"NVRELOAD_STATE_DIR": str(state)})
    assert proc.returncode == ExitCode.BAD_INPUT
    assert f"{state / 'lock'} is a symbolic link; refusing to use it" in one_line(proc)
    assert victim.read_text() == "root:secret:0:0\n"


@root_only
def test_a_journal_another_user_owns_is_refused(tmp_path):
    state = tmp_path / "state"
    assert run_cli("--stop", "--simulate", "--yes", env={"NVRELOAD_STATE_DIR": str(state)}).returncode == 0
    os.chown(state / "journal.json", NOBODY, NOBODY)
    proc = run_cli("--start", "--simulate", "--yes", env={"NVRELOAD_STATE_DIR": str(state)})
    assert proc.returncode == ExitCode.BAD_INPUT
    assert f"journal.json is owned by uid {NOBODY}, not the running user" in one_line(proc)


def _stopped_journal(tmp_path):
    state = tmp_path / "state"
    assert run_cli("--stop", "--simulate", "--yes", env={"NVRELOAD_STATE_DIR": str(state)}).returncode == 0
    return state, json.loads((state / "journal.json").read_text())


@pytest.mark.parametrize(
    "kind,target,detail,why",
    [
        ("unload_module", "../../evil", {}, "a module name with a path in it"),
        ("stop_service", "--root=/", {}, "a unit name that is an option"),
        ("stop_container", "../../v1.41/containers/x", {}, "a container id that is an API route"),
        ("stop_service", "nvidia-persistenced", {"command": ["/tmp/x/nvidia-persistenced"]}, "a relative daemon"),
        ("stop_service", "nvidia-persistenced", {"command": ["/bin/sh", "-c", "id"]}, "another program"),
    ],
)
def test_a_journal_naming_what_no_scenario_could_is_refused_whole(tmp_path, kind, target, detail, why):
    state, journal = _stopped_journal(tmp_path)
    journal["undo"].append(
        {"seq": len(journal["undo"]) + 1, "kind": kind, "target": target, "detail": detail, "state": "done"}
    )
    if why == "a relative daemon":
        journal["undo"][-1]["detail"]["command"][0] = "x/nvidia-persistenced"
    (state / "journal.json").write_text(json.dumps(journal))
    proc = run_cli("--start", "--simulate", "--yes", env={"NVRELOAD_STATE_DIR": str(state)})
    assert proc.returncode == ExitCode.BAD_INPUT, why
    assert "an undo record of the wrong shape" in one_line(proc), why


def test_a_journal_module_list_with_a_path_is_refused(tmp_path):
    state, journal = _stopped_journal(tmp_path)
    journal["modules"] = [{"name": "../../evil", "parameters": {}}]
    (state / "journal.json").write_text(json.dumps(journal))
    proc = run_cli("--rollback", "--simulate", "--yes", env={"NVRELOAD_STATE_DIR": str(state)})
    assert proc.returncode == ExitCode.BAD_INPUT and "a module of the wrong shape" in one_line(proc)


# 5. --output never goes through a link another user owns ------------------------------------------
@root_only
def test_output_through_another_users_directory_link_is_refused_and_nothing_is_written(tmp_path, h100_root):
    root_only_dir = tmp_path / "etc-cron.d"
    root_only_dir.mkdir(mode=0o700)
    planted = tmp_path / "textfiles"
    planted.symlink_to(root_only_dir)
    os.chown(planted, NOBODY, NOBODY, follow_symlinks=False)
    proc = run_cli("--status", "--format", "prometheus", "--output", str(planted / "x.prom"), "--root", str(h100_root))
    assert proc.returncode == ExitCode.BAD_INPUT
    assert f"{planted} is a symbolic link owned by uid {NOBODY}" in one_line(proc)
    assert os.listdir(root_only_dir) == []


# 9. bad input: one line and its exit code -------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--driver", "--collect", "--check-kernel", "--root", "--output"])
def test_an_empty_value_is_a_usage_error_never_the_option_left_out(tmp_path, flag):
    args = {"--driver": ["--reload", "--simulate", "--dry-run"], "--output": ["--status"], "--root": ["--status"]}
    proc = run_cli(*args.get(flag, []), flag, "", env={"NVRELOAD_STATE_DIR": str(tmp_path / "s")})
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert "an empty value" in one_line(proc)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_drain_timeout_that_never_ends_is_a_usage_error(value):
    proc = run_cli("--reload", "--simulate", "--drain", "slurm", "--drain-timeout", value, "--dry-run")
    assert proc.returncode == ExitCode.USAGE and "is not a finite number of seconds" in one_line(proc)


def test_a_driver_path_with_a_trailing_slash_is_bad_input(tmp_path, installer):
    proc = run_cli("--reload", "--simulate", "--driver", f"{installer}/", "--dry-run")
    assert proc.returncode == ExitCode.BAD_INPUT and "Not a directory" in one_line(proc)


def test_a_systemctl_variable_that_is_not_a_command_line_is_bad_input(tmp_path):
    proc = run_cli("--status", "--json", env={"NVRELOAD_SYSTEMCTL": 'systemctl "x'})
    assert proc.returncode == ExitCode.BAD_INPUT
    assert "NVRELOAD_SYSTEMCTL='systemctl \"x' is not a command line" in one_line(proc)


def test_a_configuration_that_is_not_one_is_never_echoed(tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$very-secret-hash:19000:0:99999:7:::\n")
    proc = run_cli(
        "--after-upgrade", "manual", env={"NVRELOAD_CONFIG": str(secret), "NVRELOAD_STATE_DIR": str(tmp_path / "s")}
    )
    assert proc.returncode == ExitCode.BAD_INPUT
    line = one_line(proc)
    told = line.replace(str(secret), "FILE")
    assert "FILE:1: not an nvreload setting" in told and "secret" not in told and "root" not in told


def test_a_fifo_as_the_configuration_is_refused_at_once(tmp_path):
    fifo = tmp_path / "nvreload.conf"
    os.mkfifo(fifo)
    proc = run_cli(
        "--after-upgrade",
        "manual",
        env={"NVRELOAD_CONFIG": str(fifo), "NVRELOAD_STATE_DIR": str(tmp_path / "s")},
        timeout=20,
    )
    assert proc.returncode == ExitCode.BAD_INPUT and "not a regular file" in one_line(proc)


def test_a_scenario_over_a_bound_says_the_bound_not_the_value(tmp_path):
    gpus = [dict(default_scenario()["gpus"][0], pci_bus_id=f"0000:{n:02x}:00.0") for n in range(72)]
    scenario = write_scenario(tmp_path, gpus=gpus)
    proc = run_cli("--status", "--simulate", scenario, env={"NVRELOAD_STATE_DIR": str(tmp_path / "s")})
    assert proc.returncode == ExitCode.BAD_INPUT
    line = one_line(proc)
    assert line.endswith("gpus: more than 64 items") and "pci_bus_id" not in line


def test_sigint_while_python_still_imports_is_one_line_and_exit_130():
    """SIGINT delivered at an exact moment: while the entry point imports click."""
    code = (
        "import builtins, os, signal, sys\n"
        "real = builtins.__import__\n"
        "def imp(name, *a, **k):\n"
        "    if name == 'click':\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = imp\n"
        "from nvreload.entry import main\n"
        "main(['--reload', '--simulate', '--dry-run'])\n"
    )
    proc = subprocess.run([*WITH_SIGINT, sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 130
    assert one_line(proc) == "nvreload: interrupted before anything was changed"


@root_only
def test_control_characters_in_a_process_name_never_reach_the_output_raw(tmp_path):
    """A user names a GPU holder so that its name forges a line of nvreload's own (and of the syslog
    the package hook copies it to); the name is shown with its control characters escaped."""
    forged = "x\nnvreload: reloaded"
    holder = subprocess.Popen(
        [*as_nobody(), "bash", "-c", 'exec -a "$0" sleep 30 </dev/zero', forged], stdin=subprocess.DEVNULL
    )
    try:
        from nvreload.host.processes import describe, read_identity

        deadline = 50
        while deadline and (read_identity(holder.pid) is None or read_identity(holder.pid).comm != "sleep"):
            deadline -= 1
            signal.sigtimedwait([], 0.1)
        described = describe(holder.pid, (), "procfs")
        assert described is not None and "\n" not in described.cmdline
        assert described.cmdline.startswith("x\\x0anvreload: reloaded")
    finally:
        holder.kill()
        holder.wait()


def test_a_process_name_with_control_characters_is_escaped_when_read():
    from nvreload.read.devices import parse_proc_stat

    ident = parse_proc_stat(42, "42 (evil\rline\x1b[2J) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 12345 0 0")
    assert ident is not None and ident.comm == "evil\\x0dline\\x1b[2J"


def test_the_simulated_node_file_is_untouched_by_a_refused_scenario(tmp_path):
    state = tmp_path / "s"
    assert run_cli("--status", "--simulate", env={"NVRELOAD_STATE_DIR": str(state)}).returncode in (0, 1, 2)
    before = node_state(state) if (state / "sim-node.json").exists() else None
    scenario = write_scenario(tmp_path, consumers="live")
    run_cli("--reload", "--simulate", scenario, "--yes", env={"NVRELOAD_STATE_DIR": str(state)})
    assert (node_state(state) if (state / "sim-node.json").exists() else None) == before
