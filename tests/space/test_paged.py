"""Guest-physical reads from kdump-compressed dumps: the real capture against its ELF twin, every
codec and layout our writer makes, and the exact errors for broken descriptors and pages."""

from __future__ import annotations

import os
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.builders.kdump import EXCLUDED, MISSING, compress_page, elf_note, flatten, write_kdump
from vdecode.errors import CorruptInput, MissingData, VdecodeError
from vdecode.sources.files import FileView
from vdecode.space.base import AddressSpace
from vdecode.space.open import open_dump
from vdecode.space.paged import PagedSpace, open_kdump

BS = 4096
RNG = np.random.default_rng(2)
RANDOM = RNG.integers(0, 256, BS, dtype=np.uint8).tobytes()
TEXT = (b"virtio ring " * 400)[:BS]
PAGES = {0: b"\x55" * BS, 1: EXCLUDED, 2: bytes(BS), 3: RANDOM, 5: TEXT, 6: bytes(BS),
         8: TEXT[::-1], 9: MISSING}


def compare_with_elf(kdump_space, elf_space, chunk_pages: int = 2048) -> int:
    """Every dumped page of ``kdump_space`` equals the ELF's; returns the pages compared."""
    pages = 0
    for start, size in kdump_space.dumped_ranges():
        pfn, end = start // BS, (start + size) // BS
        while pfn < end:
            n = min(chunk_pages, end - pfn)
            a = np.frombuffer(kdump_space.read_pages(pfn, n), dtype=np.uint64)
            b = np.frombuffer(bytes(elf_space.read(pfn * BS, n * BS)), dtype=np.uint64)
            bad = np.flatnonzero(a != b)
            assert not bad.size, f"pfn {pfn + int(bad[0]) * 8 // BS:#x} differs"
            pages += n
            pfn += n
    return pages


@pytest.mark.parametrize("name", ["basic"])
def test_real_capture_equals_elf(captures, name):
    cap = captures[name]
    with open_dump(cap.dump("kdump-zlib")) as kd, open_dump(cap.dump("elf")) as elf:
        assert kd.format == "kdump-flattened"
        assert isinstance(kd.space, AddressSpace)
        assert kd.space.ranges() == kd.space.dumped_ranges()          # QEMU dumps every RAM page
        elf_ranges = elf.space.ranges()
        for start, size in kd.space.ranges():                         # kdump RAM lies in ELF RAM
            assert any(s <= start and start + size <= s + n for s, n in elf_ranges)
        assert sum(n for _, n in kd.space.ranges()) == sum(n for _, n in elf_ranges)
        assert compare_with_elf(kd.space, elf.space) == kd.info["pages"]["dumpable"] == 41024
        # the page-at-a-time path agrees with the bulk path on a sample (zlib, zero and raw pages)
        for pfn in range(0, 41000, 997):
            gpa = pfn * BS + 5
            assert bytes(kd.space.read(gpa, 64)) == bytes(elf.space.read(gpa, 64))
        info = kd.info
        assert (info["vcpus"], info["vmcoreinfo"]) == (elf.info["vcpus"], elf.info["vmcoreinfo"])
        assert info["ram_ranges"] == elf.info["ram_ranges"]
        assert info["pages"] == {"ram": 41024, "dumpable": 41024, "excluded": 0, "zero": 26459,
                                 "raw": 26489, "zlib": 14535, "lzo": 0, "snappy": 0, "zstd": 0}
        assert (info["block_size"], info["nr_cpus"], info["utsname"]["machine"],
                info["status_flags"], info["flattened_records"]) == (4096, 1, "x86_64", ["zlib"], 1255)


def expect_pages(space: PagedSpace, pages: dict) -> None:
    for pfn, page in pages.items():
        if isinstance(page, bytes):
            assert bytes(space.read(pfn * BS, BS)) == page
            assert space.is_present(pfn * BS, BS)
        else:
            assert not space.is_present(pfn * BS, 1)
            with pytest.raises(MissingData):
                space.read(pfn * BS + 1, 2)


