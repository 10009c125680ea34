"""The process around QEMU's structs: ``NT_FILE`` mappings, the ``qemu-system-*`` binary, its GNU
build-id (from its ``PT_NOTE`` in memory, or in the executable file) and its ``--version`` text;
who wrote the core and why (``NT_SIGINFO``, ``NT_PRSTATUS``, ``NT_PRPSINFO``; linux
``include/uapi/linux/elfcore.h``, ``fs/binfmt_elf.c`` ``fill_note_info``)."""

from __future__ import annotations

import re

import numpy as np

import signal as _signal

from vdecode.errors import CorruptInput, UnsupportedInput
from vdecode.frozen import record
from vdecode.sources.elf_dump import (NT_FILE, NT_PRPSINFO, NT_PRSTATUS, NT_SIGINFO, ElfFacts,
                                      ElfLayouts, read_note_desc)
from vdecode.sources.files import FileView
from vdecode.sources.qemu_core.memory import NT_GNU_BUILD_ID, CoreReader, HostMemory

__all__ = ("MappedFile", "read_mapped_files", "find_qemu_binary", "read_build_id",
           "read_build_id_file", "find_qemu_version", "read_crash", "core_writer")


@record
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
    """The GNU build-id of the ELF image mapped at ``base`` (its ``PT_NOTE`` in memory: the first
    page of the mapping, which even a kernel-written core keeps, ``coredump_filter`` bit 4)."""
    return _find_build_id(lambda a, n: rd.valid(base + a, n),
                          lambda a, n: bytes(rd.read(base + a, n, "binary ELF headers")), "p_vaddr")


def read_build_id_file(view: FileView) -> str | None:
    """The GNU build-id of an ELF executable file (its ``PT_NOTE`` by ``p_offset``)."""
    return _find_build_id(lambda a, n: a >= 0 and a + n <= view.size,
                          lambda a, n: bytes(view.view(a, n, "ELF headers")), "p_offset")


def _find_build_id(valid, read, where: str) -> str | None:
    lay = ElfLayouts(True, True)
    if not valid(0, 64) or read(0, 4) != b"\x7fELF":
        return None
    eh = lay.ehdr.parse(read(0, 64))
    n = eh.e_phnum * lay.phdr_dtype.itemsize
    if eh.e_phnum > 256 or not valid(eh.e_phoff, n):
        return None
    phdrs = np.frombuffer(read(eh.e_phoff, n), dtype=lay.phdr_dtype)
    for ph in phdrs[phdrs["p_type"] == 4]:
        addr, size = int(ph[where]), int(ph["p_filesz"])
        if size > 1 << 16 or not valid(addr, size):
            continue
        data, pos = read(addr, size), 0
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


# x86_64 ``siginfo_t`` head (si_signo, si_errno, si_code; then si_pid, si_uid for kill/tkill or
# si_addr for faults), ``struct elf_prstatus`` (pr_cursig at 12, pr_pid at 32, pr_reg at 112: rip
# is slot 16) and ``struct elf_prpsinfo`` (pr_pid at 24, pr_fname[16] at 40, pr_psargs[80] at 56).
_SIGINFO = np.dtype({"names": ["signo", "errno", "code", "pid", "uid", "addr"],
                     "formats": ["<i4", "<i4", "<i4", "<i4", "<u4", "<u8"],
                     "offsets": [0, 4, 8, 16, 20, 16], "itemsize": 24})
_PRSTATUS = np.dtype({"names": ["cursig", "pid", "rip", "rsp"], "formats": ["<i2", "<i4", "<u8", "<u8"],
                      "offsets": [12, 32, 112 + 16 * 8, 112 + 19 * 8], "itemsize": 336})
_PRPSINFO = np.dtype({"names": ["pid", "fname", "psargs"], "formats": ["<i4", "S16", "S80"],
                      "offsets": [24, 40, 56], "itemsize": 136})
_SI_CODES = {0: "SI_USER (kill)", -6: "SI_TKILL (tkill/raise/abort)", 0x80: "SI_KERNEL",
             -1: "SI_QUEUE"}
_FAULTS = {_signal.SIGSEGV, _signal.SIGBUS, _signal.SIGILL, _signal.SIGFPE}


def _signal_name(n: int) -> str:
    try:
        return _signal.Signals(n).name
    except ValueError:
        return f"signal {n}"


def read_crash(view: FileView, elf: ElfFacts) -> dict:
    """Why and where the process died: the signal (``NT_SIGINFO``), the threads (``NT_PRSTATUS``;
    the kernel writes the thread that dumped first) and the command (``NT_PRPSINFO``).

    Only x86_64 little-endian cores are decoded; others give ``{}``.
    """
    if not (elf.is64 and elf.little_endian and elf.e_machine == 62):
        return {}
    out: dict = {}
    for note in elf.find_notes("CORE", NT_SIGINFO)[:1]:
        if note.desc_size >= _SIGINFO.itemsize:
            si = np.frombuffer(read_note_desc(view, note), _SIGINFO, count=1)[0]
            signo, code = int(si["signo"]), int(si["code"])
            sig = {"signo": signo, "name": _signal_name(signo), "code": code,
                   "code_name": _SI_CODES.get(code, str(code))}
            if code <= 0:
                sig.update(sender_pid=int(si["pid"]), sender_uid=int(si["uid"]))
            elif signo in _FAULTS:
                sig["fault_addr"] = f"{int(si['addr']):#x}"
            out["signal"] = sig
    threads = []
    for note in elf.find_notes("CORE", NT_PRSTATUS):
        if note.desc_size >= _PRSTATUS.itemsize:
            st = np.frombuffer(read_note_desc(view, note), _PRSTATUS, count=1)[0]
            threads.append({"tid": int(st["pid"]), "cursig": int(st["cursig"]),
                            "rip": f"{int(st['rip']):#x}", "rsp": f"{int(st['rsp']):#x}"})
    if threads:
        out["threads"] = len(threads)
        out["crashing_thread"] = threads[0]
    for note in elf.find_notes("CORE", NT_PRPSINFO)[:1]:
        if note.desc_size >= _PRPSINFO.itemsize:
            ps = np.frombuffer(read_note_desc(view, note), _PRPSINFO, count=1)[0]
            out["pid"] = int(ps["pid"])
            out["command"] = bytes(ps["psargs"]).split(b"\0", 1)[0].decode("utf-8", "replace")
    return out


def core_writer(elf: ElfFacts) -> str:
    """Who wrote the core: gdb's ``gcore`` writes section headers and ``p_align`` 1; the kernel's
    ``fs/binfmt_elf.c`` (also what systemd-coredump stores) writes none (except for PN_XNUM) and
    aligns segments to pages."""
    if elf.e_shnum and not elf.pn_xnum:
        return "gdb gcore"
    return "linux kernel (core_pattern file, systemd-coredump or coredumpctl dump)"

