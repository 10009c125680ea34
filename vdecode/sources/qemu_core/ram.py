"""Guest RAM in a QEMU core: the ``RAMBlock`` list (``include/exec/ramblock.h``) and where the
``MemoryRegion``s of the ``system`` address space place it (``include/exec/memory.h``;
``hw/i386/pc.c`` ``pc_memory_init``: ``ram-below-4g``/``ram-above-4g`` alias ``pc.ram``)."""

from __future__ import annotations

import re

import numpy as np

from vdecode.errors import CorruptInput, MissingData
from vdecode.frozen import record
from vdecode.sources.qemu_core.memory import (MAX_RAMBLOCKS, CoreReader, find_pointers, printable,
                                              profile_mismatch, scan_runs)

__all__ = ("RAM_ANCHOR", "RamBlockFacts", "GuestRamRun", "find_ram_blocks", "map_guest_ram")


@record
class RamBlockFacts:
    """A ``RAMBlock``: ``idstr``, ``host`` (Hva), ``offset`` (ram_addr_t), lengths, its ``mr``."""

    addr: int
    idstr: str
    host: int
    offset: int
    used_length: int
    max_length: int
    mr: int


@record
class GuestRamRun:
    """Guest-physical ``[gpa, gpa+size)`` is ``block``'s host memory at ``hva``."""

    gpa: int
    size: int
    hva: int
    block: str
    region: str          # the MemoryRegion that maps it (``ram-below-4g``, ``pc.bios`` …)



# Where the RAMBlock list is entered: the idstr of a block every machine has. The machine's main RAM
# is named by its default_ram_id (``pc.ram`` on x86, ``mach-virt.ram`` on arm ``virt``,
# ``s390.ram`` on s390x, ``<machine>.ram`` elsewhere), firmware blocks end in ``.bios``, ``.rom`` or
# ``.flashN``, and ACPI machines have ``/rom@etc/acpi/tables``. A hit is only a candidate:
# ``_read_ramblock`` accepts it when the block's region points back at it.
RAM_ANCHOR = re.compile(rb"(?<![\x21-\x7e])(?:[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*\.(?:ram|bios|rom|flash\d)"
                         rb"|/rom@etc/[A-Za-z0-9_-]+)\x00")


def _read_ramblock(rd: CoreReader, addr: int) -> RamBlockFacts | None:
    lay = rd.layout
    rb = rd.held_struct("RAMBlock", addr)
    if rb is None:
        return None
    idstr = bytes(rb["idstr"]).split(b"\0", 1)[0].decode("utf-8", "replace")
    if not printable(idstr) or not rd.valid(rb["mr"], lay.sizes["MemoryRegion"]):
        return None
    if not 0 < rb["used_length"] <= rb["max_length"]:
        return None
    mr = rd.struct("MemoryRegion", rb["mr"], f"MemoryRegion of RAMBlock {idstr}")
    if mr["ram_block"] != addr:
        return None
    return RamBlockFacts(addr, idstr, rb["host"], rb["offset"], rb["used_length"],
                         rb["max_length"], rb["mr"])


