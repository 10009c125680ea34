"""Write ELF guest dumps the way QEMU 7.2's ``dump-guest-memory`` does (and ``/proc/vmcore``-like ones).

Like drgn's ``tests/elfwriter.py``: a small writer for synthetic inputs, and what the reader reads.
Later, slim dumps and bundles reuse :func:`write_elf_dump`.

QEMU v7.2.0 ``dump/dump.c`` layout (``qemu_quirks=True``)::

    Elf64_Ehdr (e_ehsize 8: sizeof of a pointer) | section headers (NULL, .shstrtab; section 0's
    sh_info = phnum under PN_XNUM) | program headers (PT_NOTE, PT_LOADs) | notes | RAM | ".shstrtab"

``paging=True`` writes each RAM block once and one PT_LOAD per guest-virtual mapping pointing into
it; a mapping of memory that is not RAM gets ``p_filesz`` 0 and ``p_offset`` -1, like QEMU.
Without quirks: a plain core, header then program headers then notes then data (``e_ehsize`` 64).

Segments are given as ``(paddr, data)``, ``(paddr, (memsz, data))`` (``data`` shorter than
``memsz``: the rest is a zero tail; ``data`` ``None``: ``memsz`` bytes of file left as a hole, for
sparse big dumps), or :class:`Segment`.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

PT_LOAD, PT_NOTE, PN_XNUM = 1, 4, 0xFFFF
EM_X86_64 = 62
DIRECT_MAP = 0xFFFF888000000000      # x86_64 Linux direct map: the default paging=true mapping


@dataclass
class Segment:
    """One PT_LOAD: ``data`` at ``paddr`` (``None``: ``memsz`` bytes of hole), zero tail to ``memsz``."""

    paddr: int
    data: bytes | None = b""
    memsz: int | None = None
    vaddr: int | None = None

    @property
    def filesz(self) -> int:
        return self.memsz if self.data is None else len(self.data)

    @property
    def size(self) -> int:
        return self.memsz if self.memsz is not None else self.filesz


def as_segment(seg) -> Segment:
    if isinstance(seg, Segment):
        return seg
    paddr, payload = seg
    if isinstance(payload, tuple):
        memsz, data = payload
        return Segment(paddr, data, memsz)
    return Segment(paddr, bytes(payload))


def note(name: str, type_: int, desc: bytes, little_endian: bool = True) -> bytes:
    """One ELF note, name and descriptor padded to 4 bytes."""
    e = "<" if little_endian else ">"
    raw = name.encode() + b"\0"
    pad = lambda b: b + bytes(-len(b) % 4)        # noqa: E731
    return struct.pack(e + "III", len(raw), len(desc), type_) + pad(raw) + pad(desc)


def prstatus_x86_64(pid: int = 1, rip: int = 0, rsp: int = 0) -> bytes:
    """A 336-byte x86_64 ``struct elf_prstatus`` with ``pr_pid``, rip and rsp set."""
    regs = [0] * 27
    regs[16], regs[19] = rip, rsp
    return (bytes(32) + struct.pack("<IIII", pid, 0, 0, 0) + bytes(64) + struct.pack("<27Q", *regs)
            + bytes(8))


def qemu_cpustate_x86(rip: int = 0, cr3: int = 0, cr0: int = 0x80050033, cr4: int = 0) -> bytes:
    """A 440-byte QEMU ``QEMUCPUState`` (target/i386/arch_dump.c, version 1)."""
    return (struct.pack("<II", 1, 440) + bytes(128) + struct.pack("<QQ", rip, 0x2) + bytes(240)
            + struct.pack("<5Q", cr0, 0, 0, cr3, cr4) + bytes(8))


def vcpu_notes(regs: list[dict]) -> list[tuple[str, int, bytes]]:
    """QEMU's note order: every CPU's ``NT_PRSTATUS``, then every CPU's ``QEMU`` note."""
    out = [("CORE", 1, prstatus_x86_64(k + 1, r.get("rip", 0), r.get("rsp", 0))) for k, r in enumerate(regs)]
    out += [("QEMU", 0, qemu_cpustate_x86(r.get("rip", 0), r.get("cr3", 0))) for r in regs]
    return out