@pytest.mark.parametrize("flattened", [True, False], ids=["flattened", "plain"])
@pytest.mark.parametrize("codec", ["zlib", "lzo", "snappy", "zstd", "none"])
def test_codecs_read_back(tmp_path, codec, flattened):
    path = tmp_path / f"{codec}.kdump"
    write_kdump(path, PAGES, codec=codec, flattened=flattened, incomplete=True, shuffle=3,
                record_size=5000)
    with open_dump(path) as dump:
        space = dump.space
        assert dump.format == ("kdump-flattened" if flattened else "kdump")
        expect_pages(space, PAGES)
        # reads across pages, raw and compressed alike, and the bulk path
        assert bytes(space.read(2 * BS + 100, BS)) == bytes(BS - 100) + RANDOM[:100]
        assert bytes(space.read_pages(2, 2)) == bytes(BS) + RANDOM
        assert bytes(space.read(5 * BS, 2 * BS)) == TEXT + bytes(BS)
        assert space.ranges() == [(0, 4 * BS), (5 * BS, 2 * BS), (8 * BS, 2 * BS)]
        assert space.dumped_ranges() == [(0, BS), (2 * BS, 2 * BS), (5 * BS, 2 * BS), (8 * BS, 2 * BS)]
        compressed = 0 if codec == "none" else 3
        assert dump.info["pages"] == {"ram": 8, "dumpable": 7, "excluded": 1, "zero": 2,
                                      "raw": 6 - compressed, "zlib": 0, "lzo": 0, "snappy": 0,
                                      "zstd": 0, **({codec: compressed} if compressed else {}),
                                      "not_written": 1}
        assert dump.info["incomplete"] and "incomplete" in dump.info["status_flags"]


def test_missing_data_messages(tmp_path):
    path = tmp_path / "m.kdump"
    write_kdump(path, PAGES | {10: TEXT, 11: TEXT}, incomplete=True, max_mapnr=12)
    with open_dump(path) as dump:
        cases = {1: "guest-physical 0x1000 (pfn 0x1) is excluded from the dump",
                 4: "guest-physical 0x4000 (pfn 0x4) is not RAM in the dump",
                 9: "guest-physical 0x9000 (pfn 0x9) was not written: the dump is incomplete "
                    "(status flag 0x8)",
                 12: "guest-physical 0xc000 is beyond the dump's last pfn (max_mapnr 0xc)"}
        for pfn, reason in cases.items():
            # one page, the bulk reader, and a read that starts on the page before
            for read in (lambda: dump.space.read(pfn * BS, 8), lambda: dump.space.read_pages(pfn, 1),
                         lambda: dump.space.read((pfn - 1) * BS, 2 * BS) if pfn != 12 else
                         dump.space.read_pages(10, 3)):
                with pytest.raises(MissingData) as err:
                    read()
                assert str(err.value) == f"{path}: {reason}"


def test_incomplete_truncated_in_page_desc_table(tmp_path):
    """makedumpfile ran out of space: the table itself stops part-way; the rest is missing."""
    path = tmp_path / "t.kdump"
    lay = write_kdump(path, {0: TEXT, 1: RANDOM, 2: TEXT, 3: RANDOM}, flattened=False, incomplete=True)
    data = path.read_bytes()
    path.write_bytes(data[:lay.desc_offset + 2 * 24 + 5])
    with open_dump(path) as dump:
        with pytest.raises(MissingData) as err:
            dump.space.read(2 * BS, 1)
        assert str(err.value) == (f"{path}: guest-physical 0x2000 (pfn 0x2) was not written: "
                                  "the dump is incomplete (status flag 0x8)")
        with pytest.raises(MissingData) as err:   # its page_desc is there, its data is not
            dump.space.read(0, 1)
        assert str(err.value) == (f"{path}: guest-physical 0x0 (pfn 0x0) was not written: "
                                  "the dump is incomplete (status flag 0x8)")
        assert not dump.space.is_present(0, BS)
        assert dump.info["pages"]["not_written"] == 2


