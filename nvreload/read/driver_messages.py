"""The NVIDIA kernel modules' own messages, as families: what each says is wrong, which part of the
stack it blames, and what fixes it.

Swept from NVIDIA/open-gpu-kernel-modules (595.45.04; `kernel-open/` and `src/`: nv_printf and
NV_DEV_PRINTF at NV_DBG_ERRORS, NV_PRINTF at LEVEL_ERROR, nvkms_log, NV_DRM_LOG_ERR, UVM's
always-printed errors, NVSWITCH_PRINT and peer_err), and the kernel's own load-time and fault
messages about them. The proprietary module prints the same `NVRM:` lines (its RM is the same
source); the few that only it prints say so in `source`. Each family's `sample` is a line of that
message as the kernel log shows it (a fact, not code): the tests feed it to the diagnosis.

A family's `finding` is the code the diagnosis gives it; None for a message that does not mean the
stack is broken (the load banner, a taint note, a fallback the driver takes by itself). Families
marked `structured` are read by kernel_log.py's own rules (XIDs, the probe's
per-GPU lines, the kernel's module refusals, kernel faults), whose findings need more than the line
(which GPU, which module, what else the driver said); the others become findings through
nvreload/diagnosis/messages.py's CODES, one per code.

Nothing here is compiled at import: a line that passes the cheap prefix test (`might_match`) is
held to each family's literal keys, and only a family whose key it holds is compiled and searched,
so a kernel log without NVIDIA lines costs a substring test per line, and one with a few NVRM lines
compiles a few patterns. `python -m nvreload.diagnosis.messages --markdown`
prints docs/driver-messages.md.
"""

from __future__ import annotations

import re

COMPONENTS = ("module_build", "firmware", "gpu", "platform", "fabric", "application", "driver", "none")


class Family:
    """One message family: its pattern (searched in the line, no named groups), what it means, the
    part of the stack it blames, what fixes it, and where the driver prints it. A plain class, not a
    dataclass: --status imports this module on every node with an NVRM line, and the dataclass
    decorator alone costs about a millisecond there."""

    __slots__ = (
        "name",
        "pattern",
        "meaning",
        "component",
        "action",
        "finding",
        "source",
        "sample",
        "structured",
        "requires",
        "keys",
    )

    def __init__(
        self,
        name: str,
        pattern: str,
        meaning: str,
        component: str,
        action: str,
        finding: str | None,
        source: str,
        sample: str,
        structured: bool = False,  # its finding comes from kernel_log.py's own reading, not from here
        requires: str | None = None,  # a family whose line must come with it for the finding (the test's context)
        # the longest literal run of each top-level alternative of the pattern (derive_keys; a test
        # holds them to it): a line holds one of them, or the pattern cannot match it
        keys: tuple[str, ...] = (),
    ) -> None:
        self.name, self.pattern, self.meaning, self.component = name, pattern, meaning, component
        self.action, self.finding, self.source, self.sample = action, finding, source, sample
        self.structured, self.requires, self.keys = structured, requires, keys

    def __repr__(self) -> str:
        return f"Family({self.name!r})"


_MODULE_LOAD = "kernel: kernel/module/main.c (and modprobe's error text)"
_NV = "kernel-open/nvidia/nv.c"
_PCI = "kernel-open/nvidia/nv-pci.c"
_OSINIT = "src/nvidia/arch/nvalloc/unix/src/osinit.c"
_OSAPI = "src/nvidia/arch/nvalloc/unix/src/osapi.c"
_GSP = "src/nvidia/src/kernel/gpu/gsp/kernel_gsp.c"
_FAULT = "kernel: the oops, BUG, WARN, lockup and hung-task reports (call trace through an NVIDIA module)"
_BUS = "0000:3b:00.0"

