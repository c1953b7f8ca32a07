"""The kernel log: XID events, the last driver load, what that load said about each GPU, and
module load errors.

Only lines after the last `NVRM: loading NVIDIA ...` belong to the driver instance now in memory;
older XIDs happened to a previous instance and must not drive today's diagnosis. The one exception
is what that instance's own probe printed: the driver probes the GPUs before it prints its
`loading` line, so a GPU that fell off the bus, or that the probe refused, while this instance
loaded is told just before that line.
"""

from __future__ import annotations

import re

from nvreload.model import DriverMessage, GpuInitFailure, KernelFault, KernelLog, ModuleLoadFailure, XidEvent
from nvreload.read.nvidia_proc import normalize_bus_id

# The patterns below are kept as text and compiled at their first use (through re's cache), each
# behind a literal test that every line it matches passes: most of a kernel log is none of this, and
# compiling them all is a share of every `--status` that a log without such lines need not pay.
# /dev/kmsg's record prefix: `6,1000,5000,-;`
_KMSG_PREFIX = r"^\d+,\d+,\d+,[^;]*;"
_LOAD = "NVRM: loading NVIDIA"
# NVRM: Xid (PCI:0000:3b:00): 79, pid=1234, name=python, GPU has fallen off the bus.
_XID_LITERAL = "NVRM: Xid ("
_XID = r"NVRM: Xid \((?:PCI:)?(?P<bus>[0-9A-Fa-f:.]+)\):\s*(?P<xid>\d+)\s*,?\s*(?P<msg>.*)$"
# printed by a running instance
_FALLEN_LITERAL = ": GPU has fallen off the bus"
_FALLEN = r"NVRM: GPU (?P<bus>[0-9A-Fa-f:.]+): GPU has fallen off the bus"
# `[ 1843.3] ` (dmesg), `[Tue Sep  8 17:16:02 2026] ` (dmesg -T), `Sep 28 23:34:26 host kernel: ` (journalctl/syslog);
# _timestamp reads the first form's seconds
_PREFIX = (
    r"^(?:\[\s*\d+(?:\.\d+)?\]\s?|\[[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\]\s?"
    r"|[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ \S+: )"
)

# What the driver's probe prints about a GPU it does not take (nv_pci_probe and RmInitAdapter), as
# (kind, a literal every such line holds, in lower case, the pattern). The literal is a cheap test
# on the lower-cased line first: a pattern is compiled (once, through re's cache) only when a line
# holds its literal, so a log that never says these things never pays for them.
_PROBE = (
    ("fallen_off_bus", "fallen off the bus", r"NVRM: The NVIDIA GPU (?P<bus>[0-9A-Fa-f:.]+) .*fallen off the bus"),
    ("unsupported", "is not supported by", r"NVRM: The NVIDIA GPU (?P<bus>[0-9A-Fa-f:.]+) .*is not supported by"),
    # the GPU needs a legacy branch (proprietary module), or the open module ignores it
    # (the legacy line names the GPU by model, not by bus)
    ("unsupported", "legacy drivers", r"NVRM: The NVIDIA .*supported through the NVIDIA [\d.x]+ Legacy drivers"),
    # the proprietary module and a GPU only the open modules drive (Blackwell and newer)
    (
        "unsupported",
        "open kernel modules",
        r"NVRM: The NVIDIA GPU (?P<bus>[0-9A-Fa-f:.]+) .*requires use of the NVIDIA open kernel modules",
    ),
    ("unsupported", "ignoring the legacy gpu", r"NVRM: ignoring the legacy GPU (?P<bus>[0-9A-Fa-f:.]+)"),
    (
        "bar_unassigned",
        "pci i/o region",
        r"NVRM: This PCI I/O region assigned to your NVIDIA device is invalid.*\(PCI:(?P<bus>[0-9A-Fa-f:.]+)\)",
    ),
    ("init_failed", "rminitadapter failed", r"NVRM: GPU (?P<bus>[0-9A-Fa-f:.]+): RmInitAdapter failed"),
    # why an RmInitAdapter failed, when the driver says (these lines name the GPU by index, not bus):
    # the GPU's own boot firmware (GFW, from the VBIOS) never finished: a cold power cycle, not a reload
    ("gfw_boot_incomplete", "gfw", r"(?i)NVRM: .*failed to wait for GFW[_ ]boot"),
    # GSP could not boot because the GPU still holds a previous instance's protected region (WPR2):
    # the GPU needs a reset before any load can succeed
    ("gsp_wpr2_up", "wpr2 already up", r"NVRM: .*_kgspBootGspRm: unexpected WPR2 already up"),
    # GSP firmware RM did not start, for a reason other than the above (older drivers print `NVRM ` with
    # no colon): the same driver and firmware fail the same way on the next load
    ("gsp_init_failed", "cannot initialize gsp", r"NVRM:? .*RmInitAdapter: Cannot initialize GSP firmware RM"),
    ("other_driver", "probe routine was not called", r"NVRM: The NVIDIA probe routine was not called for \d+ device"),
)
# a message is a few lines; a longer run of continuation lines (a hostile snapshot) stops being joined,
# so joining stays linear
_MAX_MESSAGE = 1024
# a probe-time line belongs to the load that follows it only if printed at most this long before it
_PROBE_WINDOW_S = 60.0

