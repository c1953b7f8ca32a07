"""NVIDIA GPUs on the PCI bus, and the functions that are not GPUs."""

from nvreload.read.pci import read_pci_gpus
from nvreload.rootfs import open_root


def test_the_h100_capture_has_one_3d_controller_bound_to_nvidia(h100_root):
    (gpu,) = read_pci_gpus(open_root(str(h100_root)))
    assert (gpu.bus_id, gpu.device, gpu.pci_class, gpu.driver) == ("0000:00:06.0", "0x2330", "0x030200", "nvidia")


def test_audio_functions_nvswitches_and_other_vendors_are_not_gpus(snapshot):
    snapshot.non_gpu_pci("0000:3b:00.1", vendor="0x10de", pci_class="0x040300")  # the GPU's HDMI audio
    snapshot.non_gpu_pci("0000:05:00.0", vendor="0x10de", pci_class="0x068000")  # an NVSwitch
    snapshot.non_gpu_pci("0000:00:1f.0")  # an Intel NIC
    assert [g.bus_id for g in read_pci_gpus(open_root(str(snapshot.root)))] == ["0000:3b:00.0"]


def test_a_gpu_with_no_driver_bound_says_so(snapshot):
    snapshot.gpu("0000:86:00.0", driver=None, minor=1)
    by_bus = {g.bus_id: g.driver for g in read_pci_gpus(open_root(str(snapshot.root)))}
    assert by_bus == {"0000:3b:00.0": "nvidia", "0000:86:00.0": None}