def test_notes_and_vmcoreinfo(tmp_path):
    path = tmp_path / "n.kdump"
    vmci = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nCRASHTIME=1700000000\n"
    notes = (elf_note("CORE", 1, bytes(336)) + elf_note("CORE", 1, bytes(336))
             + elf_note("QEMU", 0, bytes(440)) + elf_note("VMCOREINFO", 0, vmci))
    write_kdump(path, {0: TEXT}, notes=notes, nr_cpus=2)
    with open_dump(path) as dump:
        assert dump.info["vmcoreinfo"] == {"present": True, "size": len(vmci), "osrelease":
                                           "6.1.0-test", "pagesize": "4096", "crashtime": "1700000000"}
        assert [c["notes"] for c in dump.info["vcpus"]] == [["CORE NT_PRSTATUS", "QEMU CPU state"],
                                                            ["CORE NT_PRSTATUS"]]
        assert dump.info["notes"] == [{"name": "QEMU", "type": 0, "size": 440},
                                      {"name": "VMCOREINFO", "type": 0, "size": len(vmci)}]


def test_note_past_note_area(tmp_path):
    path = tmp_path / "n.kdump"
    note = bytearray(elf_note("VMCOREINFO", 0, b"OSRELEASE=x\n"))
    struct.pack_into("<I", note, 4, 5000)                   # descsz beyond the area
    write_kdump(path, {0: TEXT}, notes=bytes(note), flattened=False)
    with pytest.raises(CorruptInput) as err:
        open_dump(path)
    assert str(err.value) == (f"{path} at offset 0x1068: ELF note (11-byte name, 5000-byte "
                              f"descriptor) runs past the note area ({len(note)} bytes at 0x1068)")


def test_zero_page_is_shared(tmp_path):
    path = tmp_path / "z.kdump"
    lay = write_kdump(path, {p: bytes(BS) for p in range(8)} | {8: TEXT}, flattened=False)
    with open_dump(path) as dump:
        assert {lay.data_of[p] for p in range(8)} == {lay.data_offset}
        assert bytes(dump.space.read_pages(0, 9)) == bytes(8 * BS) + TEXT
        assert dump.info["pages"]["zero"] == 8
        assert os.path.getsize(path) < lay.data_offset + 3 * BS


def test_big_endian(tmp_path):
    path = tmp_path / "be.kdump"
    write_kdump(path, PAGES, little_endian=False, codec="zlib")
    with open_dump(path) as dump:
        assert dump.info["endianness"] == "big"
        expect_pages(dump.space, {p: v for p, v in PAGES.items() if v is not MISSING})


def test_sparse_64gib(tmp_path):
    """64 GiB of RAM, 64 MiB of it dumped as zero pages, the rest excluded: small on disk."""
    path = tmp_path / "sparse.kdump"
    npfn = (64 << 30) // BS
    write_kdump(path, {npfn - 1: TEXT}, ram=[(0, npfn)], dumped_zero=[(1 << 20, 1 << 14)])
    assert os.path.getsize(path) < 8 << 20
    with open_dump(path) as dump:
        s = dump.space
        assert s.ranges() == [(0, 64 << 30)]
        assert s.dumped_ranges() == [(4 << 30, 64 << 20), ((64 << 30) - BS, BS)]
        assert bytes(s.read((64 << 30) - BS, BS)) == TEXT
        assert bytes(s.read(4 << 30, 16)) == bytes(16)
        with pytest.raises(MissingData):
            s.read(0, 1)
        assert dump.info["pages"]["dumpable"] == (1 << 14) + 1


# --- malformed pages -------------------------------------------------------------------------

def patch_desc(path, lay, pfn: int, **fields) -> None:
    """Rewrite fields of pfn's page_desc in a plain file."""
    data = bytearray(path.read_bytes())
    off = lay.desc_of[pfn]
    o, s, f, pf = struct.unpack_from("<qIIQ", data, off)
    vals = {"offset": o, "size": s, "flags": f, "page_flags": pf} | fields
    struct.pack_into("<qIIQ", data, off, *vals.values())
    path.write_bytes(bytes(data))


def store_page(path, lay, pfn: int, blob: bytes, flags: int) -> None:
    """Append ``blob`` to a plain file and point pfn's page_desc at it."""
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(blob)
    patch_desc(path, lay, pfn, offset=size, size=len(blob), flags=flags)


def read_error(path, pfn: int) -> VdecodeError:
    with open_dump(path) as dump:
        with pytest.raises(VdecodeError) as err:
            dump.space.read(pfn * BS, 1)
        with pytest.raises(type(err.value)) as bulk:
            dump.space.read_pages(pfn, 1)
        assert str(bulk.value) == str(err.value)
        return err.value


