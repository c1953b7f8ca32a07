"""The parsers of node input in nvreload/host/ under hypothesis: `systemctl show` output, modprobe.d
and the kernel command line, and what a snapshot captured for NVML and nv-fabricmanager. For any
text, and for real lines mutated, each returns its normal type, deeply."""

from __future__ import annotations

import json

from fuzzing import FUZZ, NUMBERS, TRICKY, MemoryRoot, conforms, fixture_lines, node_text
from hypothesis import given
from hypothesis import strategies as st

from nvreload.host.kmod import modprobe_options
from nvreload.host.machine import SNAPSHOT_DIR, Machine
from nvreload.host.systemd import parse_systemctl_show
from nvreload.model import NvmlReport, ServiceState

SYSTEMCTL_SHOW = [
    "Id=nvidia-persistenced.service",
    "LoadState=loaded",
    "ActiveState=active",
    "UnitFileState=enabled",
    "",
    "Id=nvidia-fabricmanager.service",
    "LoadState=not-found",
    "ActiveState=inactive",
    "UnitFileState=",
    "",
    "Id=dcgm-exporter.service",
    "LoadState=loaded",
    "ActiveState=failed",
    "UnitFileState=disabled",
]
MODPROBE_D = [
    "# nvidia driver options",
    "options nvidia NVreg_EnableGpuFirmware=0 NVreg_DynamicPowerManagement=0x02",
    "options nvidia-drm modeset=1 fbdev=1",
    "blacklist nouveau",
    "install nvidia-peermem /bin/false",
    "options nvidia_uvm uvm_disable_hmm # trailing comment",
]
CMDLINE = fixture_lines("proc/cmdline") + ["BOOT_IMAGE=/vmlinuz nvidia-drm.modeset=1 nvidia.NVreg_X=1=2 quiet ."]


@FUZZ
@given(node_text(SYSTEMCTL_SHOW))
def test_systemctl_show_parses_to_service_states(text):
    assert conforms(parse_systemctl_show(text), list[ServiceState])


@FUZZ
@given(node_text(MODPROBE_D, max_size=600), node_text(CMDLINE, max_size=600))
def test_modprobe_d_and_the_command_line_parse_to_module_options(conf, cmdline):
    root = MemoryRoot(
        {
            "etc/modprobe.d/nvidia.conf": conf.encode("utf-8", "surrogatepass"),
            "proc/cmdline": cmdline.encode("utf-8", "surrogatepass"),
        }
    )
    assert conforms(modprobe_options(root), dict[str, dict[str, str]])


def _json_values() -> st.SearchStrategy[object]:
    scalar = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.sampled_from(NUMBERS + TRICKY)
        | st.text(max_size=20)
    )
    return st.recursive(
        scalar,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=8,
    )


# what --collect writes when NVML answered (or refused) on the node
NVML_JSON = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["ok", "version_mismatch", "error"]) | _json_values(),
        "error": st.sampled_from(["Driver/library version mismatch", None]) | _json_values(),
    },
).map(json.dumps)


@FUZZ
@given(
    NVML_JSON | st.text(max_size=300) | _json_values().map(json.dumps),
    node_text(["Fabric Manager version is : 550.127.08", "550.127.08"], max_size=200),
    node_text(["gpu-node-17"], max_size=100),
)
def test_a_snapshots_nvml_fabric_manager_and_hostname_captures_parse_to_their_types(nvml, fabric_manager, hostname):
    machine = Machine(
        MemoryRoot(
            {
                f"{SNAPSHOT_DIR}/nvml.json": nvml.encode("utf-8", "surrogatepass"),
                f"{SNAPSHOT_DIR}/nv-fabricmanager-version.txt": fabric_manager.encode("utf-8", "surrogatepass"),
                "etc/hostname": hostname.encode("utf-8", "surrogatepass"),
            }
        )
    )
    assert conforms(machine.nvml(module_live=True, userspace_found=True), NvmlReport)
    assert conforms(machine.fabric_manager_version(), str | None)
    assert conforms(machine.hostname(), str | None)
