"""
Opening a dump: pick the reader from the content
------------------------------------------------
:func:`open_dump` sniffs the file (``vdecode.sources.sniff``), decompresses ``.zst``/``.gz``/``.xz``
once into a cache, and hands the mapped file to the reader of its format: kdump
(``vdecode.space.paged``), a QEMU process core (``vdecode.space.qemu_core``), a ``vdecode bundle``
file (``vdecode.space.bundle``) or an ELF guest dump,
read here into a :class:`~vdecode.space.segmented.SegmentedSpace` by ``p_paddr``.

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
import os
from typing import Any

import numpy as np

from vdecode.errors import CorruptInput, UnsupportedInput
from vdecode.sources.compressed import ProgressFn, decompress_to_cache
from vdecode.sources.elf_dump import (NT_PRSTATUS, ElfFacts, decode_vcpus, decode_vmcoreinfo,
                                      read_elf)
from vdecode.sources.files import FileView
from vdecode.sources.sniff import classify_elf, sniff
from vdecode.space.dump import Dump
from vdecode.space.segmented import SegmentedSpace

__all__ = ("open_dump", "open_dumps", "open_elf_dump", "guest_runs")

MAX_DECOMPRESS_LAYERS = 2        # a .zst of a .gz is odd but fine; deeper is a bomb


def open_dumps(paths, *, cache_dir: str | os.PathLike | None = None,
               progress: ProgressFn | None = None, binary: str | os.PathLike | None = None) -> Dump:
    """Open one input, or a QEMU process core and a guest dump of the same instant (any order,
    each recognised by its content) as one :class:`Dump`: QEMU's state from the core, guest RAM
    from the dump (:func:`~vdecode.space.dump.combine` checks that they belong together).

    :param binary: the ``qemu-system-*`` executable for a core (``--binary``).
    :raises UnsupportedInput: more than two inputs, or two that are not a core and a guest dump.
    :raises InputError: the two do not belong together.
    """
    from vdecode.space.dump import combine

    paths = list(paths)
    if not paths:
        raise UnsupportedInput("(no input)", "give a dump")
    if len(paths) > 2:
        raise UnsupportedInput(str(paths[2]), "at most two inputs: a QEMU process core and a "
                                              "guest dump of the same instant")
    opened: list[Dump] = []
    try:
        for p in paths:
            opened.append(open_dump(p, cache_dir=cache_dir, progress=progress, binary=binary))
        if len(opened) == 1:
            return opened[0]
        cores = [d for d in opened if d.format == "qemu-core"]
        guests = [d for d in opened if d.qemu is None and d.space is not None]
        if len(cores) != 1 or len(guests) != 1:
            kinds = ", ".join(f"{d.path} ({d.format})" for d in opened)
            raise UnsupportedInput(opened[1].path, f"two inputs must be a QEMU process core and a "
                                                   f"guest dump (ELF or kdump): got {kinds}")
        return combine(cores[0], guests[0])
    except BaseException:
        for d in opened:
            d.close()
        raise


def open_dump(path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
              progress: ProgressFn | None = None, binary: str | os.PathLike | None = None) -> Dump:
    """Open any dump vdecode reads, from its content.

    :param path: the dump, possibly ``.zst``/``.gz``/``.xz``-compressed.
    :param cache_dir: where compressed dumps are decompressed (default
        :func:`~vdecode.sources.compressed.default_cache_dir`).
    :param progress: called as decompression goes on (the CLI draws a bar with it).
    :param binary: for a QEMU process core, the ``qemu-system-*`` executable to read what the
        core left out (default: the path its ``NT_FILE`` note names, if the build-id matches).
    :raises InputError: not a dump this tool reads (or unreadable).
    :raises CorruptInput: the file contradicts itself.
    :raises UnsupportedInput: a dump kind whose reader is not available.
    :return: the opened :class:`Dump`; close it (or use ``with``).
    """
    name = str(path)
    view = FileView(path)
    layers = 0
    try:
        kind = sniff(view)
        while kind in ("zstd", "gzip", "xz"):
            layers += 1
            if layers > MAX_DECOMPRESS_LAYERS:
                raise CorruptInput(name, f"more than {MAX_DECOMPRESS_LAYERS} layers of compression")
            plain = decompress_to_cache(view.path, kind, cache_dir=cache_dir, progress=progress)
            view.close()
            view = FileView(plain)
            view.name = name if layers == 1 else view.name
            kind = sniff(view)
        if kind in ("kdump", "kdump-flattened"):
            try:
                from vdecode.space.paged import open_kdump
            except ModuleNotFoundError as err:
                if err.name != "vdecode.space.paged":
                    raise
                raise UnsupportedInput(name, "kdump-compressed dumps are not readable yet "
                                             "(vdecode.space.paged is missing)") from err
            dump = open_kdump(view)
        else:
            elf = read_elf(view)
            fmt = classify_elf(elf)
            if fmt == "bundle":
                from vdecode.space.bundle import open_bundle
                dump = open_bundle(view, elf)
            elif fmt == "qemu-core":
                try:
                    from vdecode.space.qemu_core import open_qemu_core
                except ModuleNotFoundError as err:
                    if err.name != "vdecode.space.qemu_core":
                        raise
                    raise UnsupportedInput(name, "QEMU process cores are not readable yet "
                                                 "(vdecode.space.qemu_core is missing)") from err
                dump = open_qemu_core(view, elf, binary=binary)
            else:
                dump = open_elf_dump(view, elf, fmt)
    except BaseException:
        view.close()
        raise
    if layers:
        dump.info.setdefault("decompressed_to", str(view.path))
    return dump


def open_elf_dump(view: FileView, elf: ElfFacts, fmt: str | None = None) -> Dump:
    """An ELF guest dump (QEMU ``dump-guest-memory``, ``/proc/vmcore``) as a :class:`Dump`.

    :param fmt: ``"elf"``, ``"elf-paging"`` or ``"vmcore"``; default from :func:`classify_elf`.
    :raises CorruptInput: when PT_LOADs of a ``paging=false`` dump overlap.
    """
    fmt = fmt or classify_elf(elf)
    starts, sizes, offsets, filesz = guest_runs(elf, allow_overlap=fmt != "elf",
                                                tail_is_zero=fmt != "elf-paging")
    space = SegmentedSpace(view.name, view, starts, sizes, offsets, filesz, kind="guest-physical")
    return Dump(path=view.name, format=fmt, space=space, info=elf_info(view, elf, fmt, space),
                files=[view])


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