@pytest.fixture
def plain(tmp_path):
    path = tmp_path / "p.kdump"
    lay = write_kdump(path, {0: TEXT, 1: RANDOM, 2: TEXT}, flattened=False)
    return path, lay


def bomb(codec: str) -> bytes:
    return {"zlib": zlib.compress(bytes(1 << 20)), "lzo": compress_page(bytes(512 << 10), "lzo"),
            "snappy": compress_page(bytes(64 << 10), "snappy"),
            "zstd": compress_page(bytes(1 << 20), "zstd")}[codec]


@pytest.mark.parametrize("codec,flag,blob,why", [
    ("zlib", 1, "bomb", "decompresses to more than one block (4096 bytes)"),
    ("zlib", 1, zlib.compress(b"x" * 100), "decompresses to 100 bytes, not one block (4096)"),
    ("zlib", 1, zlib.compress(TEXT)[:20], "zlib stream is truncated after 0 bytes"),
    ("zlib", 1, b"not zlib", "zlib: Error -3 while decompressing data: incorrect header check"),
    ("lzo", 2, "bomb", "decompresses to 524288 bytes, not one block (4096)"),
    ("lzo", 2, compress_page(b"y" * 3000, "lzo"), "decompresses to 3000 bytes, not one block (4096)"),
    ("lzo", 2, b"\x11\x00", "lzo: LZOError EResult.InputOverrun"),
    ("snappy", 4, "bomb", "snappy stream declares 65536 bytes, not one block (4096)"),
    ("snappy", 4, compress_page(TEXT, "snappy")[:30], "snappy: corrupt input (header mismatch; "
                                                      "expected 4096 decompressed bytes but got 332)"),
    ("zstd", 0x20, "bomb", "zstd frame declares 1048576 bytes, not one block (4096)"),
    ("zstd", 0x20, "bomb-nosize", "zstd: decompression error: did not decompress full frame"),
])
def test_bad_page_data(plain, codec, flag, blob, why):
    path, lay = plain
    if blob == "bomb-nosize":
        import zstandard
        blob = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(1 << 20))
    elif blob == "bomb":
        blob = bomb(codec)
    assert len(blob) <= BS
    at = path.stat().st_size
    store_page(path, lay, 1, blob, flag)
    err = read_error(path, 1)
    assert type(err) is CorruptInput
    assert str(err) == f"{path} at offset {at:#x}: page data for pfn 0x1 ({codec}, {len(blob)} bytes): {why}"


@pytest.mark.parametrize("fields,why", [
    ({"size": 9000, "flags": 1}, "size 9000 > block_size 4096"),
    ({"size": 0xffffffff, "flags": 0}, "size 4294967295 > block_size 4096"),
    ({"size": 100, "flags": 0}, "raw page of 100 bytes, not block_size 4096"),
    ({"flags": 3}, "unknown compression flags 0x3"),
    ({"flags": 0x8}, "unknown compression flags 0x8"),
    ({"offset": -4096}, "data (4096 bytes at -0x1000) runs past the end of the file ({n} bytes)"),
    ({"offset": 0x100}, "data (4096 bytes at 0x100) lies before the page data (0x4048)"),
    ({"offset": 0}, "data (4096 bytes at 0x0) lies before the page data (0x4048)"),
    ({"offset": 1 << 62}, "data (4096 bytes at 0x4000000000000000) runs past the end of the file "
                          "({n} bytes)"),
])
def test_bad_page_desc(plain, fields, why):
    path, lay = plain
    patch_desc(path, lay, 1, **fields)
    err = read_error(path, 1)
    assert type(err) is CorruptInput
    reason = why.format(n=path.stat().st_size)
    assert str(err) == f"{path} at offset {lay.desc_of[1]:#x}: page_desc for pfn 0x1: {reason}"


def test_bad_page_desc_in_flattened_names_rearranged_offset(tmp_path):
    path = tmp_path / "f.kdump"
    lay = write_kdump(path, {0: TEXT, 1: RANDOM}, flattened=True)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, lay.file_offset(lay.desc_of[1]) + 8, 5000)
    path.write_bytes(bytes(data))
    err = read_error(path, 1)
    assert str(err) == (f"{path} (rearranged) at offset {lay.desc_of[1]:#x}: page_desc for pfn 0x1: "
                        "size 5000 > block_size 4096")


