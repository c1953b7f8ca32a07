"""Shell completion: candidates come from click's completion, in a real bash, without touching the
node (the status fast path once ran a live --status on every TAB)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

NVRELOAD = Path(sys.executable).parent / "nvreload"


@pytest.fixture
def console_script():
    if not NVRELOAD.exists():
        pytest.skip(f"no nvreload console script beside {sys.executable} (install the package)")
    return str(NVRELOAD)


def complete_in_bash(console_script: str, words: str) -> subprocess.CompletedProcess:
    """Source the generated bash completion and run it on `words` as bash would after a TAB."""
    script = (
        f'eval "$(_NVRELOAD_COMPLETE=bash_source {console_script})"\n'
        f"COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n"
        f"_nvreload_completion {console_script}\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    # NVRELOAD_NVML_TIMEOUT=abc: any status run would fail on it (exit 66) instead of completing
    env = {**os.environ, "NVRELOAD_NVML_TIMEOUT": "abc"}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, env=env)


def test_a_tab_in_bash_completes_the_flags_and_runs_no_status(console_script):
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    proc = complete_in_bash(console_script, "nvreload --re")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["--reload", "--reset", "--restart-docker"]
    assert "NVRELOAD_NVML_TIMEOUT" not in proc.stderr and "kernel" not in proc.stdout


def test_the_shell_asking_for_candidates_gets_them_instead_of_a_status_of_the_node(console_script):
    # the shell calls nvreload with no arguments at all: the fast path read that as --status
    proc = subprocess.run(
        [console_script],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "_NVRELOAD_COMPLETE": "bash_complete",
            "COMP_WORDS": "nvreload --st",
            "COMP_CWORD": "1",
            "NVRELOAD_NVML_TIMEOUT": "abc",
        },
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["plain,--status", "plain,--stop", "plain,--start"] and proc.stderr == ""


@pytest.mark.parametrize(
    "shell,marker", [("bash", "_nvreload_completion"), ("zsh", "#compdef nvreload"), ("fish", "complete")]
)
def test_completion_scripts_are_generated_for_bash_zsh_and_fish(console_script, shell, marker):
    proc = subprocess.run(
        [console_script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "_NVRELOAD_COMPLETE": f"{shell}_source"},
    )
    assert proc.returncode == 0 and marker in proc.stdout, proc.stdout + proc.stderr


class Tmux:
    """An interactive bash in a private tmux server (its own socket name), killed at the end."""

    def __init__(self, console_script: str):
        self.server = f"nvreload-test-{os.getpid()}"
        bindir = str(Path(console_script).parent)
        env = f"env -i PATH={bindir}:/usr/bin:/bin HOME=/tmp TERM=xterm NVRELOAD_NVML_TIMEOUT=abc"
        self.tmux("new-session", "-d", "-x", "160", "-y", "40", f"{env} bash --norc --noprofile")

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.server, *args], capture_output=True, text=True, check=True, timeout=30
        ).stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def screen_once(self, wanted) -> str:
        """The screen as soon as `wanted(screen)` holds (polled; the last screen if it never does)."""
        import time

        deadline = time.monotonic() + 20
        while True:
            screen = self.tmux("capture-pane", "-p")
            if wanted(screen) or time.monotonic() > deadline:
                return screen
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.server, "kill-server"], capture_output=True, timeout=30)


def test_tab_in_an_interactive_bash_under_tmux_completes_and_lists_flags_without_touching_the_node(console_script):
    if shutil.which("tmux") is None or shutil.which("bash") is None:
        pytest.skip("tmux or bash is not installed (.ci/run installs tmux)")
    term = Tmux(console_script)
    try:
        term.keys('eval "$(_NVRELOAD_COMPLETE=bash_source nvreload)"; echo sourced', "Enter")
        term.screen_once(lambda s: "\nsourced" in s)
        # one candidate: readline completes the word in place
        term.keys("nvreload --stat", "Tab")
        # (tmux drops the trailing space readline adds after a whole word)
        completed = lambda s: any(line.rstrip().endswith("# nvreload --status") for line in s.splitlines())  # noqa: E731
        screen = term.screen_once(completed)
        assert completed(screen), screen
        term.keys("C-u")
        # several: a second TAB lists them
        term.keys("nvreload --re", "Tab", "Tab")
        screen = term.screen_once(lambda s: "--restart-docker" in s)
        assert {"--reload", "--reset", "--restart-docker"} <= set(screen.split()), screen
        # NVRELOAD_NVML_TIMEOUT=abc: a status run would have printed its one-line refusal
        assert "NVRELOAD_NVML_TIMEOUT" not in screen and "error" not in screen.lower()
    finally:
        term.close()
