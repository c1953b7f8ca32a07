"""What the fuzz tests share: one fixed budget, the errors a parser may raise, a snapshot held in
memory, and strategies that build near-valid node input by mutating real lines.

Mutations of real lines (a digit run replaced by `²`, a separator dropped, a field repeated, a line
cut short) reach far deeper into a parser than random text, which its first check rejects.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import types
import typing
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from nvreload.errors import ModuleFileError, NvreloadError
from nvreload.rootfs import RootFS

# derandomize: CI sees the same examples on every run (a failure is reproducible, never flaky);
# no database: nothing is written into the checkout. The budget keeps the whole fuzz set near 30 s.
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)

# The errors a parser of node input may raise: the project's own. ModuleFileError is the one that is
# not an NvreloadError (read/on_disk.py records it as evidence).
PROJECT_ERRORS = (NvreloadError, ModuleFileError)

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "h100-580-no-unload"

# Values that break parsers: Unicode digits pass str.isdigit() but not int(), \x85 and \u2028 end a
# line for str.splitlines() but not for split("\n"), markup, separators doubled or missing.
TRICKY = (
    "",
    " ",
    "\t",
    "-",
    "--",
    "(",
    ")",
    ":",
    "::",
    "=",
    "==",
    ",",
    ";",
    ".",
    "..",
    "/",
    "\x00",
    "\r",
    "\x85",
    "\u2028",
    "\x1c",
    "\ufffd",
    "é",
    "[/]",
    "<",
    ">",
    "&",
    "&amp;",
    "]]>",
    '"',
    "NVRM:",
    "Xid",
    "nvidia",
    "Live",
    "Character devices:",
    "Block devices:",
)
# What a number field may hold instead: digits that str.isdigit() accepts and int() does not
# (superscripts, circled), digits int() accepts (Arabic-Indic, fullwidth), signs, widths no fixed-size
# field has.
NUMBERS = (
    "²",
    "³⁴",
    "①",
    "₅",
    "٣",
    "１",
    "",
    "-1",
    "0",
    "00",
    "0x",
    "0x1f",
    "0xffffffffffffffff",
    "99999999999999999999999",
    "1e9",
    "nan",
    "1.5",
    "+7",
    " 7",
)
_TOKEN = re.compile(r"(\s+|[:=,;()\[\]/<>\"'.])")
_DIGITS = re.compile(r"\d+")


def fixture_lines(rel: str) -> list[str]:
    return (FIXTURE / rel).read_text(errors="replace").splitlines()


@st.composite
def mutated_line(draw: st.DrawFn, line: str) -> str:
    """`line` with its numbers swapped for hostile ones, or up to three token edits, or cut short."""
    if _DIGITS.search(line) and draw(st.booleans()):
        number = draw(st.sampled_from(NUMBERS))
        return _DIGITS.sub(lambda _: number, line)
    tokens = [t for t in _TOKEN.split(line) if t] or [""]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(tokens) - 1)) if tokens else 0
        op = draw(st.sampled_from(("replace", "insert", "delete", "repeat", "text", "cut")))
        if op == "replace" and tokens:
            tokens[i] = draw(st.sampled_from(NUMBERS if tokens[i].isdigit() else TRICKY))
        elif op == "insert":
            tokens.insert(i, draw(st.sampled_from(TRICKY)))
        elif op == "delete" and tokens:
            del tokens[i]
        elif op == "repeat" and tokens:
            tokens[i] = tokens[i] * draw(st.integers(2, 40))
        elif op == "text" and tokens:
            tokens[i] = draw(st.text(max_size=12))
        elif op == "cut":
            tokens = tokens[:i]
    return "".join(tokens)


@st.composite
def mutated_document(draw: st.DrawFn, documents: tuple[list[str], ...], edits: int = 4) -> str:
    """One of the real documents with a few of its lines mutated, dropped or repeated: its structure
    (sections, the order of a log) mostly survives, so the parser gets past its first checks."""
    out = list(draw(st.sampled_from(documents)))
    for _ in range(draw(st.integers(1, edits))):
        if not out:
            break
        i = draw(st.integers(0, len(out) - 1))
        op = draw(st.sampled_from(("mutate", "mutate", "mutate", "delete", "repeat")))
        if op == "mutate":
            out[i] = draw(mutated_line(out[i]))
        elif op == "delete":
            del out[i]
        else:
            out.insert(i, out[i])
    return draw(st.sampled_from(("\n", "\r\n", "\n\n"))).join(out)


def node_text(*documents: list[str], max_size: int = 2000) -> st.SearchStrategy[str]:
    """Arbitrary text, a real document mutated, or real lines mutated and shuffled together.
    Give a small document of the lines that matter beside a long real one: edits land on them."""
    lines = [line for document in documents for line in document]
    shuffled = st.lists(st.sampled_from(lines).flatmap(mutated_line), max_size=30).map("\n".join)
    # the mutated documents find the most: they have two of the four shares
    return st.one_of(st.text(max_size=max_size), mutated_document(documents), mutated_document(documents), shuffled)


class Link:
    """A symlink in a MemoryRoot."""

    def __init__(self, target: str) -> None:
        self.target = target


class MemoryRoot(RootFS):
    """A snapshot held in a dict {path: bytes or Link}, directories implied by the paths: the real
    RootFS resolution, without writing a tree to disk for every example."""

    def __init__(self, files: dict[str, bytes | Link]) -> None:
        super().__init__()
        self.files = files
        self.children: dict[str, set[str]] = {"": set()}
        for path in files:
            parts = path.split("/")
            for depth in range(len(parts)):
                self.children.setdefault("/".join(parts[:depth]), set()).add(parts[depth])

    def _lkind(self, rel: str) -> str | None:
        entry = self.files.get(rel)
        if entry is not None:
            return "link" if isinstance(entry, Link) else "file"
        return "dir" if rel in self.children else None

    def _readlink(self, rel: str) -> str:
        entry = self.files[rel]
        assert isinstance(entry, Link)
        return entry.target

    def _read(self, rel: str, limit: int | None) -> bytes:
        data = self.files[rel]
        assert isinstance(data, bytes)
        return data if limit is None else data[:limit]

    def _open(self, rel: str) -> io.BytesIO:
        return io.BytesIO(self._read(rel, None))

    def _list(self, rel: str) -> list[str]:
        return list(self.children.get(rel, ()))


def load_tree(top: Path) -> dict[str, bytes | Link]:
    """Every file and symlink under `top`, by path relative to it."""
    files: dict[str, bytes | Link] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, top)
            files[rel] = Link(os.readlink(path)) if os.path.islink(path) else Path(path).read_bytes()
    return files


def conforms(value: object, hint: object = None) -> bool:
    """Whether `value` has the type its annotation promises (a dataclass: every field, deeply), so a
    parser that returns its normal type with a dict where a str belongs is caught here, not in the
    renderer that trusts it."""
    if hint is None:
        hint = type(value)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arm) for arm in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is tuple and typing.get_args(hint)[-1:] != (Ellipsis,):  # tuple[str, int]: one type per place
        args = typing.get_args(hint)
        return isinstance(value, tuple) and len(value) == len(args) and all(map(conforms, value, args))
    if origin in (tuple, list, frozenset, set):
        args = typing.get_args(hint)
        return isinstance(value, origin) and all(conforms(item, args[0]) for item in value)  # type: ignore[arg-type]
    if origin is dict:
        key, val = typing.get_args(hint)
        return isinstance(value, dict) and all(conforms(k, key) and conforms(v, val) for k, v in value.items())
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return isinstance(value, hint) and all(
            conforms(getattr(value, f.name), hints[f.name]) for f in dataclasses.fields(hint)
        )
    return isinstance(value, hint)  # type: ignore[arg-type]