def test_page_desc_table_past_eof(plain):
    """A rearranged file cut inside its page_desc table opens as a dump cut short: the pages
    whose descriptors or data are gone are absent, counted once, and reading them says why."""
    path, lay = plain
    path.write_bytes(path.read_bytes()[:lay.desc_offset + 30])
    with open_dump(path) as dump:
        assert dump.incomplete and [p.kind for p in dump.absent.parts] == ["cut-short"]
        part = dump.absent.parts[0]
        assert part.absent_bytes == 3 * BS and "3 of 3 dumped pages are not in it" in part.reason
        assert part.reason.startswith(f"the file ends at offset {lay.desc_offset + 30:#x}, its "
                                      "headers say 0x")
        with pytest.raises(MissingData) as err:
            dump.space.read(0, 1)
        assert str(err.value).endswith(f"was not written: the file is cut short at offset "
                                       f"{lay.desc_offset + 30:#x}")


def test_bitmaps_past_eof(tmp_path):
    path = tmp_path / "b.kdump"
    lay = write_kdump(path, {0: TEXT}, flattened=False)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, 0x1b4, 2 * 1024)            # bitmap_blocks: 4 MiB of bitmaps
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptInput) as err:
        open_dump(path)
    assert str(err.value) == (f"{path} at offset {lay.bitmap1_offset:#x}: bitmap 1 (4194304 bytes) "
                              f"runs past the end of the file ({len(data)} bytes)")


# --- a real header, mutated ------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_real(captures, tmp_path_factory) -> bytes:
    """A small plain kdump whose header and sub-header blocks (notes included) are the real
    capture's, holding its first 48 pages (zlib, zero and raw ones)."""
    with open_dump(captures["basic"].dump("kdump-zlib")) as dump:
        kd = dump.space.kd
        bs = kd.block_size
        real_head = bytes(kd.data.view(0, (1 + kd.header.sub_hdr_size) * bs))
        pages = {p: bytes(dump.space.read_pages(p, 1)) for p in range(48)}
        nr_cpus, notes = kd.header.nr_cpus, bytes(kd.data.view(bs + 104, kd.sub_header.note_size))
        del kd
    path = tmp_path_factory.mktemp("small") / "small.kdump"
    lay = write_kdump(path, pages, flattened=False, nr_cpus=nr_cpus, notes=notes, max_mapnr=48)
    data = bytearray(path.read_bytes())
    head = bytearray(real_head)
    head[0x1b4:0x1bc] = data[0x1b4:0x1bc]                      # bitmap_blocks, max_mapnr
    head[bs + 96:bs + 104] = data[bs + 96:bs + 104]            # max_mapnr_64
    data[:len(head)] = head
    assert lay.bitmap1_offset == len(head)
    path.write_bytes(bytes(data))
    with open_dump(path) as dump:
        assert bytes(dump.space.read_pages(0, 48)) == b"".join(pages.values())
    return bytes(data)


