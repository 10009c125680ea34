"""Where guest RAM is: the one answer to "is this address (or buffer) in RAM?".

Every check of a guest-physical address against RAM (descriptor buffers outside RAM, ring areas,
the carver's link checks, a bundle's clipping, the finding that names the range a buffer is in)
asks a :class:`RamMap`, built once per address space from :meth:`AddressSpace.ranges`, so the
rule — a buffer is in RAM when it lies wholly inside one range — is written once, vectorised.
"""

from __future__ import annotations

from bisect import bisect_right
from functools import cached_property

import numpy as np

from vdecode.frozen import record
from vdecode.space.base import AddressSpace

__all__ = ("RamMap", "merge_spans")


def merge_spans(pairs) -> list[tuple[int, int]]:
    """Sorted disjoint ``(start, end)`` covering ``pairs`` (any order; empty ones dropped,
    overlapping or touching ones joined).

    >>> merge_spans([(5, 8), (0, 2), (2, 3), (7, 9), (4, 4)])
    [(0, 3), (5, 9)]
    """
    out: list[list[int]] = []
    for s, e in sorted((int(s), int(e)) for s, e in pairs if int(e) > int(s)):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


@record(eq=False)
class RamMap:
    """Sorted, merged ``[start, end)`` ranges of guest RAM (adjacent runs joined).

    Example::

        >>> ram = RamMap.from_pairs([(0x1000, 0x2000), (0, 0x1000), (0x8000, 0x9000)])
        >>> ram.pairs(), len(ram)
        ([(0, 8192), (32768, 36864)], 2)
        >>> ram.contains(np.array([0, 0x2000, 0x8fff])).tolist()
        [True, False, True]
        >>> ram.outside(np.array([0x1ff0]), np.array([0x20])).tolist()
        [True]
        >>> ram.holding(0x8010)
        (32768, 4096)
    """

    starts: np.ndarray
    ends: np.ndarray

    @classmethod
    def from_pairs(cls, pairs) -> "RamMap":
        """From ``(start, end)`` pairs in any order, overlapping or touching ones joined."""
        rows = np.array(merge_spans(pairs), dtype=np.uint64).reshape(-1, 2)
        return cls(rows[:, 0].copy(), rows[:, 1].copy())

    @classmethod
    def of(cls, space: AddressSpace | None) -> "RamMap":
        """The RAM of ``space`` (its :meth:`~AddressSpace.ranges`); empty for no space."""
        if space is None:
            return cls.from_pairs([])
        return cls.from_pairs((int(s), int(s) + int(n)) for s, n in space.ranges())

    def __len__(self) -> int:
        return len(self.starts)

    def pairs(self) -> list[tuple[int, int]]:
        return [(int(s), int(e)) for s, e in zip(self.starts, self.ends)]

    @property
    def top(self) -> int:
        """The end of the highest range (0 without RAM)."""
        return int(self.ends[-1]) if len(self) else 0

    def _index(self, addrs: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.starts, addrs, side="right").astype(np.int64) - 1

    def contains(self, addrs: np.ndarray) -> np.ndarray:
        """Which addresses lie in RAM."""
        addrs = np.asarray(addrs, dtype=np.uint64)
        if not len(self):
            return np.zeros(addrs.shape, dtype=bool)
        i = self._index(addrs)
        return (i >= 0) & (addrs < self.ends[np.maximum(i, 0)])

    def outside(self, addr: np.ndarray, length: np.ndarray) -> np.ndarray:
        """Which buffers ``[addr, addr+length)`` are not wholly inside one range (an end that
        wraps past 2**64 is outside). Without RAM nothing is outside: nothing can be checked."""
        addr = np.asarray(addr, dtype=np.uint64)
        if not len(self):
            return np.zeros(addr.shape, dtype=bool)
        end = addr + np.asarray(length, dtype=np.uint64)
        i = self._index(addr)
        ok = (i >= 0) & (end >= addr)
        ok &= end <= self.ends[np.maximum(i, 0)]
        return ~ok

    @cached_property
    def _bounds(self) -> tuple[list[int], list[int]]:
        return self.starts.tolist(), self.ends.tolist()

    def holding(self, gpa: int) -> tuple[int, int] | None:
        """The ``(start, size)`` of the range holding ``gpa``, or None: the scalar check, for one
        address at a time (any int: negative or past 2**64 is in no range).

        >>> ram = RamMap.from_pairs([(0x1000, 0x2000)])
        >>> ram.holding(0x1fff), ram.holding(0x2000), ram.holding(-1), ram.holding(2**64)
        ((4096, 4096), None, None, None)
        """
        starts, ends = self._bounds
        i = bisect_right(starts, gpa) - 1
        if i < 0 or gpa >= ends[i]:
            return None
        return starts[i], ends[i] - starts[i]
