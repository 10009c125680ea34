"""The process around QEMU's structs: ``NT_FILE`` mappings, the ``qemu-system-*`` binary, its GNU
build-id (from its ``PT_NOTE`` in memory) and its ``--version`` text."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from vdecode.errors import CorruptInput, UnsupportedInput
from vdecode.sources.elf_dump import NT_FILE, ElfFacts, ElfLayouts, read_note_desc
from vdecode.sources.files import FileView
from vdecode.sources.qemu_core.memory import NT_GNU_BUILD_ID, CoreReader, HostMemory

__all__ = ("MappedFile", "read_mapped_files", "find_qemu_binary", "read_build_id", "find_qemu_version")


@dataclass(frozen=True)
class MappedFile:
    """One ``NT_FILE`` entry: ``[start, end)`` maps ``path`` from byte ``file_offset``."""

    start: int
    end: int
    file_offset: int
    path: str



def read_mapped_files(view: FileView, elf: ElfFacts) -> list[MappedFile]:
    """The ``CORE``/``NT_FILE`` note: every file-backed mapping of the process.

    Layout (linux ``fs/binfmt_elf.c`` ``fill_files_note``): ``count``, ``page_size``, then
    ``count`` × (``start``, ``end``, ``file_ofs`` in pages), then ``count`` NUL-terminated paths.

    :raises CorruptInput: when the note contradicts its own size.
    """
    notes = elf.find_notes("CORE", NT_FILE)
    if not notes:
        return []
    note = notes[0]
    desc = bytes(read_note_desc(view, note))
    word = 8 if elf.is64 else 4
    dt = np.dtype("<u8" if word == 8 else "<u4")
    if len(desc) < 2 * word:
        raise CorruptInput(view.name, "NT_FILE note shorter than its header", offset=note.desc_offset)
    count, page_size = (int(x) for x in np.frombuffer(desc[:2 * word], dtype=dt))
    table_end = 2 * word + 3 * word * count
    if count > 1 << 20 or table_end > len(desc):
        raise CorruptInput(view.name, f"NT_FILE note: {count} entries do not fit in "
                                      f"{len(desc)} bytes", offset=note.desc_offset)
    table = np.frombuffer(desc[2 * word:table_end], dtype=dt).reshape(count, 3)
    names = desc[table_end:].split(b"\0")
    if len(names) < count:
        raise CorruptInput(view.name, f"NT_FILE note: {len(names)} paths for {count} entries",
                           offset=note.desc_offset)
    return [MappedFile(int(s), int(e), int(o) * page_size,
                       names[i].decode("utf-8", "backslashreplace"))
            for i, (s, e, o) in enumerate(table.tolist())]


def find_qemu_binary(mem: HostMemory, files: list[MappedFile]) -> tuple[str, int, int]:
    """The ``qemu-system-*`` executable's path, load base and end of its mappings.

    :raises UnsupportedInput: when no mapped file is a ``qemu-system-*`` binary.
    """
    cands = [f for f in files if f.path.rsplit("/", 1)[-1].startswith("qemu-system-")]
    if not cands:
        if not files:
            raise UnsupportedInput(mem.name, "not a QEMU process core: no NT_FILE note names a "
                                             "qemu-system-* binary")
        raise UnsupportedInput(mem.name, f"not a QEMU process core: none of its {len(files)} mapped "
                                         f"files is a qemu-system-* binary (first: {files[0].path})")
    path = cands[0].path
    mine = [f for f in files if f.path == path]
    base = min(f.start - f.file_offset for f in mine)
    return path, base, max(f.end for f in mine)


def read_build_id(rd: CoreReader, base: int) -> str | None:
    """The GNU build-id of the ELF image mapped at ``base`` (its ``PT_NOTE`` in memory)."""
    lay = ElfLayouts(True, True)
    if not rd.valid(base, 64) or bytes(rd.read(base, 4, "binary ELF header")) != b"\x7fELF":
        return None
    eh = lay.ehdr.parse(bytes(rd.read(base, 64, "binary ELF header")))
    n = eh.e_phnum * lay.phdr_dtype.itemsize
    if eh.e_phnum > 256 or not rd.valid(base + eh.e_phoff, n):
        return None
    phdrs = np.frombuffer(bytes(rd.read(base + eh.e_phoff, n, "binary program headers")),
                          dtype=lay.phdr_dtype)
    for ph in phdrs[phdrs["p_type"] == 4]:
        addr, size = base + int(ph["p_vaddr"]), int(ph["p_filesz"])
        if size > 1 << 16 or not rd.valid(addr, size):
            continue
        data, pos = bytes(rd.read(addr, size, "binary notes")), 0
        while pos + 12 <= size:
            namesz, descsz, ntype = np.frombuffer(data[pos:pos + 12], "<u4").tolist()
            name_at = pos + 12
            desc_at = name_at + ((namesz + 3) & ~3)
            if data[name_at:name_at + namesz].rstrip(b"\0") == b"GNU" and ntype == NT_GNU_BUILD_ID:
                return data[desc_at:desc_at + descsz].hex()
            pos = desc_at + ((descsz + 3) & ~3)
    return None


_VERSION = re.compile(rb"QEMU emulator version (\d+)\.(\d+)\.(\d+)(?: \(([^()\x00\n]{1,120})\))?\n")


def find_qemu_version(mem: HostMemory, runs: list[tuple[int, int]]) -> tuple[tuple[int, int, int] | None, str | None]:
    """``(major, minor, micro)`` and the package string from ``--version``'s text in the binary."""
    for start, size in runs:
        m = _VERSION.search(mem.read(start, size))
        if m:
            pkg = m.group(4).decode("utf-8", "replace") if m.group(4) else None
            return (int(m.group(1)), int(m.group(2)), int(m.group(3))), pkg
    return None, None


