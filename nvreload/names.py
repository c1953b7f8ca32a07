"""The shapes of the names nvreload hands to the machine (rmmod/modprobe, systemctl, the container
engine's API, sysfs), wherever they come from: a scenario, a journal, a record in the state
directory. Each pattern refuses what would change the meaning of the command it ends up in: a
leading '-' (an option), '/' and '..' (another path or API route), whitespace, control characters.

nvreload/schema/scenario.schema.json holds the same patterns (tests/test_names.py keeps them equal).
"""

from __future__ import annotations

import re

MODULE_NAME = re.compile(r"[a-z0-9_]{1,64}")
# systemd's unit name characters (and a GPU daemon's executable name where PID 1 is not systemd)
UNIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9:_.@\\-]{0,254}")
CONTAINER_ID = re.compile(r"[0-9a-f]{12,64}")
PCI_BUS_ID = re.compile(r"[0-9a-fA-F]{4,8}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]")
VT_CONSOLE = re.compile(r"vtcon[0-9]{1,3}")
PARAMETER_NAME = re.compile(r"[A-Za-z0-9_]{1,128}")
# one Slurm node: a host name (no comma list, no [1-4] range, no option)
SLURM_NODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_module_name(value: object) -> bool:
    return isinstance(value, str) and MODULE_NAME.fullmatch(value) is not None


def is_unit_name(value: object) -> bool:
    return isinstance(value, str) and UNIT_NAME.fullmatch(value) is not None


def is_container_id(value: object) -> bool:
    return isinstance(value, str) and CONTAINER_ID.fullmatch(value) is not None


def is_slurm_node_name(value: object) -> bool:
    return isinstance(value, str) and SLURM_NODE.fullmatch(value) is not None


def is_bus_id(value: object) -> bool:
    return isinstance(value, str) and PCI_BUS_ID.fullmatch(value) is not None


def is_vt_console(value: object) -> bool:
    return isinstance(value, str) and VT_CONSOLE.fullmatch(value) is not None


def is_parameter(name: object, value: object) -> bool:
    """A module parameter as modprobe takes it: name=value in one argument, no newline or NUL (a
    value may hold spaces: modprobe passes it whole)."""
    return (
        isinstance(name, str)
        and PARAMETER_NAME.fullmatch(name) is not None
        and isinstance(value, str)
        and len(value) <= 4096
        and not any(ch in value for ch in "\n\r\0")
    )


def printable(text: str) -> str:
    """`text` with every control or unprintable character written as an escape: a process sets its
    own name and command line, and one holding '\\n' or '\\r' would otherwise forge whole lines of
    nvreload's output, and of the system log the package hook copies that output into."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
