"""What an opened input lacks, counted once when it is opened.

A dump cut short (a copy that stopped, a disk that filled), a kdump whose header says pages were
not written, pages makedumpfile left out by design (its dump level), a QEMU core without some of
its mappings: every answer built on such an input must say so. The readers (``vdecode.space.*``)
count what is missing while they open the file and hang one :class:`Absent` on the
:class:`~vdecode.space.dump.Dump` and on its address space (``space.absent``); the view, ``qmp``,
bundles, triage and the Python API all read that one value.

Kinds (``AbsentPart.kind``):

* ``cut-short``: the file ends before what its headers announce (bytes of guest RAM lost);
* ``not-written``: a kdump whose header says it is incomplete (``DUMP_DH_COMPRESSED_INCOMPLETE``);
* ``excluded``: makedumpfile's dump level left pages out **by design** (free, zero, cache or user
  pages); not damage, but a finding that needs those pages cannot be made;
* ``not-dumped``: a QEMU process core written with ``dump-guest-core=off`` (libvirt's default):
  no guest RAM, by design;
* ``source-incomplete``: a bundle made from an input that lacked bytes (the bundle remembers).
"""

from __future__ import annotations

from collections.abc import Iterable

from vdecode.frozen import record

__all__ = ("Absent", "AbsentPart", "BY_DESIGN", "absent_of", "human_bytes", "merge_ranges",
           "MAX_RANGES")

BY_DESIGN = ("excluded", "not-dumped")
MAX_RANGES = 16             # ranges kept per part (the count and the bytes cover all of them)


def human_bytes(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``; whole units without a fraction."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            v = n / size
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} bytes"


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ``(start, size)`` pairs, adjacent and overlapping ones merged."""
    out: list[list[int]] = []
    for s, n in sorted((int(s), int(n)) for s, n in ranges if n > 0):
        if out and s <= out[-1][0] + out[-1][1]:
            out[-1][1] = max(out[-1][1], s + n - out[-1][0])
        else:
            out.append([s, n])
    return [(s, n) for s, n in out]


@record
class AbsentPart:
    """One reason bytes are missing.

    :param kind: ``cut-short``, ``not-written``, ``excluded``, ``not-dumped`` or
        ``source-incomplete`` (module docstring).
    :param source: the file the bytes should have come from.
    :param reason: one line: what says the bytes should be there and where the file stops.
    :param absent_bytes: bytes of guest RAM not readable for this reason (0 when not known).
    :param ranges: the first :data:`MAX_RANGES` absent guest-physical ``(start, size)`` ranges.
    :param range_count: how many ranges there are in all.
    """

    kind: str
    source: str
    reason: str
    absent_bytes: int = 0
    ranges: tuple[tuple[int, int], ...] = ()
    range_count: int = 0

    @property
    def by_design(self) -> bool:
        return self.kind in BY_DESIGN

    def text(self) -> str:
        """One line for people."""
        what = f"{human_bytes(self.absent_bytes)} of guest RAM " if self.absent_bytes else ""
        if self.kind == "not-dumped":
            return f"{what}not in the core, by design: {self.reason}"
        if self.by_design:
            return f"{what}excluded by design: {self.reason}"
        head = {"cut-short": "absent, the dump is cut short" if what else "the dump is cut short",
                "not-written": "absent, the dump is incomplete",
                "source-incomplete": "absent from the bundle's source"}.get(self.kind, "absent")
        return f"{what}{head}: {self.reason}"

    def headline(self) -> str:
        """The line an answer starts with: ``INCOMPLETE DUMP: ...`` for bytes that should be
        there, ``absent by design: ...`` for pages left out on purpose."""
        return f"{'absent by design' if self.by_design else 'INCOMPLETE DUMP'}: {self.text()}"

    def to_json(self) -> dict:
        return {"kind": self.kind, "by_design": self.by_design, "source": self.source,
                "reason": self.reason, "absent_bytes": self.absent_bytes,
                "ranges": [{"start": s, "size": n} for s, n in self.ranges],
                "range_count": self.range_count}


@record
class Absent:
    """Everything an opened input lacks (one or more :class:`AbsentPart`)."""

    parts: tuple[AbsentPart, ...]

    @property
    def incomplete(self) -> bool:
        """Bytes are missing that should have been there (not only pages excluded by design)."""
        return any(not p.by_design for p in self.parts)

    @property
    def absent_bytes(self) -> int:
        return sum(p.absent_bytes for p in self.parts)

    def covers(self, gpa: int, n: int) -> bool:
        """Whether some byte of ``[gpa, gpa+n)`` may lie in an absent range: a listed one, past
        the last listed one when the list was cut at :data:`MAX_RANGES`, anywhere for an origin
        whose record of what it lacked is unreadable (nothing can be ruled out)."""
        for p in self.parts:
            if p.kind == "source-incomplete" and not p.ranges and not p.absent_bytes:
                return True     # an origin whose record of what it lacked is unreadable
            if p.range_count > len(p.ranges) and gpa >= p.ranges[-1][0]:
                return True
            if any(s < gpa + max(n, 1) and gpa < s + z for s, z in p.ranges):
                return True
        return False

    def lines(self) -> list[str]:
        """One line per part (without its head), as the view's JSON ``absent.lines``."""
        return [p.text() for p in self.parts]

    def to_json(self) -> dict:
        return {"incomplete": self.incomplete, "absent_bytes": self.absent_bytes,
                "parts": [p.to_json() for p in self.parts]}

    @classmethod
    def from_json(cls, doc: dict) -> "Absent":
        parts = []
        for p in doc.get("parts", []):
            parts.append(AbsentPart(str(p.get("kind", "")), str(p.get("source", "")),
                                    str(p.get("reason", "")), int(p.get("absent_bytes", 0)),
                                    tuple((int(r["start"]), int(r["size"]))
                                          for r in p.get("ranges", [])[:MAX_RANGES]),
                                    int(p.get("range_count", 0))))
        return cls(tuple(parts))


def part_of(kind: str, source: str, reason: str, ranges: Iterable[tuple[int, int]]) -> AbsentPart:
    """A part from its absent ranges (merged; the first :data:`MAX_RANGES` kept)."""
    merged = merge_ranges(ranges)
    return AbsentPart(kind, source, reason, sum(n for _, n in merged),
                      tuple(merged[:MAX_RANGES]), len(merged))


def absent_of(parts: Iterable[AbsentPart | None]) -> Absent | None:
    """The :class:`Absent` of these parts, ``None`` when nothing is missing."""
    kept = tuple(p for p in parts if p is not None)
    return Absent(kept) if kept else None
