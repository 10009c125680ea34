"""
QEMU process cores as dumps
---------------------------
A core of ``qemu-system-*`` holds two address spaces: QEMU's host-virtual memory (its PT_LOADs by
``p_vaddr``, a :class:`~vdecode.space.segmented.SegmentedSpace`) and, inside it, guest RAM.
:class:`GuestRamSpace` is the guest-physical layer on top: QEMU's own ``RAMBlock`` list and the
``MemoryRegion`` aliases that place them in the ``system`` address space (``ram-below-4g`` at 0,
``ram-above-4g`` at 4 GiB, ``pc.bios`` below 4 GiB; QEMU v7.2.0 ``hw/i386/pc.c``
``pc_memory_init``) say which guest-physical run is which host range
(``vdecode.sources.qemu_core`` finds them).

A core taken with ``dump-guest-core=off`` (QEMU marks guest RAM ``MADV_DONTDUMP``) has no guest
RAM: the dump then has ``space = None`` and still answers from QEMU's state.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import replace
from collections.abc import Iterator
from typing import Any

import numpy as np

from vdecode.errors import InputError, MissingData, VdecodeError
from vdecode.sources.elf_dump import ElfFacts
from vdecode.sources.files import FileView
from vdecode.sources.qemu_core import (CoreReader, GuestRamRun, MappedFile, QemuLayout,
                                       load_layout, read_mapped_files, read_qemu_core)
from vdecode.sources.qemu_core.process import (core_writer, find_qemu_binary, read_build_id,
                                               read_build_id_file, read_crash)
from vdecode.space.absence import Absent, absent_of, part_of
from vdecode.space.dump import Dump
from vdecode.space.segmented import SegmentedSpace, all_mapped

__all__ = ("GuestRamSpace", "HostSpace", "NO_GUEST_RAM", "attach_binary", "open_qemu_core",
           "host_space")


class GuestRamSpace:
    """Guest-physical memory translated through QEMU's RAM map into host-virtual memory.

    :param name: the core's name, for messages.
    :param host: the core's host-virtual space.
    :param runs: guest RAM runs (disjoint), each ``gpa`` → ``hva`` for ``size`` bytes.
    """

    def __init__(self, name: str, host: "HostSpace", runs: list[GuestRamRun]) -> None:
        self.name, self.host = name, host
        self.runs = sorted(runs, key=lambda r: r.gpa)
        self.starts = np.array([r.gpa for r in self.runs], dtype=np.uint64)
        self.ends = np.array([r.gpa + r.size for r in self.runs], dtype=np.uint64)
        self._starts = [r.gpa for r in self.runs]
        self._ends = [r.gpa + r.size for r in self.runs]

    def __repr__(self) -> str:
        return f"GuestRamSpace({self.name!r}, {len(self.runs)} runs)"

    def _find(self, gpa: int) -> int:
        # a handful of runs: bisect on a list beats a numpy call per read
        i = bisect.bisect_right(self._starts, gpa) - 1
        return i if i >= 0 and gpa < self._ends[i] else -1

    def translate(self, gpa: int, n: int) -> Iterator[tuple[int, int, int]]:
        """``(gpa, size, hva)`` pieces covering ``[gpa, gpa+n)``.

        :raises MissingData: at the first byte that is not guest RAM.
        """
        pos, end, i = gpa, gpa + n, self._find(gpa)
        while pos < end:
            if i < 0 or i >= len(self.runs) or pos < self.runs[i].gpa or \
                    pos >= self.runs[i].gpa + self.runs[i].size:
                raise MissingData(self.name, f"guest-physical {gpa:#x}+{n} is not guest RAM"
                                  + (f" (nothing at {pos:#x})" if pos != gpa else ""))
            r = self.runs[i]
            piece = min(end, r.gpa + r.size) - pos
            yield pos, piece, r.hva + pos - r.gpa
            pos, i = pos + piece, i + 1

    def read(self, gpa: int, n: int) -> bytes | memoryview:
        """``n`` bytes at ``gpa``; zero-copy when one RAM run and one core segment hold them."""
        i = self._find(gpa)
        if i >= 0 and gpa + n <= self._ends[i]:
            try:
                return self.host.read(self.runs[i].hva + gpa - self._starts[i], n)
            except MissingData as err:
                raise MissingData(self.name, f"guest-physical {gpa:#x}+{n} is guest RAM that the "
                                             f"core does not hold") from err
        pieces = list(self.translate(gpa, n))
        try:
            if len(pieces) == 1:
                return self.host.read(pieces[0][2], n)
            return b"".join(bytes(self.host.read(h, z)) for _, z, h in pieces)
        except MissingData as err:
            raise MissingData(self.name, f"guest-physical {gpa:#x}+{n} is guest RAM that the "
                                         f"core does not hold") from err

    def is_present(self, gpa: int, n: int) -> bool:
        try:
            return all(self.host.is_present(h, z) for _, z, h in self.translate(gpa, n))
        except MissingData:
            return False

    def ranges(self) -> list[tuple[int, int]]:
        """The guest RAM runs whose bytes the core holds, merged where adjacent."""
        out: list[tuple[int, int]] = []
        for r in self.runs:
            if not self.host.is_present(r.hva, r.size):
                continue
            if out and out[-1][0] + out[-1][1] == r.gpa:
                out[-1] = (out[-1][0], out[-1][1] + r.size)
            else:
                out.append((r.gpa, r.size))
        return out

    def mapping(self, gpa: int, n: int) -> Iterator[tuple[int, int, int | None]]:
        """``(gpa, size, file offset)`` pieces (offset ``None`` for zero-filled core bytes)."""
        for g, z, h in self.translate(gpa, n):
            for hv, hz, off in self.host.mapping(h, z):
                yield g + (hv - h), hz, off


class HostSpace:
    """QEMU's host-virtual memory in a core: the bytes it holds, and the mappings it left out.

    A PT_LOAD's ``p_memsz`` beyond its ``p_filesz`` is memory the process had and the core's
    writer did not dump (the kernel's ``coredump_filter`` leaves file-backed ``.text``/``.rodata``
    out and keeps one page of each ELF mapping; ``MADV_DONTDUMP`` guest RAM gives ``p_filesz``
    0). Those bytes are *absent*, not zero: reading them raises :class:`MissingData` saying so.
    :meth:`attach_file` lets an executable stand in for its own absent mappings (the
    ``NT_FILE`` entries that map it), once its build-id is known to be the core's.

    :param name: the core's name, for messages.
    :param view: the mapped core.
    :param elf: the core's ELF facts (PT_LOADs by ``p_vaddr``).
    """

    kind = "host-virtual"

    def __init__(self, name: str, view: FileView, elf: ElfFacts) -> None:
        self.name = name
        loads = elf.held_loads()        # a core cut short: the rest of a segment is absent
        loads = loads[loads["p_memsz"] > 0]
        held = loads[loads["p_filesz"] > 0]
        self.held = SegmentedSpace(name, view, held["p_vaddr"], held["p_filesz"], held["p_offset"],
                                   held["p_filesz"], kind="host-virtual")
        gap = loads[loads["p_memsz"] > loads["p_filesz"]]
        order = np.argsort(gap["p_vaddr"], kind="stable")
        self.absent_starts = (gap["p_vaddr"] + gap["p_filesz"])[order].astype(np.uint64)
        self.absent_ends = (gap["p_vaddr"] + gap["p_memsz"])[order].astype(np.uint64)
        self.backing: SegmentedSpace | None = None     # an executable standing in for its mappings
        self.backing_path: str | None = None

    def __repr__(self) -> str:
        return f"HostSpace({self.name!r}, {len(self.absent_starts)} absent mappings)"

    def attach_file(self, file: FileView, mappings: list[tuple[int, int, int]]) -> int:
        """Let ``file`` give the bytes of its absent mappings ``(start, end, file_offset)``.

        :return: how many absent bytes it now gives.
        """
        rows = [(s, min(e, s + max(0, file.size - o)), o) for s, e, o in mappings if o < file.size]
        rows = sorted((s, e, o) for s, e, o in rows if e > s)
        self.backing = SegmentedSpace(file.name, file, [r[0] for r in rows],
                                      [r[1] - r[0] for r in rows], [r[2] for r in rows],
                                      [r[1] - r[0] for r in rows], kind="host-virtual")
        self.backing_path = file.name
        return sum(self._absent_in(s, e - s) for s, e, _ in rows)

    def _absent_in(self, addr: int, n: int) -> int:
        """Bytes of ``[addr, addr+n)`` inside an absent mapping."""
        lo = np.maximum(self.absent_starts, np.uint64(addr))
        hi = np.minimum(self.absent_ends, np.uint64(addr + n))
        return int(np.sum(np.where(hi > lo, hi - lo, 0)))

    def absent_mapping(self, addr: int) -> tuple[int, int] | None:
        """``[start, end)`` of the left-out mapping holding ``addr``, or ``None``."""
        i = int(np.searchsorted(self.absent_starts, np.uint64(addr), side="right")) - 1
        if i >= 0 and addr < int(self.absent_ends[i]):
            return int(self.absent_starts[i]), int(self.absent_ends[i])
        return None

    def absent_ranges(self) -> list[tuple[int, int]]:
        """Every left-out ``(start, size)``, as the program headers give them."""
        return [(int(s), int(e - s)) for s, e in zip(self.absent_starts, self.absent_ends)]

    def _pieces(self, addr: int, n: int) -> Iterator[tuple[int, int, int | None, bool]]:
        """``(addr, size, core file offset or None, from the core)`` covering ``[addr, addr+n)``.

        :raises MissingData: at the first byte neither the core nor an attached file holds.
        """
        pos, end = addr, addr + n
        while pos < end:
            got = False
            for space, own in ((self.held, True), (self.backing, False)):
                if space is None:
                    continue
                i = space._find(pos)
                if i < 0:
                    continue
                piece = min(end, int(space.ends[i])) - pos
                off = int(space.offsets[i]) + pos - int(space.starts[i])
                yield pos, piece, off if own else None, own
                pos += piece
                got = True
                break
            if not got:
                raise self._missing(addr, n, pos)

    def _missing(self, addr: int, n: int, pos: int) -> MissingData:
        at = f" (nothing at {pos:#x})" if pos != addr else ""
        gap = self.absent_mapping(pos)
        if gap is not None:
            return MissingData(self.name, f"host-virtual {addr:#x}+{n}{at} is mapped "
                                          f"[{gap[0]:#x}, {gap[1]:#x}) but not in this core "
                                          f"(FileSiz 0: its writer left the mapping out)")
        return MissingData(self.name, f"host-virtual {addr:#x}+{n}{at} is not mapped in this core")

    def read(self, addr: int, n: int) -> bytes | memoryview:
        """``n`` bytes at ``addr`` (zero-copy inside one run of the core).

        :raises MissingData: some byte is absent from the core (and no attached file has it),
            or not mapped at all; the message says which.
        """
        try:
            return self.held.read(addr, n)
        except MissingData:
            pass
        parts = []
        for pos, size, off, own in self._pieces(addr, n):
            parts.append(self.held.read(pos, size) if own else self.backing.read(pos, size))
        return parts[0] if len(parts) == 1 else b"".join(bytes(p) for p in parts)

    def is_present(self, addr: int, n: int) -> bool:
        """Whether every byte of ``[addr, addr+n)`` can be read (from the core or its binary)."""
        return self.held.is_present(addr, n) or all_mapped(self._pieces(addr, n))

    def in_core(self, addr: int, n: int) -> bool:
        """Whether the core itself holds every byte of ``[addr, addr+n)``."""
        return self.held.is_present(addr, n)

    def mapping(self, addr: int, n: int) -> Iterator[tuple[int, int, int | None]]:
        """``(addr, size, core file offset)`` pieces (offset ``None``: bytes from the binary)."""
        for pos, size, off, _ in self._pieces(addr, n):
            yield pos, size, off

    def ranges(self) -> list[tuple[int, int]]:
        return self.held.ranges()


def host_space(view: FileView, elf: ElfFacts) -> HostSpace:
    """The core's host-virtual memory: every PT_LOAD by ``p_vaddr``, absent tails kept apart."""
    return HostSpace(view.name, view, elf)


