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
from collections.abc import Iterator

import numpy as np

from vdecode.errors import MissingData
from vdecode.sources.elf_dump import ElfFacts
from vdecode.sources.files import FileView
from vdecode.sources.qemu_core import GuestRamRun, QemuLayout, load_layout, read_qemu_core
from vdecode.space.dump import Dump
from vdecode.space.segmented import SegmentedSpace

__all__ = ("GuestRamSpace", "open_qemu_core", "host_space")


class GuestRamSpace:
    """Guest-physical memory translated through QEMU's RAM map into host-virtual memory.

    :param name: the core's name, for messages.
    :param host: the core's host-virtual space.
    :param runs: guest RAM runs (disjoint), each ``gpa`` → ``hva`` for ``size`` bytes.
    """

    def __init__(self, name: str, host: SegmentedSpace, runs: list[GuestRamRun]) -> None:
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


def host_space(view: FileView, elf: ElfFacts) -> SegmentedSpace:
    """The core's host-virtual memory: every PT_LOAD by ``p_vaddr``."""
    loads = elf.loads
    loads = loads[loads["p_memsz"] > 0]
    return SegmentedSpace(view.name, view, loads["p_vaddr"], loads["p_memsz"], loads["p_offset"],
                          loads["p_filesz"], kind="host-virtual")


def open_qemu_core(view: FileView, elf: ElfFacts, *, layout: QemuLayout | None = None,
                   check_build_id: bool | str = True) -> Dump:
    """A QEMU process core as a :class:`Dump`: guest RAM (if the core has it) and QEMU's state.

    :param layout: the struct layout profile (default: the shipped one for x86_64).
    :param check_build_id: ``"strict"`` refuses a binary whose build-id the profile does not
        list; otherwise such a core is read with the profile and a warning is kept in ``info``.
    :raises UnsupportedInput: not a QEMU core, or a build the profile is not for.
    :raises CorruptInput: a profile invariant fails on this core (message names profile and check).
    """
    layout = layout or load_layout("x86_64")
    host = host_space(view, elf)
    facts = read_qemu_core(view, elf, host, layout, check_build_id=check_build_id)
    present = [r for r in facts.guest_ram if host.is_present(r.hva, r.size)]
    # absent runs stay in the map, so reading them says "not in the core", not "not RAM"
    space = GuestRamSpace(view.name, host, facts.guest_ram) if present else None
    info = {
        "format": "qemu-core",
        "file": view.name,
        "file_size": view.size,
        "machine": elf.machine,
        "pt_load": int(len(elf.loads)),
        **{k: (f"{v:#x}" if k in ("virtio_list", "virtio_device_names") and v is not None else v)
           for k, v in facts.info.items() if k != "devices_not_on_list"},
        "devices_not_on_list": [f"{v:#x}" for v in facts.info["devices_not_on_list"]],
        "qemu_version": ".".join(map(str, facts.state.qemu_version)) if facts.state.qemu_version else None,
        "package": facts.state.package,
        "ram_blocks": [{"idstr": b.idstr, "host": f"{b.host:#x}", "offset": b.offset,
                        "used_length": b.used_length, "max_length": b.max_length,
                        "in_core": host.is_present(b.host, b.used_length)}
                       for b in facts.ram_blocks],
        "ram_ranges": [{"start": r.gpa, "end": r.gpa + r.size, "size": r.size, "block": r.block,
                        "region": r.region, "hva": f"{r.hva:#x}", "in_core": r in present}
                       for r in facts.guest_ram],
        "guest_ram": "present" if space is not None else "absent (dump-guest-core=off?)",
        "devices": len(facts.state.devices),
    }
    return Dump(path=view.name, format="qemu-core", space=space, info=info, qemu=facts.state,
                files=[view])
