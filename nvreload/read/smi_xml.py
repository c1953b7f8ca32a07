"""`nvidia-smi -q -x` output captured in a snapshot: what NVML said when the snapshot was taken.

Parsed with expat itself into a few plain nodes rather than with xml.etree: ElementTree's import
(copy, weakref, warnings, ElementPath) is a tenth of a `--status --root` run, and this reader needs
only a child's text by a path of tag names. Expat is the parser ElementTree would use, with the
same limits on entity expansion; no DTD or external entity is ever fetched.
"""

from __future__ import annotations

from xml.parsers import expat

from nvreload.model import NvmlDevice, NvmlReport


class _Node:
    """One element: its tag, attributes, the text before its first child, and its children."""

    __slots__ = ("tag", "attributes", "text", "children")

    def __init__(self, tag: str, attributes: dict[str, str]) -> None:
        self.tag, self.attributes, self.text = tag, attributes, ""
        self.children: list[_Node] = []

    def findall(self, path: str) -> list[_Node]:
        """The elements at `path` ("a/b": tag names, one per level), in document order."""
        found = [self]
        for tag in path.split("/"):
            found = [child for node in found for child in node.children if child.tag == tag]
        return found

    def findtext(self, path: str) -> str | None:
        """The text of the first element at `path` ("" when it has none), None when there is none."""
        found = self.findall(path)
        return found[0].text if found else None

    def get(self, name: str) -> str | None:
        return self.attributes.get(name)


def _parse(text: str) -> _Node | None:
    """The document's root element; None when `text` is not well-formed XML."""
    parser = expat.ParserCreate()
    stack: list[_Node] = []
    roots: list[_Node] = []

    def start(tag: str, attributes: dict[str, str]) -> None:
        node = _Node(tag, attributes)
        (stack[-1].children if stack else roots).append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def data(chunk: str) -> None:
        if stack and not stack[-1].children:
            stack[-1].text += chunk

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, data
    try:
        parser.Parse(text, True)
    except expat.ExpatError:
        return None
    return roots[0] if roots else None


def _flag(value: str | None) -> bool | None:
    if value is None:
        return None
    value = value.strip().lower()
    if value == "enabled":
        return True
    if value == "disabled":
        return False
    return None


def _fabric(value: str | None) -> str | None:
    """A <fabric> field as nvidia-smi prints it; None for "N/A" (no NVSwitch fabric) or nothing."""
    value = (value or "").strip()
    return value if value and value.lower() != "n/a" else None


def _smi_log(text: str | None) -> _Node | None:
    """The <nvidia_smi_log> root of `nvidia-smi -q -x` output; None for anything else."""
    tree = _parse(text) if text else None
    return tree if tree is not None and tree.tag == "nvidia_smi_log" else None


def parse_smi_xml(text: str | None) -> NvmlReport | None:
    tree = _smi_log(text)
    if tree is None:
        return None
    devices = []
    for index, gpu in enumerate(tree.findall("gpu")):
        # isascii: str.isdigit() also accepts '²', which int() refuses
        texts = (p.findtext("pid") or "" for p in gpu.findall("processes/process_info"))
        pids = tuple(int(pid) for pid in texts if pid.isascii() and pid.isdigit())
        devices.append(
            NvmlDevice(
                index=index,
                name=gpu.findtext("product_name"),
                uuid=gpu.findtext("uuid"),
                pci_bus_id=gpu.findtext("pci/pci_bus_id") or gpu.get("id"),
                persistence_mode=_flag(gpu.findtext("persistence_mode")),
                mig_mode=_flag(gpu.findtext("mig_mode/current_mig")),
                compute_pids=pids,
                mig_pending=_flag(gpu.findtext("mig_mode/pending_mig")),
                fabric_state=_fabric(gpu.findtext("fabric/state")),
                fabric_status=_fabric(gpu.findtext("fabric/status")),
            )
        )
    return NvmlReport(
        status="ok",
        source="nvidia-smi-xml",
        driver_version=tree.findtext("driver_version"),
        devices=tuple(devices),
    )


def fabric_ready(text: str | None) -> bool | None:
    """Whether the NVLink fabric is up, from `nvidia-smi -q -x`: every GPU's <fabric><state> is
    "Completed" (the fabric manager has set the GPU up for this driver instance). None when no GPU
    has a fabric state ("N/A": no NVSwitch), False while any is "Not Started"/"In Progress" or the
    output is not nvidia-smi's."""
    tree = _smi_log(text)
    if tree is None:
        return False
    states = [(gpu.findtext("fabric/state") or "").strip().lower() for gpu in tree.findall("gpu")]
    states = [state for state in states if state not in ("", "n/a")]
    if not states:
        return None
    return all(state == "completed" for state in states)
