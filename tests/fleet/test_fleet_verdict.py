from fleet_documents import status

from nvreload.fleet.verdict import NodeReading, Verdict, decide


def verdict(doc, target=None, with_driver=False):
    return decide(NodeReading.from_status(doc), target, with_driver)


def test_a_version_mismatch_is_reloaded():
    assert verdict(status()).verdict is Verdict.RELOAD


def test_a_node_with_the_installed_driver_loaded_needs_nothing():
    decision = verdict(status(loaded="550.127.08", action="none"))
    assert decision.verdict is Verdict.HEALTHY and "no reload needed" in decision.why


def test_a_finding_that_says_reboot_blocks_the_node_and_says_which():
    doc = status(
        action="reboot",
        findings=[{"code": "gpu_fallen_off_bus", "action": "reboot", "message": "GPU has fallen off the bus"}],
    )
    decision = verdict(doc)
    assert decision.verdict is Verdict.BLOCKED and "gpu_fallen_off_bus" in decision.why


def test_a_reload_the_node_says_cannot_run_blocks_it_with_the_blocker():
    decision = verdict(status(feasible=False))
    assert decision.verdict is Verdict.BLOCKED and "Xorg" in decision.why


def test_a_target_version_other_than_the_loaded_one_means_a_reload_even_without_a_mismatch():
    doc = status(loaded="550.90.07", userspace="550.127.08", action="none")
    assert verdict(doc, target="550.127.08").verdict is Verdict.RELOAD


def test_a_target_version_that_is_not_installed_blocks_without_a_driver_to_install():
    doc = status(loaded="550.90.07", userspace="550.90.07", action="none")
    decision = verdict(doc, target="560.35.03")
    assert decision.verdict is Verdict.BLOCKED and "install it" in decision.why
    assert verdict(doc, target="560.35.03", with_driver=True).verdict is Verdict.RELOAD
