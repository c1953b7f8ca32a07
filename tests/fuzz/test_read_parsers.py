"""Every parser in nvreload/read/ under hypothesis: for any text (or bytes), and for real lines
mutated, it returns its normal type, deeply, or raises one of the project's own errors."""

from __future__ import annotations

import contextlib
import resource
import struct
import tracemalloc

import pytest
from fuzzing import FUZZ, NUMBERS, PROJECT_ERRORS, TRICKY, MemoryRoot, conforms, fixture_lines, mutated_line, node_text
from hypothesis import example, given
from hypothesis import strategies as st

from nvreload.errors import ModuleFileError
from nvreload.model import KernelLog, NvmlReport, ProcGpu, ResidentDriver
from nvreload.read.devices import ProcessIdentity, classify_cgroup, nvidia_majors, parse_proc_stat
from nvreload.read.elf_modinfo import parse_modinfo
from nvreload.read.kernel_log import parse_kernel_log
from nvreload.read.kernel_modules import ProcModulesLine, parse_proc_modules, read_kernel, read_modules
from nvreload.read.node import configured_modules
from nvreload.read.nvidia_proc import normalize_bus_id, parse_gpu_information, parse_version_banner
from nvreload.read.on_disk import find_module_file
from nvreload.read.pci import read_pci_gpus
from nvreload.read.smi_xml import parse_smi_xml
from nvreload.read.userspace import read_userspace

# Each parser gets the real capture (tests/fixtures/h100-580-no-unload) and, where that lacks the
# lines that matter most (holders, XIDs, processes), a short document of them in the real format.
PROC_MODULES = fixture_lines("proc/modules")
PROC_MODULES_HELD = [
    "nvidia_drm 126976 2 - Live 0xffffffffc0d8e000 (POE)",
    "nvidia_modeset 1548288 3 nvidia_drm, Live 0xffffffffc0c10000 (POE)",
    "nvidia 62554112 120 nvidia_uvm,nvidia_modeset, Loading 0xffffffffc0400000 (POE)",
    "ib_core 462848 8 nvidia_peermem,mlx5_ib, Unloading 0xffffffffc0300000",
]
VERSION = fixture_lines("proc/driver/nvidia/version")
VERSION_PROPRIETARY = [
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.127.08  Tue Oct  1 01:23:45 UTC 2024",
    "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)",
]
INFORMATION = fixture_lines("proc/driver/nvidia/gpus/0000:00:06.0/information")
INFORMATION_SHORT = [
    "Model: \t\t NVIDIA H100 80GB HBM3",
    "GPU UUID: \t GPU-53b5c735-02c3-9e8c-fc59-4b22ea2d1539",
    "Bus Location: \t 0000:00:06.0",
    "Device Minor: \t 0",
]
DMESG = fixture_lines("nvreload-snapshot/dmesg.txt")
DMESG_EVENTS = [
    "[    5.100000] NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  550.127.08  Release Build",
    "[   77.000000] NVRM: Xid (PCI:0000:b1:00): 119, pid=1, name=x, Timeout waiting for RPC from GSP!",
    "4,1001,6000,-;NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.",
    "[   80.100000] NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus.",
    "[   81.000000] nvidia: disagrees about version of symbol module_layout",
    "[   82.000000] NVRM: API mismatch: the client has the version 550.127.08, but",
]
SMI_XML = fixture_lines("nvreload-snapshot/nvidia-smi-q.xml")
SMI_XML_TEMPLATE = (
    '<?xml version="1.0" ?>\n<nvidia_smi_log>\n<driver_version>{driver}</driver_version>\n<gpu id="{bus}">\n'
    "<product_name>NVIDIA H100 80GB HBM3</product_name>\n<uuid>GPU-53b5c735-02c3-9e8c-fc59-4b22ea2d1539</uuid>\n"
    "<pci><pci_bus_id>{bus}</pci_bus_id></pci>\n<persistence_mode>{persistence}</persistence_mode>\n"
    "<mig_mode><current_mig>{mig}</current_mig></mig_mode>\n"
    "<processes><process_info><pid>{pid}</pid><process_name>python</process_name></process_info></processes>\n"
    "</gpu>\n</nvidia_smi_log>"
)
SMI_XML_SHORT = SMI_XML_TEMPLATE.format(
    driver="550.127.08", bus="00000000:3B:00.0", persistence="Enabled", mig="Disabled", pid="532"
).splitlines()
# the template's fields filled with hostile values: the document stays well-formed more often
SMI_XML_FILLED = st.builds(
    SMI_XML_TEMPLATE.format,
    **{
        field: st.sampled_from(NUMBERS + TRICKY) | st.text(max_size=20)
        for field in ("driver", "bus", "persistence", "mig", "pid")
    },
)
PROC_DEVICES = fixture_lines("proc/devices")
PROC_DEVICES_SHORT = [
    "Character devices:",
    "  1 mem",
    "195 nvidia",
    "195 nvidiactl",
    "238 nvidia-uvm",
    "",
    "Block devices:",
    "  7 loop",
]
PROC_STAT = [
    "4242 (my (odd) proc) Z 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0",
    "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0",
]
CGROUP = [
    "0::/system.slice/docker-" + "a" * 64 + ".scope",
    "0::/system.slice/nvidia-persistenced.service",
    "12:devices:/kubepods/besteffort/pod1234/" + "b" * 64,
    "0::/user.slice/user-1000.slice/session-3.scope",
    "0::/system.slice/containerd.service/kubepods-burstable.slice:cri-containerd:" + "c" * 64,
]


