"""The exit codes the README documents are the ones nvreload uses: its table and ExitCode, both ways."""

import re
from pathlib import Path

from nvreload.errors import ExitCode, NvreloadError

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_exit_codes() -> dict[int, str]:
    """code -> meaning, from the table under `### Exit codes` (a row may name several codes: 1, 2, 3)."""
    section = README.read_text().split("### Exit codes", 1)[1].split("\n#", 1)[0]
    table: dict[int, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not re.match(r"^\d", cells[0]):
            continue
        for code in re.findall(r"\d+", cells[0].split(" or ")[0] if "death" in cells[0] else cells[0]):
            table[int(code)] = cells[1]
    return table


def exit_codes() -> dict[str, int]:
    return {name: value for name, value in vars(ExitCode).items() if name.isupper()}


def test_every_exit_code_nvreload_uses_is_in_the_readme_table_and_every_row_is_one_it_uses():
    documented = readme_exit_codes()
    assert set(exit_codes().values()) == set(documented), (sorted(exit_codes().values()), sorted(documented))


def test_each_exit_code_means_in_the_readme_what_its_name_says():
    documented = readme_exit_codes()
    words = {
        "OK": "OK",
        "WARNING": "WARNING",
        "CRITICAL": "CRITICAL",
        "UNKNOWN": "UNKNOWN",
        "ROLLED_BACK": "rolled back",
        "NEEDS_REBOOT": "needs reboot",
        "PARTIAL": "partial",
        "RELOAD_PENDING": "reload pending",
        "USAGE": "usage error",
        "BAD_INPUT": "bad input",
        "INTERNAL": "internal error",
        "BUSY": "busy",
        "REFUSED": "refused",
        "INTERRUPTED": "SIGINT",
    }
    assert set(words) == set(exit_codes()), "a new exit code needs its README row and a word here"
    for name, code in exit_codes().items():
        assert words[name] in documented[code], (name, code, documented[code])


def test_the_status_codes_are_the_nagios_ones_in_the_readme_row_order():
    row = next(line for line in README.read_text().splitlines() if line.startswith("| 1, 2, 3 |"))
    assert row.index("WARNING") < row.index("CRITICAL") < row.index("UNKNOWN")
    assert (ExitCode.WARNING, ExitCode.CRITICAL, ExitCode.UNKNOWN) == (1, 2, 3)


def test_every_error_class_exits_with_a_documented_code():
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    from nvreload.engine.planner import CyclicHolders

    documented = readme_exit_codes()
    classes = [NvreloadError, *subclasses(NvreloadError)]
    assert CyclicHolders in classes  # the error classes outside errors.py are counted too
    for cls in classes:
        assert cls.exit_code in documented, cls
