"""Fleet drift: this node against the fleet's intended state (`--status --baseline FILE`).

A baseline is the `--status --json` document of a known-good node (`nvreload --status --json >
baseline.json`), or any part of it an operator keeps: drift is judged on the keys present, so a
file holding only `{"driver": {"kernel_module_version": "550.127.08"}}` checks only that. What is
compared, and the finding each difference gives:

| baseline key | finding | action |
|---|---|---|
| driver.kernel_module_version, driver.userspace_version | drift_driver_version | reload when the module on disk is the baseline's, else install_driver |
| driver.kernel_module_flavor | drift_driver_flavor | install_driver |
| driver.fabric_manager_version | drift_fabric_manager_version | install_driver |
| modules[].name, modules[].parameters | drift_module_parameters | reload (after modprobe.d says what the fleet wants) |
| gpus[].name (count and models) | drift_gpu_inventory | service_hardware |
| gpus[].persistence_mode | drift_persistence_mode | none (set it: nvidia-smi -pm 1, or nvidia-persistenced) |
| gpus[].mig_mode | drift_mig_mode | reset_gpu (a MIG mode change waits for a GPU reset) |

GPUs are compared by their settings as a fleet states them: where every GPU of the baseline has the
same value, every GPU here must have it; where they differ, GPU by GPU in bus order. Pure: two
documents in, findings out.
"""

from __future__ import annotations

import json
from collections import Counter

from nvreload.diagnosis.findings import ACTION_PRIORITY, Diagnosis, Finding
from nvreload.errors import BadInputError
from nvreload.records import replace
from nvreload.state_files import UnreadableFile, read_json

MAX_BASELINE_BYTES = 16 << 20
_SECTIONS = ("driver", "modules", "gpus")


def load_baseline(path: str) -> dict:
    """The baseline document at `path`: a JSON object with at least one key drift is judged on.
    BadInputError (one line, exit 66) for anything else."""
    try:
        baseline = read_json(path, MAX_BASELINE_BYTES)
    except UnreadableFile as exc:
        raise BadInputError(f"--baseline {path}: {exc.why}") from None
    if baseline is None:
        raise BadInputError(f"--baseline {path}: No such file or directory")
    if not isinstance(baseline, dict) or not any(isinstance(baseline.get(k), (dict, list)) for k in _SECTIONS):
        raise BadInputError(
            f"--baseline {path}: no driver, modules or gpus to compare (write one with nvreload --status --json)"
        )
    return baseline


def _driver_findings(node: dict, wanted: dict) -> list[Finding]:
    found: list[Finding] = []
    for key, what in (("kernel_module_version", "kernel module"), ("userspace_version", "userspace")):
        if key in wanted and wanted[key] != node.get(key):
            on_disk_fixes = key == "kernel_module_version" and node.get("on_disk_module_version") == wanted[key]
            found.append(
                Finding(
                    "drift_driver_version",
                    "warning",
                    f"the {what} is {node.get(key) or 'absent'}, the fleet's is {wanted[key]}"
                    + ("; the module on disk is the fleet's: a reload loads it" if on_disk_fixes else ""),
                    "reload" if on_disk_fixes else "install_driver",
                    evidence={"key": f"driver.{key}", "node": node.get(key), "baseline": wanted[key]},
                )
            )
    for key, what in (("kernel_module_flavor", "kernel module flavour"), ("fabric_manager_version", "fabric manager")):
        if key in wanted and wanted[key] != node.get(key):
            message = f"the {what} is {node.get(key) or 'absent'}, the fleet's is {wanted[key]}"
            evidence = {"key": f"driver.{key}", "node": node.get(key), "baseline": wanted[key]}
            if key == "kernel_module_flavor":
                found.append(Finding("drift_driver_flavor", "warning", message, "install_driver", evidence=evidence))
            else:
                found.append(
                    Finding("drift_fabric_manager_version", "warning", message, "install_driver", evidence=evidence)
                )
    return found