def read_everything(path) -> None:
    """Open and read every page, as a user would; only VdecodeError may come out."""
    with FileView(path) as view:
        try:
            dump = open_kdump(view)
        except VdecodeError:
            return
        space = dump.space
        for start, size in space.ranges():
            for pfn in range(start // BS, (start + size) // BS):
                try:
                    bytes(space.read(pfn * BS, BS))
                except VdecodeError:
                    pass
        try:
            space.page_counts()
        except VdecodeError:
            pass
        del space, dump


def within_memory(fn, limit: int = 64 << 20) -> None:
    tracemalloc.start()
    try:
        fn()
        assert tracemalloc.get_traced_memory()[1] < limit
    finally:
        tracemalloc.stop()


def mutate(data, blob: bytearray, offsets) -> bytearray:
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(offsets)
        width = data.draw(st.sampled_from([1, 4, 8]))
        value = data.draw(st.sampled_from([0, 0xff, 0x7f, 0x80]) | st.integers(0, 255))
        blob[at:at + width] = bytes([value]) * width
    if data.draw(st.booleans()):
        blob = blob[:data.draw(st.integers(0, len(blob)))]
    return blob


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_real_header(small_real, tmp_path, data):
    blob = bytearray(small_real)
    region = st.integers(0, 0x1d0) | st.integers(4096, 4096 + 104) | st.integers(2 * 4096, len(blob) - 1)
    path = tmp_path / "mut.kdump"
    path.write_bytes(bytes(mutate(data, blob, region)))
    within_memory(lambda: read_everything(path))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_real_header_flattened(small_real, tmp_path, data):
    """The same file as QEMU 7.2 would stream it; record headers are mutated too."""
    stream, heads = flatten(small_real, seed=1)
    blob = bytearray(stream)
    at_head = st.sampled_from(heads).flatmap(lambda h: st.integers(h, h + 15))
    region = at_head | st.integers(0, 32) | st.integers(heads[0], len(blob) - 1)
    path = tmp_path / "mut.kdump"
    path.write_bytes(bytes(mutate(data, blob, region)))
    within_memory(lambda: read_everything(path))


def test_flattened_small_real_reads_back(small_real, tmp_path):
    path, plain = tmp_path / "f.kdump", tmp_path / "p.kdump"
    path.write_bytes(flatten(small_real, seed=1)[0])
    plain.write_bytes(small_real)
    with open_dump(path) as f, open_dump(plain) as p:
        assert f.format == "kdump-flattened"
        assert bytes(f.space.read_pages(0, 48)) == bytes(p.space.read_pages(0, 48))


# --- numpy against scalar references ---------------------------------------------------------

def runs_reference(bitmap: bytes) -> tuple[list[int], list[int]]:
    bits = [b >> i & 1 for b in bitmap for i in range(8)] + [0]
    starts = [i for i, v in enumerate(bits) if v and (i == 0 or not bits[i - 1])]
    ends = [i for i, v in enumerate(bits) if not v and i > 0 and bits[i - 1]]
    return starts, ends


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0, 0xff, 0x01, 0x80, 0x7e]) | st.integers(0, 255), max_size=40))
def test_runs_equal_scalar_reference(bitmap):
    from vdecode.space.paged import _runs
    starts, ends = _runs(np.array(bitmap, dtype=np.uint8))
    assert (starts.tolist(), ends.tolist()) == runs_reference(bytes(bitmap))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pfns=st.sets(st.integers(0, 1500), min_size=1, max_size=120),
       excluded=st.sets(st.integers(0, 1500), max_size=30),
       flattened=st.booleans())