def attach_binary(host: HostSpace, files: list[MappedFile], binary: str, core_build_id: str | None,
                  override: str | os.PathLike | None = None) -> tuple[dict[str, Any], FileView | None]:
    """Let the QEMU executable stand in for its mappings the core left out (``.text``,
    ``.rodata``), when it is at hand and its build-id is the one in the core's kept first page.

    :param binary: the executable's path as ``NT_FILE`` names it.
    :param override: ``--binary PATH``: the executable to use instead of that path.
    :return: ``(facts for info, the opened file or None)``; the reason is in ``facts["binary_file"]``.
    """
    path = str(override) if override is not None else binary
    facts: dict[str, Any] = {"binary_file": None}
    # left out: a mapping whose program header says so, or one with no program header at all
    # (gdb's gcore writes none for an unmodified read-only file mapping such as .rodata)
    absent = sum(f.end - f.start for f in files
                 if f.path == binary and not host.in_core(f.start, f.end - f.start))
    if not absent:
        facts["binary_file"] = "not needed: the core holds the binary's mappings"
        return facts, None
    if core_build_id is None:
        facts["binary_file"] = f"not used: the core's first page of {binary} has no build-id"
        return facts, None
    try:
        view = FileView(path)
    except InputError as err:
        facts["binary_file"] = (f"not used: {err.reason} ({path}); names and version from the "
                                f"profile (give --binary PATH)")
        return facts, None
    try:
        file_id = read_build_id_file(view)
    except VdecodeError as err:
        view.close()
        facts["binary_file"] = f"not used: {path}: {err.reason}"
        return facts, None
    if file_id != core_build_id:
        view.close()
        facts["binary_file"] = (f"not used: {path} has build-id {file_id or 'none'}, the core's "
                                f"binary has {core_build_id}; names and version from the profile")
        return facts, None
    host.attach_file(view, [(f.start, f.end, f.file_offset) for f in files if f.path == binary])
    given = sum(min(f.end - f.start, max(0, view.size - f.file_offset)) for f in files
                if f.path == binary and not host.in_core(f.start, f.end - f.start))
    facts["binary_file"] = f"{path} (build-id matches): gives {human_bytes(given)} the core left out"
    return facts, view