# Module refusals: only a line that holds one of _REFUSAL_WORDS is tried against these, so they are
# kept as text and compiled at their first use (through re's cache), not when the module is imported.
_MODULE_NAMED = r"^(?P<module>[\w-]+): (?P<rest>.*)$"
_SYMBOL_VERSION = r"disagrees about version of symbol (?P<symbol>\S+)"
_UNKNOWN_SYMBOL = r"Unknown symbol (?P<symbol>\S+)"
# Secure Boot / lockdown refusing an unsigned or untrusted module; modprobe's EKEYREJECTED text
# reaches the log through systemd-modules-load or a driver container's output
_SIGNATURE = (
    r"Loading of unsigned module is rejected|Loading of module with unavailable key is rejected"
    r"|unsigned module loading is restricted"
)
_KEY_REJECTED = r"(?:could not insert|Failed to insert module) '(?P<module>[^']+)': Key was rejected by service"
_INSERTING = r"(?:could not insert|Failed to insert module) '(?P<module>[^']+)'"
_FORMAT = r"Invalid module format|Exec format error"
# a cheap test before the patterns above: most of a kernel log is none of this
_REFUSAL_WORDS = ("symbol", "module", "Key was rejected", "format error", "version magic", "API mismatch")

LOAD_ERROR_MARKERS = (
    "Invalid module format",
    "disagrees about version of symbol",
    "Unknown symbol",
    "Exec format error",
    "version magic",
    "NVRM: API mismatch",
    "NVRM: RmInitAdapter failed",
)


def _strip(line: str) -> str:
    line = line.rstrip("\n")
    return re.sub(_KMSG_PREFIX, "", line) if line[:1].isdecimal() else line


def _message(line: str) -> str:
    """The line without its timestamp or syslog prefix."""
    return re.sub(_PREFIX, "", line.strip(), count=1)


def _timestamp(line: str) -> float | None:
    """The seconds of a dmesg line's `[ 1843.308145]`; None for any other line (dmesg -T, syslog)."""
    text = line.strip()
    close = text.find("]")
    if not text.startswith("[") or close < 0:
        return None
    whole, dot, fraction = text[1:close].lstrip().partition(".")
    if not whole.isdecimal() or (dot and not fraction.isdecimal()):
        return None
    return float(text[1:close])


def _xid(line: str) -> re.Match[str] | None:
    return re.search(_XID, line) if _XID_LITERAL in line else None


def _continued(line: str) -> str | None:
    """The text of an indented `NVRM:` line that continues the message above it (dmesg prints a
    multi-line message's later lines without a timestamp), or None."""
    text = line.lstrip()
    return text[5:] if text.startswith("NVRM:") else None


def _logical_lines(lines: list[str]) -> list[str]:
    """One line per message: an indented `NVRM:` line without a prefix continues the message above
    it, and so does each line of "The NVIDIA GPU ... installed / in this system ..." that older
    drivers print with its own timestamp, until the sentence ends."""
    out: list[str] = []
    for line in lines:
        previous = out[-1] if out and len(out[-1]) < _MAX_MESSAGE else None
        if previous is None or "NVRM:" not in line:
            out.append(line)
            continue
        if _xid(line) or _LOAD in line:  # a message of its own, never a continuation
            out.append(line)
        elif (continued := _continued(line)) is not None and re.match(_PREFIX, previous):
            out[-1] = previous.rstrip() + " " + continued.strip()
        elif "NVRM: The NVIDIA " in previous and not previous.rstrip().endswith("."):
            out[-1] = previous.rstrip() + " " + line.split("NVRM:", 1)[1].strip()
        else:
            out.append(line)
    return out


