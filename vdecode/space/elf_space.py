"""
An ELF guest dump as an address space: PT_LOADs by ``p_paddr``
--------------------------------------------------------------
QEMU's ``dump-guest-memory`` ELF (``paging=false`` or ``true``) and a kernel's ``/proc/vmcore``
are read into a :class:`~vdecode.space.segmented.SegmentedSpace`; a ``vdecode bundle`` file
(``vdecode.space.bundle_space``) uses the same runs.

Overlapping PT_LOADs: QEMU's ``paging=false`` dump writes each guest RAM block once, so an
overlap there is corruption. A ``paging=true`` dump has one PT_LOAD per guest-virtual mapping, and
two mappings of one physical page point at the same file bytes; a ``/proc/vmcore`` has the kernel
text segment inside the RAM segment that holds it. There, where segments overlap, file bytes beat
the zero-filled ``p_memsz`` tail, and among file bytes the earlier program header wins.

``p_memsz`` beyond ``p_filesz`` reads as zeros (the ELF rule), except in a ``paging=true`` dump:
there QEMU's ``get_offset_range`` gives a mapping of non-RAM memory (MMIO) ``p_filesz`` 0, so those
bytes are not in the dump and reading them raises ``MissingData``.
"""

from __future__ import annotations

import heapq
from typing import Any

import numpy as np

from vdecode.errors import CorruptInput
from vdecode.sources.elf_dump import NT_PRSTATUS, ElfFacts, decode_vcpus, decode_vmcoreinfo
from vdecode.sources.files import FileView
from vdecode.sources.sniff import classify_elf
from vdecode.space.absence import AbsentPart, absent_of, part_of
from vdecode.space.dump import Dump
from vdecode.space.segmented import SegmentedSpace

__all__ = ("open_elf_dump", "guest_runs", "elf_info")


def open_elf_dump(view: FileView, elf: ElfFacts, fmt: str | None = None) -> Dump:
    """An ELF guest dump (QEMU ``dump-guest-memory``, ``/proc/vmcore``) as a :class:`Dump`.

    :param fmt: ``"elf"``, ``"elf-paging"`` or ``"vmcore"``; default from :func:`classify_elf`.
    :raises CorruptInput: when PT_LOADs of a ``paging=false`` dump overlap.
    """
    fmt = fmt or classify_elf(elf)
    starts, sizes, offsets, filesz = guest_runs(elf, allow_overlap=fmt != "elf",
                                                tail_is_zero=fmt != "elf-paging")
    space = SegmentedSpace(view.name, view, starts, sizes, offsets, filesz, kind="guest-physical")
    info = elf_info(view, elf, fmt, space)
    absent = absent_of([elf_cut_part(elf, view.name)])
    if absent is not None:
        info["incomplete"] = True
    return Dump(path=view.name, format=fmt, space=space, info=info, files=[view], absent=absent)


def elf_cut_part(elf: ElfFacts, source: str, what: str = "guest RAM") -> AbsentPart | None:
    """The guest-physical bytes (``p_paddr``) an ELF file cut short lacks, or ``None``."""
    cut = elf.cut_loads()
    if not cut:
        if elf.cut_short:       # only a table after the segments (a string table) is cut
            return part_of("cut-short", source,
                           f"the file ends at offset {elf.file_size:#x}, its section headers say "
                           f"{elf.declared_end:#x}; no {what} is lost", [])
        return None
    ranges = [(start + kept, size - kept) for _, start, size, kept in cut if size > kept]
    return part_of("cut-short", source,
                   f"the file ends at offset {elf.file_size:#x}, its program headers say "
                   f"{elf.segments_end:#x}; {len(cut)} PT_LOAD segment(s) of {what} lose their "
                   f"tail", ranges)


