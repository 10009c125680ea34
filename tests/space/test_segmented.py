"""SegmentedSpace and open_dump on ELF guest dumps: the real captures and synthetic files."""

from __future__ import annotations

import mmap
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders.elf_dump import DIRECT_MAP, LoadSegment, write_elf_dump
from vdecode.errors import CorruptInput, MissingData
from vdecode.sources.files import FileView
from vdecode.space.base import AddressSpace
from vdecode.space.open import open_dump
from vdecode.space.segmented import SegmentedSpace

PAGE = 4096


def pattern(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


@pytest.fixture
def small(tmp_path):
    """A file of 32 known bytes and a space: [0x1000,+8) file 0..8, [0x1008,+8) file 16..20 + zeros,
    gap, [0x2000,+4) file 28..32."""
    p = tmp_path / "small.bin"
    p.write_bytes(bytes(range(32)))
    view = FileView(p)
    yield SegmentedSpace("small.bin", view, [0x1000, 0x1008, 0x2000], [8, 8, 4], [0, 16, 28], [8, 4, 4])
    view.close()


def test_protocol(small):
    assert isinstance(small, AddressSpace)


def test_read_inside_one_run_is_zero_copy(small):
    got = small.read(0x1002, 4)
    assert isinstance(got, memoryview) and got.obj is not None
    assert bytes(got) == bytes([2, 3, 4, 5])


def test_read_straddles_file_and_zero_tail(small):
    assert bytes(small.read(0x1006, 8)) == bytes([6, 7, 16, 17, 18, 19, 0, 0])
    assert bytes(small.read(0x100C, 4)) == bytes(4)


def test_ranges_merge_adjacent_runs(small):
    assert small.ranges() == [(0x1000, 16), (0x2000, 4)]


def test_is_present(small):
    assert small.is_present(0x1000, 16)
    assert not small.is_present(0x1000, 17)
    assert not small.is_present(0xFFF, 1)
    assert small.is_present(0x2003, 1)
    assert not small.is_present(0x2003, 2)


def test_missing_messages(small):
    with pytest.raises(MissingData) as e:
        small.read(0x1800, 4)
    assert str(e.value) == "small.bin: guest-physical 0x1800+4 is not in the dump"
    with pytest.raises(MissingData) as e:
        small.read(0x100E, 8)
    assert str(e.value) == "small.bin: guest-physical 0x100e+8 is not in the dump (nothing at 0x1010)"
    with pytest.raises(MissingData) as e:
        small.read(-1, 1)
    assert str(e.value) == "small.bin: guest-physical -0x1+1 is not in the dump"


def test_kind_is_a_parameter(tmp_path):
    p = tmp_path / "core"
    p.write_bytes(b"x" * 16)
    with FileView(p) as view:
        space = SegmentedSpace("core", view, [0x7F0000000000], [16], [0], [16], kind="host-virtual")
        with pytest.raises(MissingData) as e:
            space.read(0x7F0000000010, 1)
        assert str(e.value) == "core: host-virtual 0x7f0000000010+1 is not in the dump"


def test_mapping_pieces(small):
    assert list(small.mapping(0x1006, 8)) == [(0x1006, 2, 6), (0x1008, 4, 16), (0x100C, 2, None)]


# --- the real capture ----------------------------------------------------------------------

def test_real_capture_pages_match_the_file(capture):
    """Every page read through open_dump equals the file bytes at the PT_LOAD's offset."""
    path = capture.dump("elf")
    with open_dump(path) as dump, open(path, "rb") as f:
        assert dump.format == "elf"
        raw = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        seen = 0
        for start, size, off in dump.space.runs():
            assert off is not None
            for gpa in range(start, start + size, 64 * PAGE):     # one page in 64, all runs
                got = dump.space.read(gpa, PAGE)
                assert isinstance(got, memoryview)
                assert got == raw[off + gpa - start: off + gpa - start + PAGE]
                seen += 1
        # one page in 64 of every run: at least 512 of a 128 MiB guest
        assert seen == sum(-(-size // (64 * PAGE)) for _, size, _ in dump.space.runs()) >= 512
        raw.close()


def test_real_capture_ram_layout(captures):
    with open_dump(captures["basic"].dump("elf")) as dump:
        assert dump.space.ranges() == [(0, 160 << 20), (0xFFFC0000, 0x40000)]
        assert dump.info["pages"] == 41024
        # the BIOS reset vector: a far jump
        assert bytes(dump.space.read(0xFFFFFFF0, 1)) == b"\xea"


# --- synthetic files from the writer ----------------------------------------------------------

def test_pn_xnum_reads_back(tmp_path):
    n = 70_000
    segs = [(i * PAGE, b"%08d" % i) for i in range(n)]
    path = write_elf_dump(tmp_path / "xnum.elf", segs)
    with open_dump(path) as dump:
        assert dump.info["pn_xnum"] and dump.info["pt_load"] == n
        assert bytes(dump.space.read(0, 8)) == b"00000000"
        assert bytes(dump.space.read((n - 1) * PAGE, 8)) == b"%08d" % (n - 1)
        assert len(dump.space.ranges()) == n
        with pytest.raises(MissingData):
            dump.space.read(8, 1)


def test_pn_xnum_forced_with_few_headers(tmp_path):
    data = pattern(PAGE, 1)
    path = write_elf_dump(tmp_path / "x.elf", [(0, data)], pn_xnum=True)
    with open_dump(path) as dump:
        assert dump.info["pn_xnum"] and bytes(dump.space.read(0, PAGE)) == data


def test_zero_tail_reads_as_zeros(tmp_path):
    data = pattern(100, 2)
    path = write_elf_dump(tmp_path / "tail.elf", [(0x10000, (2 * PAGE, data))])
    with open_dump(path) as dump:
        assert dump.space.ranges() == [(0x10000, 2 * PAGE)]
        assert bytes(dump.space.read(0x10000, 2 * PAGE)) == data + bytes(2 * PAGE - 100)


def test_paging_true_overlaps_and_non_ram_mappings(tmp_path):
    """paging=true: two virtual mappings of one physical range, one of MMIO (p_filesz 0)."""
    ram0, ram1 = pattern(4 * PAGE, 3), pattern(2 * PAGE, 4)
    mappings = [
        (DIRECT_MAP, 0, 4 * PAGE),                       # all of block 0
        (0xFFFFFFFF81000000, PAGE, 2 * PAGE),            # kernel-text-like alias inside block 0
        (0xFFFFC90000000000, 0xFEB00000, PAGE),          # MMIO: filesz 0, offset -1
        (DIRECT_MAP + 0x100000, 0x100000, 2 * PAGE),     # block 1
        (0xFFFFC90000001000, 0x100000 + PAGE, 3 * PAGE),  # runs past block 1: filesz PAGE
    ]
    path = write_elf_dump(tmp_path / "paging.elf", [(0, ram0), (0x100000, ram1)],
                          paging=True, mappings=mappings)
    with open_dump(path) as dump:
        assert dump.format == "elf-paging"
        assert dump.space.ranges() == [(0, 4 * PAGE), (0x100000, 2 * PAGE)]
        assert bytes(dump.space.read(0, 4 * PAGE)) == ram0
        assert bytes(dump.space.read(0x100000, 2 * PAGE)) == ram1
        with pytest.raises(MissingData) as e:
            dump.space.read(0xFEB00000, 4)
        assert str(e.value) == f"{path}: guest-physical 0xfeb00000+4 is not in the dump"
        with pytest.raises(MissingData):
            dump.space.read(0x100000 + 2 * PAGE, 1)


def test_paging_overlap_resolution_prefers_file_bytes_then_earlier_header(tmp_path):
    """Handmade overlap: header 1 covers [0, 2 pages) with its 2nd page a zero tail; header 2
    gives file bytes for [1 page, 3 pages): file bytes win over the tail; the earlier wins in
    [0,1) where both... only header 1 has it."""
    a, b = pattern(PAGE, 5), pattern(2 * PAGE, 6)
    segs = [LoadSegment(0, a, memsz=2 * PAGE, vaddr=DIRECT_MAP), LoadSegment(PAGE, b, vaddr=DIRECT_MAP + PAGE),
            LoadSegment(PAGE, pattern(PAGE, 7), vaddr=0xFFFFFFFF81000000)]
    path = write_elf_dump(tmp_path / "ov.elf", segs, notes=[], vmcoreinfo="OSRELEASE=6.1.0\n",
                          qemu_quirks=False)
    with open_dump(path) as dump:
        assert dump.format == "vmcore"          # zero tails are zeros in a vmcore
        assert bytes(dump.space.read(0, 3 * PAGE)) == a + b


def test_vmcore_reads_back(tmp_path):
    ram = pattern(8 * PAGE, 8)
    text = ram[2 * PAGE:4 * PAGE]
    segs = [LoadSegment(0x1000000, text, vaddr=0xFFFFFFFF81000000),            # kernel text alias
            LoadSegment(0x1000000 - 2 * PAGE, ram, vaddr=DIRECT_MAP + 0x1000000 - 2 * PAGE)]
    path = write_elf_dump(tmp_path / "vmcore", segs, notes=[],
                          vmcoreinfo="OSRELEASE=6.1.0-28-cloud-amd64\nPAGESIZE=4096\n",
                          qemu_quirks=False)
    with open_dump(path) as dump:
        assert dump.format == "vmcore"
        assert dump.space.ranges() == [(0x1000000 - 2 * PAGE, 8 * PAGE)]
        assert bytes(dump.space.read(0x1000000 - 2 * PAGE, 8 * PAGE)) == ram
        assert dump.info["vmcoreinfo"] == {"present": True, "size": 45,
                                           "osrelease": "6.1.0-28-cloud-amd64", "pagesize": "4096"}


def test_elf32_reads_back(tmp_path):
    data = pattern(PAGE, 9)
    path = write_elf_dump(tmp_path / "e32.elf", [(0x2000, data)], elfclass=32, machine=3)
    with open_dump(path) as dump:
        assert (dump.info["elf_class"], dump.info["machine"]) == ("ELF32", "i386")
        assert bytes(dump.space.read(0x2000, PAGE)) == data


def test_overlap_in_paging_false_dump_is_corrupt(tmp_path):
    path = write_elf_dump(tmp_path / "ov.elf", [(0, bytes(2 * PAGE)), (PAGE, bytes(PAGE))])
    with pytest.raises(CorruptInput) as e:
        open_dump(path)
    # QEMU 7.2 layout: phdrs at 0xc0 after two section headers; header 2 is the second PT_LOAD
    assert str(e.value) == (f"{path} at offset 0x130: program header 2: PT_LOAD [0x1000, 0x2000) "
                            f"overlaps program header 1 [0x0, 0x2000) in a paging=false dump")


def test_overlapping_runs_are_corrupt(tmp_path):
    p = tmp_path / "core"
    p.write_bytes(bytes(64))
    with FileView(p) as view:
        with pytest.raises(CorruptInput) as e:
            SegmentedSpace("core", view, [0x2000, 0x1000], [16, 0x1001], [0, 16], [16, 16],
                           kind="host-virtual")
        assert str(e.value) == "core: host-virtual runs overlap: [0x1000, 0x2001) and [0x2000, 0x2010)"
        with pytest.raises(CorruptInput) as e:
            SegmentedSpace("core", view, [2**64 - 8], [16], [0], [16])
        assert str(e.value) == ("core: guest-physical run at 0xfffffffffffffff8 of 0x10 bytes wraps "
                                "the address space")


@settings(max_examples=int(os.environ.get("VDECODE_HYPOTHESIS_EXAMPLES", 150)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 24), st.integers(0, 12)),
                min_size=1, max_size=8))
def test_overlap_resolution_equals_bytewise_reference(tmp_path, segs):
    """vmcore rules on arbitrary overlapping segments (paddr, filesz, zero tail), against a per-byte
    reference: the earliest header with file bytes there, else zeros if a tail covers it, else missing."""
    built, ref = [], {}
    for k, (paddr, filesz, tail) in enumerate(segs):
        data = bytes([k + 1]) * filesz
        built.append(LoadSegment(paddr, data, memsz=filesz + tail, vaddr=DIRECT_MAP + paddr))
    for a in range(0, 100):
        file_hit = next((k + 1 for k, (p, f, _) in enumerate(segs) if p <= a < p + f), None)
        tail_hit = any(p + f <= a < p + f + t for p, f, t in segs)
        if file_hit is not None:
            ref[a] = file_hit
        elif tail_hit:
            ref[a] = 0
    path = write_elf_dump(tmp_path / "h.vmcore", built, notes=[], vmcoreinfo="OSRELEASE=x\n",
                          qemu_quirks=False)
    with open_dump(path) as dump:
        got = {}
        for start, size in dump.space.ranges():
            for i, b in enumerate(bytes(dump.space.read(start, size))):
                got[start + i] = b
        assert got == ref


def test_big_endian_s390x_reads_back(tmp_path):
    data = pattern(2 * PAGE, 10)
    path = write_elf_dump(tmp_path / "s390.elf", [(0, data)], machine=22, little_endian=False,
                          notes=[("CORE", 1, bytes(336))])
    with open_dump(path) as dump:
        assert (dump.info["machine"], dump.info["endianness"]) == ("s390", "big")
        assert dump.info["vcpus"] == [{"index": 0, "notes": ["CORE NT_PRSTATUS"]}]
        assert bytes(dump.space.read(0, 2 * PAGE)) == data