FAMILIES: tuple[Family, ...] = (
    # ---- the load banners and notes: nothing is wrong
    Family(
        "driver_loading",
        r"NVRM: loading NVIDIA",
        "the nvidia module loaded (the banner names its version and flavor); lines after it belong to this instance",
        "none",
        "none",
        None,
        _NV,
        "NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  570.158.01  Release Build  "
        "(dvs-builder@U22-I3-B10-02-5)  Mon Jun  2 13:13:04 UTC 2025",
        keys=("NVRM: loading NVIDIA",),
    ),
    Family(
        "uvm_loaded",
        r"nvidia-uvm: Loaded the UVM driver",
        "nvidia-uvm loaded",
        "none",
        "none",
        None,
        "kernel-open/nvidia-uvm/uvm.c (older branches; 595 no longer prints it)",
        "nvidia-uvm: Loaded the UVM driver, major device number 510.",
        keys=("nvidia-uvm: Loaded the UVM driver",),
    ),
    Family(
        "modeset_loading",
        r"nvidia-modeset: Loading NVIDIA (?:UNIX Open )?Kernel Mode Setting Driver",
        "nvidia-modeset loaded",
        "none",
        "none",
        None,
        "kernel-open/nvidia-modeset/nvidia-modeset-linux.c",
        "nvidia-modeset: Loading NVIDIA UNIX Open Kernel Mode Setting Driver for x86_64  570.158.01  Release Build",
        keys=("nvidia-modeset: Loading NVIDIA ",),
    ),
    Family(
        "drm_loading",
        r"\[nvidia-drm\] \[GPU ID 0x[0-9a-fA-F]+\] Loading driver",
        "nvidia-drm took a GPU",
        "none",
        "none",
        None,
        "kernel-open/nvidia-drm/nvidia-drm-drv.c",
        "[drm] [nvidia-drm] [GPU ID 0x00003b00] Loading driver",
        keys=("[nvidia-drm] [GPU ID 0x",),
    ),
    Family(
        "nvlink_core_init",
        r"nvidia-nvlink: Nvlink Core is being initialized",
        "the NVLink core library of nvidia.ko started",
        "none",
        "none",
        None,
        "kernel-open/nvidia/nvlink_linux.c",
        "nvidia-nvlink: Nvlink Core is being initialized, major device number 236",
        keys=("nvidia-nvlink: Nvlink Core is being initialized",),
    ),
    Family(
        "module_taints_kernel",
        r"nvidia\w*: module license '[^']*' taints kernel|nvidia\w*: loading out-of-tree module taints kernel",
        "the kernel notes that an out-of-tree or non-GPL module loaded (taint P/O)",
        "none",
        "none",
        None,
        _MODULE_LOAD,
        "nvidia: loading out-of-tree module taints kernel.",
        keys=(": module license '", ": loading out-of-tree module taints kernel"),
    ),
    Family(
        "module_unsigned_tainted",
        r"nvidia\w*: module verification failed: signature and/or required key missing",
        "an unsigned module loaded on a kernel that does not enforce signatures (taint E): not an error",
        "none",
        "none",
        None,
        _MODULE_LOAD,
        "nvidia: module verification failed: signature and/or required key missing - tainting kernel",
        keys=(": module verification failed: signature and/or required key missing",),
    ),
    Family(
        "persistence_mode_deprecated",
        r"NVRM: Persistence mode is deprecated",
        "legacy persistence mode was asked for; nvidia-persistenced replaces it",
        "none",
        "none",
        None,
        _NV,
        "NVRM: Persistence mode is deprecated and will be removed in a future release. Please use "
        "nvidia-persistenced instead.",
        keys=("NVRM: Persistence mode is deprecated",),
    ),
    Family(
        "msi_fallback",
        r"NVRM: .*Failed to enable MSI; falling back",
        "MSI was refused; the driver uses legacy interrupts by itself",
        "platform",
        "none",
        None,
        "kernel-open/nvidia/nv-msi.c",
        f"NVRM: GPU {_BUS}: Failed to enable MSI; falling back to PCIe virtual-wire interrupts.",
        keys=("Failed to enable MSI; falling back",),
    ),
    Family(
        "vf_probe_ignored",
        r"NVRM: (?:Ignoring|Aborting) probe for VF",
        "an SR-IOV virtual function the driver leaves to vGPU or passthrough",
        "none",
        "none",
        None,
        _PCI,
        "NVRM: Ignoring probe for VF 0000:3b:00.4 since IOMMU is not present on the system.",
        keys=(" probe for VF",),
    ),
    Family(
        "excluded_gpu_open",
        r"NVRM: open\(\) not permitted for excluded",
        "a program opened a GPU excluded on purpose (NVreg_ExcludedGpus)",
        "application",
        "none",
        None,
        _NV,
        f"NVRM: open() not permitted for excluded {_BUS}",
        keys=("NVRM: open() not permitted for excluded",),
    ),
    Family(
        "rm_assertion",
        r"NVRM: nvAssert(?:Ok)?Failed",
        "an internal consistency check of RM failed; a symptom the lines around it explain, not a state",
        "driver",
        "none",
        None,
        "src/nvidia/src/libraries/utils/nvassert.c",
        "NVRM: nvAssertOkFailedNoLog: Assertion failed: Call timed out [NV_ERR_TIMEOUT] (0x00000065) returned "
        "from pRmApi->Control(...) @ kern_fsp.c:1204",
        keys=("NVRM: nvAssert",),
    ),
    Family(
        "nvswitch_sxid_nonfatal",
        r"nvidia-nvswitch\d*: SXid \(PCI:[^)]*\): \d+, Non-fatal",
        "an NVSwitch corrected or contained an error by itself (non-fatal SXid)",
        "fabric",
        "none",
        None,
        "src/common/nvswitch/kernel/inc/common_nvswitch.h",
        "nvidia-nvswitch0: SXid (PCI:0000:05:00.0): 20034, Non-fatal, Link 31 LTSSM Fault Up",
        keys=("nvidia-nvswitch",),
    ),
    # ---- XIDs and the probe's own per-GPU lines: read by kernel_log.py, findings in findings.py
    Family(
        "xid",
        r"NVRM: Xid \(",
        "an error the GPU or driver reported for a GPU; the action is NVIDIA's Xid catalog's (xid_catalog.py)",
        "gpu",
        "reset_gpu",
        "xid_reset_required",
        "src/nvidia/src/kernel/gpu/rc/kernel_rc.c",
        "NVRM: Xid (PCI:0000:3b:00): 119, pid=2311, name=python3, Timeout after 6s of waiting for RPC response "
        "from GPU0 GSP! Expected function 76 (GSP_RM_CONTROL) (0x20800a4c 0x4).",
        structured=True,
        keys=("NVRM: Xid (",),
    ),
    Family(
        "fallen_off_bus",
        r"NVRM: GPU [0-9a-fA-F:.]+: GPU has fallen off the bus",
        "the GPU stopped answering on PCIe while the driver ran",
        "gpu",
        "reboot",
        "gpu_fallen_off_bus",
        _OSINIT,
        f"NVRM: GPU {_BUS}: GPU has fallen off the bus.",
        structured=True,
        keys=(": GPU has fallen off the bus",),
    ),
    Family(
        "fallen_off_bus_at_probe",
        r"NVRM: The NVIDIA GPU \S+ .*fallen off the bus",
        "the GPU did not answer when the driver probed it",
        "gpu",
        "reboot",
        "gpu_fallen_off_bus",
        _OSAPI,
        f"NVRM: The NVIDIA GPU {_BUS} (PCI ID: 10de:26b5) installed in this system has fallen off the bus and is "
        "not responding to commands.",
        structured=True,
        keys=("NVRM: The NVIDIA GPU ",),
    ),
    Family(
        "bar_invalid",
        r"NVRM: This PCI I/O region assigned to your NVIDIA device is invalid",
        "the firmware or hypervisor left the GPU a BAR of no usable size",
        "platform",
        "fix_platform",
        "gpu_bar_unassigned",
        _PCI,
        f"NVRM: This PCI I/O region assigned to your NVIDIA device is invalid: BAR1 is 0M @ 0x0 (PCI:{_BUS})",
        structured=True,
        keys=("NVRM: This PCI I/O region assigned to your NVIDIA device is invalid",),
    ),
    Family(
        "gpu_not_supported",
        r"NVRM: The NVIDIA (?:v)?GPU \S+ .*is not supported by",
        "this driver branch (or the open module) does not support the GPU",
        "module_build",
        "install_driver",
        "gpu_unsupported_by_driver",
        _OSAPI,
        f"NVRM: The NVIDIA GPU {_BUS} (PCI ID: 10de:1e04) installed in this system is not supported by open "
        "nvidia.ko because it does not include the required GPU System Processor (GSP).",
        structured=True,
        keys=("is not supported by",),
    ),
    Family(
        "gpu_legacy_branch",
        r"NVRM: The NVIDIA .*supported through the NVIDIA [\d.x]+ Legacy drivers",
        "the GPU needs an older (legacy) driver branch; this one ignores it (the line names the GPU by model)",
        "module_build",
        "install_driver",
        "gpu_unsupported_by_driver",
        "proprietary module only (its RM's legacy-GPU check; not in the open source tree)",
        f"NVRM: The NVIDIA GPU {_BUS} (PCI ID: 10de:1180) installed in this system is supported through the "
        "NVIDIA 470.xx Legacy drivers. Please visit http://www.nvidia.com/object/unix.html for more information. "
        "The 550.54.14 NVIDIA driver will ignore this GPU.  Continuing probe...",
        structured=True,
        keys=("supported through the NVIDIA ",),
    ),
    Family(
        "gpu_needs_open_modules",
        r"NVRM: The NVIDIA GPU \S+ .*requires use of the NVIDIA open kernel modules",
        "the proprietary module cannot drive this GPU (Blackwell and newer): it needs the open modules",
        "module_build",
        "install_driver",
        "gpu_unsupported_by_driver",
        "proprietary module only (its probe's GPU check; the open module drives these GPUs)",
        f"NVRM: The NVIDIA GPU {_BUS} (PCI ID: 10de:2b85) installed in this system requires use of the NVIDIA "
        "open kernel modules.",
        structured=True,
        keys=("requires use of the NVIDIA open kernel modules",),
    ),
    Family(
        "gpu_legacy_ignored",
        r"NVRM: ignoring the legacy GPU",
        "the open module ignores a GPU it has no support for",
        "module_build",
        "install_driver",
        "gpu_unsupported_by_driver",
        _PCI,
        f"NVRM: ignoring the legacy GPU {_BUS}",
        structured=True,
        keys=("NVRM: ignoring the legacy GPU",),
    ),
    Family(
        "rm_init_adapter_failed",
        r"NVRM: GPU \S+: RmInitAdapter failed|NVRM: GPU \S+: rm_init_adapter failed",
        "the driver could not initialise the GPU; the line before it often says why",
        "gpu",
        "reload",
        "gpu_init_failed",
        _OSINIT,
        f"NVRM: GPU {_BUS}: RmInitAdapter failed! (0x62:0x65:1792)",
        structured=True,
        keys=(": RmInitAdapter failed", ": rm_init_adapter failed"),
    ),
    Family(
        "gfw_boot_timeout",
        r"NVRM: .*failed to wait for GFW[_ ]boot",
        "the GPU's boot firmware (GFW, from the VBIOS) never finished",
        "firmware",
        "reboot",
        "gpu_firmware_boot_incomplete",
        "src/nvidia/src/kernel/gpu/arch/turing/kern_gpu_tu102.c",
        "NVRM: kgspWaitForGfwBootOk_TU102: failed to wait for GFW boot completion (0x0)",
        structured=True,
        requires="rm_init_adapter_failed",
        keys=("failed to wait for GFW",),
    ),
    Family(
        "gsp_wpr2_up",
        r"NVRM: .*unexpected WPR2 already up",
        "the GPU still holds an earlier driver instance's protected memory region",
        "firmware",
        "reset_gpu",
        "gpu_gsp_boot_failed",
        _GSP,
        "NVRM: _kgspBootGspRm: unexpected WPR2 already up, cannot proceed with booting GSP",
        structured=True,
        requires="rm_init_adapter_failed",
        keys=("unexpected WPR2 already up",),
    ),
    Family(
        "gsp_init_failed",
        r"NVRM:? .*RmInitAdapter: Cannot initialize GSP firmware RM",
        "the GSP firmware did not start, for no cause the driver names",
        "firmware",
        "install_driver",
        "gpu_gsp_init_failed",
        _OSINIT,
        "NVRM: RmInitAdapter: Cannot initialize GSP firmware RM",
        structured=True,
        requires="rm_init_adapter_failed",
        keys=("RmInitAdapter: Cannot initialize GSP firmware RM",),
    ),
    Family(
        "probe_not_called",
        r"NVRM: The NVIDIA probe routine was not called for",
        "another driver (nouveau, a framebuffer, vfio-pci) owns the GPUs",
        "platform",
        "reboot",
        "gpu_bound_to_other_driver",
        _NV,
        "NVRM: The NVIDIA probe routine was not called for 1 device(s).",
        structured=True,
        keys=("NVRM: The NVIDIA probe routine was not called for",),
    ),
    # ---- the kernel refusing a module: read by kernel_log.py (module_failures, load_errors)
    Family(
        "signature_rejected",
        r"Loading of (?:unsigned module|module with unavailable key) is rejected"
        r"|Key was rejected by service|unsigned module loading is restricted",
        "Secure Boot or lockdown refused an unsigned or untrusted module",
        "module_build",
        "sign_module",
        "module_signature_rejected",
        _MODULE_LOAD,
        "Loading of unsigned module is rejected",
        structured=True,
        keys=(" is rejected", "Key was rejected by service", "unsigned module loading is restricted"),
    ),
    Family(
        "symbol_version",
        r"nvidia(?!_peermem)\w*: disagrees about version of symbol",
        "the module was built against another kernel (or another ib_core) than the one running",
        "module_build",
        "rebuild_module",
        "module_load_failed",
        _MODULE_LOAD,
        "nvidia: disagrees about version of symbol module_layout",
        structured=True,
        keys=(": disagrees about version of symbol",),
    ),
    Family(
        "unknown_symbol",
        r"nvidia(?!_peermem)\w*: Unknown symbol",
        "the module needs a symbol the running kernel does not export",
        "module_build",
        "rebuild_module",
        "module_load_failed",
        _MODULE_LOAD,
        "nvidia: Unknown symbol drm_gem_prime_fd_to_handle (err -2)",
        structured=True,
        keys=(": Unknown symbol",),
    ),
    Family(
        "version_magic",
        r"nvidia\w*: version magic",
        "the module was built for another kernel release",
        "module_build",
        "rebuild_module",
        "module_load_failed",
        _MODULE_LOAD,
        "nvidia: version magic '6.5.0-1-generic SMP preempt mod_unload modversions ' should be "
        "'6.8.0-45-generic SMP preempt mod_unload modversions '",
        structured=True,
        keys=(": version magic",),
    ),
    Family(
        "invalid_module_format",
        r"'nvidia\w*': Invalid module format|'nvidia\w*': Exec format error",
        "modprobe could not load the module file at all",
        "module_build",
        "rebuild_module",
        "module_load_failed",
        "modprobe (kmod): the kernel's ENOEXEC",
        "modprobe: ERROR: could not insert 'nvidia': Exec format error",
        structured=True,
        keys=("': Invalid module format", "': Exec format error"),
    ),
    Family(
        "peermem_symbol_version",
        r"nvidia_peermem: (?:disagrees about version of symbol|Unknown symbol) ib_",
        "nvidia-peermem was built against another ib_core (MOFED) than the one loaded",
        "module_build",
        "rebuild_module",
        "dependent_module_load_failed",
        _MODULE_LOAD,
        "nvidia_peermem: disagrees about version of symbol ib_register_peer_memory_client",
        structured=True,
        keys=("nvidia_peermem: ",),
    ),
    # ---- kernel faults through an NVIDIA module: read by kernel_log.py (kernel_faults)
    Family(
        "kernel_bug",
        r"BUG: (?:unable to handle|kernel NULL pointer dereference|scheduling while atomic|sleeping function)",
        "the kernel hit a bug; if its call trace runs through an NVIDIA module, the module's state is unknown",
        "driver",
        "reboot",
        "kernel_fault_in_nvidia_module",
        _FAULT,
        "BUG: kernel NULL pointer dereference, address: 0000000000000008",
        structured=True,
        keys=("BUG: ",),
    ),
    Family(
        "kernel_oops",
        r"Oops: ",
        "a kernel oops (the faulting task was killed; locks it held stay held)",
        "driver",
        "reboot",
        "kernel_fault_in_nvidia_module",
        _FAULT,
        "Oops: 0000 [#1] PREEMPT SMP NOPTI",
        structured=True,
        keys=("Oops: ",),
    ),
    Family(
        "general_protection_fault",
        r"general protection fault",
        "a general protection fault in kernel code",
        "driver",
        "reboot",
        "kernel_fault_in_nvidia_module",
        _FAULT,
        "general protection fault, probably for non-canonical address 0xdead000000000122: 0000 [#1] SMP NOPTI",
        structured=True,
        keys=("general protection fault",),
    ),
    Family(
        "soft_lockup",
        r"BUG: soft lockup|rcu_sched self-detected stall|rcu: INFO: rcu_(?:sched|preempt) self-detected stall",
        "a CPU spun in kernel code for tens of seconds",
        "driver",
        "reboot",
        "kernel_fault_in_nvidia_module",
        _FAULT,
        "watchdog: BUG: soft lockup - CPU#12 stuck for 26s! [nvidia-smi:48211]",
        structured=True,
        keys=("BUG: soft lockup", "rcu_sched self-detected stall", " self-detected stall"),
    ),
    Family(
        "hung_task",
        r"INFO: task \S+ blocked for more than \d+ seconds",
        "a task waited uninterruptibly in kernel code for minutes",
        "driver",
        "reboot",
        "kernel_fault_in_nvidia_module",
        _FAULT,
        "INFO: task nvidia-smi:48211 blocked for more than 122 seconds.",
        structured=True,
        keys=(" blocked for more than ",),
    ),
    Family(
        "kernel_warning",
        r"WARNING: CPU: \d+ PID: \d+ at ",
        "a kernel WARN: code found a state it did not expect",
        "driver",
        "reboot",
        "kernel_fault_in_nvidia_module",
        _FAULT,
        "WARNING: CPU: 3 PID: 1422 at /var/lib/dkms/nvidia/570.86.15/build/nvidia/nv.c:5100 "
        "nv_pci_remove+0x2d1/0x330 [nvidia]",
        structured=True,
        keys=("WARNING: CPU: ",),
    ),
    # ---- families whose findings the catalogue gives (CODES above)
    Family(
        "api_mismatch",
        r"NVRM: API mismatch: the client",
        "a userspace component of another driver version opened the module",
        "module_build",
        "install_driver",
        "client_version_mismatch",
        _OSAPI,
        "NVRM: API mismatch: the client 'nvidia-smi' (pid 48211) has the version 570.86.15, but this kernel module has the version "
        "560.35.03.  Please make sure that this kernel module and all NVIDIA driver components have the same "
        "version.",
        keys=("NVRM: API mismatch: the client",),
    ),
    Family(
        "modeset_version_mismatch",
        r"nvidia-modeset: Version mismatch: nvidia\.ko",
        "nvidia-modeset.ko and nvidia.ko are of different versions",
        "module_build",
        "rebuild_module",
        "module_version_mismatch",
        "kernel-open/nvidia-modeset/nvidia-modeset-linux.c",
        "nvidia-modeset: Version mismatch: nvidia.ko(560.35.03) nvidia-modeset.ko(570.86.15)",
        keys=("nvidia-modeset: Version mismatch: nvidia.ko",),
    ),
    Family(
        "nvswitch_version_mismatch",
        r"nvidia-nvswitch: Version mismatch, kernel version",
        "a client (the fabric manager) of another version than the driver opened the NVSwitch",
        "fabric",
        "install_driver",
        "fabric_manager_version_mismatch",
        "kernel-open/nvidia/linux_nvswitch.c",
        "nvidia-nvswitch: Version mismatch, kernel version 570.86.15 user version 565.57.01",
        keys=("nvidia-nvswitch: Version mismatch, kernel version",),
    ),
    Family(
        "power_cables",
        r"NVRM: .*GPU does not have the necessary power cables connected",
        "the GPU's auxiliary power is not connected",
        "gpu",
        "service_hardware",
        "gpu_power_cables_missing",
        _OSINIT,
        f"NVRM: GPU {_BUS}: GPU does not have the necessary power cables connected.",
        keys=("GPU does not have the necessary power cables connected",),
    ),
    Family(
        "gsp_no_firmware_image",
        r"NVRM: .*No firmware image found|NVRM: .*need firmware to initialize GSP",
        "the GSP firmware file of this driver version is not installed",
        "module_build",
        "install_driver",
        "gsp_firmware_missing",
        _OSINIT,
        f"NVRM: GPU {_BUS}: RmFetchGspRmImages: No firmware image found",
        keys=("No firmware image found", "need firmware to initialize GSP"),
    ),
    Family(
        "gsp_firmware_version_mismatch",
        r"NVRM: .*GSP firmware image version mismatch",
        "the GSP firmware file is of another version than the module",
        "module_build",
        "install_driver",
        "gsp_firmware_missing",
        _GSP,
        "NVRM: GPU0 _kgspFwContainerVerifyVersion: GSP firmware image version mismatch: got version 595.71.05, "
        "expected version 595.58.03",
        keys=("GSP firmware image version mismatch",),
    ),
    Family(
        "firmware_request_failed",
        r"nvidia \S+: Direct firmware load for nvidia/\S+ failed",
        "the kernel's firmware loader found no GSP firmware file of this driver version",
        "module_build",
        "install_driver",
        "gsp_firmware_missing",
        "kernel-open/nvidia/nv.c (its request_firmware; the line is the kernel firmware loader's)",
        "nvidia 0000:3b:00.0: Direct firmware load for nvidia/570.86.15/gsp_ga10x.bin failed with error -2",
        keys=(": Direct firmware load for nvidia/",),
    ),
    Family(
        "gsp_heartbeat_timeout",
        r"NVRM: .*GSP RM heartbeat timed out|NVRM: .*LibOS heartbeat timed out|NVRM: .*Heartbeat timed out, currentTimeMs",
        "GSP firmware stopped updating its heartbeat",
        "firmware",
        "reset_gpu",
        "gsp_firmware_failed",
        _GSP,
        "NVRM: GPU0 kgspHealthCheck_TU102: GSP RM heartbeat timed out",
        keys=("GSP RM heartbeat timed out", "LibOS heartbeat timed out", "Heartbeat timed out, currentTimeMs"),
    ),
    Family(
        "gsp_unresponsive",
        r"NVRM: .*=+ (?:GSP-RM|GSP core) unresponsive =+",
        "GSP firmware or its core stopped answering",
        "firmware",
        "reset_gpu",
        "gsp_firmware_failed",
        _GSP,
        "NVRM: GPU0 =============== GSP-RM unresponsive ==================",
        keys=(" unresponsive ",),
    ),
    Family(
        "gsp_bad_state",
        r"NVRM: .*the GPU is likely in a bad state and may need to be reset",
        "the driver's own verdict after a GSP failure",
        "firmware",
        "reset_gpu",
        "gsp_firmware_failed",
        _GSP,
        "NVRM: GPU0 (the GPU is likely in a bad state and may need to be reset)",
        keys=("the GPU is likely in a bad state and may need to be reset",),
    ),
    Family(
        "gsp_rpc_timeout",
        r"NVRM: .*of waiting for RPC response from GPU\d+ GSP|NVRM: .*\*+ GSP Timeout \*+",
        "an RPC to GSP firmware got no answer in time (Xid 119 usually follows)",
        "firmware",
        "reset_gpu",
        "gsp_firmware_failed",
        _GSP,
        "NVRM: _kgspLogXid119: ********************************* GSP Timeout **********************************",
        keys=("of waiting for RPC response from GPU", " GSP Timeout "),
    ),
    Family(
        "gsp_boot_attempts",
        r"NVRM: .*Max GSP-RM boot attempts exceeded",
        "GSP firmware failed to boot again and again",
        "firmware",
        "reset_gpu",
        "gsp_firmware_failed",
        _GSP,
        "NVRM: GPU0 kgspBootstrap_TU102: Max GSP-RM boot attempts exceeded: 3/3",
        keys=("Max GSP-RM boot attempts exceeded",),
    ),
    Family(
        "gsp_pmu_halted",
        r"NVRM: .*Received signal from GSP that PMU has halted",
        "the GPU's power management unit halted",
        "firmware",
        "reset_gpu",
        "gsp_firmware_failed",
        _GSP,
        "NVRM: GPU0 _kgspProcessRpcEvent: Received signal from GSP that PMU has halted.",
        keys=("Received signal from GSP that PMU has halted",),
    ),
    Family(
        "vbios_extract_failed",
        r"NVRM: .*failed to extract VBIOS image from ROM|NVRM: .*failed to parse FWSEC ucode from VBIOS image",
        "the driver could not read or parse the GPU's VBIOS",
        "firmware",
        "reboot",
        "gpu_vbios_unreadable",
        _GSP,
        "NVRM: GPU0 kgspExtractVbiosFromRom_TU102: failed to extract VBIOS image from ROM: 0x3f",
        keys=("failed to extract VBIOS image from ROM", "failed to parse FWSEC ucode from VBIOS image"),
    ),
    Family(
        "irq_not_found",
        r"NVRM: Can't find an IRQ for your NVIDIA card",
        "the platform gave the GPU no interrupt line",
        "platform",
        "fix_platform",
        "gpu_interrupts_unavailable",
        _PCI,
        "NVRM: Can't find an IRQ for your NVIDIA card!",
        keys=("NVRM: Can't find an IRQ for your NVIDIA card",),
    ),
    Family(
        "no_interrupts",
        r"NVRM: .*No interrupts of any type are available",
        "neither MSI-X, MSI nor a legacy line works for the GPU",
        "platform",
        "fix_platform",
        "gpu_interrupts_unavailable",
        _NV,
        f"NVRM: GPU {_BUS}: No interrupts of any type are available. Cannot use this GPU.",
        keys=("No interrupts of any type are available",),
    ),
    Family(
        "request_irq_failed",
        r"NVRM: .*request_irq\(\) failed|NVRM: Tried to get IRQ \d+, but another driver",
        "the kernel refused the GPU's interrupt (another driver holds it unshared)",
        "platform",
        "fix_platform",
        "gpu_interrupts_unavailable",
        _NV,
        "NVRM: Tried to get IRQ 16, but another driver has it and is not sharing it.",
        keys=("request_irq() failed", "NVRM: Tried to get IRQ "),
    ),
    Family(
        "msix_failed",
        r"NVRM: .*Failed to enable MSI-X",
        "MSI-X could not be enabled for the GPU",
        "platform",
        "fix_platform",
        "gpu_interrupts_unavailable",
        "kernel-open/nvidia/nv-msi.c",
        f"NVRM: GPU {_BUS}: Failed to enable MSI-X.",
        keys=("Failed to enable MSI-X",),
    ),
    Family(
        "pci_enable_failed",
        r"NVRM: pci_enable_device failed",
        "the kernel could not enable the GPU's PCI device",
        "platform",
        "fix_platform",
        "gpu_pci_setup_failed",
        _PCI,
        "NVRM: pci_enable_device failed, aborting",
        keys=("NVRM: pci_enable_device failed",),
    ),
    Family(
        "bar_resize_failed",
        r"NVRM: Fatal Error while attempting to resize PCIe BARs|NVRM: FATAL: Failed to re-allocate BAR1"
        r"|NVRM: No address space to allocate resized BAR1",
        "resizing the GPU's BAR1 failed for lack of address space",
        "platform",
        "fix_platform",
        "gpu_pci_setup_failed",
        _PCI,
        "NVRM: No address space to allocate resized BAR1.",
        keys=(
            "NVRM: Fatal Error while attempting to resize PCIe BARs",
            "NVRM: FATAL: Failed to re-allocate BAR1",
            "NVRM: No address space to allocate resized BAR1",
        ),
    ),
    Family(
        "dma_setup_failed",
        r"NVRM: .*Cannot configure the device for DMA",
        "the GPU could not be set up for DMA (IOMMU or DMA mask)",
        "platform",
        "fix_platform",
        "gpu_pci_setup_failed",
        _OSINIT,
        f"NVRM: GPU {_BUS}: Cannot configure the device for DMA",
        keys=("Cannot configure the device for DMA",),
    ),
    Family(
        "registers_claimed",
        r"NVRM: request_mem_region failed for",
        "another driver already holds the GPU's register space",
        "platform",
        "reboot",
        "gpu_registers_claimed",
        _PCI,
        "NVRM: request_mem_region failed for 16M @ 0xfa000000. This can occur when a driver such as rivatv is "
        "loaded and claims ownership of the device's registers.",
        keys=("NVRM: request_mem_region failed for",),
    ),
    Family(
        "rm_init_failed",
        r"NVRM: rm_init_rm\(\) failed",
        "RM's own initialisation failed when the module loaded",
        "driver",
        "reboot",
        "driver_init_failed",
        _NV,
        "NVRM: rm_init_rm() failed!",
        keys=("NVRM: rm_init_rm() failed",),
    ),
    Family(
        "module_setup_failed",
        r"NVRM: failed to initialize module|NVRM: failed to initialize procfs|NVRM: failed to initialize capabilities"
        r"|NVRM: failed to initialize IMEX channels|NVRM: nvidia_stack_t cache allocation failed"
        r"|NVRM: nvidia_p2p_page_t cache allocation failed|NVRM: register_chrdev_region\(\) failed"
        r"|NVRM: cdev_add\(\) failed|NVRM: nv-cap-drv init failed",
        "the module could not allocate or register what it needs to load",
        "driver",
        "reboot",
        "driver_init_failed",
        _NV,
        "NVRM: failed to initialize capabilities.",
        keys=(
            "NVRM: failed to initialize module",
            "NVRM: failed to initialize procfs",
            "NVRM: failed to initialize capabilities",
            "NVRM: failed to initialize IMEX channels",
            "NVRM: nvidia_stack_t cache allocation failed",
            "NVRM: nvidia_p2p_page_t cache allocation failed",
            "NVRM: register_chrdev_region() failed",
            "NVRM: cdev_add() failed",
            "NVRM: nv-cap-drv init failed",
        ),
    ),
    Family(
        "probe_failed",
        r"NVRM: The NVIDIA probe routine failed for|NVRM: None of the NVIDIA devices were initialized"
        r"|NVRM: No NVIDIA devices probed|NVRM: No NVIDIA GPU found",
        "the probe's summary: it took no GPU, or fewer than there are",
        "gpu",
        "reload",
        "gpu_probe_failed",
        _NV,
        "NVRM: The NVIDIA probe routine failed for 1 device(s).",
        keys=(
            "NVRM: The NVIDIA probe routine failed for",
            "NVRM: None of the NVIDIA devices were initialized",
            "NVRM: No NVIDIA devices probed",
            "NVRM: No NVIDIA GPU found",
        ),
    ),
    Family(
        "rm_thread_timeout",
        r"NVRM: .*_threadNodeCheckTimeout",
        "an RM call on the GPU ran past its timeout",
        "gpu",
        "reset_gpu",
        "gpu_hung",
        "src/nvidia/src/kernel/core/thread_state.c",
        "NVRM: GPU0 _threadNodeCheckTimeout: API_GPU_ATTACHED_SANITY_CHECK failed!",
        keys=("_threadNodeCheckTimeout",),
    ),
    Family(
        "unhandled_interrupts",
        r"NVRM: Going over RM unhandled interrupt threshold",
        "the GPU raises interrupts the driver cannot service",
        "gpu",
        "reset_gpu",
        "gpu_hung",
        _NV,
        "NVRM: Going over RM unhandled interrupt threshold for irq 150",
        keys=("NVRM: Going over RM unhandled interrupt threshold",),
    ),
    Family(
        "modeset_gpu_progress",
        r"nvidia-modeset: ERROR: GPU:\d+: Error while waiting for GPU progress",
        "the display engine waited for the GPU and it never advanced",
        "gpu",
        "reset_gpu",
        "gpu_hung",
        "src/nvidia-modeset/src/nvkms-dma.c",
        "nvidia-modeset: ERROR: GPU:0: Error while waiting for GPU progress: 0x0000c67d:0 2:0:4048:4040",
        keys=(": Error while waiting for GPU progress",),
    ),
    Family(
        "drm_kapi_device_failed",
        r"\[nvidia-drm\] \[GPU ID 0x[0-9a-fA-F]+\] Failed to allocate NvKmsKapiDevice"
        r"|\[nvidia-drm\] \[GPU ID 0x[0-9a-fA-F]+\] Failed to register device",
        "nvidia-drm could not get the GPU from nvidia-modeset, or register it with DRM",
        "driver",
        "reload",
        "display_stack_init_failed",
        "kernel-open/nvidia-drm/nvidia-drm-drv.c",
        "[drm:nv_drm_load [nvidia_drm]] *ERROR* [nvidia-drm] [GPU ID 0x00003b00] Failed to allocate NvKmsKapiDevice",
        keys=("] Failed to allocate NvKmsKapiDevice", "] Failed to register device"),
    ),
    Family(
        "modeset_register_failed",
        r"nvidia-modeset: Failed to register callbacks",
        "nvidia-modeset could not register with nvidia.ko",
        "driver",
        "reload",
        "display_stack_init_failed",
        "kernel-open/nvidia-modeset/nvidia-modeset-linux.c",
        "nvidia-modeset: Failed to register callbacks",
        keys=("nvidia-modeset: Failed to register callbacks",),
    ),
    Family(
        "uvm_global_fatal",
        r"nvidia-uvm: .*Encountered a global fatal error",
        "nvidia-uvm hit an error that leaves every GPU's unified memory unusable (printed with uvm_debug_prints=1)",
        "driver",
        "reload",
        "uvm_failed",
        "kernel-open/nvidia-uvm/uvm_global.c",
        "nvidia-uvm: uvm_global.c:452 uvm_global_set_fatal_error_impl[pid:0] Encountered a global fatal error: "
        "Unexpected fatal error",
        keys=("Encountered a global fatal error",),
    ),
    Family(
        "uvm_ats_unsupported",
        r"nvidia-uvm: .*GPU VA space requires ATS, but",
        "a GPU needs ATS (address translation services) the platform does not give it",
        "platform",
        "fix_platform",
        "gpu_pci_setup_failed",
        "kernel-open/nvidia-uvm/uvm_va_space.c",
        "nvidia-uvm: uvm_gpu.c:1612 init_gpu[pid:1] GPU VA space requires ATS, but ATS is not supported or enabled",
        keys=("GPU VA space requires ATS, but",),
    ),
    Family(
        "nvswitch_sxid_fatal",
        r"nvidia-nvswitch\d*: SXid \(PCI:[^)]*\): \d+, Fatal",
        "an NVSwitch met a fatal error: the fabric through it is down until reset",
        "fabric",
        "reload",
        "nvswitch_fatal_error",
        "src/common/nvswitch/kernel/inc/common_nvswitch.h",
        "nvidia-nvswitch3: SXid (PCI:0000:07:00.0): 12028, Fatal, Link 44 egress non-posted PRIV error (First)",
        keys=("nvidia-nvswitch",),
    ),
    Family(
        "nvswitch_soe_failed",
        r"nvidia-nvswitch\d*: .*SOE init failed|nvidia-nvswitch\d*: .*SOE allocation failed"
        r"|nvidia-nvswitch\d*: .*FALCON construct failed",
        "the NVSwitch's management firmware (SOE) did not start",
        "fabric",
        "reboot",
        "nvswitch_init_failed",
        "src/common/nvswitch/kernel/nvswitch.c",
        "nvidia-nvswitch0: SOE init failed.",
        keys=("nvidia-nvswitch", "SOE allocation failed", "FALCON construct failed"),
    ),
    Family(
        "nvswitch_register_failed",
        r"nvidia-nvswitch\d*: Failed to register driver|nvidia-nvswitch\d*: Unable to create cdev",
        "the NVSwitch driver could not register itself",
        "fabric",
        "reboot",
        "nvswitch_init_failed",
        "kernel-open/nvidia/linux_nvswitch.c",
        "nvidia-nvswitch: Failed to register driver : -16",
        keys=(": Failed to register driver", ": Unable to create cdev"),
    ),
    Family(
        "peermem_mapping_error",
        r"nvidia-peermem \w+:\d+ ERROR ",
        "nvidia-peermem failed a peer-memory mapping for an RDMA application",
        "application",
        "restart_application",
        "peermem_error",
        "kernel-open/nvidia-peermem/nvidia-peermem.c",
        "nvidia-peermem nv_get_p2p_free_callback:126 ERROR detected invalid context, skipping further processing",
        keys=("nvidia-peermem ",),
    ),
)