def test_rank_finds_every_page(tmp_path, pfns, excluded, flattened):
    """Each dumped pfn reads back its own bytes (so its page_desc index, the bitmap-2 rank, is
    right); the run reader agrees with the page reader."""
    pages = {p: (p.to_bytes(2, "little") * (BS // 2)) for p in pfns}
    pages |= {p: EXCLUDED for p in excluded - pfns}
    path = tmp_path / "r.kdump"
    write_kdump(path, pages, codec="none", flattened=flattened)
    with open_dump(path) as dump:
        s = dump.space
        for p in sorted(pfns):
            assert s.desc_index(p) == sum(1 for q in pfns if q < p)
            assert bytes(s.read(p * BS, BS)) == pages[p]
        for start, size in s.dumped_ranges():
            first, n = start // BS, size // BS
            assert bytes(s.read_pages(first, n)) == b"".join(pages[q] for q in range(first, first + n))
        assert [r[0] // BS for r in s.ranges()] == runs_reference(bytes(
            np.packbits(np.isin(np.arange(max(pages) + 1), list(pages)), bitorder="little")))[0]


def test_cache_is_bounded(tmp_path):
    path = tmp_path / "c.kdump"
    pages = {p: (b"%04d" % p) * (BS // 4) for p in range(40)}
    write_kdump(path, pages, codec="zlib")
    with FileView(path) as view:
        space = PagedSpace(open_kdump(view).space.kd, cache_pages=8)
        first = space.read_page(0)
        assert space.read_page(0) is first                 # served from the cache
        for p in range(1, 40):
            assert space.read_page(p) == pages[p]
        assert len(space._cache) == 8 and 0 not in space._cache
        del space


def test_real_capture_rearranged_equals_flattened(captures, tmp_path):
    """makedumpfile -R's layout (QEMU 8.2 kdump-raw-zlib) reads the same as QEMU 7.2's stream."""
    flat_path = captures["basic"].dump("kdump-zlib")
    plain_path = tmp_path / "basic.rearranged.kdump"
    with open_dump(flat_path) as flat:
        plain_path.write_bytes(bytes(flat.space.kd.data.memory()))
        with open_dump(plain_path) as plain:
            assert plain.format == "kdump"
            assert plain.space.ranges() == flat.space.ranges()
            assert {k: v for k, v in plain.info.items() if not k.startswith(("flattened", "file_size"))} == \
                {k: v for k, v in flat.info.items() if not k.startswith(("flattened", "file_size"))}
            for start, size in flat.space.ranges():
                pfn, end = start // BS, (start + size) // BS
                while pfn < end:
                    n = min(4096, end - pfn)
                    assert plain.space.read_pages(pfn, n) == flat.space.read_pages(pfn, n)
                    pfn += n


def test_flattened_stream_cut_short(tmp_path):
    """A stream cut anywhere after its bitmaps opens as an incomplete dump: every page reads back
    its own bytes or is MissingData, never wrong bytes (a gap is not a page of zeros)."""
    rng = np.random.default_rng(9)
    pages = {p: (rng.integers(0, 256, BS, dtype=np.uint8).tobytes() if p % 3 == 0 else
                 bytes(BS) if p % 3 == 1 else TEXT[p:] + TEXT[:p]) for p in range(60)}
    full = tmp_path / "full.kdump"
    lay = write_kdump(full, pages, record_size=3 * BS)
    stream = full.read_bytes()
    bitmaps_done = max(fo + n for o, n, fo in lay.records if o < lay.desc_offset)
    cuts = sorted({fo - 16 for _, _, fo in lay.records if fo > bitmaps_done}
                  | {fo + 100 for _, _, fo in lay.records if fo > bitmaps_done} | {len(stream) - 16})
    seen_missing = 0
    for cut in cuts:
        path = tmp_path / "cut.kdump"
        path.write_bytes(stream[:cut])
        with open_dump(path) as dump:
            assert dump.info["incomplete"] and dump.info["flattened_cut"].startswith("at offset 0x")
            for p, page in pages.items():
                try:
                    got = bytes(dump.space.read(p * BS, BS))
                except MissingData as err:
                    assert str(err) == (f"{path}: guest-physical {p * BS:#x} (pfn {p:#x}) was not "
                                        "written: the flattened stream is cut short (no end marker)")
                    seen_missing += 1
                    assert not dump.space.is_present(p * BS, BS)
                    continue
                assert got == page
                assert dump.space.is_present(p * BS, BS)
    assert seen_missing > len(cuts)


def test_flattened_cut_before_bitmaps(tmp_path):
    path = tmp_path / "cut.kdump"
    lay = write_kdump(path, {0: TEXT})
    bitmap2_record = next(fo for o, n, fo in lay.records if o == lay.bitmap2_offset)
    path.write_bytes(path.read_bytes()[:bitmap2_record + 10])
    with pytest.raises(CorruptInput) as err:
        open_dump(path)
    assert str(err.value) == (f"{path} at offset {bitmap2_record - 16:#x}: flattened record for "
                              f"offset {lay.bitmap2_offset:#x}: size 4096 runs past the end of the "
                              f"file ({bitmap2_record + 10} bytes)")


@pytest.mark.parametrize("block_size", [512, 16384, 65536])
@pytest.mark.parametrize("codec", ["zlib", "lzo", "snappy", "zstd"])
def test_other_block_sizes(tmp_path, block_size, codec):
    """arm64 / ppc64 page sizes: every decoder must give one block of that size."""
    page = (TEXT * (block_size // BS + 1))[:block_size]
    pages = {0: page, 1: bytes(block_size), 3: page[::-1], 4: EXCLUDED}
    path = tmp_path / "bs.kdump"
    write_kdump(path, pages, codec=codec, block_size=block_size, machine="aarch64")
    with open_dump(path) as dump:
        assert dump.info["page_size"] == block_size
        s = dump.space
        assert bytes(s.read(0, 2 * block_size)) == page + bytes(block_size)
        assert bytes(s.read(3 * block_size + 7, 9)) == page[::-1][7:16]
        assert dump.info["pages"][codec] == 2
        with pytest.raises(MissingData) as err:
            s.read(4 * block_size, 1)
        assert str(err.value) == (f"{path}: guest-physical {4 * block_size:#x} (pfn 0x4) is "
                                  "excluded from the dump")


@pytest.mark.parametrize("flattened", [True, False], ids=["flattened", "plain"])
@pytest.mark.parametrize("little", [True, False], ids=["le", "be"])
def test_32bit_headers(tmp_path, flattened, little):
    """QEMU's packed DiskDumpHeader32 / KdumpSubHeader32 (32-bit ARM guests)."""
    path = tmp_path / "arm.kdump"
    vmci = b"OSRELEASE=5.10.0-armmp\n"
    pages = {p: v for p, v in PAGES.items() if v is not MISSING}
    write_kdump(path, pages, word_size=32, machine="arm", flattened=flattened, little_endian=little,
                notes=elf_note("VMCOREINFO", 0, vmci, little), nr_cpus=2)
    with open_dump(path) as dump:
        assert dump.info["header"] == "DiskDumpHeader32"
        assert (dump.info["machine"], dump.info["nr_cpus"]) == ("arm", 2)
        assert dump.info["vmcoreinfo"]["osrelease"] == "5.10.0-armmp"
        expect_pages(dump.space, pages)


def test_32bit_header_errors_name_its_offsets(tmp_path):
    path = tmp_path / "arm.kdump"
    write_kdump(path, {0: TEXT}, word_size=32, flattened=False)
    data = bytearray(path.read_bytes())
    struct.pack_into("<Q", data, 4096 + 72, 1 << 40)          # KdumpSubHeader32.max_mapnr_64
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptInput) as err:
        open_dump(path)
    assert str(err.value) == (f"{path} at offset 0x1048: max_mapnr 0x10000000000 exceeds the "
                              "0x8000 bits of a bitmap (2 blocks for both)")


def test_addresses_outside_the_dump(tmp_path):
    path = tmp_path / "o.kdump"
    write_kdump(path, {0: TEXT, 1: TEXT}, max_mapnr=4)
    with open_dump(path) as dump:
        s = dump.space
        for call, reason in [(lambda: s.read(-4096, 4), "guest-physical -0x1000+4 is not an address range"),
                             (lambda: s.read_pages(-1, 2), "guest-physical -0x1000 is not an address"),
                             (lambda: s.read_page(-1), "guest-physical -0x1000 is not an address"),
                             (lambda: s.read_pages(1, 5), "guest-physical 0x2000 (pfn 0x2) is not RAM "
                                                          "in the dump"),
                             (lambda: s.read_pages(3, 2), "guest-physical 0x3000 (pfn 0x3) is not RAM "
                                                          "in the dump"),
                             (lambda: s.read_pages(4, 2), "guest-physical 0x4000 is beyond the dump's "
                                                          "last pfn (max_mapnr 0x4)"),
                             (lambda: s.read(1 << 40, 1), "guest-physical 0x10000000000 is beyond the "
                                                          "dump's last pfn (max_mapnr 0x4)")]:
            with pytest.raises(MissingData) as err:
                call()
            assert str(err.value) == f"{path}: {reason}"
        assert not s.is_present(-1, 2) and not s.is_present(3 * BS, 2 * BS) and s.is_present(0, 2 * BS)
        assert s.is_present(5, 0) and bytes(s.read(4095, 2)) == TEXT[-1:] + TEXT[:1]


def test_compressed_kdump_as_attached_to_a_bug_report(captures, tmp_path):
    """The capture's own dump.kdump-zlib.zst: decompressed once by open_dump, read by content."""
    cap = captures["basic"]
    zst = cap.folder / cap.manifest["dumps"]["kdump-zlib"]
    with open_dump(zst, cache_dir=tmp_path) as dump, open_dump(cap.dump("kdump-zlib")) as plain:
        assert dump.format == "kdump-flattened" and dump.path == str(zst)
        assert bytes(dump.space.read_pages(0x1000, 256)) == bytes(plain.space.read_pages(0x1000, 256))
