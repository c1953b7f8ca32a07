"""The human summary on stderr: what an operator reads at a terminal or in a ticket."""

from dataclasses import replace

from helpers import node_of, status_of

from nvreload.model import NvmlReport
from nvreload.render.human import render_status, render_verify
from nvreload.status import status_document


def test_the_h100_capture_reads_as_one_gpu_and_a_blocked_reload(h100_root, capsys):
    render_status(status_of(h100_root))
    captured = capsys.readouterr()
    assert captured.err == ""  # the report asked for is on stdout: `nvreload --status | grep CRITICAL` finds it
    text = captured.out
    assert "module 580.159.04 (open, loaded)" in text
    assert "0000:00:06.0" in text and "NVIDIA H100 80GB HBM3" in text
    assert "module_unload_unsupported" in text
    assert "reload blocked by module_unload_unsupported, module_loading_disabled" in text
    assert "consumers: not scanned (snapshot)" in text


def test_verbose_shows_each_findings_evidence(snapshot, capsys):
    snapshot.userspace("550.144.03")
    render_status(status_of(snapshot.root), verbose=True)
    assert "userspace_version: 550.144.03" in capsys.readouterr().out


def test_an_nvml_hang_is_spelled_out_since_no_finding_explains_it(snapshot, capsys):
    node = node_of(snapshot)
    hung = NvmlReport(status="error", source="nvml", error="NVML did not answer within 30 s: a GPU may be wedged")
    render_status(status_document(replace(node, nvml=hung)))
    assert "NVML: NVML did not answer within 30 s" in capsys.readouterr().out


def test_verify_marks_critical_failures_and_warnings_apart(capsys):
    render_verify(
        {
            "checks": [
                {"name": "nvml", "ok": True, "detail": "NVML ok", "severity": "critical"},
                {"name": "no_new_xids", "ok": False, "detail": "Xid 13", "severity": "warning"},
                {
                    "name": "versions_agree",
                    "ok": False,
                    "detail": "kernel module 550.90.07, userspace 550.127.08",
                    "severity": "critical",
                },
            ],
            "healthy": False,
        }
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ok") and lines[1].startswith("WARN") and lines[2].startswith("FAIL")
    assert lines[-1] == "not healthy"


def test_node_text_with_markup_and_emoji_codes_prints_as_itself(snapshot, capsys):
    snapshot.write("proc/sys/kernel/hostname", "evil[/]host[bold]\n")
    snapshot.gpu("0000:ab:00.0", model="GPU [red]x[/red]")
    render_status(status_of(snapshot.root))
    text = capsys.readouterr().out
    assert "evil[/]host[bold]" in text  # not a MarkupError, not swallowed as a tag
    assert "0000:ab:00.0" in text  # not the :ab: emoji


def test_a_run_report_with_markup_in_a_process_name_prints_as_itself(capsys):
    from nvreload.actions import ActionResult
    from nvreload.engine.outcome import Outcome, RunReport
    from nvreload.render.run import render_action_result

    report = RunReport(
        Outcome.RELOADED,
        killed=[{"pid": 42, "comm": "[/]trainer", "outcome": "terminated: [b]"}],
        stopped=["c[/]ontainer"],
    )
    render_action_result(ActionResult(0, report), "reload")
    text = capsys.readouterr().out
    assert "ended process 42 ([/]trainer): terminated: [b]" in text and "c[/]ontainer" in text


def test_a_verify_detail_and_a_finding_message_with_markup_print_as_themselves(snapshot, capsys):
    render_verify(
        {
            "checks": [
                {"name": "cuda_context", "ok": False, "detail": "cuInit failed: [/] [bold]x", "severity": "critical"}
            ],
            "healthy": False,
        }
    )
    assert "cuInit failed: [/] [bold]x" in capsys.readouterr().out
    document = status_of(snapshot.root)
    document["findings"] = [
        {
            "code": "module_load_failed",
            "severity": "critical",
            "action": "rebuild_module",
            "evidence": {},
            "message": "the kernel refused the nvidia module: nvidia: Unknown symbol [/]x (err -2)",
        }
    ]
    render_status(document)
    assert "Unknown symbol [/]x (err -2)" in capsys.readouterr().out
