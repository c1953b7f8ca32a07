"""Rich summaries on stderr: stdout stays clean for --json and pipes."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table

_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def console() -> Console:
    # Piped to a log or a ticket, lines should not be cut at 80 columns.
    width = None if sys.stderr.isatty() else 160
    return Console(stderr=True, highlight=False, width=width)


def render_status(doc: dict, verbose: bool = False) -> None:
    out = console()
    node, driver = doc["node"], doc["driver"]
    out.print(f"[bold]{node.get('hostname') or '?'}[/]  kernel {node.get('kernel_release') or '?'}")
    loaded = "loaded" if driver["loaded"] else "[red]not loaded[/]"
    out.print(
        f"driver: module {driver['kernel_module_version'] or '-'} ({driver['kernel_module_flavor'] or '-'}, {loaded}), "
        f"on disk {driver['on_disk_module_version'] or '-'}, userspace {driver['userspace_version'] or '-'}, NVML {driver['nvml']}"
    )
    if driver["nvml"] == "error" and driver.get("nvml_error"):
        # no finding explains this one (a hang, a crash): the exit code is UNKNOWN, say why
        out.print(f"[yellow]NVML: {escape(driver['nvml_error'])}[/]")
    if doc["modules"]:
        out.print("modules: " + ", ".join(
            f"{m['name']} ({m['state']}{'' if m['refcount'] is None else ', ref ' + str(m['refcount'])}"
            f"{', held by ' + '+'.join(m['holders']) if m['holders'] else ''})" for m in doc["modules"]))
    if doc["gpus"]:
        table = Table(show_edge=False, box=None, pad_edge=False)
        for column in ("bus id", "name", "uuid", "driver", "persistence", "MIG"):
            table.add_column(column)
        for gpu in doc["gpus"]:
            table.add_row(
                gpu["pci_bus_id"], gpu["name"] or "-", gpu["uuid"] or "-", gpu.get("driver") or "[red]none[/]",
                _flag(gpu.get("persistence_mode")), _flag(gpu.get("mig_mode")),
            )
        out.print(table)
    consumers = doc["consumers"]
    if consumers.get("scanned"):
        out.print(
            f"consumers: {len(consumers['processes'])} process(es), "
            f"{sum(1 for s in consumers['services'] if s['active'] == 'active')} active service(s), "
            f"{len(consumers['containers'])} GPU container(s)"
        )
        if verbose:
            for proc in consumers["processes"]:
                out.print(f"  pid {proc['pid']} {proc['comm']}: {', '.join(proc['devices']) or 'via NVML'}")
    else:
        out.print("consumers: not scanned (snapshot)")
    if doc["findings"]:
        for finding in doc["findings"]:
            style = _SEVERITY_STYLE[finding["severity"]]
            out.print(f"[{style}]{finding['severity'].upper():8}[/] {finding['code']}: {escape(finding['message'])}")
            if verbose:
                for key, value in finding["evidence"].items():
                    out.print(f"           {key}: {escape(str(value))}")
    else:
        out.print("[green]no findings[/]")
    reload = doc["reload"]
    feasible = "[green]feasible[/]" if reload["feasible"] else f"[red]blocked[/] by {', '.join(reload['blockers'])}"
    out.print(f"recommended action: [bold]{doc['recommended_action']}[/]; reload {feasible}")
    for path in doc.get("unreadable", []):
        out.print(f"[yellow]could not read {path} (run as root for the full picture)[/]")


def render_verify(doc: dict) -> None:
    out = console()
    for check in doc["checks"]:
        mark = "[green]ok  [/]" if check["ok"] else ("[red]FAIL[/]" if check["severity"] == "critical" else "[yellow]WARN[/]")
        out.print(f"{mark} {check['name']}: {escape(check['detail'])}")
    out.print("[green]healthy[/]" if doc["healthy"] else "[red]not healthy[/]")


def _flag(value: object) -> str:
    return "-" if value is None else ("on" if value else "off")
