"""read_elf on the real captures, on writer output, and on broken files (whole messages)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders.elf_dump import qemu_cpustate_x86, write_elf_dump
from vdecode.errors import CorruptInput, InputError, MissingData, VdecodeError
from vdecode.sources.elf_dump import (NT_PRPSINFO, NT_PRSTATUS, PT_LOAD, PT_NOTE, decode_vcpus,
                                      read_elf, read_note_desc)
from vdecode.sources.files import FileView
from vdecode.space.open import open_dump


def facts(path) -> object:
    with FileView(path) as view:
        return read_elf(view)


# --- real captures ---------------------------------------------------------------------------

def test_real_guest_dump(captures):
    elf = facts(captures["basic"].dump("elf"))
    assert (elf.machine, elf.elf_class, elf.little_endian, elf.e_type) == ("x86_64", "ELF64", True, 4)
    assert elf.e_ehsize == 8                       # QEMU 7.2's sizeof(pointer) quirk
    assert (elf.e_shoff, elf.e_phoff) == (64, 192)  # section headers before program headers
    assert elf.phdrs["p_type"].tolist() == [PT_NOTE, PT_LOAD, PT_LOAD]
    assert elf.loads["p_paddr"].tolist() == [0, 0xFFFC0000]
    assert elf.loads["p_filesz"].tolist() == [0xA000000, 0x40000]
    assert [(n.name, n.type, n.desc_size) for n in elf.notes] == [("CORE", NT_PRSTATUS, 336),
                                                                 ("QEMU", 0, 440)]


def test_real_guest_dump_ends_with_its_string_table(capture, tmp_path):
    """QEMU writes its ``.shstrtab`` section header in the host's byte order (s390x's big-endian
    dump made on x86_64 has it little-endian): the file still ends where its sections do, and
    one cut there is cut short with no guest RAM lost (it was taken for one cut short by
    0x1306000800000000 bytes)."""
    path = capture.dump("elf")
    size = path.stat().st_size
    elf = facts(path)
    assert not elf.cut_short and elf.declared_end == size > elf.segments_end
    cut = tmp_path / "cut.elf"
    with open(path, "rb") as src, open(cut, "wb") as dst:
        shutil.copyfileobj(src, dst, 16 << 20)
        dst.truncate(size - 4)
    with open_dump(cut) as dump:
        assert dump.absent is not None and dump.absent.absent_bytes == 0
        assert dump.absent.parts[0].reason == (
            f"the file ends at offset {size - 4:#x}, its section headers say {size:#x}; no guest "
            f"RAM is lost")


def test_real_guest_dump_vcpu_registers(captures):
    with FileView(captures["basic"].dump("elf")) as view:
        cpus = decode_vcpus(view, read_elf(view))
    assert len(cpus) == 1
    assert cpus[0]["notes"] == ["CORE NT_PRSTATUS", "QEMU CPU state"]
    assert cpus[0]["pid"] == 1
    assert cpus[0]["rip"] >= 0xFFFF800000000000          # stopped in the guest kernel
    assert cpus[0]["cr3"] % 4096 == 0 and cpus[0]["cr0"] & 0x80000001 == 0x80000001


def test_real_process_core(capture):
    elf = facts(capture.dump("qemu-core"))
    assert elf.machine == "x86_64" and elf.e_ehsize == 64
    assert elf.phdrs["p_type"][0] == PT_NOTE and len(elf.loads) > 100
    assert elf.find_notes("CORE", NT_PRPSINFO) and not elf.find_notes("QEMU")
    assert len(elf.find_notes("CORE", NT_PRSTATUS)) > 1             # one per QEMU thread


# --- writer round trip -----------------------------------------------------------------------

def test_writer_round_trip(tmp_path):
    path = write_elf_dump(tmp_path / "rt.elf", [(0, b"a" * 100), (0x10000, (0x3000, b"b" * 50))],
                          vcpus=2, vmcoreinfo="OSRELEASE=x\n")
    with FileView(path) as view:
        elf = read_elf(view)
        assert elf.phnum == 3 and not elf.pn_xnum
        assert elf.loads[["p_paddr", "p_vaddr", "p_filesz", "p_memsz"]].tolist() == [
            (0, 0, 100, 100), (0x10000, 0x10000, 50, 0x3000)]
        assert [(n.name, n.type) for n in elf.notes] == [("CORE", 1), ("CORE", 1), ("QEMU", 0),
                                                         ("QEMU", 0), ("VMCOREINFO", 0)]
        assert bytes(read_note_desc(view, elf.notes[3])) == qemu_cpustate_x86(0xFFFFFFFF81000001, 0x1000)
        assert [c["pid"] for c in decode_vcpus(view, elf)] == [1, 2]
        assert elf.phdrs.dtype.names == ("p_type", "p_flags", "p_offset", "p_vaddr", "p_paddr",
                                         "p_filesz", "p_memsz", "p_align")


# --- bad input: truncation at every header boundary --------------------------------------------

def small_dump(tmp_path) -> bytes:
    """QEMU 7.2 layout: ehdr 0x0, shdrs 0x40, phdrs 0xc0, notes 0x168, RAM 0x498, 0x4d8, strtab 0x518."""
    p = write_elf_dump(tmp_path / "small.elf", [(0, bytes(range(64))), (0x1000, bytes(64))])
    return p.read_bytes()


TRUNCATED = [
    (0, "not a dump this tool reads (empty file)"),
    (3, "not a dump this tool reads (starts with b'\\x7fEL')"),
    (4, "at offset 0x0: ELF e_ident (16 bytes) runs past the end of the file (4 bytes)"),
    (16, "at offset 0x0: ELF header (64 bytes) runs past the end of the file (16 bytes)"),
    (63, "at offset 0x0: ELF header (64 bytes) runs past the end of the file (63 bytes)"),
    (64, "at offset 0x40: section header table (2 entries of 64 bytes) runs past the end of the "
         "file (64 bytes)"),
    (191, "at offset 0x40: section header table (2 entries of 64 bytes) runs past the end of the "
          "file (191 bytes)"),
    (192, "at offset 0xc0: program header table (3 entries of 56 bytes) runs past the end of the "
          "file (192 bytes)"),
    (359, "at offset 0xc0: program header table (3 entries of 56 bytes) runs past the end of the "
          "file (359 bytes)"),
    (360, "at offset 0xc0: program header 0: PT_NOTE p_offset 0x168 + p_filesz 0x330 runs past the "
          "end of the file (360 bytes)"),
    (1175, "at offset 0xc0: program header 0: PT_NOTE p_offset 0x168 + p_filesz 0x330 runs past "
           "the end of the file (1175 bytes)"),
]

# Cut inside guest RAM (the PT_LOADs' bytes): the dump opens, and what is gone is counted once.
CUT_IN_RAM = [(1176, 0x80, 2), (1200, 0x68, 2), (1240, 0x40, 1), (1303, 1, 1)]


@pytest.mark.parametrize("cut,lost,segments", CUT_IN_RAM)
def test_cut_in_ram_opens_incomplete(tmp_path, cut, lost, segments):
    data = small_dump(tmp_path)
    p = tmp_path / "cut.elf"
    p.write_bytes(data[:cut])
    with open_dump(p) as dump:
        assert dump.incomplete and dump.info["incomplete"]
        (part,) = dump.absent.parts
        assert part.kind == "cut-short" and part.absent_bytes == lost
        assert part.reason == (f"the file ends at offset {cut:#x}, its program headers say 0x518; "
                               f"{segments} PT_LOAD segment(s) of guest RAM lose their tail")
        with pytest.raises(MissingData):       # the lost bytes are absent, never zeros
            dump.space.read(0x1000 + 63, 1)
        if cut >= 0x4d8:                        # the first segment is whole
            assert bytes(dump.space.read(0, 64)) == bytes(range(64))


@pytest.mark.parametrize("cut,message", TRUNCATED)
def test_truncated(tmp_path, cut, message):
    data = small_dump(tmp_path)
    p = tmp_path / "cut.elf"
    p.write_bytes(data[:cut])
    with pytest.raises(InputError) as e:
        open_dump(p)
    sep = ": " if message.startswith("not a dump") else " "
    assert str(e.value) == f"{p}{sep}{message}"


def test_every_cut_raises_or_reads(tmp_path):
    """Cut at every byte of the headers and notes: always a VdecodeError, never anything else."""
    data = small_dump(tmp_path)
    p = tmp_path / "cut.elf"
    for cut in range(0, 0x498):                 # 0x498: the first PT_LOAD's bytes start
        p.write_bytes(data[:cut])
        with pytest.raises(VdecodeError):
            open_dump(p).close()
    for cut in range(0x498, 0x518):             # inside guest RAM: opens, saying what is gone
        p.write_bytes(data[:cut])
        with open_dump(p) as dump:
            assert dump.incomplete and dump.absent.parts[0].absent_bytes == 0x518 - cut


def patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    return data[:offset] + struct.pack(fmt, value) + data[offset + struct.calcsize(fmt):]


BROKEN = [
    ("ei_class", 4, "<B", 3, CorruptInput,
     "at offset 0x4: ELF e_ident: EI_CLASS 3 is neither ELFCLASS32 (1) nor ELFCLASS64 (2)"),
    ("ei_data", 5, "<B", 0, CorruptInput,
     "at offset 0x5: ELF e_ident: EI_DATA 0 is neither ELFDATA2LSB (1) nor ELFDATA2MSB (2)"),
    ("e_type", 16, "<H", 2, InputError, ": not a dump this tool reads (ELF ET_EXEC, not a core file)"),
    ("e_phentsize", 0x36, "<H", 32, CorruptInput,
     "at offset 0x36: ELF header: e_phentsize 32, expected 56"),
    ("e_shentsize", 0x3a, "<H", 40, CorruptInput,
     "at offset 0x3a: ELF header: e_shentsize 40, expected 64"),
    ("e_phnum huge", 0x38, "<H", 0xFFFE, CorruptInput,
     "at offset 0xc0: program header table (65534 entries of 56 bytes) runs past the end of the "
     "file (1315 bytes)"),
    ("PN_XNUM count huge", 0x38, "<H", 0xFFFF, CorruptInput,
     "at offset 0xc0: program header table (0 entries of 56 bytes) runs past the end of the "
     "file (1315 bytes)"),
    ("e_shoff past EOF", 0x28, "<Q", 0x10000, CorruptInput,
     "at offset 0x10000: section header table (2 entries of 64 bytes) runs past the end of the "
     "file (1315 bytes)"),
    ("p_filesz wraps", 0xf8 + 32, "<Q", 2**64 - 0x10, CorruptInput,
     "at offset 0xf8: program header 1: PT_LOAD p_offset 0x498 + p_filesz 0xfffffffffffffff0 runs "
     "past the end of the file (1315 bytes)"),
    ("p_filesz > p_memsz", 0xf8 + 40, "<Q", 0x20, CorruptInput,
     "at offset 0xf8: program header 1: p_filesz 0x40 > p_memsz 0x20"),
    ("p_paddr wraps", 0xf8 + 24, "<Q", 2**64 - 0x20, CorruptInput,
     "at offset 0xf8: program header 1: p_paddr 0xffffffffffffffe0 + p_memsz 0x40 wraps the "
     "address space"),
    ("overlap", 0x130 + 24, "<Q", 0x20, CorruptInput,
     "at offset 0x130: program header 2: PT_LOAD [0x20, 0x60) overlaps program header 1 [0x0, 0x40) "
     "in a paging=false dump"),
    ("note n_descsz past segment", 0x168 + 4, "<I", 0x1000, CorruptInput,
     "at offset 0x168: note (PT_NOTE 0): n_namesz 5 and n_descsz 4096 run past the end of the "
     "segment at 0x498"),
    ("note n_namesz huge", 0x168, "<I", 0xFFFFFFFF, CorruptInput,
     "at offset 0x168: note (PT_NOTE 0): n_namesz 4294967295 and n_descsz 336 run past the end of "
     "the segment at 0x498"),
]


@pytest.mark.parametrize("what,offset,fmt,value,cls,message", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_header(tmp_path, what, offset, fmt, value, cls, message):
    data = small_dump(tmp_path)
    if what == "PN_XNUM count huge":      # section header 0's sh_info holds the count
        data = patched(data, 0x40 + 44, "<I", 0x7FFFFFFF)
    if what == "overlap":                  # p_vaddr too, else it reads as a paging=true dump
        data = patched(data, 0x130 + 16, "<Q", value)
    p = tmp_path / "broken.elf"
    p.write_bytes(patched(data, offset, fmt, value))
    with pytest.raises(cls) as e:
        open_dump(p)
    assert type(e.value) is cls
    expected = message.replace("(0 entries", "(2147483647 entries")
    assert str(e.value) == f"{p}{'' if expected.startswith(':') else ' '}{expected}"


def test_cli_reports_one_line_exit_2(tmp_path):
    data = small_dump(tmp_path)
    p = tmp_path / "cut.elf"
    p.write_bytes(data[:1100])                  # inside the notes: the headers are not whole
    r = subprocess.run([sys.executable, "-m", "vdecode", "info", str(p)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == (f"vdecode: error: {p} at offset 0xc0: program header 0: PT_NOTE p_offset "
                        f"0x168 + p_filesz 0x330 runs past the end of the file (1100 bytes)\n")


def test_p_offset_past_eof_is_a_cut(tmp_path):
    """A PT_LOAD whose bytes lie past the end of the file: the file is shorter than its headers
    say, which is what a cut looks like; its guest RAM is absent, said once."""
    data = bytearray(small_dump(tmp_path))
    struct.pack_into("<Q", data, 0xf8 + 8, 0x100000)
    p = tmp_path / "moved.elf"
    p.write_bytes(bytes(data))
    with open_dump(p) as dump:
        (part,) = dump.absent.parts
        assert part.ranges == ((0, 64),) and "its program headers say 0x100040" in part.reason


# --- hypothesis: mutate the real capture's headers ----------------------------------------------

HEAD = 0x498          # ELF header, section headers, program headers and notes of the real capture


@pytest.fixture(scope="module")
def real_head(captures) -> bytes:
    """The real capture's first 0x498 bytes with its two PT_LOADs shrunk to 3 pages in total, and
    those pages of RAM appended: a small file that is otherwise byte-for-byte QEMU's."""
    path = captures["basic"].dump("elf")
    with open(path, "rb") as f:
        head = bytearray(f.read(HEAD))
        f.seek(HEAD)
        ram = f.read(3 * 4096)
    elf_phoff = 192
    for k, (off, size) in enumerate([(HEAD, 0x2000), (HEAD + 0x2000, 0x1000)]):
        at = elf_phoff + (k + 1) * 56
        struct.pack_into("<Q", head, at + 8, off)
        struct.pack_into("<QQ", head, at + 32, size, size)
    return bytes(head) + ram


