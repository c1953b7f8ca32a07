"""The upgrade policy file (nvreload/policy.py): report unless it says when-idle; wrong is an error."""

import pytest

from nvreload.errors import BadInputError, ExitCode
from nvreload.policy import config_path, load_policy


def test_no_file_means_report_the_safe_default(tmp_path):
    policy = load_policy(str(tmp_path / "absent.conf"))
    assert policy.on_upgrade == "report" and policy.source is None


def test_when_idle_with_comments_quotes_and_blank_lines(tmp_path):
    path = tmp_path / "nvreload.conf"
    path.write_text('# the hooks may reload an idle node\n\n  on_upgrade = "when-idle"   # jobs first\n')
    assert load_policy(str(path)).on_upgrade == "when-idle"


@pytest.mark.parametrize(
    "content, says",
    [
        ("on_upgrade = always\n", "nvreload.conf:1: on_upgrade must be one of report, when-idle"),
        ("# x\non_upgrade report\n", "nvreload.conf:2: not an nvreload setting (expected 'key = value')"),
        ("on_upgrades = report\n", "nvreload.conf:1: an unknown setting (known: on_upgrade)"),
        ("on_upgrade = report\non_upgrade = when-idle\n", "nvreload.conf:2: on_upgrade is set twice"),
    ],
)
def test_a_wrong_file_is_bad_input_naming_the_line(tmp_path, content, says):
    path = tmp_path / "nvreload.conf"
    path.write_text(content)
    with pytest.raises(BadInputError) as raised:
        load_policy(str(path))
    assert says in raised.value.message and raised.value.exit_code == ExitCode.BAD_INPUT


def test_a_file_too_large_to_be_a_configuration_is_refused(tmp_path):
    path = tmp_path / "nvreload.conf"
    path.write_text("# " + "x" * 70000 + "\n")
    with pytest.raises(BadInputError, match="larger than"):
        load_policy(str(path))


def test_the_environment_names_another_file():
    assert config_path({"NVRELOAD_CONFIG": "/srv/policy.conf"}) == "/srv/policy.conf"
    assert config_path({}) == "/etc/nvreload/nvreload.conf"