def _probe_block_start(lines: list[str], load: int) -> int:
    """Where the driver instance that printed lines[load] began probing: the run of NVIDIA lines
    (no XID: those come from a running instance) printed just before it."""
    load_time = _timestamp(lines[load])
    start = load
    for index in range(load - 1, -1, -1):
        line = lines[index]
        if _xid(line) or _LOAD in line or not ("NVRM" in line or "nvidia" in line.lower()):
            break
        when = _timestamp(line)
        if load_time is not None and when is not None and not 0 <= load_time - when <= _PROBE_WINDOW_S:
            break
        start = index
    return start


def _gpu_init_failure(line: str) -> GpuInitFailure | None:
    folded = line.lower()
    for kind, literal, pattern in _PROBE:
        if literal not in folded:
            continue
        match = re.search(pattern, line)
        if match:
            bus = match.groupdict().get("bus")
            return GpuInitFailure(normalize_bus_id(bus) if bus else None, kind, line.strip())
    return None


def _module_failure(line: str) -> ModuleLoadFailure | None:
    text = _message(line)
    rejected = re.search(_KEY_REJECTED, text)
    if rejected:
        return ModuleLoadFailure(rejected.group("module").replace("-", "_"), "signature", line.strip())
    if re.search(_SIGNATURE, text):
        return ModuleLoadFailure(None, "signature", line.strip())
    # modprobe names the module it could not insert in quotes, after its own name
    named = re.search(_INSERTING, text) or re.match(_MODULE_NAMED, text)
    module = named.group("module").replace("-", "_") if named else None
    for kind, pattern in (("symbol_version", _SYMBOL_VERSION), ("unknown_symbol", _UNKNOWN_SYMBOL)):
        match = re.search(pattern, text)
        if match:
            return ModuleLoadFailure(module, kind, line.strip(), match.group("symbol"))
    if re.search(_FORMAT, text):
        return ModuleLoadFailure(module, "format", line.strip())
    if "version magic" in text and module:
        return ModuleLoadFailure(module, "version_magic", line.strip())
    if "NVRM: API mismatch" in text:
        return ModuleLoadFailure("nvidia", "api_mismatch", line.strip())
    return None


# A kernel fault report: its first line, then (up to the next report or its "end trace" line) the
# RIP and call trace lines; a frame in an NVIDIA module ends in "[nvidia]", "[nvidia_uvm]", ... The
# "Modules linked in:" line lists every loaded module as "nvidia(POE)" (never in brackets), so it
# never makes a report NVIDIA's.
# a driver message is a few hundred characters; a longer line (a hostile snapshot) is classified by
# its start, so that no pattern ever searches an unbounded line
_MAX_CLASSIFIED = 2048
# the words every line of the catalogue holds (driver_messages._PREFIXES and _FAULT_WORDS, held equal
# by a test): the catalogue itself is imported only once a line of the window holds one, so a log
# whose NVIDIA lines have left the ring buffer (a node up for weeks) pays a substring test per line
_DRIVER_WORDS = (
    "NVRM",
    "nvidia",
    "Loading of",
    "Key was rejected",
    "unsigned module",
    "[nvidia-drm]",
    "BUG: ",
    "Oops: ",
    "general protection fault",
    "blocked for more than",
    "WARNING: CPU:",
    "stall",
)
_FAULT_FINDING = "kernel_fault_in_nvidia_module"
_FAULT_SPAN = 80
# (kernels with CONFIG_STACKTRACE_BUILD_ID print the module's build id after its name)
# (read only in a fault report: compiled at its first use)
_NVIDIA_FRAME = r"\[(nvidia\w*|nvswitch\w*|gdrdrv)(?: [0-9a-f]+)?\]"


def _kernel_fault(lines: list[str], index: int, kind: str) -> tuple[KernelFault | None, int]:
    """The fault report starting at lines[index] (if a line of it names an NVIDIA module) and where it
    ends. One report prints several headers ("BUG: ...", then "Oops: ..."): a header ends it only
    once its RIP or call trace has begun."""
    frames: list[str] = []
    modules: dict[str, None] = {}
    traced = False
    end = min(len(lines), index + _FAULT_SPAN)
    for position in range(index, end):
        line = lines[position]
        if position > index and ("---[ end trace" in line or (traced and _is_fault_header(line))):
            end = position
            break
        traced = traced or "Call Trace" in line or "RIP:" in line
        found = re.findall(_NVIDIA_FRAME, line)
        if found:
            modules.update(dict.fromkeys(found))
            frames.append(line.strip())
    if not modules:
        return None, end
    return KernelFault(kind, lines[index].strip(), tuple(modules), tuple(frames[:6])), end