def find_ram_blocks(rd: CoreReader, runs: list[tuple[int, int]], binary: tuple[int, int]) -> list[RamBlockFacts]:
    """``ram_list.blocks`` in list order, found from a main-RAM or firmware block by its ``idstr``."""
    lay = rd.layout
    idoff = lay.off("RAMBlock", "idstr")
    nxt, prv = lay.off("RAMBlock", "next.le_next"), lay.off("RAMBlock", "next.le_prev")
    start = None
    for base, mv in scan_runs(rd.mem, runs):
        for m in RAM_ANCHOR.finditer(mv):
            cand = base + m.start() - idoff
            if cand % 8 == 0 and _read_ramblock(rd, cand):
                start = cand
                break
        if start is not None:
            break
    if start is None:
        return []

    def word(addr: int) -> int:
        return int(np.frombuffer(bytes(rd.read(addr, 8, "RAMBlock link")), "<u8")[0])

    cur = start
    for _ in range(MAX_RAMBLOCKS):                        # back to the list head
        le_prev = word(cur + prv)
        if binary[0] <= le_prev < binary[1] or _read_ramblock(rd, le_prev - nxt) is None:
            head = le_prev
            break
        cur = le_prev - nxt
    else:
        raise CorruptInput(rd.name, f"ram_list.blocks: more than {MAX_RAMBLOCKS} blocks")
    out, at = [], word(head)
    while at:
        if len(out) >= MAX_RAMBLOCKS or any(b.addr == at for b in out):
            raise CorruptInput(rd.name, f"ram_list.blocks: loop at {at:#x}")
        b = _read_ramblock(rd, at)
        if b is None:
            raise profile_mismatch(lay, rd.mem, "RAMBlock.mr->ram_block == block", f"RAMBlock at {at:#x}",
                            rd.file_offset(at))
        out.append(b)
        at = word(at + nxt)
    return out


def _mr_name(rd: CoreReader, addr: int) -> str:
    """A ``MemoryRegion``'s name, or ``""`` when it is NULL or not in the core (names only label)."""
    try:
        return rd.cstring(addr, "MemoryRegion name", limit=256) if addr else ""
    except (MissingData, CorruptInput):
        return ""


def _mr_chain(rd: CoreReader, mr_addr: int) -> tuple[int, str, bool] | None:
    """``(address in the root, root name, all enabled)`` following ``container`` up to a root."""
    total, enabled, at = 0, True, mr_addr
    for _ in range(64):
        mr = rd.held_struct("MemoryRegion", at)
        if mr is None:
            return None
        enabled = enabled and mr["enabled"]
        if not mr["container"]:
            return total, _mr_name(rd, mr["name"]), enabled
        total += mr["addr"]
        at = mr["container"]
    return None


def map_guest_ram(rd: CoreReader, blocks: list[RamBlockFacts],
                  runs: list[tuple[int, int]]) -> list[GuestRamRun]:
    """Guest-physical runs of RAM in the ``system`` address space.

    Each block's own region where it sits in ``system`` (``pc.bios``), and every enabled alias
    of it there (``ram-below-4g``, ``ram-above-4g`` of ``pc.ram``). Where two overlap, the bigger
    mapping wins (``ram-below-4g`` over ``isa-bios``, ``pc.rom``, PAM and SMRAM windows, which
    QEMU's priorities hide or which alias the same bytes).
    """
    lay = rd.layout
    by_mr = {b.mr: b for b in blocks}
    cands: list[GuestRamRun] = []
    for b in blocks:
        chain = _mr_chain(rd, b.mr)
        if chain and chain[1] == "system" and chain[2]:
            name = _mr_name(rd, rd.struct("MemoryRegion", b.mr, "MemoryRegion")["name"])
            cands.append(GuestRamRun(chain[0], b.used_length, b.host, b.idstr, name))
    aliases = find_pointers(rd.mem, runs, list(by_mr), lay.off("MemoryRegion", "alias"))
    for target, hits in aliases.items():
        b = by_mr[target]
        for a, mr in rd.held_structs("MemoryRegion", hits):
            size = mr["size"]
            if not mr["name"] or not rd.valid(mr["name"], 1) or size <= 0 or \
                    mr["alias_offset"] + size > b.max_length:
                continue
            chain = _mr_chain(rd, a)
            if not chain or chain[1] != "system" or not chain[2]:
                continue
            name = _mr_name(rd, mr["name"])
            cands.append(GuestRamRun(chain[0], int(size), b.host + mr["alias_offset"], b.idstr, name))
    cands.sort(key=lambda r: (-r.size, r.gpa))
    taken: list[GuestRamRun] = []
    for r in cands:
        if all(r.gpa + r.size <= t.gpa or t.gpa + t.size <= r.gpa for t in taken):
            taken.append(r)
    return sorted(taken, key=lambda r: r.gpa)


