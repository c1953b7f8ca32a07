"""A whole snapshot under hypothesis: any of the files the parsers read, replaced by a mutation of
itself or by arbitrary bytes, still gives a status document that matches its schema and renders,
so `--status --root` on a damaged capture says what it found instead of exit 70."""

from __future__ import annotations

import contextlib
import io
import json
from importlib import resources

import jsonschema
import pytest
from fuzzing import FIXTURE, FUZZ, MemoryRoot, load_tree, node_text
from hypothesis import given
from hypothesis import strategies as st
from snapshot_builder import healthy_node

from nvreload.host.machine import SNAPSHOT_DIR, Machine
from nvreload.read.node import read_node
from nvreload.render.human import render_status
from nvreload.status import status_document

SCHEMA = json.loads(resources.files("nvreload").joinpath("schema/status.schema.json").read_text())
RELEASE = "6.1.0-26-amd64"  # the healthy node's
# Every file a parser of the read model takes in, in the real capture or the built healthy node.
INPUTS = (
    "proc/modules",
    "proc/devices",
    "proc/cmdline",
    "proc/version",
    "proc/sys/kernel/osrelease",
    "proc/sys/kernel/modules_disabled",
    "proc/driver/nvidia/version",
    "proc/driver/nvidia/gpus/0000:00:06.0/information",
    "proc/driver/nvidia/gpus/0000:3b:00.0/information",
    "sys/module/nvidia/initstate",
    "sys/module/nvidia/version",
    "sys/module/nvidia/refcnt",
    "sys/module/nvidia_uvm/refcnt",
    "sys/module/nvidia_drm/parameters/modeset",
    "sys/bus/pci/devices/0000:00:06.0/vendor",
    "sys/bus/pci/devices/0000:00:06.0/class",
    "sys/bus/pci/devices/0000:3b:00.0/class",
    "sys/bus/pci/devices/0000:3b:00.0/device",
    "sys/bus/pci/devices/0000:3b:00.0/driver",
    f"{SNAPSHOT_DIR}/dmesg.txt",
    f"{SNAPSHOT_DIR}/nvidia-smi-q.xml",
    f"{SNAPSHOT_DIR}/nvml.json",
    f"{SNAPSHOT_DIR}/nv-fabricmanager-version.txt",
    "etc/hostname",
    "etc/ld.so.conf",
    "etc/modules",
    f"lib/modules/{RELEASE}/modules.dep",
    "usr/local/nvidia/lib64/libnvidia-ml.so.1",
)
NVML_JSON = '{"status": "version_mismatch", "error": "Driver/library version mismatch"}'


class Snapshots(dict):
    """Snapshots by name; its repr keeps hypothesis's report of a failing example readable."""

    def __repr__(self) -> str:
        return f"<snapshots {sorted(self)}>"


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory) -> Snapshots:
    """The real H100 capture and a built healthy node (modules.dep, DKMS, an ELF module), in memory."""
    built = healthy_node(tmp_path_factory.mktemp("healthy"))
    return Snapshots({"h100 capture": load_tree(FIXTURE), "healthy node": load_tree(built.root)})


def _lines(files: dict, path: str) -> list[str]:
    data = files.get(path)
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else NVML_JSON
    # the largest captures are cut to their first lines: the mutations must land near what matters
    return text.splitlines()[:400] or [""]


@FUZZ
@given(st.data())
def test_a_snapshot_with_any_input_damaged_still_gives_a_valid_status_document(snapshots, data):
    files = dict(snapshots[data.draw(st.sampled_from(sorted(snapshots)))])
    for path in data.draw(st.lists(st.sampled_from(INPUTS), min_size=1, max_size=3, unique=True)):
        content = data.draw(
            node_text(_lines(files, path), max_size=1000).map(lambda t: t.encode("utf-8", "surrogatepass"))
            | st.binary(max_size=300)
        )
        files[path] = content
    document = status_document(read_node(Machine(MemoryRoot(files))))
    jsonschema.validate(document, SCHEMA)
    with contextlib.redirect_stderr(io.StringIO()):  # rich writes to sys.stderr
        render_status(document, verbose=True)
