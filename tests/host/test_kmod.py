"""The module options modprobe would apply, read from modprobe.d and the kernel command line."""

from snapshot_builder import Snapshot

from nvreload.host.kmod import modprobe_options
from nvreload.rootfs import open_root


def test_modprobe_d_and_the_kernel_command_line_give_the_configured_parameters(tmp_path):
    snap = Snapshot(tmp_path)
    snap.write(
        "etc/modprobe.d/nvidia.conf",
        "# comment\noptions nvidia NVreg_EnableGpuFirmware=0 NVreg_DynamicPowerManagement=0x02\n",
    )
    snap.write("proc/cmdline", "BOOT_IMAGE=/vmlinuz nvidia-drm.modeset=1 quiet\n")
    options = modprobe_options(open_root(str(tmp_path)))
    assert options["nvidia"] == {"NVreg_EnableGpuFirmware": "0", "NVreg_DynamicPowerManagement": "0x02"}
    assert options["nvidia_drm"] == {"modeset": "1"}
