"""The findings the driver message catalogue (nvreload/read/driver_messages.py) gives by itself,
and the catalogue as a document: `python -m nvreload.diagnosis.messages --markdown` prints
docs/driver-messages.md (tests/diagnosis/test_messages.py holds the checked-in file to it)."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from nvreload.read.driver_messages import FAMILIES


@dataclass(frozen=True)
class Code:
    """A finding the catalogue itself gives: severity, action, whether it blocks a reload, advice."""

    severity: str
    action: str
    blocks_reload: bool
    advice: str
    # findings of other rules that explain the same lines: with one of them present, the lines go
    # into its evidence and this code is not given
    explained_by: tuple[str, ...] = ()


# Findings drawn from the catalogue (families not `structured`). One finding per code, every line in
# its evidence; the action is the code's (the tests hold every family of a code to it).
CODES: dict[str, Code] = {
    "client_version_mismatch": Code(
        "critical",
        "install_driver",
        False,
        "a program with driver libraries of another version than the loaded module opened it (NVRM: API "
        "mismatch), and the node's own driver agrees with the module: the libraries are the program's own (a "
        "container image, a second install); give it the driver version of the node",
        explained_by=("version_mismatch",),
    ),
    "module_version_mismatch": Code(
        "critical",
        "rebuild_module",
        False,
        "nvidia-modeset.ko of another version than nvidia.ko (nvidia-modeset: Version mismatch), and the "
        "resident driver is the installed one: a module file is stale (a DKMS build that failed); rebuild the "
        "modules of the installed driver (dkms install), then load them",
        explained_by=("version_mismatch",),
    ),
    "gpu_power_cables_missing": Code(
        "critical",
        "service_hardware",
        True,
        "the GPU's auxiliary power cables are not connected: the node needs a technician",
    ),
    "gsp_firmware_missing": Code(
        "critical",
        "install_driver",
        False,
        "the GSP firmware file of the module's version is missing, or of another version "
        "(/lib/firmware/nvidia/<version>): install the module, its firmware and userspace of one driver version",
    ),
    "gsp_firmware_failed": Code(
        "critical",
        "reset_gpu",
        False,
        "the GPU's GSP firmware stopped answering (heartbeat or RPC timeout, unresponsive, too many boot "
        "attempts): the GPU is in a bad state until it is reset",
    ),
    "gpu_vbios_unreadable": Code(
        "critical",
        "reboot",
        True,
        "the driver could not read the GPU's VBIOS (extract or parse failed): power-cycle the node; if it "
        "persists, service the GPU",
    ),
    "gpu_interrupts_unavailable": Code(
        "critical",
        "fix_platform",
        False,
        "the GPU got no usable interrupt (no IRQ, MSI/MSI-X refused, or another driver holds its line): fix the "
        "firmware or hypervisor settings (interrupt assignment, MSI), not the driver",
    ),
    "gpu_pci_setup_failed": Code(
        "critical",
        "fix_platform",
        False,
        "the kernel could not enable the GPU's PCI device, resize its BARs or set it up for DMA: fix the "
        "platform (BIOS resizable BAR / Above 4G decoding, IOMMU, hypervisor MMIO)",
    ),
    "gpu_registers_claimed": Code(
        "critical",
        "reboot",
        True,
        "another driver (a framebuffer or nouveau) holds the GPU's registers: blacklist it, rebuild the "
        "initramfs and reboot",
    ),
    "driver_init_failed": Code(
        "critical",
        "reboot",
        True,
        "the nvidia module failed to set itself up (RM init, device numbers, caches or procfs): the kernel is "
        "short of what the module needs; reboot",
    ),
    "gpu_probe_failed": Code(
        "critical",
        "reload",
        False,
        "the driver's probe gave up on GPUs and said no more about why: a reload retries it; if it fails again "
        "read the lines before it",
    ),
    "gpu_hung": Code(
        "critical",
        "reset_gpu",
        False,
        "the GPU stopped making progress (RM thread timeout, interrupt storm, display engine stuck): reset it",
    ),
    "display_stack_init_failed": Code(
        "warning",
        "reload",
        False,
        "nvidia-drm or nvidia-modeset could not set up a GPU: reload the modules (nvidia_drm with modeset=1 "
        "needs nvidia-modeset of the same version)",
    ),
    "uvm_failed": Code(
        "critical",
        "reload",
        False,
        "nvidia-uvm met an error it cannot recover from (CUDA's unified memory is unusable): reload the modules",
    ),
    "nvswitch_fatal_error": Code(
        "critical",
        "reload",
        False,
        "an NVSwitch reported a fatal error (SXid): the fabric must be reset, switches and GPUs together with "
        "the fabric manager stopped, which nvreload --reload does",
    ),
    "nvswitch_init_failed": Code(
        "critical",
        "reboot",
        True,
        "an NVSwitch could not be set up (its SOE firmware or the driver's registration failed): reboot; if it "
        "persists, service the baseboard",
    ),
    "fabric_manager_version_mismatch": Code(
        "critical",
        "install_driver",
        True,
        "the fabric manager that opened the NVSwitch is of another version than the driver "
        "(nvidia-nvswitch: Version mismatch): install the fabric manager of the driver's exact version",
    ),
    "peermem_error": Code(
        "warning",
        "restart_application",
        False,
        "nvidia-peermem failed a GPUDirect RDMA mapping for an application: restart it",
    ),
}


def markdown() -> str:
    """docs/driver-messages.md: the catalogue as a table, and the families counted by action."""
    out = [
        "# What the NVIDIA modules say, and what nvreload makes of it",
        "",
        "Generated from `nvreload/diagnosis/messages.py` by `python -m nvreload.diagnosis.messages --markdown`",
        "(tests/diagnosis/test_messages.py holds this file to it). Swept from NVIDIA/open-gpu-kernel-modules",
        "595.45.04 (`kernel-open/`, `src/`); the proprietary module prints the same `NVRM:` lines.",
        'A family without a finding does not mean the stack is broken. "structured": the finding needs more',
        "than the line (which GPU, which module, the call trace) and is drawn by `nvreload/read/kernel_log.py`.",
        "",
        "| action | families |",
        "|---|---|",
    ]
    counts: dict[str, int] = {}
    for fam in FAMILIES:
        counts[fam.action] = counts.get(fam.action, 0) + 1
    out += [f"| {action} | {count} |" for action, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    out += [
        "",
        "| family | component | action | finding | meaning | source | sample |",
        "|---|---|---|---|---|---|---|",
    ]
    for fam in FAMILIES:
        finding = f"`{fam.finding}`" + (" (structured)" if fam.structured else "") if fam.finding else "-"
        sample = fam.sample.replace("|", "\\|")
        out.append(
            f"| `{fam.name}` | {fam.component} | {fam.action} | {finding} | {fam.meaning} | `{fam.source}` "
            f"| `{sample}` |"
        )
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.stderr.write("usage: python -m nvreload.diagnosis.messages --markdown\n")
        sys.exit(2)
    sys.stdout.write(markdown())
