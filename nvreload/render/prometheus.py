"""`--status --format prometheus`: the status document as node_exporter's textfile collector reads it
(the Prometheus text exposition format 0.0.4). Pure: the document and what the journal says of the
last run in, text out; frontend.py reads the journal.

Every family has its HELP and TYPE lines, even one with no sample on this node, so that the names an
alert rule may use are all in the file. Info-style metrics (labels carry the value, the sample is 1)
are gauges: the 0.0.4 format has no info type.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from nvreload.status import status_exit_code

SEVERITIES = ("info", "warning", "critical", "unknown")
_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class LastRun:
    """What the journal says of the last acting run (--reload, --reset, --stop, --start, --rollback)."""

    action: str
    state: str  # the journal state: reloaded, rolled_back, failed, stopped, running...
    unfinished: bool
    started: float | None  # seconds since the epoch
    updated: float | None  # the journal's last write
    finished: float | None  # None while unfinished


@dataclass(frozen=True)
class JournalView:
    """The journal as the metrics see it: absent (last_run None, readable), read, or unreadable."""

    readable: bool = True
    last_run: LastRun | None = None


def label_value(value: object) -> str:
    """A label value as the exposition format quotes it: backslash, double quote and newline escaped;
    None (a fact nvreload does not know) is the empty value, which PromQL reads as no label."""
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _help_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(value) if isinstance(value, float) else str(value)


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self, name: str, help_text: str, samples: Iterable[tuple[dict[str, object], float | int | bool]]
    ) -> None:
        self.lines.append(f"# HELP {name} {_help_text(help_text)}")
        self.lines.append(f"# TYPE {name} gauge")
        for labels, value in samples:
            rendered = ",".join(f'{key}="{label_value(val)}"' for key, val in labels.items())
            self.lines.append(f"{name}{{{rendered}}} {_number(value)}" if rendered else f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _findings(document: dict) -> list[tuple[dict[str, object], int]]:
    """One sample per finding code: how many findings of that code (a code can repeat, one per GPU),
    labelled with the worst severity among them (two samples of one code would be a duplicate series)."""
    by_code: dict[str, tuple[str, int]] = {}
    for finding in document["findings"]:
        severity, count = by_code.get(finding["code"], (finding["severity"], 0))
        worse = max(severity, finding["severity"], key=lambda s: _RANK.get(s, len(SEVERITIES)))
        by_code[finding["code"]] = (worse, count + 1)
    return [({"code": code, "severity": severity}, count) for code, (severity, count) in sorted(by_code.items())]


def _xids(document: dict) -> list[tuple[dict[str, object], int]]:
    counts: dict[int, int] = {}
    for event in document["xid_events"]:
        if event["since_driver_load"]:
            counts[event["xid"]] = counts.get(event["xid"], 0) + 1
    return [({"xid": xid}, count) for xid, count in sorted(counts.items())]


def _journal(out: _Exposition, journal: JournalView | None) -> None:
    """journal None: a snapshot (--root), whose journal is not here to read: the families stay empty."""
    run = journal.last_run if journal is not None else None
    out.family(
        "nvreload_journal_readable",
        "0 when nvreload's run journal exists but cannot be read (nvreload --rollback says why); "
        "1 when it was read or there is none.",
        [({}, journal.readable)] if journal is not None else [],
    )
    out.family(
        "nvreload_last_run_info",
        "The last acting run in the journal: its action and journal state; always 1.",
        [({"action": run.action, "state": run.state}, 1)] if run else [],
    )
    out.family(
        "nvreload_last_run_unfinished",
        "1 while the last run is unfinished (running, rolling_back, failed, or stopped awaiting --start).",
        [({}, run.unfinished)] if run else [],
    )
    for name, when, what in (
        ("started", run.started if run else None, "started"),
        ("updated", run.updated if run else None, "last wrote its journal"),
        ("finished", run.finished if run else None, "finished (absent while unfinished)"),
    ):
        out.family(
            f"nvreload_last_run_{name}_timestamp_seconds",
            f"When the last run {what}, in seconds since the epoch.",
            [({}, when)] if when is not None else [],
        )


def render_prometheus(document: dict, journal: JournalView | None) -> str:
    """The status document (and the journal's last run, None for a snapshot) as Prometheus text exposition."""
    out = _Exposition()
    _node_families(out, document)
    _finding_families(out, document)
    _reload_families(out, document)
    _gpu_families(out, document)
    _journal(out, journal)
    return out.text()


def _node_families(out: _Exposition, document: dict) -> None:
    node, driver = document["node"], document["driver"]
    out.family(
        "nvreload_node_info",
        "The node nvreload read; always 1.",
        [({"hostname": node["hostname"], "kernel_release": node["kernel_release"]}, 1)],
    )
    out.family(
        "nvreload_driver_info",
        "Driver versions: the loaded kernel module, the module on disk that would load next, the userspace "
        "library, the loaded module's flavour, and NVML's status; always 1. An empty label is unknown.",
        [
            (
                {
                    "kernel_module": driver["kernel_module_version"],
                    "on_disk": driver["on_disk_module_version"],
                    "userspace": driver["userspace_version"],
                    "flavor": driver["kernel_module_flavor"],
                    "nvml": driver["nvml"],
                },
                1,
            )
        ],
    )
    out.family("nvreload_driver_loaded", "1 when the nvidia kernel module is loaded.", [({}, bool(driver["loaded"]))])
    out.family(
        "nvreload_status",
        "The status exit code: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
        [({}, status_exit_code(document))],
    )


def _finding_families(out: _Exposition, document: dict) -> None:
    # Only the codes present: an alert rule fires on the series existing (`nvreload_finding{severity="critical"}`)
    # and resolves when the next run's file no longer has it. A 0 for each known code would have to carry
    # a severity label for a finding that is not there, and the code list grows with the diagnosis;
    # nvreload_findings below gives the always-present series a `== 0` or `absent()` rule wants.
    out.family(
        "nvreload_finding",
        "Findings of this code on the node (labelled with their worst severity).",
        _findings(document),
    )
    severities = [f["severity"] for f in document["findings"]]
    out.family(
        "nvreload_findings",
        "Findings of this severity on the node (0 when none).",
        [({"severity": s}, severities.count(s)) for s in SEVERITIES],
    )
    out.family(
        "nvreload_recommended_action_info",
        "The one recommended action; always 1.",
        [({"action": document["recommended_action"]}, 1)],
    )


def _reload_families(out: _Exposition, document: dict) -> None:
    out.family(
        "nvreload_reload_feasible", "1 when no finding blocks a reload.", [({}, bool(document["reload"]["feasible"]))]
    )
    pending = document["reload"].get("pending")
    recorded = pending is not None and "error" not in pending
    out.family(
        "nvreload_reload_pending",
        "1 while a reload is due but was not done (the upgrade policy is report, or GPU work ran): "
        "reload-pending.json in the state directory.",
        [({}, recorded)],
    )
    out.family(
        "nvreload_reload_pending_since_seconds",
        "When the pending reload was first found due, in seconds since the epoch.",
        [({"trigger": pending["trigger"], "reason": pending["reason"]}, float(pending["since"]))] if recorded else [],
    )
    out.family(
        "nvreload_reload_blocker",
        "A finding code that blocks a reload; always 1.",
        [({"code": code}, 1) for code in sorted(set(document["reload"]["blockers"]))],
    )


def _gpu_families(out: _Exposition, document: dict) -> None:
    out.family(
        "nvreload_xid_events_since_driver_load",
        "XID events in the kernel log since the loaded driver instance started, by XID number.",
        _xids(document),
    )
    gpus = document["gpus"]
    out.family(
        "nvreload_gpus",
        "NVIDIA GPUs seen on the PCI bus and by NVML (fewer in NVML: a GPU is lost to CUDA).",
        [
            ({"seen_by": "pci"}, sum(1 for g in gpus if g.get("on_pci_bus"))),
            ({"seen_by": "nvml"}, sum(1 for g in gpus if g.get("in_nvml"))),
        ],
    )
    out.family(
        "nvreload_container_engine_gpu_containers",
        "Running GPU containers of each container engine found on the node (docker, podman, or a user's "
        "rootless podman), by engine and socket.",
        [
            ({"engine": e["name"], "url": e["url"]}, e["gpu_containers"])
            for e in document["consumers"].get("engines", [])
        ],
    )