@FUZZ
@given(node_text(PROC_MODULES, PROC_MODULES_HELD))
def test_proc_modules_parses_to_module_lines(text):
    lines = parse_proc_modules(text)
    assert conforms(lines, list[ProcModulesLine])


@FUZZ
@given(node_text(VERSION, VERSION_PROPRIETARY, max_size=300))
def test_a_version_banner_parses_to_a_resident_driver(text):
    assert conforms(parse_version_banner(text), ResidentDriver)


@FUZZ
@given(
    st.sampled_from(["0000:00:06.0", "3b:00.0", "00000000:3B:00.0"]).flatmap(mutated_line) | st.text(max_size=40),
    node_text(INFORMATION, INFORMATION_SHORT, max_size=600),
)
def test_gpu_information_parses_to_a_proc_gpu(bus_dir, text):
    gpu = parse_gpu_information(bus_dir, text)
    assert conforms(gpu, ProcGpu)
    assert conforms(normalize_bus_id(bus_dir), str)


@FUZZ
@given(node_text(DMESG, DMESG_EVENTS, max_size=4000))
def test_the_kernel_log_parses_to_xids_and_load_errors(text):
    assert conforms(parse_kernel_log(text, "snapshot"), KernelLog)


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9))
    + "]><nvidia_smi_log><driver_version>&j;</driver_version></nvidia_smi_log>"
)


@FUZZ
@given(node_text(SMI_XML, SMI_XML_SHORT, max_size=3000) | SMI_XML_FILLED)
@example(BILLION_LAUGHS)  # an entity bomb is refused by expat, not expanded into gigabytes
def test_nvidia_smi_xml_parses_to_a_report_or_nothing(text):
    report = parse_smi_xml(text)
    assert report is None or conforms(report, NvmlReport)


@FUZZ
@given(node_text(PROC_DEVICES, PROC_DEVICES_SHORT))
def test_proc_devices_parses_to_majors(text):
    assert conforms(nvidia_majors(text), frozenset[int])


@FUZZ
@given(st.integers(0, 2**22), node_text(PROC_STAT, max_size=300))
def test_proc_stat_parses_to_an_identity_or_nothing(pid, text):
    ident = parse_proc_stat(pid, text)
    assert ident is None or conforms(ident, ProcessIdentity)


@FUZZ
@given(node_text(CGROUP))
def test_a_cgroup_file_classifies_to_a_container_or_a_unit(text):
    container, unit = classify_cgroup(text)
    assert conforms(container, str | None) and conforms(unit, str | None)


# ELF .modinfo -----------------------------------------------------------------------------------

MODINFO = b"version=550.127.08\0license=NVIDIA\0vermagic=6.1.0-26-amd64 SMP mod_unload \0alias=pci:v000010DE*\0"
SHSTRTAB = b"\0.modinfo\0.shstrtab\0"
# Claimed sizes and offsets far beyond any input: a parser that trusts them allocates gigabytes.
HOSTILE = st.sampled_from([0, 1, 63, 64, 2**16 - 1, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1])


def _fit(value: int, fmt: str) -> int:
    return value % (1 << (8 * struct.calcsize(fmt)))


