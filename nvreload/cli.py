"""Thin command line: parse, build the application, call, render, exit.

Flags stay compatible with the original nvidia_driver_reload.py. The report a command was asked
for goes to stdout (rich text, or with `--json` exactly one JSON document); progress and
diagnostics go to stderr.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from nvreload import __version__
from nvreload.commandline import READ_ONLY, check, chosen_action, exit_code_lines
from nvreload.errors import RefusedError, UsageError
from nvreload.frontend import guarded, run_read_only
from nvreload.requests import FORMATS

# \b keeps click from rewrapping these blocks
HELP_EPILOG = (
    "\b\nExit codes:\n"
    + "\n".join(exit_code_lines())
    + """

\b
Environment:
  NVRELOAD_STATE_DIR     one directory for the journal, the lock and the caches
                         (default /var/lib/nvreload and /run/nvreload)
  NVRELOAD_NVML_TIMEOUT  seconds NVML may take to answer (default 30, at most 3600)
  NVRELOAD_SYSTEMCTL     the systemctl command (a wrapper reaching another systemd)
  NVRELOAD_CONFIG        the upgrade policy file (default /etc/nvreload/nvreload.conf)
  XDG_STATE_HOME         where --simulate keeps its node when NVRELOAD_STATE_DIR is unset
  DOCKER_HOST            the container engine to ask

\b
Examples:
  nvreload --status --json            what is wrong (the exit code is the Nagios state)
  sudo nvreload --reload --dry-run    the plan a reload would follow, changing nothing
  sudo nvreload --reload --yes        stop the consumers, reload the driver, bring them back
  sudo nvreload --reload --when-idle --yes   the same, only if no GPU job runs (else exit 13)
  sudo nvreload --reload --drain slurm --yes  drain the node in Slurm, wait for its jobs, reload, resume
