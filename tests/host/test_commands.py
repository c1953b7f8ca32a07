import time

from nvreload.host.commands import NOT_FOUND, TIMED_OUT, CommandRunner


def test_a_missing_binary_is_a_result_not_an_exception():
    result = CommandRunner().run(["nvreload-no-such-binary", "--x"])
    assert result.returncode == NOT_FOUND and not result.ok
    assert "command not found" in result.stderr


def test_output_and_status_come_back_and_input_reaches_stdin():
    result = CommandRunner().run(["sh", "-c", "cat; echo oops >&2; exit 3"], input_text="hello\n")
    assert (result.returncode, result.stdout, result.stderr) == (3, "hello\n", "oops\n")


def test_a_command_past_its_deadline_is_killed_and_reported_as_timed_out():
    started = time.monotonic()
    result = CommandRunner().run(["sleep", "120"], timeout=0.3)
    assert result.returncode == TIMED_OUT and "timed out after 0.3 s" in result.stderr
    assert time.monotonic() - started < 30  # killed, not waited for (a correctness bound)


def test_a_started_command_runs_beside_us_until_its_result_is_asked_for(tmp_path):
    marker = tmp_path / "started"
    command = CommandRunner().start(["sh", "-c", f"echo > {marker}; sleep 0.5; echo finished"])
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert marker.exists()
    assert command.result(timeout=30).stdout == "finished\n"
    assert command.result(timeout=30).stdout == "finished\n"  # collected once, kept


def test_abandoning_a_finished_command_is_harmless():
    command = CommandRunner().start(["true"])
    assert command.result(timeout=30).ok
    command.abandon()


def test_the_codes_of_a_command_that_did_not_run_are_the_shells_and_timeouts():
    # what an operator reading a journal or a log already knows: 127 not found (sh), 124 timed out (timeout(1))
    assert CommandRunner().run(["nvreload-no-such-binary"]).returncode == 127
    assert CommandRunner().run(["sh", "-c", "nvreload-no-such-binary"]).returncode == 127
    assert CommandRunner().run(["sleep", "5"], timeout=0.1).returncode == 124
