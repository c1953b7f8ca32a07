"""Rich text: the report asked for (status, verify, a run's result) on stdout, so it pipes into
grep; progress and diagnostics on stderr."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nvreload.render.output import detach_gone_streams

_SEVERITY_STYLE = {"unknown": "bold magenta", "critical": "bold red", "warning": "yellow", "info": "cyan"}


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich's own raises SystemExit(1) (and points stdout, not stderr, at /dev/null): the exit
        # code must stay the node's, and a reload must not die halfway because stderr went away
        self.quiet = True
        detach_gone_streams()


def console(report: bool = False) -> Console:
    """`report`: what the command was asked for (a status, a verify, a run's result) goes to stdout,
    so `nvreload --status | grep CRITICAL` finds it; progress and diagnostics go to stderr."""
    stream = sys.stdout if report else sys.stderr
    # Piped to a log or a ticket, lines should not be cut at 80 columns.
    width = None if stream.isatty() else 160
    # emoji=False: a PCI address like 0000:ab:00.0 must not print as an emoji code (:ab:)
    return _Console(stderr=not report, highlight=False, emoji=False, width=width)


def text(value: object) -> str:
    """Node-provided text (hostnames, process names, paths, versions) for a markup string: escaped,
    so a `[/]` in a process name prints as itself instead of ending every human output with a crash."""
    return escape(str(value))


def render_status(doc: dict, verbose: bool = False) -> None:
    out = console(report=True)
    node, driver = doc["node"], doc["driver"]
    out.print(f"[bold]{text(node.get('hostname') or '?')}[/]  kernel {text(node.get('kernel_release') or '?')}")
    loaded = "loaded" if driver["loaded"] else "[red]not loaded[/]"
    out.print(
        f"driver: module {text(driver['kernel_module_version'] or '-')} ({driver['kernel_module_flavor'] or '-'}, {loaded}), "
        f"on disk {text(driver['on_disk_module_version'] or '-')}, userspace {text(driver['userspace_version'] or '-')}, "
        f"NVML {driver['nvml']}"
    )
    if driver["nvml"] == "error" and driver.get("nvml_error"):
        # no finding explains this one (a hang, a crash): the exit code is UNKNOWN, say why
        out.print(f"[yellow]NVML: {escape(driver['nvml_error'])}[/]")
    if doc["modules"]:
        out.print(
            "modules: "
            + text(
                ", ".join(
                    f"{m['name']} ({m['state']}{'' if m['refcount'] is None else ', ref ' + str(m['refcount'])}"
                    f"{', held by ' + '+'.join(m['holders']) if m['holders'] else ''})"
                    for m in doc["modules"]
                )
            )
        )
    _gpu_table(out, doc)
    _consumer_lines(out, doc, verbose)
    _finding_lines(out, doc, verbose)
    _reload_lines(out, doc)


def _gpu_table(out, doc: dict) -> None:
    if doc["gpus"]:
        table = Table(show_edge=False, box=None, pad_edge=False)
        for column in ("bus id", "name", "uuid", "driver", "persistence", "MIG"):
            table.add_column(column)
        for gpu in doc["gpus"]:
            table.add_row(
                text(gpu["pci_bus_id"]),
                text(gpu["name"] or "-"),
                text(gpu["uuid"] or "-"),
                text(gpu["driver"]) if gpu.get("driver") else "[red]none[/]",
                _flag(gpu.get("persistence_mode")),
                _flag(gpu.get("mig_mode")),
            )
        out.print(table)


def _consumer_lines(out, doc: dict, verbose: bool) -> None:
    consumers = doc["consumers"]
    if consumers.get("scanned"):
        out.print(
            f"consumers: {len(consumers['processes'])} process(es), "
            f"{sum(1 for s in consumers['services'] if s['active'] == 'active')} active service(s), "
            f"{len(consumers['containers'])} GPU container(s)"
        )
        engines = consumers.get("engines") or []
        if engines:
            out.print(
                "container engines: "
                + ", ".join(f"{text(e['name'])} {e['gpu_containers']} GPU container(s)" for e in engines)
            )
        if verbose:
            for proc in consumers["processes"]:
                out.print(f"  pid {proc['pid']} {text(proc['comm'])}: {text(', '.join(proc['devices']) or 'via NVML')}")
    else:
        out.print("consumers: not scanned (snapshot)")


def _finding_lines(out, doc: dict, verbose: bool) -> None:
    if doc["findings"]:
        for finding in doc["findings"]:
            style = _SEVERITY_STYLE[finding["severity"]]
            out.print(f"[{style}]{finding['severity'].upper():8}[/] {finding['code']}: {escape(finding['message'])}")
            if verbose:
                for key, value in finding["evidence"].items():
                    out.print(f"           {key}: {escape(str(value))}")
    else:
        out.print("[green]no findings[/]")


def _reload_lines(out, doc: dict) -> None:
    reload = doc["reload"]
    feasible = "[green]feasible[/]" if reload["feasible"] else f"[red]blocked[/] by {', '.join(reload['blockers'])}"
    out.print(f"recommended action: [bold]{doc['recommended_action']}[/]; reload {feasible}")
    pending = reload.get("pending")
    if pending and "error" in pending:
        out.print(f"[yellow]reload pending record unreadable[/]: {text(pending['error'])}")
    elif pending:
        out.print(
            f"[yellow]reload pending[/] since {_when(pending['since'])} ({pending['trigger']}): {text(pending_line(pending))}"
        )
    for path in doc.get("unreadable", []):
        out.print(f"[yellow]could not read {text(path)} (run as root for the full picture)[/]")
    not_read = [
        f"{' or '.join(i['paths'])}: {i['state']}"
        for i in doc.get("inputs", {}).values()
        if i["state"] not in ("read", "not_in_kernel")
    ]
    if not_read:
        # no finding was drawn from these: say so, so that silence about them is not read as health
        out.print(f"[yellow]not read, so nothing concluded from: {text('; '.join(not_read))}[/]")


def render_verify(doc: dict) -> None:
    out = console(report=True)
    for check in doc["checks"]:
        mark = (
            "[green]ok  [/]"
            if check["ok"]
            else ("[red]FAIL[/]" if check["severity"] == "critical" else "[yellow]WARN[/]")
        )
        out.print(f"{mark} {check['name']}: {escape(check['detail'])}")
    out.print("[green]healthy[/]" if doc["healthy"] else "[red]not healthy[/]")


def _flag(value: object) -> str:
    return "-" if value is None else ("on" if value else "off")


def pending_line(pending: dict) -> str:
    """What a pending reload waits for, in one line (the run's result and --status say the same)."""
    from nvreload.engine.idle import describe

    versions = f"module {pending['loaded_version'] or '-'}, userspace {pending['userspace_version'] or '-'}"
    if pending["reason"] == "policy_report":
        why = "the upgrade policy (on_upgrade) is report"
    else:
        why = "GPU work is running: " + describe(tuple(pending["busy"]))
    return f"{versions}; not done because {why}; run nvreload --reload when the node is free"


def _when(epoch: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def render_kernel_check(doc: dict) -> None:
    out = console(report=True)
    module = doc["module"]
    found = f"nvidia {module['version'] or '?'} ({module['path']})" if module else "no nvidia module"
    out.print(f"kernel {text(doc['kernel_release'])}: {text(found)}, userspace {text(doc['userspace_version'] or '-')}")
    for finding in doc["findings"]:
        out.print(f"[yellow]{finding['severity'].upper()}[/] {finding['code']}: {text(finding['message'])}")
    if not doc["findings"]:
        out.print("[green]OK[/]: it boots with a driver that matches the userspace")