def human_bytes(n: int) -> str:
    """``12.5 MiB``-style size for messages."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f} {unit}"
    return f"{n} bytes"


NO_GUEST_RAM = ("guest RAM is not in this core (QEMU ran with -machine dump-guest-core=off, "
                "libvirt's default, so it was MADV_DONTDUMP): QEMU's state answers, queue elements "
                "and chains need a guest dump of the same instant: vdecode qmp CORE GUEST_DUMP "
                "(dump-guest-memory ELF or kdump, or virsh dump --memory-only)")


def open_qemu_core(view: FileView, elf: ElfFacts, *, layout: QemuLayout | None = None,
                   check_build_id: bool | str = True,
                   binary: str | os.PathLike | None = None) -> Dump:
    """A QEMU process core as a :class:`Dump`: guest RAM (if the core has it) and QEMU's state.

    :param layout: the struct layout profile (default: the shipped one for x86_64).
    :param check_build_id: ``"strict"`` refuses a binary whose build-id the profile does not
        list; otherwise such a core is read with the profile and a warning is kept in ``info``.
    :param binary: the ``qemu-system-*`` executable (``--binary``), instead of the path the core's
        ``NT_FILE`` note names; used only when its build-id is the core's.
    :raises UnsupportedInput: not a QEMU core, or a build the profile is not for.
    :raises CorruptInput: a profile invariant fails on this core (message names profile and check).
    """
    layout = layout or load_layout("x86_64")
    host = host_space(view, elf)
    files = read_mapped_files(view, elf)
    exe, base, _ = find_qemu_binary(host, files)
    core_id = read_build_id(CoreReader(host, layout), base)
    bin_facts, bin_view = attach_binary(host, files, exe, core_id, binary)
    opened = [view] + ([bin_view] if bin_view is not None else [])
    try:
        facts = read_qemu_core(view, elf, host, layout, check_build_id=check_build_id)
    except BaseException:
        if bin_view is not None:
            bin_view.close()
        raise
    if bin_view is not None:
        # the build's own strings (gcore keeps no .rodata: the executable has them)
        from vdecode.sources.qemu_core.strings import build_labels
        labels = build_labels(bin_view.name, facts.state.release)
        if labels:
            facts = replace(facts, state=replace(facts.state, labels=labels,
                                                 labels_from=bin_view.name))
    present = [r for r in facts.guest_ram if host.in_core(r.hva, r.size)]
    # absent runs stay in the map, so reading them says "not in the core", not "not RAM"
    space = GuestRamSpace(view.name, host, facts.guest_ram) if present else None
    warnings = list(facts.info.get("warnings", []))
    if space is None:
        warnings.append(NO_GUEST_RAM)
    absent = _absent_mappings(host, files)
    info = {
        "format": "qemu-core",
        "file": view.name,
        "file_size": view.size,
        "core_writer": core_writer(elf),
        "machine": elf.machine,
        "pt_load": int(len(elf.loads)),
        **read_crash(view, elf),
        **{k: (f"{v:#x}" if k in ("virtio_list", "virtio_device_names") and v is not None else v)
           for k, v in facts.info.items()
           if k not in ("devices_not_on_list", "warnings", "qemu_version_shown")},
        **bin_facts,
        "warnings": warnings,
        "devices_not_on_list": [f"{v:#x}" for v in facts.info["devices_not_on_list"]],
        "qemu_version": facts.info.get("qemu_version_shown") or (
            ".".join(map(str, facts.state.qemu_version)) if facts.state.qemu_version else None),
        "package": facts.state.package,
        "absent_mappings": absent,
        "ram_blocks": [{"idstr": b.idstr, "host": f"{b.host:#x}", "offset": b.offset,
                        "used_length": b.used_length, "max_length": b.max_length,
                        "in_core": host.in_core(b.host, b.used_length)}
                       for b in facts.ram_blocks],
        "ram_ranges": [{"start": r.gpa, "end": r.gpa + r.size, "size": r.size, "block": r.block,
                        "region": r.region, "hva": f"{r.hva:#x}", "in_core": r in present}
                       for r in facts.guest_ram],
        "guest_ram": ("present" if len(present) == len(facts.guest_ram) else "partly present")
        if space is not None else "absent (dump-guest-core=off: give a guest dump as well)",
        "devices": len(facts.state.devices),
    }
    return Dump(path=view.name, format="qemu-core", space=space, info=info, qemu=facts.state,
                files=opened, absent=_absent_guest_ram(view, elf, host, facts.guest_ram, space),
                queue_arrays=facts.queue_arrays, host=host)


def _absent_guest_ram(view: FileView, elf: ElfFacts, host: HostSpace, runs: list[GuestRamRun],
                      space: GuestRamSpace | None) -> Absent | None:
    """What the core lacks of guest RAM: a core cut short loses the tails of its segments (guest
    RAM among them); a core written with ``dump-guest-core=off`` holds none of it, by design."""
    parts = []
    if elf.cut_loads():
        lost = []
        for r in runs:          # guest RAM whose host pages fall in a mapping the core lacks
            lo = np.maximum(host.absent_starts, np.uint64(r.hva))
            hi = np.minimum(host.absent_ends, np.uint64(r.hva + r.size))
            lost += [(r.gpa + int(a) - r.hva, int(b - a)) for a, b in zip(lo, hi) if b > a]
        parts.append(part_of("cut-short", view.name,
                             f"the file ends at offset {view.size:#x}, its program headers say "
                             f"{elf.segments_end:#x}; {len(elf.cut_loads())} segment(s) of QEMU's "
                             f"memory lose their tail", lost))
    elif space is None and runs:
        parts.append(part_of("not-dumped", view.name,
                             "QEMU ran with dump-guest-core=off (guest RAM was MADV_DONTDUMP)",
                             [(r.gpa, r.size) for r in runs]))
    return absent_of(parts)


def _absent_mappings(host: HostSpace, files: list[MappedFile]) -> list[dict[str, Any]]:
    """The mappings the core left out, by file (``NT_FILE``) or ``[anon]``, largest first."""
    by: dict[str, list[int]] = {}
    for start, size in host.absent_ranges():
        owner = next((f.path for f in files if f.start <= start < f.end), "[anonymous]")
        row = by.setdefault(owner, [0, 0])
        row[0] += 1
        row[1] += size
    backed = host.backing_path
    return [{"file": k, "mappings": v[0], "bytes": v[1],
             **({"from_binary": True} if backed and k != "[anonymous]" and
                host.backing is not None and any(f.path == k for f in files) and
                k == _nt_path(files, host) else {})}
            for k, v in sorted(by.items(), key=lambda kv: -kv[1][1])]


def _nt_path(files: list[MappedFile], host: HostSpace) -> str | None:
    """The NT_FILE path whose mappings the attached file stands in for."""
    if host.backing is None:
        return None
    start = int(host.backing.starts[0]) if len(host.backing.starts) else None
    return next((f.path for f in files if start is not None and f.start == start), None)