def _module_findings(node: list, wanted: list) -> list[Finding]:
    here = {m.get("name"): m for m in node if isinstance(m, dict)}
    differences = []
    for module in wanted:
        if not isinstance(module, dict) or not isinstance(module.get("name"), str):
            continue
        name = module["name"]
        if name not in here:
            differences.append({"module": name, "node": "not loaded", "baseline": "loaded"})
            continue
        for key, value in sorted((module.get("parameters") or {}).items()):
            if here[name].get("parameters", {}).get(key) != value:
                differences.append(
                    {
                        "module": name,
                        "parameter": key,
                        "node": here[name].get("parameters", {}).get(key),
                        "baseline": value,
                    }
                )
    if not differences:
        return []
    shown = ", ".join(
        f"{d['module']}.{d['parameter']}={d['node']} (fleet: {d['baseline']})"
        if "parameter" in d
        else f"{d['module']} not loaded"
        for d in differences[:6]
    )
    return [
        Finding(
            "drift_module_parameters",
            "warning",
            f"modules differ from the fleet's: {shown}; set /etc/modprobe.d as the fleet has it, then reload",
            "reload",
            evidence={"differences": differences},
        )
    ]


def _per_gpu(node: list, wanted: list, key: str) -> list[dict]:
    """GPUs whose `key` differs from the fleet's: one value for all where the baseline's GPUs agree,
    else GPU by GPU in bus order."""
    values = [g.get(key) for g in wanted if isinstance(g, dict) and key in g]
    if not values:
        return []
    gpus = sorted((g for g in node if isinstance(g, dict)), key=lambda g: str(g.get("pci_bus_id")))
    if len(set(map(json.dumps, values))) == 1:
        expected = [values[0]] * len(gpus)
    else:
        expected = values + [None] * (len(gpus) - len(values))
    return [
        {"pci_bus_id": g.get("pci_bus_id"), "node": g.get(key), "baseline": want}
        for g, want in zip(gpus, expected, strict=False)
        if want is not None and g.get(key) != want
    ]


def _listed(gpus: list[dict]) -> str:
    return ", ".join(f"{d['pci_bus_id']} {d['node']} (fleet: {d['baseline']})" for d in gpus[:8])


def _gpu_findings(node: list, wanted: list) -> list[Finding]:
    found: list[Finding] = []
    models = Counter(g.get("name") for g in wanted if isinstance(g, dict) and "name" in g)
    if models:
        here = Counter(g.get("name") for g in node if isinstance(g, dict))
        if here != models:
            found.append(
                Finding(
                    "drift_gpu_inventory",
                    "critical" if sum(here.values()) < sum(models.values()) else "warning",
                    f"{sum(here.values())} GPU(s) here, the fleet's nodes have {sum(models.values())}: "
                    + ", ".join(f"{n}x {name}" for name, n in sorted(models.items(), key=str)),
                    "service_hardware",
                    evidence={"node": dict(here), "baseline": dict(models)},
                )
            )
    persistence = _per_gpu(node, wanted, "persistence_mode")
    if persistence:
        found.append(
            Finding(
                "drift_persistence_mode",
                "warning",
                "persistence mode differs from the fleet's: " + _listed(persistence),
                "none",
                evidence={"gpus": persistence},
            )
        )
    mig = _per_gpu(node, wanted, "mig_mode")
    if mig:
        found.append(
            Finding(
                "drift_mig_mode",
                "warning",
                "MIG mode differs from the fleet's (it changes at a GPU reset): " + _listed(mig),
                "reset_gpu",
                evidence={"gpus": mig},
            )
        )
    return found


def drift_findings(document: dict, baseline: dict) -> list[Finding]:
    """What differs between this node's status document and the baseline, on the keys present."""
    found: list[Finding] = []
    if isinstance(baseline.get("driver"), dict):
        found += _driver_findings(document.get("driver", {}), baseline["driver"])
    if isinstance(baseline.get("modules"), list):
        found += _module_findings(document.get("modules", []), baseline["modules"])
    if isinstance(baseline.get("gpus"), list):
        found += _gpu_findings(document.get("gpus", []), baseline["gpus"])
    return found


def with_drift(diagnosis: Diagnosis, drift: list[Finding]) -> Diagnosis:
    """The diagnosis with the drift findings after its own, and the recommended action drawn again
    from all of them (a drift never blocks a reload)."""
    if not drift:
        return diagnosis
    findings = diagnosis.findings + tuple(drift)
    actions = {f.action for f in findings}
    recommended = next(a for a in ACTION_PRIORITY if a in actions or a == "none")
    return replace(diagnosis, findings=findings, recommended_action=recommended)