def _is_fault_header(line: str) -> bool:
    from nvreload.read import driver_messages

    family = driver_messages.classify(line[:_MAX_CLASSIFIED])
    return family is not None and family.finding == _FAULT_FINDING


def _driver_message(line: str) -> DriverMessage | None:
    from nvreload.read import driver_messages  # only for a line that holds one of its words

    family = driver_messages.classify(line[:_MAX_CLASSIFIED])
    return DriverMessage(family.name, family.finding, line.strip()) if family is not None else None


def _driver_lines(lines: list[str], start: int, last_load: int | None) -> tuple[list[DriverMessage], list[KernelFault]]:
    """The current driver instance's lines of the message catalogue (from its probe on), and the
    kernel faults since its load whose reports run through an NVIDIA module."""
    messages: list[DriverMessage] = []
    faults: list[KernelFault] = []
    fault_end = 0
    for index in range(start, len(lines)):
        line = lines[index]
        if not any(word in line for word in _DRIVER_WORDS):
            continue
        message = _driver_message(line)
        if message is None:
            continue
        if message.finding != _FAULT_FINDING:
            messages.append(message)
        elif (last_load is None or index > last_load) and index >= fault_end:
            # since the load only, and not a later header of a report already read
            fault, fault_end = _kernel_fault(lines, index, message.family)
            if fault is not None:
                faults.append(fault)
    return messages, faults


def _xid_event(match: re.Match[str], line: str, since_driver_load: bool) -> XidEvent | None:
    try:
        xid = int(match.group("xid"))
    except ValueError:
        return None
    return XidEvent(
        xid=xid,
        pci_bus_id=normalize_bus_id(match.group("bus")),
        message=match.group("msg").strip(),
        since_driver_load=since_driver_load,
        line=line.strip(),
    )


def parse_kernel_log(text: str | None, source: str | None) -> KernelLog:
    if text is None:
        return KernelLog(source, 0, None, (), (), ())
    physical = [_strip(line) for line in text.splitlines()]
    lines = _logical_lines(physical)
    last_load = None
    for index, line in enumerate(lines):
        if _LOAD in line:
            last_load = index
    probe_start = _probe_block_start(lines, last_load) if last_load is not None else 0
    xids = []
    load_errors = []
    fallen = []
    init_failures = []
    module_failures = []
    for index, line in enumerate(lines):
        since = last_load is not None and index > last_load
        current = last_load is None or since
        match = _xid(line)
        if match:
            event = _xid_event(match, line, since if last_load is not None else True)
            if event is not None:
                xids.append(event)
            continue
        if current and _FALLEN_LITERAL in line and re.search(_FALLEN, line):
            fallen.append(line.strip())
        if "NVRM" in line and (current or index >= probe_start):
            failure = _gpu_init_failure(line)
            if failure is not None:
                init_failures.append(failure)
                if failure.kind == "fallen_off_bus":
                    fallen.append(failure.line)
        if current and any(marker in line for marker in LOAD_ERROR_MARKERS):
            if "nvidia" in line.lower() or "NVRM" in line:
                load_errors.append(line.strip())
        if current and any(word in line for word in _REFUSAL_WORDS) and _LOAD not in line:
            refused = _module_failure(line)
            if refused is not None:
                module_failures.append(refused)
    # every catalogue line a finding is drawn from names NVRM or nvidia (a fault's trace: "[nvidia]"):
    # a log that never does is not walked line by line again
    nvidia = "NVRM" in text or "nvidia" in text
    messages, faults = _driver_lines(lines, probe_start, last_load) if nvidia else ([], [])
    return KernelLog(
        source=source,
        lines=len(physical),
        last_driver_load=lines[last_load].strip() if last_load is not None else None,
        xids=tuple(xids),
        load_errors=tuple(load_errors[-20:]),
        fallen_off_bus=tuple(fallen),
        gpu_init_failures=tuple(init_failures[-64:]),
        module_failures=tuple(module_failures[-64:]),
        driver_messages=tuple(messages[-256:]),
        kernel_faults=tuple(faults[-16:]),
    )