# the cheap test before any pattern: every family's line carries one of these
_PREFIXES = ("NVRM", "nvidia", "Loading of", "Key was rejected", "unsigned module", "[nvidia-drm]")
_FAULT_WORDS = ("BUG: ", "Oops: ", "general protection fault", "blocked for more than", "WARNING: CPU:", "stall")


def might_match(line: str) -> bool:
    return any(word in line for word in _PREFIXES) or any(word in line for word in _FAULT_WORDS)


# Compiling all patterns costs ~20 ms, which --status, run every minute, must not pay on every node
# with an NVRM line. Each family has keys instead (the longest literal run of each top-level
# alternative of its pattern, kept as data: deriving them costs more than the rest of the parse):
# only a family one of whose keys is in the line is compiled (once) and searched.
_COMPILED: dict[str, re.Pattern[str]] = {}
_ESCAPED_LITERAL = set("()[]{}.*+?|^$\\/-'\"")
_QUANTIFIERS = set("*+?{")


def _skip_class(pattern: str, index: int) -> int:
    """The index after the character class (or {m,n} repeat) opening at pattern[index]."""
    close = "]" if pattern[index] == "[" else "}"
    index += 2 if pattern[index + 1 : index + 2] in ("^", "]") else 1
    while index < len(pattern) and pattern[index] != close:
        index += 2 if pattern[index] == "\\" else 1
    return index + 1


