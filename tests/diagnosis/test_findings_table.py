"""The README's findings table lists every code the diagnosis can emit, with the action it gives
(and, for the catalogue's codes, whether it blocks a reload)."""

import ast
import re
from pathlib import Path

from nvreload.diagnosis import drift, findings
from nvreload.diagnosis.messages import CODES

ROOT = Path(__file__).resolve().parents[2]


def emitted() -> dict[str, str | None]:
    """code -> action, read off findings.py and drift.py: each Finding(code, severity, message, action,
    ...) with a literal code, and the (kind, code, action, ...) rows of the GPU initialisation table."""
    out: dict[str, str | None] = {}
    for node in (
        n for source in (findings.__file__, drift.__file__) for n in ast.walk(ast.parse(Path(source).read_text()))
    ):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", None) == "Finding"
            and isinstance(node.args[0], ast.Constant)
        ):
            action = node.args[3]
            out[node.args[0].value] = action.value if isinstance(action, ast.Constant) else None
        elif (
            isinstance(node, ast.Tuple)
            and len(node.elts) == 5
            and all(isinstance(e, ast.Constant) for e in node.elts[:3])
        ):
            out[node.elts[1].value] = node.elts[2].value
    # and the codes the driver message catalogue gives by itself
    out.update({code: spec.action for code, spec in CODES.items()})
    return out


def readme_table() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Findings") : text.index("### NVML")]
    rows = re.findall(r"^\| `([a-z_]+)` \| [^|]+ \| ([^|]+) \|", section, re.MULTILINE)
    return {code: action.strip() for code, action in rows}


def test_every_code_the_diagnosis_emits_is_in_the_readme_with_its_action():
    table = readme_table()
    codes = emitted()
    assert len(codes) >= 28
    for code, action in codes.items():
        assert code in table, code
        if action is not None:
            assert table[code].startswith(action), (code, table[code])
    assert set(table) == set(codes)


def test_every_action_in_the_readme_is_one_the_diagnosis_knows():
    for code, action in readme_table().items():
        assert action.split()[0] in findings.ACTION_PRIORITY, code


def test_the_readme_says_which_catalogue_codes_block_a_reload():
    text = (ROOT / "README.md").read_text()
    for code, spec in CODES.items():
        (row,) = [line for line in text.splitlines() if line.startswith(f"| `{code}` |")]
        assert row.rstrip(" |").endswith("yes") == spec.blocks_reload, code
