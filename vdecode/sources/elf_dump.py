"""
ELF core files: the header, the program headers and the notes
--------------------------------------------------------------
Reads what every ELF core vdecode meets has in common: QEMU's ``dump-guest-memory`` ELF
(QEMU v7.2.0 ``dump/dump.c``), a guest kernel's ``/proc/vmcore`` and a process core of
``qemu-system-*`` (gdb's ``gcore``, systemd-coredump). Layouts follow the System V ABI
(``elf.h``: ``Elf64_Ehdr``, ``Elf64_Phdr``, ``Elf64_Shdr``, ``Elf64_Nhdr`` and their 32-bit twins).

Parsing stops at facts: :func:`read_elf` returns an :class:`ElfFacts` with the header, every
program header in one numpy structured array and the list of notes. Which address a PT_LOAD
stands for (guest-physical ``p_paddr``, host-virtual ``p_vaddr``) is decided in ``vdecode.space``.

QEMU 7.2 quirks accepted here: ``e_ehsize`` is 8 (``prepare_elf64_header`` takes
``sizeof(elf_header)`` of a pointer), section headers come before the program headers, and with
more than 65,534 program headers ``e_phnum`` is ``PN_XNUM`` and the count is section header 0's
``sh_info``. With ``paging=true`` a PT_LOAD whose memory is not guest RAM has ``p_filesz`` 0 and
``p_offset`` -1, so a segment's offset is checked only when it has file bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from vdecode.binary import Layout
from vdecode.errors import CorruptInput, InputError
from vdecode.frozen import record
from vdecode.sources.files import FileView, parse_at

__all__ = (
    "EM_NAMES", "UTS_MACHINES", "ElfFacts", "ElfNote", "NT_FILE", "NT_PRPSINFO", "NT_PRSTATUS",
    "PN_XNUM", "PT_LOAD", "PT_NOTE", "PHDR_DTYPE", "read_elf", "read_note_desc", "vcpus_from_notes",
    "vmcoreinfo_from_notes",
)

ET_CORE = 4
PT_LOAD, PT_NOTE = 1, 4
PN_XNUM = 0xFFFF
NT_PRSTATUS, NT_PRFPREG, NT_PRPSINFO, NT_AUXV, NT_SIGINFO = 1, 2, 3, 6, 0x53494749
NT_FILE = 0x46494C45

#: ``e_machine`` values vdecode names (``elf.h``); others print as numbers.
EM_NAMES = {3: "i386", 8: "mips", 20: "ppc", 21: "ppc64", 22: "s390", 40: "arm", 62: "x86_64",
            183: "aarch64", 243: "riscv", 258: "loongarch"}
#: a kdump header's utsname machine (lower-cased) where it is not the ``EM_NAMES`` name of its
#: ``e_machine`` (``uname -m``: a 64-bit s390 is ``s390x``, one ``e_machine`` for both widths)
UTS_MACHINES = {"s390x": "s390", "ppc64le": "ppc64", "riscv64": "riscv", "loongarch64": "loongarch",
                "i686": "i386", "armv7l": "arm"}
ET_NAMES = {0: "ET_NONE", 1: "ET_REL", 2: "ET_EXEC", 3: "ET_DYN", 4: "ET_CORE"}


MAX_NOTES = 1 << 16          # a core has a few notes per thread; more is a corrupt NOTE segment
MAX_NOTE_NAME = 4096

E_IDENT = Layout(
    "<",
    ("magic", b"\x7fELF"),
    ("ei_class", "u8", "1: ELFCLASS32, 2: ELFCLASS64"),
    ("ei_data", "u8", "1: ELFDATA2LSB, 2: ELFDATA2MSB"),
    ("ei_version", "u8"),
    ("padding", 9),
)


@lru_cache(maxsize=None)
def elf_layouts(is64: bool, little_endian: bool) -> "ElfLayouts":
    """The (immutable) layouts of one class and byte order, built once."""
    return ElfLayouts(is64, little_endian)


class ElfLayouts:
    """The header layouts of one ELF class and byte order (pyelftools' ``ELFStructs``)."""

    def __init__(self, is64: bool, little_endian: bool) -> None:
        o = "<" if little_endian else ">"
        word = "u64" if is64 else "u32"
        self.ehdr = Layout(
            o, ("e_ident", 16),
            ("e_type", "u16"), ("e_machine", "u16"), ("e_version", "u32"),
            ("e_entry", word), ("e_phoff", word), ("e_shoff", word),
            ("e_flags", "u32"),
            ("e_ehsize", "u16", "QEMU 7.2 writes 8 here; not relied on"),
            ("e_phentsize", "u16"), ("e_phnum", "u16"),
            ("e_shentsize", "u16"), ("e_shnum", "u16"), ("e_shstrndx", "u16"),
        )
        self.shdr = Layout(
            o, ("sh_name", "u32"), ("sh_type", "u32"), ("sh_flags", word), ("sh_addr", word),
            ("sh_offset", word), ("sh_size", word),
            ("sh_link", "u32"), ("sh_info", "u32", "program header count when e_phnum is PN_XNUM"),
            ("sh_addralign", word), ("sh_entsize", word),
        )
        self.nhdr = Layout(o, ("n_namesz", "u32"), ("n_descsz", "u32"), ("n_type", "u32"))
        self.ehdr_size, self.shdr_size, self.nhdr_size = (self.ehdr.sizeof(), self.shdr.sizeof(),
                                                          self.nhdr.sizeof())
        if is64:
            self.phdr = Layout(
                o, ("p_type", "u32"), ("p_flags", "u32"), ("p_offset", "u64"), ("p_vaddr", "u64"),
                ("p_paddr", "u64"), ("p_filesz", "u64"), ("p_memsz", "u64"), ("p_align", "u64"),
            )
        else:                                   # Elf32_Phdr moves p_flags after p_memsz
            self.phdr = Layout(
                o, ("p_type", "u32"), ("p_offset", "u32"), ("p_vaddr", "u32"), ("p_paddr", "u32"),
                ("p_filesz", "u32"), ("p_memsz", "u32"), ("p_flags", "u32"), ("p_align", "u32"),
            )

    @property
    def phdr_dtype(self):
        """The program header table is read whole, by numpy."""
        return self.phdr.dtype


#: Every program header, whatever the file's class and byte order, as native 64-bit fields
#: (``Elf64_Phdr`` little-endian: the 64-bit layout's own dtype).
PHDR_DTYPE = elf_layouts(True, True).phdr_dtype


@record
class ElfNote:
    """One note: ``name`` (without its NUL), ``type``, and where its descriptor lies in the file."""

    name: str
    type: int
    desc_offset: int
    desc_size: int


@record(eq=False)
class ElfFacts:
    """What an ELF core file says about itself, parsed once.

    :param source: the file's name, for messages.
    :param is64: ``ELFCLASS64`` (else ``ELFCLASS32``).
    :param little_endian: ``ELFDATA2LSB``.
    :param e_type: ``ET_CORE`` (4) for every file vdecode reads.
    :param e_machine: the ``EM_*`` value; :data:`EM_NAMES` names it.
    :param e_ehsize: as written (8 in QEMU 7.2's dumps).
    :param e_phoff: file offset of the program headers.
    :param e_shoff: file offset of the section headers (0 if none).
    :param e_shnum: section header count.
    :param phnum: the real program header count (``sh_info`` of section 0 under ``PN_XNUM``).
    :param pn_xnum: whether ``e_phnum`` was ``PN_XNUM``.
    :param phdrs: every program header, dtype :data:`PHDR_DTYPE`, in file order.
    :param notes: every note of every PT_NOTE segment, in file order.
    """

    source: str
    is64: bool
    little_endian: bool
    e_type: int
    e_machine: int
    e_ehsize: int
    e_phoff: int
    e_shoff: int
    e_shnum: int
    phnum: int
    pn_xnum: bool
    phdrs: np.ndarray
    notes: tuple[ElfNote, ...]
    file_size: int | None = None      # the file's size: PT_LOAD bytes past it are absent (cut)
    sections_end: int = 0             # where the sections' bytes end (0: no sections)

    @property
    def machine(self) -> str:
        return EM_NAMES.get(self.e_machine, f"EM_{self.e_machine}")

    @property
    def elf_class(self) -> str:
        return "ELF64" if self.is64 else "ELF32"

    @property
    def loads(self) -> np.ndarray:
        """The PT_LOAD program headers, in file order; in a file cut short, each segment ends
        where the file does (``p_filesz`` and ``p_memsz`` cut: the rest is absent, not zeros)."""
        return self._loads_cut(("p_filesz", "p_memsz"))

    def held_loads(self) -> np.ndarray:
        """The PT_LOADs with ``p_filesz`` cut where a file cut short ends, ``p_memsz`` as
        declared: for a process core, whose ``p_memsz`` beyond ``p_filesz`` is memory the core
        does not hold (absent, never zeros)."""
        return self._loads_cut(("p_filesz",))

    def _loads_cut(self, sizes: tuple[str, ...]) -> np.ndarray:
        """The PT_LOADs with the ``sizes`` members cut where a file cut short ends."""
        loads = self.phdrs[self.phdrs["p_type"] == PT_LOAD]
        cut = self.cut_loads()
        if not cut:
            return loads
        loads = loads.copy()
        for k, _, _, have in cut:
            for member in sizes:
                loads[member][k] = have
        return loads

    def cut_loads(self) -> list[tuple[int, int, int, int]]:
        """PT_LOADs whose file bytes run past the end of a file cut short, as ``(k, start, size,
        kept)``: the k-th PT_LOAD, its ``p_paddr`` and ``p_memsz`` as declared, and the bytes of
        it the file still holds."""
        if self.file_size is None:
            return []
        loads = self.phdrs[self.phdrs["p_type"] == PT_LOAD]
        off, fs = loads["p_offset"].astype(np.uint64), loads["p_filesz"].astype(np.uint64)
        past = np.flatnonzero((fs > 0) & (off + fs > np.uint64(self.file_size)))
        return [(int(k), int(loads["p_paddr"][k]), int(loads["p_memsz"][k]),
                 max(0, self.file_size - int(off[k]))) for k in past]

    @property
    def segments_end(self) -> int:
        """Where the file should end by its program headers (the end of the last segment)."""
        ends = self.phdrs["p_offset"].astype(np.uint64) + self.phdrs["p_filesz"].astype(np.uint64)
        return int(ends.max()) if len(ends) else 0

    @property
    def declared_end(self) -> int:
        """Where the file should end by its program and section headers."""
        return max(self.segments_end, self.sections_end)

    @property
    def cut_short(self) -> bool:
        """The file ends before what its program or section headers name."""
        return self.file_size is not None and self.file_size < self.declared_end

    @property
    def load_indices(self) -> np.ndarray:
        """Program header index of each of :attr:`loads`, for messages."""
        return np.flatnonzero(self.phdrs["p_type"] == PT_LOAD)

    def find_notes(self, name: str, type_: int | None = None) -> list[ElfNote]:
        """The notes called ``name`` (of type ``type_`` if given), in file order."""
        return [n for n in self.notes if n.name == name and (type_ is None or n.type == type_)]


def read_note_desc(view: FileView, note: ElfNote) -> memoryview:
    """The descriptor bytes of ``note`` (zero-copy; :func:`read_elf` checked they are in the file)."""
    return view.view(note.desc_offset, note.desc_size, f"note {note.name} descriptor")


def read_elf(view: FileView) -> ElfFacts:
    """Parse the ELF header, the program headers and the notes of ``view``.

    Every count, offset and size is checked against the file's size before it is used.

    :param view: the mapped file.
    :raises InputError: when the file is not an ELF core file.
    :raises CorruptInput: when the header, a program header or a note contradicts the file.
    :return: the file's :class:`ElfFacts`.
    """
    name = view.name
    ident = parse_at(E_IDENT, view, 0, "ELF e_ident", sizeof=16)
    if ident.ei_class not in (1, 2):
        raise CorruptInput(name, f"ELF e_ident: EI_CLASS {ident.ei_class} is neither "
                                 f"ELFCLASS32 (1) nor ELFCLASS64 (2)", offset=4)
    if ident.ei_data not in (1, 2):
        raise CorruptInput(name, f"ELF e_ident: EI_DATA {ident.ei_data} is neither "
                                 f"ELFDATA2LSB (1) nor ELFDATA2MSB (2)", offset=5)
    is64, little = ident.ei_class == 2, ident.ei_data == 1
    lay = elf_layouts(is64, little)
    eh = parse_at(lay.ehdr, view, 0, "ELF header", sizeof=lay.ehdr_size)
    if eh.e_type != ET_CORE:
        raise InputError(name, f"not a dump this tool reads (ELF {ET_NAMES.get(eh.e_type, eh.e_type)}"
                               f", not a core file)")
    phentsize = lay.phdr_dtype.itemsize
    if eh.e_phentsize != phentsize:
        raise CorruptInput(name, f"ELF header: e_phentsize {eh.e_phentsize}, expected {phentsize}",
                           offset=0x36 if is64 else 0x2a)
    shentsize = lay.shdr_size
    phnum, pn_xnum = eh.e_phnum, eh.e_phnum == PN_XNUM
    if eh.e_shnum or pn_xnum:
        if eh.e_shentsize != shentsize:
            raise CorruptInput(name, f"ELF header: e_shentsize {eh.e_shentsize}, expected {shentsize}",
                               offset=0x3a if is64 else 0x2e)
        if eh.e_shoff == 0:
            raise CorruptInput(name, "ELF header: e_shoff is 0 but section headers are announced",
                               offset=0x28 if is64 else 0x20)
        shnum = eh.e_shnum or 1
        _check_table(view, eh.e_shoff, shnum, shentsize, "section header table")
        if pn_xnum:
            sh0 = parse_at(lay.shdr, view, eh.e_shoff, "section header 0", sizeof=shentsize)
            phnum = sh0.sh_info
        sections_end = _sections_end(view, lay, eh.e_shoff, min(eh.e_shnum, MAX_SECTIONS_READ),
                                     elf_layouts(is64, not little))
    else:
        sections_end = 0
    _check_table(view, eh.e_phoff, phnum, phentsize, "program header table")
    raw = np.frombuffer(view.view(eh.e_phoff, phnum * phentsize, "program header table"),
                        dtype=lay.phdr_dtype)
    phdrs = np.empty(phnum, dtype=PHDR_DTYPE)
    for field in PHDR_DTYPE.names:
        phdrs[field] = raw[field]
    phdrs.flags.writeable = False                 # ElfFacts is frozen; so is its table
    _check_segments(view, phdrs, eh.e_phoff, phentsize)
    notes = _read_notes(view, lay, phdrs, eh.e_phoff, phentsize)
    return ElfFacts(source=name, is64=is64, little_endian=little, e_type=eh.e_type,
                    e_machine=eh.e_machine, e_ehsize=eh.e_ehsize, e_phoff=eh.e_phoff,
                    e_shoff=eh.e_shoff, e_shnum=eh.e_shnum, phnum=phnum, pn_xnum=pn_xnum,
                    phdrs=phdrs, notes=tuple(notes), file_size=view.size,
                    sections_end=sections_end)


MAX_SECTIONS_READ = 64      # QEMU's dumps have 1 or 2 sections; a core's few dozen


# SHT_STRTAB read in the other byte order. QEMU's dump-guest-memory writes its ``.shstrtab``
# section header in the host's byte order, not the dump's (dump/dump.c
# prepare_elf_section_hdr_string has no cpu_to_dump*, 7.2 to 10.2): in a big-endian guest's dump
# (s390x) made on a little-endian host its offset and size read swapped, far past the file's end,
# and the file was taken for one cut short.
_SHT_STRTAB_SWAPPED = 3 << 24


def _sections_end(view: FileView, lay: ElfLayouts, shoff: int, shnum: int,
                  swapped: ElfLayouts) -> int:
    """Where the sections' bytes end (a string table may follow guest RAM): a file cut there
    lost no RAM but is still cut short. ``SHT_NULL`` and ``SHT_NOBITS`` hold no bytes; a string
    table's header written in the other byte order is read in that order."""
    end = 0
    for i in range(shnum):
        at = shoff + i * lay.shdr_size
        sh = parse_at(lay.shdr, view, at, f"section header {i}", sizeof=lay.shdr_size)
        if sh.sh_type == _SHT_STRTAB_SWAPPED:
            sh = parse_at(swapped.shdr, view, at, f"section header {i}", sizeof=lay.shdr_size)
        if sh.sh_type not in (0, 8) and sh.sh_offset + sh.sh_size < 1 << 62:
            end = max(end, sh.sh_offset + sh.sh_size)
    return end


def _check_table(view: FileView, offset: int, count: int, entsize: int, what: str) -> None:
    if offset + count * entsize > view.size:
        raise CorruptInput(view.name, f"{what} ({count} entries of {entsize} bytes) runs past the "
                                      f"end of the file ({view.size} bytes)", offset=offset)


def _check_segments(view: FileView, phdrs: np.ndarray, phoff: int, phentsize: int) -> None:
    """Every segment with file bytes lies inside the file, but for PT_LOADs of a file cut short
    (their bytes past the end are absent: :meth:`ElfFacts.cut_loads`); no ``p_filesz`` exceeds
    ``p_memsz``."""
    off, filesz = phdrs["p_offset"], phdrs["p_filesz"]
    end = off + filesz                                        # uint64: wraps on overflow
    loads = phdrs["p_type"] == PT_LOAD
    bad = np.flatnonzero((filesz > 0) & ((end < off) | ((end > view.size) & ~loads)))
    if bad.size:
        i = int(bad[0])
        raise CorruptInput(view.name, f"program header {i}: {_pt_name(int(phdrs['p_type'][i]))} "
                                      f"p_offset {int(off[i]):#x} + p_filesz {int(filesz[i]):#x} "
                                      f"runs past the end of the file ({view.size} bytes)",
                           offset=phoff + i * phentsize)
    bad = np.flatnonzero(loads & (filesz > phdrs["p_memsz"]))
    if bad.size:
        i = int(bad[0])
        raise CorruptInput(view.name, f"program header {i}: p_filesz {int(filesz[i]):#x} > "
                                      f"p_memsz {int(phdrs['p_memsz'][i]):#x}",
                           offset=phoff + i * phentsize)


def _pt_name(p_type: int) -> str:
    return {PT_LOAD: "PT_LOAD", PT_NOTE: "PT_NOTE"}.get(p_type, f"segment type {p_type:#x}")


def _read_notes(view: FileView, lay: ElfLayouts, phdrs: np.ndarray, phoff: int,
                phentsize: int) -> list[ElfNote]:
    notes: list[ElfNote] = []
    nhdr_size = lay.nhdr_size
    for i in np.flatnonzero(phdrs["p_type"] == PT_NOTE):
        pos, end = int(phdrs["p_offset"][i]), int(phdrs["p_offset"][i] + phdrs["p_filesz"][i])
        while end - pos >= nhdr_size:
            nh = parse_at(lay.nhdr, view, pos, f"note header (PT_NOTE {i})", sizeof=nhdr_size)
            name_at = pos + nhdr_size
            desc_at = name_at + _align4(nh.n_namesz)
            nxt = desc_at + _align4(nh.n_descsz)
            if nh.n_namesz > MAX_NOTE_NAME or nxt > end:
                raise CorruptInput(view.name, f"note (PT_NOTE {i}): n_namesz {nh.n_namesz} and "
                                              f"n_descsz {nh.n_descsz} run past the end of the "
                                              f"segment at {end:#x}", offset=pos)
            if len(notes) >= MAX_NOTES:
                raise CorruptInput(view.name, f"PT_NOTE {i}: more than {MAX_NOTES} notes",
                                   offset=pos)
            raw_name = bytes(view.view(name_at, nh.n_namesz, "note name"))
            name = raw_name.split(b"\0", 1)[0].decode("ascii", "backslashreplace")
            notes.append(ElfNote(name, nh.n_type, desc_at, nh.n_descsz))
            pos = nxt
    return notes


def _align4(n: int) -> int:
    return (n + 3) & ~3


# --- notes: what vdecode info shows ----------------------------------------------------------
# x86_64 ``struct elf_prstatus`` (linux include/uapi/linux/elfcore.h; QEMU target/i386/arch_dump.c
# ``x86_64_elf_prstatus``), 336 bytes: pr_pid at 32, pr_reg (``user_regs_struct``: r15 r14 r13 r12
# rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip cs eflags rsp ss fs_base gs_base ds es fs
# gs) at 112. A numpy dtype, not construct: one frombuffer per note, and ``vdecode info`` runs at
# every open.
PRSTATUS_X86_64 = np.dtype({"names": ["pr_pid", "regs"], "formats": ["<u4", ("<u8", 27)],
                            "offsets": [32, 112], "itemsize": 336})
# QEMU target/i386/arch_dump.c ``QEMUCPUState`` (version 1), 440 bytes: version, size, 16 GPRs
# (rax rbx rcx rdx rsi rdi rsp rbp r8..r15), rip, rflags, 10 segments of 24 bytes (cs ds es fs gs
# ss ldt tr gdt idt), cr[5], kernel_gs_base.
QEMU_CPUSTATE_X86 = np.dtype({"names": ["version", "size", "gpr", "rip", "rflags", "cr"],
                              "formats": ["<u4", "<u4", ("<u8", 16), "<u8", "<u8", ("<u8", 5)],
                              "offsets": [0, 4, 8, 136, 144, 392], "itemsize": 432})


def vcpus_from_notes(notes: list[ElfNote], head: Callable[[ElfNote, int], bytes], *,
                     x86_64: bool) -> list[dict]:
    """Per vCPU: which notes it has and a few registers (x86_64 little-endian: pid, rip, cr3).

    QEMU's ``dump/dump.c`` ``write_elf64_notes`` writes every CPU's ``NT_PRSTATUS`` first, then
    every CPU's ``QEMU`` note, so the k-th of each belongs to vCPU k. The same notes come from an
    ELF core's PT_NOTE and from a kdump's note area, so both readers hand their notes here.

    :param head: ``head(note, n)``: the first ``n`` bytes of ``note``'s descriptor (``n`` is at
        most its ``desc_size``).
    :param x86_64: the notes are an x86_64 little-endian guest's (else only their names are listed).
    """
    # (label, that vCPU note of each CPU, its record, the registers shown); the QEMU note's rip
    # replaces NT_PRSTATUS's, as it always has
    kinds = (("CORE NT_PRSTATUS", [n for n in notes if n.name == "CORE" and n.type == NT_PRSTATUS],
              PRSTATUS_X86_64, _prstatus_regs),
             ("QEMU CPU state", [n for n in notes if n.name == "QEMU"],
              QEMU_CPUSTATE_X86, _cpustate_regs))
    vcpus = []
    for k in range(max(len(found) for _, found, _, _ in kinds)):
        cpu: dict = {"index": k, "notes": []}
        for label, found, dtype, regs in kinds:
            if k >= len(found):
                continue
            cpu["notes"].append(label)
            note = found[k]
            if x86_64 and note.desc_size >= dtype.itemsize:
                cpu.update(regs(np.frombuffer(bytes(head(note, dtype.itemsize)), dtype, count=1)[0]))
        vcpus.append(cpu)
    return vcpus


def _prstatus_regs(st) -> dict:
    return {"pid": int(st["pr_pid"]), "rip": int(st["regs"][16]), "rsp": int(st["regs"][19])}


def _cpustate_regs(st) -> dict:
    cr = st["cr"].tolist()
    return {"rip": int(st["rip"]), "cr0": cr[0], "cr3": cr[3], "cr4": cr[4]}


def vmcoreinfo_from_notes(notes: list[ElfNote], head: Callable[[ElfNote, int], bytes]) -> dict:
    """Whether a ``VMCOREINFO`` note is present, its ``OSRELEASE``, ``PAGESIZE``, ``BUILD-ID`` and
    ``CRASHTIME`` lines (the first 64 KiB of the note are read: the kernel writes about 3 KiB).

    :param head: as for :func:`vcpus_from_notes`.
    """
    found = [n for n in notes if n.name == "VMCOREINFO"]
    if not found:
        return {"present": False}
    note = found[0]
    text = bytes(head(note, min(note.desc_size, 1 << 16))).decode("ascii", "replace")
    fields = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    out: dict = {"present": True, "size": note.desc_size}
    for key in ("OSRELEASE", "PAGESIZE", "BUILD-ID", "CRASHTIME"):
        if key in fields:
            out[key.lower().replace("-", "_")] = fields[key].strip("\0")
    return out


def decode_vcpus(view: FileView, elf: ElfFacts) -> list[dict]:
    """Per vCPU of an ELF core: :func:`vcpus_from_notes` over its notes."""
    return vcpus_from_notes(elf.notes, lambda note, n: read_note_desc(view, note)[:n],
                            x86_64=elf.e_machine == 62 and elf.is64 and elf.little_endian)


def decode_vmcoreinfo(view: FileView, elf: ElfFacts) -> dict:
    """An ELF core's ``VMCOREINFO`` facts: :func:`vmcoreinfo_from_notes` over its notes."""
    return vmcoreinfo_from_notes(elf.notes, lambda note, n: read_note_desc(view, note)[:n])
