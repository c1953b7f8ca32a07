"""The command line's contract, declared once: the actions, the modifiers each allows, the rules
between modifiers, and the exit codes with their meanings.

cli.py's click command checks a command line with check() and prints EXIT_CODES in its --help;
entry.py's fast path takes a command line only when FAST_STATUS_OPTIONS covers it and checks it with
the same check(); tests/test_cli.py holds the README's exit-code table to EXIT_CODES. Adding a flag:
its click option, its Modifier here (which actions it goes with), and its README line.

Plain tuples and small classes only: entry.py imports this on every `--status`."""

from __future__ import annotations

from nvreload.errors import ExitCode, UsageError

# What each flag that names an action does; exactly one per command line (status when none).
ACTIONS = (
    "status",
    "verify",
    "check_kernel",
    "reload",
    "after_upgrade",
    "reset",
    "stop",
    "start",
    "rollback",
    "collect",
)
READ_ONLY = ("status", "collect", "check_kernel")
ACTING = ("reload", "after_upgrade", "reset", "stop", "start", "rollback")


def flag(name: str) -> str:
    """--after-upgrade for after_upgrade."""
    return "--" + name.replace("_", "-")


class Modifier:
    """A flag that modifies an action: which actions it goes with, and the line that says so."""

    __slots__ = ("name", "goes_with", "line")

    def __init__(self, name: str, goes_with: tuple[str, ...], line: str) -> None:
        self.name = name
        self.goes_with = frozenset(goes_with)
        self.line = line  # formatted with {action}: the flag of the action it was given with


DRAIN = Modifier("drain", ("reload", "reset"), "--drain goes with --reload or --reset, not {action}")
WHEN_IDLE = Modifier("when_idle", ("reload",), "--when-idle goes with --reload, not {action}")
# with --after-upgrade too, where a rule of its own says why not (below)
DRIVER = Modifier("driver", ("reload", "after_upgrade"), "--driver only goes with --reload")
RESTART_DOCKER = Modifier("restart_docker", ("reload", "after_upgrade"), "--restart-docker only goes with --reload")
OUTPUT = Modifier(
    "output", ("status", "verify", "collect"), "--format prometheus and --output go with --status, not {action}"
)
BASELINE = Modifier("baseline", ("status",), "--baseline goes with --status, not {action}")
DRY_RUN = Modifier(
    "dry_run", ACTING, "--dry-run goes with --reload, --reset, --stop, --start or --rollback, not {action}"
)
MODIFIERS = (DRAIN, WHEN_IDLE, DRIVER, RESTART_DOCKER, OUTPUT, BASELINE, DRY_RUN)


def _misplaced(modifier: Modifier) -> tuple[object, str]:
    return (lambda o, a: o.get(modifier.name) and a not in modifier.goes_with), modifier.line


# Every rule a command line must keep, in the order they are checked (the first broken one is
# said): each its test of the options and the action, and its line.
RULES: tuple[tuple[object, str], ...] = (
    _misplaced(DRAIN),
    (
        lambda o, a: o.get("drain") and o.get("when_idle"),
        "--drain and --when-idle conflict: one waits for the jobs to end, the other does not wait",
    ),
    (
        lambda o, a: (o.get("slurm_node") or o.get("drain_timeout") is not None) and not o.get("drain"),
        "--slurm-node and --drain-timeout go with --drain slurm",
    ),
    _misplaced(WHEN_IDLE),
    (
        lambda o, a: a == "after_upgrade" and (o.get("driver") or o.get("restart_docker")),
        "--after-upgrade reloads what the package installed: no --driver, no --restart-docker",
    ),
    _misplaced(DRIVER),
    _misplaced(RESTART_DOCKER),
    (
        lambda o, a: o.get("root") and o.get("simulate") is not None,
        "--root and --simulate conflict: one node at a time",
    ),
    (
        lambda o, a: o.get("root") and a not in READ_ONLY and not (a == "reload" and o.get("dry_run")),
        "--root reads a snapshot: {action} cannot act on it (only --status, --collect, --reload --dry-run)",
    ),
    (
        lambda o, a: o.get("simulate") is not None and a == "check_kernel",
        "--check-kernel reads a real node's module tree (this one, or --root), not --simulate",
    ),
    (
        lambda o, a: o.get("simulate") is not None and a == "collect",
        "--collect archives a real node (this one, or --root): there is nothing to collect from --simulate",
    ),
    (
        lambda o, a: o.get("as_json") and o.get("format") not in (None, "json"),
        "--json and --format {format} conflict (--json is --format json)",
    ),
    _misplaced(OUTPUT),
    (
        lambda o, a: o.get("format") == "prometheus" and a not in OUTPUT.goes_with,
        "--format prometheus and --output go with --status, not {action}",
    ),
    _misplaced(BASELINE),
    _misplaced(DRY_RUN),
    (
        lambda o, a: o.get("format") == "prometheus" and a != "status",
        "--format prometheus goes with --status, not {action}",
    ),
    (
        lambda o, a: o.get("output") and o.get("format") != "prometheus",
        "--output writes the metrics of --status --format prometheus",
    ),
)

# The options a status-only command line may have, which entry.py's fast path takes without click:
# (option strings, the option's name, whether it takes a value).
FAST_STATUS_OPTIONS = (
    (("--status", "-s"), "status", False),
    (("--json",), "as_json", False),
    (("--verbose", "-v"), "verbose", False),
    (("--format",), "format", True),
    (("--root",), "root", True),
    (("--output",), "output", True),
    (("--baseline",), "baseline", True),
)

# Every exit code and what it means, as --help lists them (the README's table says more of each).
EXIT_CODES = (
    ((ExitCode.OK,), "OK / done"),
    ((ExitCode.WARNING, ExitCode.CRITICAL, ExitCode.UNKNOWN), "--status/--verify: WARNING, CRITICAL, UNKNOWN (Nagios)"),
    ((ExitCode.ROLLED_BACK,), "failed and rolled back: the node is as before"),
    ((ExitCode.NEEDS_REBOOT,), "failed, needs a reboot (the journal says what remains)"),
    ((ExitCode.PARTIAL,), "partial: some consumers did not come back (nvreload --start)"),
    ((ExitCode.RELOAD_PENDING,), "reload pending: due, not done (GPU jobs run, or the upgrade policy is report)"),
    ((ExitCode.USAGE,), "usage error"),
    ((ExitCode.BAD_INPUT,), "bad input: snapshot, journal, scenario, .run, state directory, environment"),
    ((ExitCode.INTERNAL,), "internal error (--verbose shows the traceback)"),
    ((ExitCode.BUSY,), "busy: another run holds the node lock"),
    ((ExitCode.REFUSED,), "refused: not root, a blocker, an unfinished journal, no --yes without a terminal"),
    ((ExitCode.INTERRUPTED,), "interrupted before anything changed"),
)


def exit_code_lines() -> list[str]:
    """EXIT_CODES as --help's lines: the code(s), then the meaning."""
    return [f"  {', '.join(str(c) for c in codes):8} {meaning}" for codes, meaning in EXIT_CODES]


def chosen_action(options: dict) -> str:
    chosen = [name for name in ACTIONS if options.get(name)]
    if len(chosen) > 1:
        raise UsageError("choose one action: " + " and ".join(flag(c) for c in chosen) + " conflict")
    return chosen[0] if chosen else "status"


def check(action: str, options: dict) -> None:
    """UsageError with the one line the contract says, for the first rule the command line breaks."""
    for broken, line in RULES:
        if broken(options, action):  # type: ignore[operator]
            raise UsageError(line.format(action=flag(action), format=options.get("format")))
