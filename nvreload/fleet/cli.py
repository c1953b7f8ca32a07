"""`nvreload-fleet`: the commands the Ansible role (packaging/ansible/) runs, thin over the modules
of this package. Node side: facts, reload (print one JSON document). Controller side: record, plan,
gate, report (read and write the run directory). Bad input is one line and exit 66, a refused
rollout exit 77, a report with a failed node exit 1."""

from __future__ import annotations

import json
import sys

import click

from nvreload.errors import BadInputError, ExitCode
from nvreload.fleet.amounts import Amount, parse_serial
from nvreload.fleet.rundir import RunDir, dumps, host_name

STDIN_LIMIT = 8 << 20  # a node's document: its status is ~100 KiB on a large node
RUN_DIR = click.option("--run-dir", required=True, type=click.Path(file_okay=False), help="the rollout's directory")


def _fail(message: str, code: int) -> None:
    click.echo(f"nvreload-fleet: {message}", err=True)
    sys.exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Roll a driver reload across a fleet: the commands the nvreload Ansible role runs."""


def _tools(simulate: bool, drain: str, slurm_node: str | None, scenario: str | None):
    from nvreload.fleet.node_side import NodeTools, environment_problem, short_hostname

    problem = environment_problem()
    if problem:
        _fail(problem, ExitCode.REFUSED)
    return NodeTools(
        simulate or bool(scenario), (slurm_node or short_hostname()) if drain == "slurm" else None, scenario
    )


NODE_OPTIONS = [
    click.option("--simulate", is_flag=True, help="the node is nvreload's simulated node (a demo, the tests)"),
    click.option("--scenario", default=None, help="the simulated node's scenario file (implies --simulate)"),
    click.option("--drain", type=click.Choice(["slurm", "none"]), default="none", show_default=True),
    click.option("--slurm-node", default=None, help="the node's name in Slurm (default: the short host name)"),
]


def node_options(command):
    for option in reversed(NODE_OPTIONS):
        command = option(command)
    return command


@main.command()
@node_options
@click.option("--baseline", default=None, help="the fleet's baseline (--status --baseline) on this node")
def facts(simulate: bool, scenario: str | None, drain: str, slurm_node: str | None, baseline: str | None) -> None:
    """On a node: its status, its state in Slurm, a run holding it (one JSON document)."""
    from nvreload.fleet.facts import gather

    click.echo(dumps(gather(_tools(simulate, drain, slurm_node, scenario), baseline).document()))


@main.command()
@node_options
@click.option("--drain-timeout", type=click.FloatRange(min=1), default=3600.0, show_default=True)
@click.option("--driver", default=None, help="a .run already on this node")
@click.option("--driver-sha256", default=None)
@click.option("--target-version", default=None, help="the driver version that must be loaded afterwards")
@click.option("--fleet-run", default=None)
@click.option("--earlier-run", default=None, help="the run the preflight found unfinished on this node")
def reload(
    simulate, scenario, drain, slurm_node, drain_timeout, driver, driver_sha256, target_version, fleet_run, earlier_run
) -> None:
    """On a node: its part of the rollout (one JSON document, whatever the outcome)."""
    from nvreload.fleet.node_reload import ReloadRequest, reload_node

    request = ReloadRequest(drain_timeout, driver, driver_sha256, target_version, fleet_run, earlier_run)
    click.echo(dumps(reload_node(_tools(simulate, drain, slurm_node, scenario), request).document()))


@main.command()
@RUN_DIR
@click.option("--host", required=True)
@click.option("--kind", type=click.Choice(["facts", "started", "result"]), required=True)
@click.option("--unreachable", default=None, help="the node did not answer: this is why")
def record(run_dir: str, host: str, kind: str, unreachable: str | None) -> None:
    """On the controller: keep a node's document (read from stdin) in the run directory."""
    if unreachable is not None:
        data: dict = {"schema_version": 1, "host": host, "unreachable": True, "error": unreachable or "unreachable"}
    elif kind == "started":
        data = {"schema_version": 1, "host": host}
    else:
        try:
            data = json.loads(sys.stdin.read(STDIN_LIMIT))
        except ValueError as exc:
            raise BadInputError(f"{host}: the node printed no JSON document ({exc})") from None
        if not isinstance(data, dict):
            raise BadInputError(f"{host}: the node printed no JSON object")
    RunDir(run_dir).write(
        data, {"facts": "facts", "started": "started", "result": "results"}[kind], f"{host_name(host)}.json"
    )


@main.command()
@RUN_DIR
@click.option("--hosts", required=True, help="JSON list of the rollout's hosts, in inventory order")
@click.option("--max-unavailable", default="25%", show_default=True)
@click.option("--canary", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--batches", default='[1, "10%", "25%"]', show_default=True)
@click.option("--max-fail-percentage", type=click.IntRange(0, 100), default=0, show_default=True)
@click.option("--target-version", default=None)
@click.option("--with-driver", is_flag=True)
@click.option("--fleet-run", default=None)
def plan(run_dir, hosts, max_unavailable, canary, batches, max_fail_percentage, target_version, with_driver, fleet_run):
    """On the controller: the plan from every node's facts (exit 77 when refused)."""
    from nvreload.fleet.plan import FleetPolicy, make_plan
    from nvreload.fleet.report import build_report, table

    try:
        host_list = json.loads(hosts)
    except ValueError:
        host_list = None
    if not isinstance(host_list, list) or not all(isinstance(h, str) for h in host_list):
        raise BadInputError(f"--hosts={hosts!r}: not a JSON list of host names")
    policy = FleetPolicy(
        Amount.parse(max_unavailable, "nvreload_max_unavailable"),
        canary,
        parse_serial(batches),
        max_fail_percentage,
        target_version or None,
        with_driver,
    )
    directory = RunDir(run_dir)
    made = make_plan([host_name(h) for h in host_list], directory, policy, fleet_run or None)
    directory.write(made.document(), "plan.json")
    for host, node in made.nodes.items():
        drift = f" drift: {', '.join(node.drift)}" if node.drift else ""
        click.echo(f"{host}: {node.verdict} ({node.why}){drift}")
    click.echo(f"to reload: {', '.join(made.targets) or 'none'}; batches {made.batches}")
    if made.refused:
        report = build_report(directory)
        directory.write(report.document(), "fleet-report.json")
        click.echo(table(report))
        _fail(f"refused: {made.refused}", ExitCode.REFUSED)


@main.command()
@RUN_DIR
@click.option("--max-fail-percentage", type=click.IntRange(0, 100), default=0, show_default=True)
def gate(run_dir: str, max_fail_percentage: int) -> None:
    """On the controller, after a batch: `continue: ...` or `halt: ...`."""
    from nvreload.fleet.gate import decide_gate

    directory = RunDir(run_dir)
    decision = decide_gate(directory, max_fail_percentage)
    if decision.halt:
        directory.write({"schema_version": 1, "why": decision.why}, "halted.json")
    click.echo(decision.line())


@main.command()
@RUN_DIR
def report(run_dir: str) -> None:
    """On the controller: fleet-report.json and the table (exit 1 when a node failed)."""
    from nvreload.fleet.report import build_report, table

    directory = RunDir(run_dir)
    halted = directory.read("halted.json")
    made = build_report(directory, halted=str(halted.get("why")) if halted else None)
    path = directory.write(made.document(), "fleet-report.json")
    click.echo(table(made))
    click.echo(f"report: {path}")
    if made.failed:
        sys.exit(1)


def run() -> None:
    try:
        main(standalone_mode=True)
    except BadInputError as exc:
        _fail(exc.message, ExitCode.BAD_INPUT)