def guest_runs(elf: ElfFacts, *, allow_overlap: bool, tail_is_zero: bool = True) -> tuple[np.ndarray, ...]:
    """Disjoint runs ``(starts, sizes, offsets, filesz)`` by ``p_paddr`` from the PT_LOADs.

    :param tail_is_zero: whether ``p_memsz`` beyond ``p_filesz`` reads as zeros (the ELF rule);
        false for QEMU ``paging=true`` dumps, where it is memory outside guest RAM (no bytes).

    :raises CorruptInput: on overlap when ``allow_overlap`` is false, or on a segment whose
        ``p_paddr + p_memsz`` wraps.
    """
    loads, idx = elf.loads, elf.load_indices
    if not tail_is_zero:
        loads = loads.copy()
        loads["p_memsz"] = loads["p_filesz"]
    keep = loads["p_memsz"] > 0
    loads, idx = loads[keep], idx[keep]
    start, memsz = loads["p_paddr"], loads["p_memsz"]
    end = start + memsz
    wrap = np.flatnonzero(end < start)
    if wrap.size:
        i = int(idx[wrap[0]])
        raise CorruptInput(elf.source, f"program header {i}: p_paddr {int(start[wrap[0]]):#x} + "
                                       f"p_memsz {int(memsz[wrap[0]]):#x} wraps the address space",
                           offset=_phdr_at(elf, i))
    order = np.argsort(start, kind="stable")
    s, e = start[order], end[order]
    overlap = np.flatnonzero(s[1:] < np.maximum.accumulate(e)[:-1]) if len(s) > 1 else np.array([])
    if not overlap.size:
        return s, memsz[order], loads["p_offset"][order], loads["p_filesz"][order]
    if not allow_overlap:
        k = int(overlap[0])
        j = int(np.argmax(e[:k + 1] > s[k + 1]))            # the first earlier run still open
        x, y = sorted((int(order[j]), int(order[k + 1])), key=lambda r: int(idx[r]))
        raise CorruptInput(elf.source, f"program header {int(idx[y])}: PT_LOAD [{int(start[y]):#x}, "
                                       f"{int(end[y]):#x}) overlaps program header {int(idx[x])} "
                                       f"[{int(start[x]):#x}, {int(end[x]):#x}) in a paging=false dump",
                           offset=_phdr_at(elf, int(idx[y])))
    return _resolve_overlaps(loads)


def _resolve_overlaps(loads: np.ndarray) -> tuple[np.ndarray, ...]:
    """File bytes beat zero fill; among equals the earlier program header wins (a sweep)."""
    # Each segment becomes up to two pieces: file-backed [p, p+filesz) and zero [p+filesz, p+memsz).
    pieces = []   # (priority, start, end, offset or -1)
    for k, (p, off, fs, ms) in enumerate(zip(loads["p_paddr"].tolist(), loads["p_offset"].tolist(),
                                              loads["p_filesz"].tolist(), loads["p_memsz"].tolist())):
        if fs:
            pieces.append((k, p, p + fs, off))
        if ms > fs:
            pieces.append((len(loads) + k, p + fs, p + ms, -1))
    bounds = sorted({b for _, s, e, _ in pieces for b in (s, e)})
    pieces.sort(key=lambda t: t[1])
    out_s, out_z, out_o, out_f = [], [], [], []
    active: list[tuple[int, int, int, int]] = []
    j = 0
    for lo, hi in zip(bounds, bounds[1:]):
        while j < len(pieces) and pieces[j][1] <= lo:
            heapq.heappush(active, pieces[j])
            j += 1
        while active and active[0][2] <= lo:     # drop expired pieces that reached the top
            heapq.heappop(active)
        if not active:
            continue
        _, s, _, off = active[0]                # the top covers [lo, hi): every end is a bound
        if off >= 0:
            o, f = off + (lo - s), hi - lo
        else:
            o, f = 0, 0
        if out_s and out_s[-1] + out_z[-1] == lo and (
                (f == 0 and out_f[-1] == 0) or (f and out_f[-1] == out_z[-1] and out_o[-1] + out_z[-1] == o)):
            out_z[-1] += hi - lo
            out_f[-1] += f
        else:
            out_s.append(lo), out_z.append(hi - lo), out_o.append(o), out_f.append(f)
    return (np.array(out_s, np.uint64), np.array(out_z, np.uint64), np.array(out_o, np.uint64),
            np.array(out_f, np.uint64))


def _phdr_at(elf: ElfFacts, i: int) -> int:
    return elf.e_phoff + i * (56 if elf.is64 else 32)


def elf_info(view: FileView, elf: ElfFacts, fmt: str, space: SegmentedSpace) -> dict[str, Any]:
    """The facts ``vdecode info`` shows for an ELF guest dump (JSON-able)."""
    ranges = space.ranges()
    ram = sum(size for _, size in ranges)
    return {
        "format": fmt,
        "file": view.name,
        "file_size": view.size,
        "machine": elf.machine,
        "elf_class": elf.elf_class,
        "endianness": "little" if elf.little_endian else "big",
        "program_headers": elf.phnum,
        "pn_xnum": elf.pn_xnum,
        "pt_load": int(len(elf.loads)),
        "ram_ranges": [{"start": s, "end": s + n, "size": n} for s, n in ranges],
        "ram_bytes": ram,
        "page_size": 4096,
        "pages": ram // 4096,
        "vcpus": decode_vcpus(view, elf),
        "vmcoreinfo": decode_vmcoreinfo(view, elf),
        "notes": [{"name": n.name, "type": n.type, "size": n.desc_size} for n in elf.notes
                  if n.name != "CORE" or n.type != NT_PRSTATUS][:64],
    }
