"""Which transaction numbers a terminal has sent, kept as merged ranges.

Terminals number their transactions; a number never received between the lowest
and the highest seen is a transaction that may have been lost. Ranges keep this
small however many transactions a terminal sends, as long as few are missing.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field


@dataclass(slots=True)
class Sequences:
    #: Disjoint, non-adjacent, sorted inclusive ranges of received sequence numbers.
    ranges: list[list[int]] = field(default_factory=list)

    def add(self, sequence: int) -> bool:
        """Record ``sequence``; False when it was already received."""
        ranges = self.ranges
        i = bisect_right(ranges, sequence, key=lambda r: r[0])
        if i and ranges[i - 1][1] >= sequence:
            return False
        joins_left = i > 0 and ranges[i - 1][1] == sequence - 1
        joins_right = i < len(ranges) and ranges[i][0] == sequence + 1
        if joins_left and joins_right:
            ranges[i - 1][1] = ranges[i][1]
            del ranges[i]
        elif joins_left:
            ranges[i - 1][1] = sequence
        elif joins_right:
            ranges[i][0] = sequence
        else:
            ranges.insert(i, [sequence, sequence])
        return True

    @property
    def first(self) -> int | None:
        return self.ranges[0][0] if self.ranges else None

    @property
    def last(self) -> int | None:
        return self.ranges[-1][1] if self.ranges else None

    @property
    def received(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.ranges)

    @property
    def missing(self) -> int:
        """Numbers between the first and the last received that never arrived."""
        if not self.ranges:
            return 0
        return self.ranges[-1][1] - self.ranges[0][0] + 1 - self.received

    def gaps(self, limit: int | None = None) -> list[tuple[int, int]]:
        """The missing numbers as inclusive ranges, lowest first."""
        holes = [(a[1] + 1, b[0] - 1) for a, b in zip(self.ranges, self.ranges[1:], strict=False)]
        return holes if limit is None else holes[:limit]
