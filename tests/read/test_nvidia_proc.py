"""/proc/driver/nvidia: the resident module's banner and the per-GPU information files."""

import pytest

from nvreload.read.nvidia_proc import (
    is_normal_bus_id,
    normalize_bus_id,
    parse_gpu_information,
    parse_version_banner,
    read_mig_gpu_instances,
    read_proc_gpus,
    read_resident,
)
from nvreload.rootfs import open_root


def test_the_h100_capture_has_the_open_580_module_resident(h100_root):
    resident = read_resident(open_root(str(h100_root)))
    assert (resident.version, resident.flavor) == ("580.159.04", "open")
    assert resident.banner.startswith("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64")


def test_the_proprietary_banner_is_told_from_the_open_one():
    text = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.90.07  Fri May 31 09:35:42 UTC 2024\nGCC version: ...\n"
    resident = parse_version_banner(text)
    assert (resident.version, resident.flavor) == ("550.90.07", "proprietary")


@pytest.mark.parametrize("text", [None, "", "garbage\n", "NVRM version: something else entirely\n"])
def test_an_absent_or_unreadable_banner_gives_no_version_and_no_flavor(text):
    resident = parse_version_banner(text)
    assert resident.version is None and resident.flavor is None


def test_the_h100_captures_gpu_information_is_read_with_its_uuid_and_minor(h100_root):
    (gpu,) = read_proc_gpus(open_root(str(h100_root)))
    assert gpu.bus_id == "0000:00:06.0"
    assert gpu.model == "NVIDIA H100 80GB HBM3"
    assert gpu.uuid == "GPU-53b5c735-02c3-9e8c-fc59-4b22ea2d1539"
    assert gpu.minor == 0


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("00000000:3B:00.0", "0000:3b:00.0"),  # NVML's form
        ("0000:3b:00", "0000:3b:00.0"),  # XID lines drop the function
        ("3b:00.0", "0000:3b:00.0"),
        ("0001:c1:00.1", "0001:c1:00.1"),
        ("not a bus id", "not a bus id"),
        (" 3B:0.7\n", "0000:3b:00.7"),  # one-digit bus and device are padded
    ],
)
def test_bus_ids_in_every_form_the_driver_prints_become_one(raw, expected):
    assert normalize_bus_id(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        ":3b:00.0",  # a colon with no domain before it
        "3b:00.8",  # PCI has functions 0 to 7
        "3b:00.",  # a dot with no function
        "3b:00.0.1",
        "3b:100.0",  # a device of three digits
        "0000:3g:00.0",  # not hex
        "0:0000:3b:00.0",  # four fields
        "3b",
    ],
)
def test_text_of_another_shape_is_left_as_it_is_not_made_a_bus_id(raw):
    assert normalize_bus_id(raw) == raw


@pytest.mark.parametrize(
    "text, normal",
    [
        ("0000:3b:00.0", True),
        ("00000001:3b:00.7", True),  # a domain of up to 8 digits
        ("000:3b:00.0", False),  # a domain of 3
        ("000000001:3b:00.0", False),  # or 9
        ("0000:3B:00.0", False),  # upper case is not the normal form
        ("0000:3b:00", False),  # nor a missing function
        ("3b:00.0", False),  # nor a missing domain
        ("0000:3b:0.0", False),
        ("0000:3b:00.0\n", False),
    ],
)
def test_only_the_normal_form_is_a_normal_bus_id(text, normal):
    assert is_normal_bus_id(text) is normal


def test_a_device_minor_in_superscript_digits_is_no_minor_not_a_crash():
    # found by tests/fuzz: str.isdigit() accepts '²', int() refuses it
    gpu = parse_gpu_information("0000:3b:00.0", "Device Minor:²")
    assert gpu.minor is None and gpu.bus_id == "0000:3b:00.0"


@pytest.mark.parametrize("location", ["Bus Location:", "Bus Location: \t :b:.", "Bus Location: １:１b:１.１"])
def test_a_damaged_bus_location_leaves_the_bus_id_the_directory_names(location):
    # found by tests/fuzz: '' and ':b:.' became the GPU's pci_bus_id in the status document
    assert parse_gpu_information("0000:3b:00.0", f"Model: \t\t NVIDIA H100\n{location}\n").bus_id == "0000:3b:00.0"


def test_mig_gpu_instances_are_counted_by_the_drivers_capability_directories_per_gpu_minor(snapshot):
    snapshot.gpu("0000:3b:00.0", minor=0)
    snapshot.gpu("0000:5e:00.0", minor=1)
    for instance in ("gi1", "gi2", "gi9"):  # three GPU instances on minor 0, one compute instance in one
        snapshot.write(f"proc/driver/nvidia/capabilities/gpu0/mig/{instance}/access", "DeviceFileMinor: 12\n")
    snapshot.write("proc/driver/nvidia/capabilities/gpu0/mig/gi1/ci0/access", "DeviceFileMinor: 13\n")
    snapshot.write("proc/driver/nvidia/capabilities/mig/config", "DeviceFileMinor: 1\n")  # node-wide, no GPU's
    snapshot.write("proc/driver/nvidia/capabilities/gpu1/mig/ginger", "not an instance\n")
    fs = open_root(str(snapshot.root))
    assert read_mig_gpu_instances(fs, read_proc_gpus(fs)) == {"0000:3b:00.0": 3}


def test_a_capture_without_capability_directories_has_no_mig_instances(h100_root):
    fs = open_root(str(h100_root))
    assert read_mig_gpu_instances(fs, read_proc_gpus(fs)) == {}