"""
)


def _given(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """An option that names something (a file, a directory, a release) names it: an empty value is
    refused, never read as the option left out (`--driver ""` once ran a reload with no install)."""
    if value is not None and not value.strip():
        raise click.BadParameter("an empty value; give one or leave the option out", param=param)
    return value


class Seconds(click.FloatRange):
    """A number of seconds: not negative, and finite (`nan` compared false with every deadline and
    `inf` never came: a wait that never ends)."""

    name = "seconds"

    def __init__(self) -> None:
        super().__init__(min=0)

    def convert(self, value, param, ctx):
        import math

        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return seconds


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=HELP_EPILOG)
@click.option("--status", "-s", "status", is_flag=True, help="Node state, findings, recommended action (read-only).")
@click.option("--verify", is_flag=True, help="Health check: NVML, versions, GPUs, a CUDA context, XIDs.")
@click.option(
    "--check-kernel",
    metavar="RELEASE",
    callback=_given,
    help="Will this installed kernel boot with a working driver (its nvidia module, against the userspace)? "
    "The kernel hook's check; exit 1 when not.",
)
@click.option(
    "--reload", "-r", "reload", is_flag=True, help="Stop consumers, unload, (install), load, verify, restart."
)
@click.option(
    "--driver",
    type=click.Path(dir_okay=False),
    callback=_given,
    help="With --reload: install this NVIDIA .run in between.",
)
@click.option(
    "--when-idle",
    is_flag=True,
    help="With --reload: only if nothing but the known GPU services uses the GPUs; else record the reload "
    "as pending, stop nothing, exit 13.",
)
@click.option(
    "--drain",
    type=click.Choice(["slurm"]),
    help="With --reload/--reset: drain this node in Slurm, wait until its jobs end, then act, then resume the node "
    "(also after a failure; not when a reboot is needed).",
)
@click.option(
    "--slurm-node", metavar="NAME", callback=_given, help="This node's name in Slurm (default: the short host name)."
)
@click.option(
    "--drain-timeout",
    type=Seconds(),
    metavar="SECONDS",
    help="How long --drain waits for the node's jobs to end [default: 3600]; then the node is resumed and "
    "nothing is stopped (exit 77).",
)
@click.option(
    "--after-upgrade",
    type=click.Choice(["apt", "dnf", "manual"]),
    metavar="[apt|dnf|manual]",
    help="The package hooks' entry: if the node needs a reload, do what the upgrade policy "
    "(/etc/nvreload/nvreload.conf: on_upgrade = report | when-idle) allows; report records it as pending.",
)
@click.option(
    "--reset",
    is_flag=False,
    flag_value="all",
    default=None,
    metavar="[GPU,...]",
    help="Reset GPUs (nvidia-smi --gpu-reset, no module unload): all, or a comma list of indexes, PCI "
    "addresses or UUIDs; only their consumers stop. Refused on NVSwitch nodes.",
)
@click.option("--stop", is_flag=True, help="Stop GPU consumers.")
@click.option("--start", is_flag=True, help="Start what the last --stop stopped.")
@click.option("--rollback", is_flag=True, help="Undo a failed or interrupted run from the journal.")
@click.option(
    "--collect",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    callback=_given,
    help="Write a snapshot .tar.gz of this node.",
)
@click.option(
    "--root",
    type=click.Path(),
    metavar="DIR",
    callback=_given,
    help="Read a snapshot (directory or .tar.gz) instead of /.",
)
@click.option(
    "--simulate",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[SCENARIO.json]",
    help="Act on a simulated node (the built-in scenario when no file is given).",
)
@click.option("--dry-run", is_flag=True, help="Print the plan; change nothing, write nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--force-display", is_flag=True, help="Reload even though a display server holds the GPU.")
@click.option(
    "--restart-docker",
    is_flag=True,
    help="With --reload: restart dockerd before containers start again (nvidia-container-toolkit issue 169).",
)
@click.option(
    "--peermem-wait",
    type=Seconds(),
    default=300.0,
    show_default=True,
    metavar="SECONDS",
    help="How long nvidia_peermem waits for MOFED, once per run; then it is skipped with a warning.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout (as --format json).")
@click.option(
    "--format",
    "format",
    type=click.Choice(FORMATS),
    default=None,
    help="human (the default), json (as --json), or prometheus (with --status: node_exporter's textfile format).",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    callback=_given,
    help="With --status --format prometheus: write the metrics to FILE atomically instead of stdout.",
)
@click.option(
    "--baseline",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    callback=_given,
    help="With --status: compare this node with a known-good node's --status --json document (or the part "
    "of it the fleet fixes) and add drift_* findings.",
)
@click.option("--verbose", "-v", is_flag=True, help="More detail (and tracebacks for internal errors).")
@click.version_option(__version__, prog_name="nvreload")
def command(**opts: Any) -> int:
    """Reload the NVIDIA kernel driver without a reboot, and diagnose the GPU stack."""
    action = chosen_action(opts)
    check(action, opts)
    if action in (*READ_ONLY, "verify"):
        return run_read_only(
            action,
            opts["root"],
            _format(opts),
            bool(opts["verbose"]),
            collect_to=opts["collect"],
            simulate=opts["simulate"],
            output=opts["output"],
            kernel=opts["check_kernel"],
            baseline=opts["baseline"],
        )
    return _act(action, opts)


def _format(opts: dict) -> str:
    return "json" if opts["as_json"] else opts["format"] or "human"


def _act(action: str, opts: dict) -> int:
    from nvreload.actions import ActionRequest
    from nvreload.app import App
    from nvreload.engine.engine import Reporter

    trigger, on_upgrade = None, None
    if action == "after_upgrade":
        from nvreload.policy import config_path, load_policy

        trigger, on_upgrade = opts["after_upgrade"], load_policy(config_path()).on_upgrade
        action = "reload"
    request = ActionRequest(
        action=action,
        simulate=opts["simulate"],
        root=opts["root"],
        driver=opts["driver"],
        dry_run=bool(opts["dry_run"]),
        yes=bool(opts["yes"]),
        force_display=bool(opts["force_display"]),
        restart_docker=bool(opts["restart_docker"]),
        peermem_wait=float(opts["peermem_wait"]),
        gpus=opts["reset"],
        when_idle=bool(opts["when_idle"]),
        drain=opts["drain"],
        slurm_node=opts["slurm_node"],
        drain_timeout=3600.0 if opts["drain_timeout"] is None else float(opts["drain_timeout"]),
        trigger=trigger,
        on_upgrade=on_upgrade,
    )
    as_json = _format(opts) == "json"
    if as_json:
        reporter = Reporter()
    else:
        from nvreload.render.run import ConsoleReporter

        reporter = ConsoleReporter(bool(opts["verbose"]), dry_run=bool(opts["dry_run"]))
    confirm = (lambda question: click.confirm(question, err=True)) if sys.stdin.isatty() else None
    result = App(root=opts["root"]).act(request, reporter, confirm)
    from nvreload.render.output import reader_may_leave

    with reader_may_leave():
        if as_json:
            from nvreload.render.json_out import emit_json

            emit_json(result.document())
        else:
            from nvreload.render.run import render_action_result

            render_action_result(result, action)
    if result.refusal:
        from nvreload.frontend import say

        say(result.refusal)
    if result.report is not None and result.report.deferred_signal is not None:
        _reraise(result.report.deferred_signal)
    return result.exit_code


def _reraise(signum: int) -> None:
    """A signal that arrived while rollback ran was held back so the node ended consistent; now that
    the journal and the report are out, let it do what it would have done (SIGINT: exit 130)."""
    import signal

    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def _invoke(args: list[str]) -> int:
    try:
        code = command.main(args=args, prog_name="nvreload", standalone_mode=False)
    except click.exceptions.Exit as exc:  # --help, --version
        return exc.exit_code
    except click.ClickException as exc:  # bad flags: one line, the usage exit code
        raise UsageError(exc.format_message()) from exc
    except click.exceptions.Abort as exc:  # the confirmation prompt was answered no, or closed
        raise RefusedError("aborted") from exc
    return code if isinstance(code, int) else 0


def main(argv: list[str] | None = None) -> None:
    """The click way in (nvreload.entry:main sends every command line here but status-only ones)."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in args or "--verbose" in args
    sys.exit(guarded(lambda: _invoke(args), verbose))
