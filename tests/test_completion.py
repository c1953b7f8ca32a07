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
