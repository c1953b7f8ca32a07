"""How many nodes: a count ("3") or a share of the fleet ("25%"), and the batches Ansible's `serial`
list makes of a number of hosts. The role passes the same list to Ansible and to the plan, so the
plan's "largest batch" must be the one Ansible will really run: the rules below are Ansible's
(a percentage rounds down but is at least one host; the last entry repeats until no host is left)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from nvreload.errors import BadInputError

_AMOUNT = re.compile(r"^\s*(\d{1,6})\s*(%?)\s*$")


@dataclass(frozen=True)
class Amount:
    value: int
    percent: bool

    @classmethod
    def parse(cls, text: object, what: str) -> Amount:
        match = _AMOUNT.match(str(text))
        if match is None or isinstance(text, bool):
            raise BadInputError(f"{what}={text!r}: not a count of nodes or a percentage (e.g. 2 or 25%)")
        value, percent = int(match.group(1)), bool(match.group(2))
        if percent and value > 100:
            raise BadInputError(f"{what}={text!r}: a percentage over 100")
        return cls(value, percent)

    def of(self, total: int) -> int:
        """The number of nodes this amount is out of `total`: a percentage rounds down, yet is at
        least one node (Ansible's rule for `serial`: 10% of 4 nodes is one node, not none)."""
        if not self.percent:
            return self.value
        return int(self.value / 100 * total) or (1 if self.value else 0)

    def __str__(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)


def parse_serial(text: str, what: str = "nvreload_batches") -> list[Amount]:
    """A batch list as the role hands it over: JSON (`[1, "10%", "25%"]`), or one amount."""
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    items = value if isinstance(value, list) else [value]
    if not items:
        raise BadInputError(f"{what}: an empty list of batches")
    return [Amount.parse(item, what) for item in items]


def batch_sizes(total: int, serial: list[Amount]) -> list[int]:
    """The sizes of the batches Ansible runs `total` hosts in: entry after entry, the last one
    repeating; an entry of 0 (or 0%) takes all the hosts left."""
    sizes: list[int] = []
    left, index = total, 0
    while left > 0:
        size = serial[min(index, len(serial) - 1)].of(total)
        size = left if size <= 0 else min(size, left)
        sizes.append(size)
        left -= size
        index += 1
    return sizes