def write_elf_dump(path: str | os.PathLike, segments, *, paging: bool = False,
                   mappings: list[tuple[int, int, int]] | None = None, pn_xnum: bool = False,
                   notes: list[tuple[str, int, bytes]] | None = None, vcpus: int = 1,
                   vmcoreinfo: str | None = None, qemu_quirks: bool = True, elfclass: int = 64,
                   machine: int = EM_X86_64, little_endian: bool = True) -> Path:
    """Write an ELF core dump of ``segments`` to ``path``.

    :param segments: guest RAM, see the module docstring.
    :param paging: ``paging=true`` style: ``mappings`` ``(vaddr, paddr, size)`` become the PT_LOADs
        (default: every segment at :data:`DIRECT_MAP` + paddr).
    :param pn_xnum: force ``PN_XNUM`` (it is used anyway from 65,535 program headers).
    :param notes: the notes, ``(name, type, desc)``; default QEMU's per-vCPU notes for ``vcpus``.
    :param vmcoreinfo: text of a ``VMCOREINFO`` note to append.
    :param qemu_quirks: QEMU 7.2's layout; false: a plain core like ``/proc/vmcore``.
    :param little_endian: false for a big-endian guest (s390x); the default notes are x86_64's,
        so pass ``notes`` with it.
    :return: ``path``.
    """
    path = Path(path)
    segs = [as_segment(s) for s in segments]
    is64 = elfclass == 64
    notes = list(vcpu_notes([{"rip": 0xFFFFFFFF81000000 + k, "cr3": 0x1000} for k in range(vcpus)])
                 if notes is None else notes)
    if vmcoreinfo is not None:
        notes.append(("VMCOREINFO", 0, vmcoreinfo.encode()))
    note_bytes = b"".join(note(n, t, d, little_endian) for n, t, d in notes)
    e = "<" if little_endian else ">"

    # Program headers as (vaddr, paddr, memsz, filesz, segment index or None, offset within it).
    loads: list[tuple[int, int, int, int, int | None, int]] = []
    if paging:
        for vaddr, paddr, size in (mappings if mappings is not None else
                                   [(DIRECT_MAP + s.paddr, s.paddr, s.size) for s in segs]):
            k = next((k for k, s in enumerate(segs) if s.paddr <= paddr < s.paddr + s.filesz), None)
            filesz = 0 if k is None else min(size, segs[k].paddr + segs[k].filesz - paddr)
            loads.append((vaddr, paddr, size, filesz, k, 0 if k is None else paddr - segs[k].paddr))
    else:
        loads = [(s.vaddr if s.vaddr is not None else s.paddr, s.paddr, s.size, s.filesz, k, 0)
                 for k, s in enumerate(segs)]
    phnum = 1 + len(loads)
    xnum = pn_xnum or phnum >= PN_XNUM

    ehsize, phentsize, shentsize = (64, 56, 64) if is64 else (52, 32, 40)
    shstrtab = b"\0.shstrtab\0"
    shnum = 2 if (qemu_quirks or xnum) else 0
    if qemu_quirks:
        shoff = ehsize
        phoff = shoff + shnum * shentsize
        note_off = phoff + phnum * phentsize
    else:
        phoff = ehsize
        note_off = phoff + phnum * phentsize
    data_off = note_off + len(note_bytes)
    seg_off, pos = [], data_off
    for s in segs:
        seg_off.append(pos)
        pos += s.filesz
    strtab_off = pos
    if not qemu_quirks and shnum:
        shoff = strtab_off + len(shstrtab)

    w = "Q" if is64 else "I"
    ehdr = (b"\x7fELF" + bytes([2 if is64 else 1, 1 if little_endian else 2, 1]) + bytes(9)
            + struct.pack(f"{e}HHI{w}{w}{w}IHHHHHH", 4, machine, 1, 0, phoff, shoff if shnum else 0, 0,
                          8 if qemu_quirks else ehsize, phentsize, PN_XNUM if xnum else phnum,
                          shentsize, shnum, 1 if shnum else 0))
    if is64:
        phdr = lambda t, f, o, v, p, fs, ms: struct.pack(e + "IIQQQQQQ", t, f, o, v, p, fs, ms, 0)  # noqa: E731
        shdr = lambda nm, t, off, sz, info: struct.pack(e + "IIQQQQIIQQ", nm, t, 0, 0, off, sz, 0, info, 0, 0)  # noqa: E731
    else:
        phdr = lambda t, f, o, v, p, fs, ms: struct.pack(e + "IIIIIIII", t, o, v, p, fs, ms, f, 0)  # noqa: E731
        shdr = lambda nm, t, off, sz, info: struct.pack(e + "IIIIIIIIII", nm, t, 0, 0, off, sz, 0, info, 0, 0)  # noqa: E731
    phdrs = [phdr(PT_NOTE, 0, note_off, 0, 0, len(note_bytes), len(note_bytes))]
    mask = (1 << elfclass) - 1
    for vaddr, paddr, memsz, filesz, k, within in loads:
        off = seg_off[k] + within if (k is not None and filesz) else mask   # QEMU: -1 when not RAM
        phdrs.append(phdr(PT_LOAD, 0, off, vaddr & mask, paddr, filesz, memsz))
    shdrs = (shdr(0, 0, 0, 0, phnum if xnum else 0) + shdr(1, 3, strtab_off, len(shstrtab), 0)
             if shnum else b"")

    with open(path, "wb") as f:
        f.write(ehdr)
        if qemu_quirks:
            f.write(shdrs)
        f.write(b"".join(phdrs))
        f.write(note_bytes)
        for s in segs:
            if s.data is None:
                f.seek(s.filesz, os.SEEK_CUR)
            else:
                f.write(s.data)
        f.write(shstrtab)
        if not qemu_quirks:
            f.write(shdrs)
    return path
