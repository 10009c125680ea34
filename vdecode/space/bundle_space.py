"""
A bundle's guest memory: the kept pages, and why the others are missing
-----------------------------------------------------------------------
A ``vdecode bundle`` file (``docs/bundle.md``) is an ELF core with one PT_LOAD per kept run of
guest-physical memory (``p_paddr``). It reads like any ELF guest dump, except that an address
outside the kept runs says whether it was left out of the bundle or was never in the origin dump
(the ``VDB_META`` note lists the origin's RAM ranges).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from functools import cached_property

import numpy as np

from vdecode.errors import MissingData
from vdecode.sources.bundle_notes import BundleFacts, read_bundle_notes
from vdecode.sources.elf_dump import ElfFacts
from vdecode.sources.files import FileView
from vdecode.space.absence import Absent, AbsentPart, absent_of
from vdecode.space.dump import Dump
from vdecode.space.elf_space import elf_cut_part, guest_runs
from vdecode.space.ram_map import RamMap, merge_spans
from vdecode.space.segmented import SegmentedSpace

__all__ = ("BundleSpace", "open_bundle")


class BundleSpace(SegmentedSpace):
    """The kept guest-physical runs of a bundle.

    :param ram_ranges: the origin dump's RAM ``(start, size)``, for the messages of missing reads.
    :raises MissingData: from :meth:`read`/:meth:`mapping`: "... is not kept in the bundle", or
        "... was not in the origin dump either".
    """

    def __init__(self, name: str, file: FileView, starts, sizes, offsets, filesz, *,
                 ram_ranges: tuple[tuple[int, int], ...] = ()) -> None:
        super().__init__(name, file, starts, sizes, offsets, filesz, kind="guest-physical")
        self.ram_ranges = ram_ranges

    def ranges(self) -> list[tuple[int, int]]:
        """The origin dump's RAM (with the kept runs): what the bundle stands for.

        Answers that depend on where RAM ends (QEMU's "Cannot map indirect buffer", a buffer
        "outside guest RAM") come out as from the origin; :meth:`kept_ranges` is what is readable.
        """
        spans = merge_spans([(s, s + z) for s, z in (*self.ram_ranges, *self.kept_ranges())])
        return [(s, e - s) for s, e in spans]

    @cached_property
    def _origin_ram(self) -> RamMap:
        """The origin's RAM, built at the first missing read (only messages ask it). Ends are
        capped below 2**64: the note allows any u64 start and size, RamMap holds uint64."""
        return RamMap.from_pairs((s, min(s + z, (1 << 64) - 1)) for s, z in self.ram_ranges)

    def kept_ranges(self) -> list[tuple[int, int]]:
        """The kept runs, sorted ``(start, size)``, adjacent ones merged."""
        return super().ranges()

    def mapping(self, addr: int, n: int) -> Iterator[tuple[int, int, int | None]]:
        pos = addr
        try:
            for piece in super().mapping(addr, n):
                pos = piece[0] + piece[1]
                yield piece
        except MissingData:
            if pos < addr + n and self._origin_ram.holding(pos) is not None:
                why = "is not kept in the bundle"
            else:
                why = "is not in the bundle (nor was it in the origin dump)"
            raise MissingData(self.name, f"guest-physical {addr:#x}+{n} {why}"
                              + (f" (nothing at {pos:#x})" if pos != addr else "")) from None


def open_bundle(view: FileView, elf: ElfFacts) -> Dump:
    """A bundle as a :class:`Dump`: kept pages, embedded QEMU state and QMP log, provenance.

    :raises CorruptInput: a note or a program header contradicts itself (see
        :func:`~vdecode.sources.bundle_notes.read_bundle_notes`); overlapping PT_LOADs.
    """

    facts: BundleFacts = read_bundle_notes(view, elf)
    starts, sizes, offsets, filesz = guest_runs(elf, allow_overlap=False)
    space = BundleSpace(view.name, view, starts, sizes, offsets, filesz, ram_ranges=facts.ram_ranges)
    kept = int(np.sum(sizes)) if len(sizes) else 0
    info = {
        "format": "bundle",
        "file": view.name,
        "file_size": view.size,
        "machine": elf.machine,
        "bundle_version": facts.meta.get("bundle_version"),
        "created": facts.meta.get("created"),
        "vdecode_version": facts.meta.get("vdecode_version"),
        "origin": {k: v for k, v in origin.items() if k not in ("ram_ranges", "absent")}
        if isinstance(origin := facts.meta.get("origin"), dict) else origin,
        "logs": facts.meta.get("logs"),
        "options": facts.meta.get("options"),
        "kept": facts.meta.get("kept"),
        "pt_load": int(len(elf.loads)),
        "kept_bytes": kept,
        "kept_runs": len(space.kept_ranges()),
        "ram_ranges": [{"start": s, "end": s + n, "size": n} for s, n in space.ranges()],
        "qemu_state": facts.qemu is not None,
        "qmp_log_exchanges": sum(len(m.exchanges) for m in facts.qmp_log.monitors)
        if facts.qmp_log else None,
        "findings": len(facts.findings) if facts.findings is not None else None,
        "summary": facts.summary,
    }
    absent = absent_of([*_origin_absent(facts.meta.get("origin")),
                        elf_cut_part(elf, view.name) or _tail_cut(view, elf)])
    if absent is not None:
        info["incomplete"] = absent.incomplete
    return Dump(path=view.name, format="bundle", space=space, info=info, qemu=facts.qemu,
                files=[view], qmp_log=facts.qmp_log, absent=absent)


BUNDLE_TAIL = b"\0.shstrtab\0"     # vdecode.render.elf_core writes it after the last segment


def _tail_cut(view: FileView, elf: ElfFacts) -> AbsentPart | None:
    """A bundle cut inside the string table its writer ends every file with: no kept byte is
    lost, but the file is not whole (no section header names that table, so only its bytes tell)."""
    end = elf.segments_end
    tail = bytes(view.view(end, view.size - end, "bundle tail")) if view.size > end else b""
    if len(tail) < len(BUNDLE_TAIL) and BUNDLE_TAIL.startswith(tail):
        return AbsentPart("cut-short", view.name,
                          f"the file ends at offset {view.size:#x}, inside the string table its "
                          f"writer ends it with (at {end:#x}, {len(BUNDLE_TAIL)} bytes); no "
                          f"guest RAM is lost")
    return None


def _origin_absent(origin: object) -> list[AbsentPart]:
    """What the bundle's origin lacked (``origin.absent`` of ``VDB_META``): bytes it should have
    had become ``source-incomplete`` parts (the bundle cannot hold them either); pages left out
    by design stay what they were."""
    doc = origin.get("absent") if isinstance(origin, dict) else None
    if not isinstance(doc, dict):
        return []
    try:
        was = Absent.from_json(doc)
    except (TypeError, ValueError, KeyError, AttributeError):
        return [AbsentPart("source-incomplete", str(origin.get("file", "?")),
                           "the bundle's origin lacked bytes (its record of them is unreadable)")]
    return [p if p.by_design else
            dataclasses.replace(p, kind="source-incomplete",
                                reason=f"{os.path.basename(p.source)}, {p.kind}: {p.reason}")
            for p in was.parts]