def test_real_head_is_valid(tmp_path, real_head):
    p = tmp_path / "head.elf"
    p.write_bytes(real_head)
    with open_dump(p) as dump:
        assert dump.space.ranges() == [(0, 0x2000), (0xFFFC0000, 0x1000)]
        assert dump.info["vcpus"][0]["notes"] == ["CORE NT_PRSTATUS", "QEMU CPU state"]


@settings(max_examples=int(os.environ.get("VDECODE_HYPOTHESIS_EXAMPLES", 300)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(st.tuples(st.one_of(st.integers(0, 0x167), st.integers(0, HEAD - 8)),
                                    st.sampled_from([1, 2, 4, 8]), st.integers(0, 2**64 - 1)),
                          min_size=1, max_size=6),
       addr=st.sampled_from([0, 0x1FF0, 0xFFFC0000, 0xFFFFFFF0, 0x12345678]))
def test_mutated_real_header_opens_or_raises(real_head, mutations, addr):
    data = bytearray(real_head)
    for pos, width, value in mutations:     # header fields are 1, 2, 4 or 8 bytes wide
        data[pos:pos + width] = (value % (1 << 8 * width)).to_bytes(width, "little")
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "mut.elf"
        p.write_bytes(bytes(data))
        tracemalloc.start()
        try:
            with open_dump(p) as dump:
                if dump.space is not None:
                    for start, size in dump.space.ranges()[:4]:
                        dump.space.read(start, min(size, 64))
                    if dump.space.is_present(addr, 16):
                        assert len(bytes(dump.space.read(addr, 16))) == 16
                dump.info and str(dump.info)
        except VdecodeError:
            pass
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < 64 << 20


def test_phdrs_parsed_in_one_frombuffer_match_pyelftools(captures):
    """Cross-check the numpy program headers against pyelftools on the real process core."""
    from elftools.elf.elffile import ELFFile
    path = captures["basic"].dump("qemu-core")
    elf = facts(path)
    with open(path, "rb") as f:
        ref = ELFFile(f)
        rows = [(s["p_type"], s["p_offset"], s["p_vaddr"], s["p_filesz"], s["p_memsz"])
                for s in (ref.get_segment(i) for i in range(ref.num_segments()))]
    types = {"PT_LOAD": PT_LOAD, "PT_NOTE": PT_NOTE}
    assert [(types[t], o, v, fs, ms) for t, o, v, fs, ms in rows] == list(zip(
        *(elf.phdrs[k].tolist() for k in ("p_type", "p_offset", "p_vaddr", "p_filesz", "p_memsz"))))
    assert np.all(elf.phdrs["p_type"] > 0)


def test_cut_in_the_string_table_after_ram(tmp_path):
    """The last bytes are a section's string table, after guest RAM: no RAM is lost, but the file
    is still shorter than its headers say, and that is said."""
    data = small_dump(tmp_path)
    p = tmp_path / "cut.elf"
    p.write_bytes(data[:-1])
    with open_dump(p) as dump:
        assert dump.incomplete
        (part,) = dump.absent.parts
        assert part.kind == "cut-short" and part.absent_bytes == 0 and part.ranges == ()
        assert part.text() == (f"the dump is cut short: the file ends at offset {len(data) - 1:#x}, "
                               f"its section headers say {len(data):#x}; no guest RAM is lost")
        assert bytes(dump.space.read(0x1000, 64)) == bytes(64)
