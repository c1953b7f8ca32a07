"""What must hold before an acting command changes anything: an ordered list of small checks, each
returning why the run is refused, or None. The first refusal wins. A real run raises it; a dry run
shows the plan anyway, then the refusal and its exit code."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from nvreload.action_request import ActionRequest
from nvreload.engine.plan import ReloadView
from nvreload.host.installer import installer_version


@dataclass(frozen=True)
class Facts:
    """What the checks look at: the request, the node as read (None before it is read), and the
    installer copy the run would execute."""

    request: ActionRequest
    view: ReloadView | None = None
    installer: str | None = None


@dataclass(frozen=True)
class Precondition:
    name: str
    check: Callable[[Facts], str | None]


def needs_root(facts: Facts) -> str | None:
    request = facts.request
    if request.simulate is not None or request.root is not None or os.geteuid() == 0:
        return None
    what = " and resets GPUs" if request.action == "reset" else " and unloads kernel modules"
    return f"--{request.action} needs root (it stops services{what}); run it with sudo"


def no_blocking_finding(facts: Facts) -> str | None:
    """A reload the diagnosis says would not help (reboot, rebuild, a service), or a display server
    on the GPUs (unless --force-display)."""
    request, view = facts.request, facts.view
    if view is None or request.action != "reload":
        return None
    blockers = [b for b in view.blockers if not (b == "display_server_active" and request.force_display)]
    if view.display_processes and not request.force_display and "display_server_active" not in blockers:
        blockers.append("display_server_active")
    if not blockers:
        return None
    return "reload refused: " + ", ".join(blockers) + " (nvreload --status explains)"


def fabric_manager_matches_installer(facts: Facts) -> str | None:
    """A --driver reload on an NVSwitch node: the fabric manager starts only for a driver of its
    exact version, and without it the new driver's GPUs have no NVLink fabric."""
    request, view, driver = facts.request, facts.view, facts.installer
    if view is None or request.action != "reload" or not driver or not view.fabric_manager_version:
        return None
    version = installer_version(driver)
    if version is None or version == view.fabric_manager_version:
        return None
    return (
        f"reload refused: {os.path.basename(driver)} installs driver {version}, but nvidia-fabricmanager is "
        f"{view.fabric_manager_version} and starts only with its own version: install nvidia-fabricmanager "
        f"{version} first (the NVLink fabric would stay down)"
    )


# before anything is read or copied
BEFORE_READING = (Precondition("root", needs_root),)
# once the node is read, before the plan is confirmed
AFTER_READING = (
    Precondition("blocking findings", no_blocking_finding),
    Precondition("fabric manager version", fabric_manager_matches_installer),
)


def first_refusal(checks: tuple[Precondition, ...], facts: Facts) -> str | None:
    for precondition in checks:
        refusal = precondition.check(facts)
        if refusal is not None:
            return refusal
    return None
