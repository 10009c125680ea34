"""
What a file is, from its first bytes
------------------------------------
Detects the input format from content, never from the file name: compression magics
(zstd RFC 8878, gzip RFC 1952, xz ``xz-file-format.txt``), the kdump signatures
(makedumpfile ``diskdump_mod.h`` ``KDUMP_SIGNATURE``, ``makedumpfile.h`` ``MAKEDUMPFILE_SIGNATURE``
of the flattened stream) and the ELF magic. Which kind of ELF core it is needs the notes:
:func:`classify_elf` decides from an :class:`~vdecode.sources.elf_dump.ElfFacts`.
"""

from __future__ import annotations

from vdecode.errors import InputError
from vdecode.sources.bundle_notes import is_bundle
from vdecode.sources.elf_dump import NT_AUXV, NT_FILE, NT_PRPSINFO, NT_SIGINFO, ElfFacts
from vdecode.sources.files import FileView

__all__ = ("MAGICS", "classify_elf", "describe_start", "sniff")

#: (magic at offset 0, kind), first match wins.
MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"KDUMP   ", "kdump"),
    (b"makedumpfile\x00", "kdump-flattened"),
    (b"\x7fELF", "elf"),
)

# Notes the kernel and gdb write into a process core and QEMU never writes into a guest dump.
_PROCESS_NOTES = {NT_PRPSINFO, NT_FILE, NT_AUXV, NT_SIGINFO}


def sniff(view: FileView) -> str:
    """The kind of ``view`` from its first bytes: one of the kinds in :data:`MAGICS`.

    :raises InputError: when no magic matches: "not a dump this tool reads".
    """
    head = bytes(view.memory()[:16])
    for magic, kind in MAGICS:
        if head.startswith(magic):
            return kind
    raise InputError(view.name, f"not a dump this tool reads ({describe_start(head)})")


def describe_start(head: bytes) -> str:
    """How a file starts, for the "not a dump" message.

    >>> describe_start(b"")
    'empty file'
    >>> describe_start(b"#!/bin/sh\\necho hi\\n")
    "starts with b'#!/bin/sh\\\\necho h'"
    """
    if not head:
        return "empty file"
    return f"starts with {bytes(head[:16])!r}"


def classify_elf(elf: ElfFacts) -> str:
    """Which ELF core ``elf`` is: ``"bundle"``, ``"qemu-core"``, ``"vmcore"``, ``"elf-paging"`` or
    ``"elf"``.

    - A ``vdecode bundle`` file has a ``VDECODE`` ``VDB_META`` note (``docs/bundle.md``).
    - A process core (gcore, systemd-coredump, the kernel's core dumper) has a CORE note a guest
      dump never has (``NT_PRPSINFO``, ``NT_FILE``, ``NT_AUXV``, ``NT_SIGINFO``) and no ``QEMU``
      CPU-state note. The real capture's ``qemu.core`` has ``NT_PRPSINFO`` and ``NT_SIGINFO``.
    - A guest kernel's ``/proc/vmcore`` has a ``VMCOREINFO`` note and no ``QEMU`` note (QEMU
      writes ``VMCOREINFO`` too when the guest has a vmcoreinfo device, beside its ``QEMU`` notes).
    - QEMU's ``paging=true`` dump gives PT_LOADs guest-virtual ``p_vaddr``; ``paging=false``
      writes ``p_vaddr == p_paddr`` (``memory_mapping.c`` ``guest_phys_blocks_to_memory_mapping``
      maps each block at its own address; the real capture has ``0xfffc0000`` in both).
    """
    if is_bundle(elf):
        return "bundle"
    names = {n.name for n in elf.notes}
    process = any(n.name == "CORE" and n.type in _PROCESS_NOTES for n in elf.notes)
    if process and "QEMU" not in names:
        return "qemu-core"
    if "VMCOREINFO" in names and "QEMU" not in names:
        return "vmcore"
    loads = elf.loads
    if (loads["p_vaddr"] != loads["p_paddr"]).any():
        return "elf-paging"
    return "elf"
