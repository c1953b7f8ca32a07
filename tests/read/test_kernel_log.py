from nvreload.read.kernel_log import parse_kernel_log

LOAD = "[    5.1] NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.127.08  Thu Oct 10 20:23:43 UTC 2024"


def test_xids_are_parsed_with_bus_id_and_message():
    log = parse_kernel_log(
        LOAD + "\n[ 77.0] NVRM: Xid (PCI:0000:b1:00): 119, pid=1, name=x, Timeout waiting for RPC from GSP!\n", "dmesg"
    )
    (xid,) = log.xids
    assert (xid.xid, xid.pci_bus_id, xid.since_driver_load) == (119, "0000:b1:00.0", True)
    assert xid.message.startswith("pid=1")


def test_kmsg_records_are_understood_like_dmesg_lines():
    log = parse_kernel_log(
        "6,1000,5000,-;" + LOAD[10:] + "\n4,1001,6000,-;NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.\n",
        "/dev/kmsg",
    )
    assert log.last_driver_load is not None
    assert log.xids[0].xid == 79 and log.xids[0].since_driver_load


def test_garbage_in_the_kernel_log_is_ignored_not_fatal():
    text = "\x00\xff garbage\nNVRM: Xid (PCI:zz): notanumber\nNVRM: Xid (PCI:0000:3b:00): \n" + "x" * 100000
    log = parse_kernel_log(text, "snapshot")
    assert log.xids == ()


def test_module_load_errors_are_kept_for_diagnosis():
    log = parse_kernel_log("[ 3.0] nvidia: disagrees about version of symbol module_layout\n", "dmesg")
    assert log.load_errors == ("[ 3.0] nvidia: disagrees about version of symbol module_layout",)


def test_no_kernel_log_is_an_empty_log():
    log = parse_kernel_log(None, None)
    assert log.xids == () and log.source is None


def test_xids_in_a_log_without_any_load_line_count_as_since_the_driver_loaded():
    # the load line scrolled out of a small ring buffer: what is left belongs to the instance in memory
    log = parse_kernel_log(
        "[ 77.0] NVRM: Xid (PCI:0000:3b:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error\n",
        "dmesg",
    )
    assert log.last_driver_load is None
    (xid,) = log.xids
    assert (xid.xid, xid.since_driver_load) == (48, True)


FALLEN = "[ 9001.0] NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus."


def test_the_fallen_off_the_bus_line_alone_is_kept_with_or_without_a_load_line():
    assert parse_kernel_log(FALLEN + "\n", "dmesg").fallen_off_bus == (FALLEN,)
    assert parse_kernel_log(LOAD + "\n" + FALLEN + "\n", "dmesg").fallen_off_bus == (FALLEN,)
    # before a later load it belongs to the old instance
    assert parse_kernel_log(FALLEN + "\n" + LOAD + "\n", "dmesg").fallen_off_bus == ()


# NVIDIA/NVSentinel issue 155: the probe's message spans three lines and comes before the load line
PROBE_FALLEN = [
    "[ 1843.308145] NVRM: The NVIDIA GPU 0000:b3:00.0",
    "               NVRM: (PCI ID: 10de:26b5) installed in this system has",
    "               NVRM: fallen off the bus and is not responding to commands.",
    "[ 1843.439662] NVRM: The NVIDIA probe routine failed for 1 device(s).",
    "[ 1843.439669] NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  570.158.01  Release Build",
]
JOINED = (
    "[ 1843.308145] NVRM: The NVIDIA GPU 0000:b3:00.0 (PCI ID: 10de:26b5) installed in this system has "
    "fallen off the bus and is not responding to commands."
)


def test_a_gpu_that_fell_off_the_bus_during_this_drivers_load_belongs_to_that_load():
    log = parse_kernel_log("\n".join(PROBE_FALLEN) + "\n", "dmesg")
    assert log.fallen_off_bus == (JOINED,)
    (failure,) = log.gpu_init_failures
    assert (failure.pci_bus_id, failure.kind, failure.line) == ("0000:b3:00.0", "fallen_off_bus", JOINED)


def test_the_probe_lines_of_an_earlier_load_are_not_this_loads():
    # an unload and a later load: the first load's probe failure is history
    later = "[ 9000.000000] NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  570.158.01  Release Build"
    log = parse_kernel_log("\n".join(PROBE_FALLEN + ["[ 8990.0] nvidia-modeset: Unloading", later]) + "\n", "dmesg")
    assert log.fallen_off_bus == () and log.gpu_init_failures == ()


def test_a_probe_line_long_before_the_load_line_is_not_that_loads():
    old = [
        "[ 100.0] NVRM: GPU 0000:98:00.0: RmInitAdapter failed! (0x62:0x65:1792)",
        "[ 900.0] NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.144.03",
    ]
    assert parse_kernel_log("\n".join(old) + "\n", "dmesg").gpu_init_failures == ()


def test_the_probe_window_is_measured_to_the_fraction_of_a_second():
    # 60.4 s before the load line is outside the 60 s window, 59.8 s is inside it
    load = "[ 160.9] NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.144.03"
    outside = "[ 100.5] NVRM: GPU 0000:98:00.0: RmInitAdapter failed! (0x62:0x65:1792)"
    inside = "[ 101.1] NVRM: GPU 0000:98:00.0: RmInitAdapter failed! (0x62:0x65:1792)"
    assert parse_kernel_log(f"{outside}\n{load}\n", "dmesg").gpu_init_failures == ()
    assert len(parse_kernel_log(f"{inside}\n{load}\n", "dmesg").gpu_init_failures) == 1