def _top_level_alternatives(pattern: str) -> list[str]:
    parts, depth, start, index = [], 0, 0, 0
    while index < len(pattern):
        char = pattern[index]
        if char in "[{":
            index = _skip_class(pattern, index)
            continue
        if char == "\\":
            index += 2
            continue
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "|" and depth == 0:
            parts.append(pattern[start:index])
            start = index + 1
        index += 1
    return parts + [pattern[start:]]


def _literal_key(alternative: str) -> str:
    """The longest run of literal characters outside any group or class of one alternative: any line
    the alternative matches contains it."""
    runs, run, depth, index = [], "", 0, 0
    while index < len(alternative):
        char = alternative[index]
        literal = None
        if char in "[{":
            index = _skip_class(alternative, index)
        elif char == "\\":
            escaped = alternative[index + 1 : index + 2]
            literal = escaped if escaped in _ESCAPED_LITERAL else None
            index += 2
        else:
            depth += {"(": 1, ")": -1}.get(char, 0)
            literal = char if char not in "()" and char not in _QUANTIFIERS and char not in ".^$" else None
            if char in _QUANTIFIERS and depth == 0:
                run = run[:-1]  # the quantified character is optional or repeated: not part of the key
            index += 1
        if literal is not None and depth == 0:
            run += literal
        elif not (char in _QUANTIFIERS and depth == 0 and literal is None and char != "{"):
            runs.append(run)
            run = ""
    runs.append(run)
    return max(runs, key=len)


