from nvreload.read.kernel_log import parse_kernel_log

LOAD = "[    5.1] NVRM: loading NVIDIA UNIX x86_64 Kernel Module  550.127.08  Thu Oct 10 20:23:43 UTC 2024"


def test_xids_are_parsed_with_bus_id_and_message():
    log = parse_kernel_log(LOAD + "\n[ 77.0] NVRM: Xid (PCI:0000:b1:00): 119, pid=1, name=x, Timeout waiting for RPC from GSP!\n", "dmesg")
    (xid,) = log.xids
    assert (xid.xid, xid.pci_bus_id, xid.since_driver_load) == (119, "0000:b1:00.0", True)
    assert xid.message.startswith("pid=1")


def test_kmsg_records_are_understood_like_dmesg_lines():
    log = parse_kernel_log("6,1000,5000,-;" + LOAD[10:] + "\n4,1001,6000,-;NVRM: Xid (PCI:0000:3b:00): 79, GPU has fallen off the bus.\n", "/dev/kmsg")
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
    log = parse_kernel_log("[ 77.0] NVRM: Xid (PCI:0000:3b:00): 48, pid='<unknown>', name=<unknown>, An uncorrectable double bit error\n", "dmesg")
    assert log.last_driver_load is None
    (xid,) = log.xids
    assert (xid.xid, xid.since_driver_load) == (48, True)


FALLEN = "[ 9001.0] NVRM: GPU 0000:3b:00.0: GPU has fallen off the bus."


def test_the_fallen_off_the_bus_line_alone_is_kept_with_or_without_a_load_line():
    assert parse_kernel_log(FALLEN + "\n", "dmesg").fallen_off_bus == (FALLEN,)
    assert parse_kernel_log(LOAD + "\n" + FALLEN + "\n", "dmesg").fallen_off_bus == (FALLEN,)
    # before a later load it belongs to the old instance
    assert parse_kernel_log(FALLEN + "\n" + LOAD + "\n", "dmesg").fallen_off_bus == ()