def test_the_old_drivers_timestamped_lines_of_one_message_read_as_one():
    # MrMEEE/bumblebee-Old-and-abbandoned issue 583
    lines = [
        "[  652.483304] NVRM: The NVIDIA GPU 0000:01:00.0 (PCI ID: 10de:1050) installed",
        "[  652.483305] NVRM: in this system is not supported by the 280.13 NVIDIA Linux",
        "[  652.483306] NVRM: graphics driver release.  Please see 'Appendix A -",
        "[  652.483309] NVRM: www.nvidia.com.",
        "[  652.483325] nvidia: probe of 0000:01:00.0 failed with error -1",
    ]
    (failure,) = parse_kernel_log("\n".join(lines) + "\n", "dmesg").gpu_init_failures
    assert (failure.pci_bus_id, failure.kind) == ("0000:01:00.0", "unsupported")
    assert "not supported by the 280.13 NVIDIA Linux graphics driver release." in failure.line


def test_a_gsp_firmware_failure_is_read_in_the_old_and_the_new_drivers_form():
    # NVIDIA/open-gpu-kernel-modules issues 433 (525: `NVRM ` without a colon) and 1230 (580: GPU index)
    lines = [
        LOAD,
        "[  217.545145] NVRM RmInitAdapter: Cannot initialize GSP firmware RM",
        "[   88.669358] NVRM: GPU6 RmInitAdapter: Cannot initialize GSP firmware RM",
        "[  217.545832] NVRM: GPU 0000:05:00.0: RmInitAdapter failed! (0x62:0xffff:1622)",
    ]
    failures = parse_kernel_log("\n".join(lines) + "\n", "dmesg").gpu_init_failures
    assert [(f.pci_bus_id, f.kind) for f in failures] == [
        (None, "gsp_init_failed"),
        (None, "gsp_init_failed"),
        ("0000:05:00.0", "init_failed"),
    ]


def test_an_xid_line_without_a_timestamp_is_never_glued_to_the_line_above():
    log = parse_kernel_log(LOAD + "\nNVRM: Xid (PCI:0000:10:1c): 63, pid=1896, Row Remapper: New row marked\n", "dmesg")
    assert [x.xid for x in log.xids] == [63] and log.last_driver_load == LOAD


def test_secure_boot_refusals_are_module_failures_of_kind_signature():
    text = (
        "[  412.1] Loading of unsigned module is rejected\n"
        "mar 06 15:10:43 host gdm3[7055]: modprobe: ERROR: could not insert 'nvidia': Key was rejected by service\n"
        "[    3.2] nvidia: module verification failed: signature and/or required key missing - tainting kernel\n"
    )
    failures = parse_kernel_log(text, "journalctl").module_failures
    assert [(f.module, f.kind) for f in failures] == [
        (None, "signature"),
        ("nvidia", "signature"),
    ]  # a taint is no refusal


def test_a_dependent_modules_refusal_is_attributed_to_it_with_the_symbol():
    # NVIDIA/gpu-operator issue 2868 (dmesg -T timestamps)
    text = (
        LOAD
        + "\n[Tue Sep  8 17:16:02 2026] nvidia_peermem: disagrees about version of symbol ib_register_peer_memory_client\n"
        "[Tue Sep  8 17:16:02 2026] nvidia_peermem: Unknown symbol ib_register_peer_memory_client (err -22)\n"
    )
    failures = parse_kernel_log(text, "dmesg").module_failures
    assert [(f.module, f.kind, f.symbol) for f in failures] == [
        ("nvidia_peermem", "symbol_version", "ib_register_peer_memory_client"),
        ("nvidia_peermem", "unknown_symbol", "ib_register_peer_memory_client"),
    ]


def test_each_probe_line_kind_is_recognised_through_its_literal_prefilter():
    # one line per _PROBE entry, as drivers print them: a literal that the line does not hold
    # (a typo, a case the driver does not print) would skip its pattern and lose the kind
    lines = {
        "fallen_off_bus": "NVRM: The NVIDIA GPU 0000:3b:00.0 (PCI ID: 10de:2330) installed in this system has fallen off the bus and is not responding to commands.",
        "unsupported": "NVRM: The NVIDIA GPU 0000:3b:00.0 (PCI ID: 10de:2b85) installed in this system requires use of the NVIDIA open kernel modules.",
        "bar_unassigned": "NVRM: This PCI I/O region assigned to your NVIDIA device is invalid: NVRM: BAR1 is 0M @ 0x0 (PCI:0000:00:05.0)",
        "init_failed": "NVRM: GPU 0000:3b:00.0: RmInitAdapter failed! (0x25:0x65:1457)",
        "gfw_boot_incomplete": "NVRM: GPU0 kgspWaitForGfwBootOk_TU102: failed to wait for GFW boot complete: 0x0",
        "gsp_wpr2_up": "NVRM: GPU0 _kgspBootGspRm: unexpected WPR2 already up, cannot proceed with booting GSP",
        "gsp_init_failed": "NVRM: GPU0 RmInitAdapter: Cannot initialize GSP firmware RM",
        "other_driver": "NVRM: The NVIDIA probe routine was not called for 1 device(s).",
    }
    for kind, line in lines.items():
        log = parse_kernel_log(f"[    4.0] {line}\n{LOAD}\n", "dmesg")
        assert [f.kind for f in log.gpu_init_failures] == [kind], line
