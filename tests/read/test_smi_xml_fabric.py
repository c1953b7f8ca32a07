"""The NVLink fabric's state from `nvidia-smi -q -x`, which a reload waits on before its CUDA
check: the real H100 capture (a PCIe node: no fabric) and the same document as an HGX node's."""

from pathlib import Path

from nvreload.read.smi_xml import fabric_ready

CAPTURE = (
    Path(__file__).parents[1] / "fixtures" / "h100-580-no-unload" / "nvreload-snapshot" / "nvidia-smi-q.xml"
).read_text()


def _with_fabric_state(state: str) -> str:
    return CAPTURE.replace("<fabric>\n\t\t\t<state>N/A</state>", f"<fabric>\n\t\t\t<state>{state}</state>")


def test_a_node_without_nvswitch_has_no_fabric_to_wait_for():
    assert "<fabric>" in CAPTURE and fabric_ready(CAPTURE) is None


def test_the_fabric_is_up_once_every_gpu_says_completed():
    assert fabric_ready(_with_fabric_state("Completed")) is True


def test_a_gpu_still_in_progress_or_not_started_means_not_yet():
    assert fabric_ready(_with_fabric_state("In Progress")) is False
    assert fabric_ready(_with_fabric_state("Not Started")) is False


def test_no_answer_or_another_document_is_not_up():
    assert fabric_ready("") is False
    assert fabric_ready("<html/>") is False
    assert fabric_ready("<nvidia_smi_log><gpu>") is False
