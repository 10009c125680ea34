"""Write ELF guest dumps the way QEMU 7.2's ``dump-guest-memory`` does (and ``/proc/vmcore``-like ones).

Like drgn's ``tests/elfwriter.py``: a small writer for synthetic inputs, and what the reader reads.
The ELF writing itself is the package's :func:`vdecode.render.elf_core.write_elf_core` (the
bundle writes with it too); this module adds QEMU's per-vCPU notes and VMCOREINFO.

QEMU v7.2.0 ``dump/dump.c`` layout (``qemu_quirks=True``)::

    Elf64_Ehdr (e_ehsize 8: sizeof of a pointer) | section headers (NULL, .shstrtab; section 0's
    sh_info = phnum under PN_XNUM) | program headers (PT_NOTE, PT_LOADs) | notes | RAM | ".shstrtab"

``paging=True`` writes each RAM block once and one PT_LOAD per guest-virtual mapping pointing into
it; a mapping of memory that is not RAM gets ``p_filesz`` 0 and ``p_offset`` -1, like QEMU.
Without quirks: a plain core, header then program headers then notes then data (``e_ehsize`` 64).

Segments are given as ``(paddr, data)``, ``(paddr, (memsz, data))`` (``data`` shorter than
``memsz``: the rest is a zero tail; ``data`` ``None``: ``memsz`` bytes of file left as a hole, for
sparse big dumps), or :class:`LoadSegment`.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from vdecode.render.elf_core import (DIRECT_MAP, EM_X86_64, PN_XNUM, PT_LOAD, PT_NOTE,  # noqa: F401
                                     LoadSegment, as_segment, note, write_elf_core)


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
    notes = list(vcpu_notes([{"rip": 0xFFFFFFFF81000000 + k, "cr3": 0x1000} for k in range(vcpus)])
                 if notes is None else notes)
    if vmcoreinfo is not None:
        notes.append(("VMCOREINFO", 0, vmcoreinfo.encode()))
    return write_elf_core(Path(path), segments, notes=notes, paging=paging, mappings=mappings,
                          pn_xnum=pn_xnum, qemu_quirks=qemu_quirks, elfclass=elfclass,
                          machine=machine, little_endian=little_endian)