def derive_keys(pattern: str) -> tuple[str, ...]:
    return tuple(_literal_key(alternative) for alternative in _top_level_alternatives(pattern))


_META = set("\\.^$*+?{}[]()|")
_BY_KEY: list[tuple[str, Family]] = []


def _search(fam: Family, line: str) -> int:
    """Where fam's pattern first matches in line, -1 if nowhere. A pattern with no metacharacter is
    its own key: found by str.find, never compiled."""
    if not _META.intersection(fam.pattern):
        return line.find(fam.pattern)
    pattern = _COMPILED.get(fam.name)
    if pattern is None:
        pattern = _COMPILED[fam.name] = re.compile(fam.pattern)
    match = pattern.search(line)
    return match.start() if match else -1


def classify(line: str) -> Family | None:
    """The family of one kernel log line, or None: of the families whose keys the line holds, the
    one whose pattern matches first in the line (the catalogue's order breaks a tie)."""
    if not might_match(line):
        return None
    if not _BY_KEY:
        _BY_KEY.extend((key, fam) for fam in FAMILIES for key in fam.keys)
    best: tuple[int, int, Family] | None = None
    for order, (key, fam) in enumerate(_BY_KEY):
        if key in line and (best is None or best[2] is not fam):
            start = _search(fam, line)
            if start >= 0 and (best is None or (start, order) < best[:2]):
                best = (start, order, fam)
    return best[2] if best else None


def family(name: str) -> Family:
    return next(f for f in FAMILIES if f.name == name)
