"""
Writing ELF core files
----------------------
One writer for every ELF core vdecode produces: the bug-report bundle (:mod:`vdecode.render.bundle_writer`)
and the tests' synthetic guest dumps (``tests/builders/elf_dump.py``). Layouts follow the System V
ABI (``elf.h``: ``Elf64_Ehdr``, ``Elf64_Phdr``, ``Elf64_Shdr``, ``Elf64_Nhdr`` and their 32-bit
twins); :mod:`vdecode.sources.elf_dump` reads them back.

Two layouts:

- ``qemu_quirks=True``, what QEMU v7.2.0 ``dump/dump.c`` writes::

      Elf64_Ehdr (e_ehsize 8: sizeof of a pointer) | section headers (NULL, .shstrtab; section 0's
      sh_info = phnum under PN_XNUM) | program headers (PT_NOTE, PT_LOADs) | notes | RAM | ".shstrtab"

- ``qemu_quirks=False``, a plain core like ``/proc/vmcore`` (and the bundle): header, program
  headers, notes, data (``e_ehsize`` 64), section headers only when ``PN_XNUM`` needs them.

``paging=True`` writes each RAM block once and one PT_LOAD per guest-virtual mapping pointing into
it; a mapping of memory that is not RAM gets ``p_filesz`` 0 and ``p_offset`` -1, like QEMU.

Segments are given as ``(paddr, data)``, ``(paddr, (memsz, data))`` (``data`` shorter than
``memsz``: the rest is a zero tail; ``data`` ``None``: ``memsz`` bytes of file left as a hole, for
sparse big dumps), or :class:`LoadSegment`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

from vdecode.frozen import record

__all__ = ("LoadSegment", "as_segment", "note", "write_elf_core", "PT_LOAD", "PT_NOTE", "PN_XNUM",
           "EM_X86_64", "DIRECT_MAP")

PT_LOAD, PT_NOTE, PN_XNUM = 1, 4, 0xFFFF
ET_CORE = 4
EM_X86_64 = 62
DIRECT_MAP = 0xFFFF888000000000      # x86_64 Linux direct map: the default paging=true mapping


@record
class LoadSegment:
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


def as_segment(seg) -> LoadSegment:
    """A :class:`LoadSegment` from any of the accepted spellings (module docstring)."""
    if isinstance(seg, LoadSegment):
        return seg
    paddr, payload = seg
    if isinstance(payload, tuple):
        memsz, data = payload
        return LoadSegment(paddr, data, memsz)
    return LoadSegment(paddr, bytes(payload))


def note(name: str, type_: int, desc: bytes, little_endian: bool = True) -> bytes:
    """One ELF note (``Elf64_Nhdr``, name, descriptor), name and descriptor padded to 4 bytes.

    >>> note("CORE", 1, b"ab")
    b'\\x05\\x00\\x00\\x00\\x02\\x00\\x00\\x00\\x01\\x00\\x00\\x00CORE\\x00\\x00\\x00\\x00ab\\x00\\x00'
    """
    e = "<" if little_endian else ">"
    raw = name.encode() + b"\0"
    return (struct.pack(e + "III", len(raw), len(desc), type_) + raw + bytes(-len(raw) % 4)
            + bytes(desc) + bytes(-len(desc) % 4))


def write_elf_core(path: str | os.PathLike, segments: Iterable, *,
                   notes: Iterable[tuple[str, int, bytes]] = (), paging: bool = False,
                   mappings: list[tuple[int, int, int]] | None = None, pn_xnum: bool = False,
                   qemu_quirks: bool = True, elfclass: int = 64, machine: int = EM_X86_64,
                   little_endian: bool = True) -> Path:
    """Write an ``ET_CORE`` file of ``segments`` and ``notes`` to ``path``.

    :param segments: the memory, see the module docstring; ``p_vaddr`` is ``p_paddr`` unless a
        :class:`LoadSegment` gives ``vaddr``.
    :param notes: ``(name, type, desc)`` in file order, all in one PT_NOTE.
    :param paging: ``paging=true`` style: ``mappings`` ``(vaddr, paddr, size)`` become the PT_LOADs
        (default: every segment at :data:`DIRECT_MAP` + paddr).
    :param pn_xnum: force ``PN_XNUM`` (it is used anyway from 65,535 program headers).
    :param qemu_quirks: QEMU 7.2's layout; false: a plain core.
    :param little_endian: false for a big-endian target (s390x).
    :return: ``path``.
    """
    path = Path(path)
    segs = [as_segment(s) for s in segments]
    is64 = elfclass == 64
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
    shoff = 0
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
            + struct.pack(f"{e}HHI{w}{w}{w}IHHHHHH", ET_CORE, machine, 1, 0, phoff,
                          shoff if shnum else 0, 0, 8 if qemu_quirks else ehsize, phentsize,
                          PN_XNUM if xnum else phnum, shentsize, shnum, 1 if shnum else 0))

    def phdr(t: int, f: int, o: int, v: int, p: int, fs: int, ms: int) -> bytes:
        if is64:
            return struct.pack(e + "IIQQQQQQ", t, f, o, v, p, fs, ms, 0)
        return struct.pack(e + "IIIIIIII", t, o, v, p, fs, ms, f, 0)

    def shdr(nm: int, t: int, off: int, sz: int, info: int) -> bytes:
        return struct.pack(e + ("IIQQQQIIQQ" if is64 else "IIIIIIIIII"), nm, t, 0, 0, off, sz, 0,
                           info, 0, 0)

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
