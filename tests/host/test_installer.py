"""The .run door: what is run, and what a failure says."""

from nvreload.host.installer import installer_argv, installer_failure


def test_the_installer_runs_unattended_leaves_the_load_to_nvreload_and_keeps_the_flavour():
    assert installer_argv("/x.run", "open") == ["sh", "/x.run", "--silent", "--no-questions", "--ui=none",
                                                "--skip-module-load", "--kernel-module-type=open"]
    assert "--kernel-module-type" not in " ".join(installer_argv("/x.run", None))


def test_a_failed_install_is_reported_by_its_error_line_not_the_extraction_progress():
    progress = "0% \b\b\b\b 53% \b\b\b\b 100%   MD5 checksums are OK."
    stdout = "Verifying archive integrity... OK\nERROR: Unable to build the NVIDIA kernel module.\nmore\n"
    assert installer_failure(stdout, progress) == "ERROR: Unable to build the NVIDIA kernel module."
    assert installer_failure("last words\n", progress) == "last words"