@st.composite
def hostile_elf(draw: st.DrawFn) -> bytes:
    """A well-formed module (null, .modinfo, .shstrtab sections) with any of its header fields,
    section offsets and sizes replaced by hostile values, then maybe truncated."""
    is64 = draw(st.booleans())
    endian = draw(st.sampled_from("<>"))
    header_size, entsize = (64, 64) if is64 else (52, 40)
    modinfo = draw(st.sampled_from([MODINFO, b"", b"\0" * 512, b"=" * 64])) if draw(st.booleans()) else MODINFO
    strtab_off = header_size
    modinfo_off = strtab_off + len(SHSTRTAB)
    shoff = modinfo_off + len(modinfo)
    # (name, type, offset, size) of each section; the rest of each header is zero
    sections = [[0, 0, 0, 0], [1, 1, modinfo_off, len(modinfo)], [10, 3, strtab_off, len(SHSTRTAB)]]
    fields = {"shoff": shoff, "shentsize": entsize, "shnum": len(sections), "shstrndx": 2}
    any_word = HOSTILE | st.integers(0, 2 ** (64 if is64 else 32) - 1)
    for _ in range(draw(st.integers(0, 4))):
        target = draw(st.sampled_from(["shoff", "shentsize", "shnum", "shstrndx", "name", "offset", "size"]))
        if target in fields:
            fields[target] = draw(any_word if target == "shoff" else HOSTILE | st.integers(0, 2**16 - 1))
        else:
            index = draw(st.integers(0, 2))
            sections[index][("name", "type", "offset", "size").index(target)] = draw(any_word)
    ident = b"\x7fELF" + bytes([2 if is64 else 1, 1 if endian == "<" else 2, 1]) + bytes(9)
    if is64:
        header = ident + struct.pack(
            endian + "HHIQQQIHHHHHH",
            1,
            62,
            1,
            0,
            0,
            _fit(fields["shoff"], "Q"),
            0,
            64,
            0,
            0,
            *(_fit(fields[k], "H") for k in ("shentsize", "shnum", "shstrndx")),
        )
        table = b"".join(
            struct.pack(endian + "IIQQQQIIQQ", _fit(n, "I"), t, 0, 0, _fit(o, "Q"), _fit(s, "Q"), 0, 0, 1, 0)
            for n, t, o, s in sections
        )
    else:
        header = ident + struct.pack(
            endian + "HHIIIIIHHHHHH",
            1,
            3,
            1,
            0,
            0,
            _fit(fields["shoff"], "I"),
            0,
            52,
            0,
            0,
            *(_fit(fields[k], "H") for k in ("shentsize", "shnum", "shstrndx")),
        )
        table = b"".join(
            struct.pack(endian + "IIIIIIIIII", _fit(n, "I"), t, 0, 0, _fit(o, "I"), _fit(s, "I"), 0, 0, 1, 0)
            for n, t, o, s in sections
        )
    data = header + SHSTRTAB + modinfo + table
    if draw(st.integers(0, 3)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data


@contextlib.contextmanager
def address_space_capped(headroom: int = 1 << 30):
    """The process may map at most `headroom` more bytes while parsing: a parser that believed a
    claimed size fails with MemoryError here instead of swapping the machine. Only the soft limit
    changes, and it is put back."""
    with open("/proc/self/status") as status:
        vm_size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm_size + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def parse_measured(elf: bytes) -> tuple[object, int]:
    """(what parse_modinfo returned or raised, the peak bytes it allocated)."""
    tracemalloc.start()
    try:
        with address_space_capped():
            try:
                outcome: object = parse_modinfo(elf)
            except PROJECT_ERRORS as exc:
                outcome = exc
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _modinfo_or_module_error(outcome: object) -> bool:
    return isinstance(outcome, ModuleFileError) or conforms(outcome, dict[str, list[str]])


@FUZZ
@given(hostile_elf())
def test_an_elf_with_hostile_offsets_and_sizes_costs_memory_in_proportion_to_its_bytes(elf):
    outcome, peak = parse_measured(elf)
    assert _modinfo_or_module_error(outcome)
    # a section header becomes a tuple of ten ints (about 11 bytes per byte of table): 32x the input
    # is room for that, and nowhere near what a trusted sh_size or sh_num of 2**32 would cost
    assert peak <= 32 * len(elf) + (64 << 10), f"{peak} bytes allocated for a {len(elf)}-byte module"


@FUZZ
@given(st.binary(max_size=4096) | st.binary(max_size=60).map(lambda tail: b"\x7fELF" + tail + bytes(64)))
def test_arbitrary_bytes_are_a_modinfo_or_a_module_error(data):
    outcome, _ = parse_measured(data)
    assert _modinfo_or_module_error(outcome)


# readers over a root ----------------------------------------------------------------------------


def _text_files(draw: st.DrawFn, seeds: dict[str, list[str]]) -> dict[str, bytes]:
    return {
        path: draw(node_text(lines, max_size=300)).encode("utf-8", "surrogatepass") for path, lines in seeds.items()
    }


@FUZZ
@given(st.data())
def test_pci_devices_read_to_gpus(data):
    base = "sys/bus/pci/devices/0000:00:06.0"
    files: dict = _text_files(
        data.draw,
        {
            f"{base}/vendor": ["0x10de"],
            f"{base}/class": ["0x030200"],
            f"{base}/device": ["0x2330"],
            f"{base}/driver": ["../../../bus/pci/drivers/nvidia"],
        },
    )
    gpus = read_pci_gpus(MemoryRoot(files))
    assert all(conforms(gpu) for gpu in gpus)


@FUZZ
@given(st.data())
def test_library_directories_read_to_a_userspace_version(data):
    files: dict = _text_files(
        data.draw,
        {
            "etc/ld.so.conf": ["include /etc/ld.so.conf.d/*.conf", "/usr/local/nvidia/lib64", "# comment"],
            "etc/ld.so.conf.d/nvidia.conf": ["/usr/local/nvidia/lib64", "/opt/nvidia/lib"],
            "usr/local/nvidia/lib64/libnvidia-ml.so.1": ["libnvidia-ml.so.580.159.04", "../lib/libnvidia-ml.so.550.1"],
        },
    )
    name = data.draw(st.sampled_from(["libnvidia-ml.so.580.159.04", "libnvidia-ml.so.1.2"]).flatmap(mutated_line))
    if name and "/" not in name and "\x00" not in name:
        files[f"usr/local/nvidia/lib64/{name}"] = b"\x7fELF"
    assert conforms(read_userspace(MemoryRoot(files)))


@FUZZ
@given(st.data())
def test_sys_module_and_proc_modules_read_to_kernel_modules(data):
    files: dict = _text_files(
        data.draw,
        {
            "proc/modules": PROC_MODULES_HELD,
            "proc/sys/kernel/osrelease": ["6.1.0-26-amd64", "../../etc"],
            "proc/sys/kernel/modules_disabled": ["0", "1"],
            "sys/module/nvidia/refcnt": ["120", "-", "0"],
            "sys/module/nvidia/initstate": ["live", "coming", "going"],
            "sys/module/nvidia/version": ["550.127.08"],
            "sys/module/nvidia/parameters/NVreg_OpenRmEnableUnsupportedGpus": ["1", "Y"],
            "sys/module/nvidia_uvm/initstate": ["live"],  # in /sys/module, not in /proc/modules: its refcnt is read
            "sys/module/nvidia_uvm/refcnt": ["0", "-1", "4"],
        },
    )
    text = files["proc/modules"].decode("utf-8", "replace")
    lines = parse_proc_modules(text)
    modules = read_modules(MemoryRoot(files), lines)
    assert all(conforms(m) for m in modules)
    assert conforms(read_kernel(MemoryRoot(files), lines, True))


@FUZZ
@given(st.data())
def test_boot_module_lists_read_to_module_names(data):
    files: dict = _text_files(
        data.draw,
        {
            "etc/modules": ["# /etc/modules", "nvidia-peermem", "loop max_loop=8"],
            "etc/modules-load.d/nvidia.conf": ["nvidia_uvm", "  # comment", "nvidia-drm"],
        },
    )
    assert conforms(configured_modules(MemoryRoot(files)), frozenset[str])


@FUZZ
@given(st.data())
def test_modules_dep_reads_to_a_module_path_or_nothing(data):
    release = "6.1.0-26-amd64"
    files: dict = _text_files(
        data.draw,
        {
            f"lib/modules/{release}/modules.dep": [
                "updates/dkms/nvidia.ko.zst:",
                "updates/dkms/nvidia-uvm.ko.zst: updates/dkms/nvidia.ko.zst",
                "/lib/modules/6.1.0-26-amd64/extra/nvidia.ko.xz:",
                "kernel/drivers/net/ethernet/mellanox/mlx5/core/mlx5_core.ko: kernel/net/tls/tls.ko",
            ],
        },
    )
    files[f"lib/modules/{release}/updates/dkms/nvidia.ko.zst"] = b"\x28\xb5\x2f\xfd"
    files[f"lib/modules/{release}/kernel/drivers/video/nvidia.ko"] = b"\x7fELF"
    assert conforms(find_module_file(MemoryRoot(files), release), str | None)


@pytest.mark.parametrize("text", ["", "\n", "\x85", "²"])
def test_the_memory_root_of_these_tests_reads_like_a_snapshot(text):
    """The fuzz tests' in-memory root resolves, lists and reads as a directory snapshot does."""
    root = MemoryRoot({"proc/modules": text.encode(), "lib/libnvidia-ml.so.1": b"x"})
    assert root.read_text("proc/modules") == text
    assert root.listdir("") == ["lib", "proc"] and root.is_dir("lib") and not root.exists("sys")
