"""kdump-compressed files as facts: layouts, the flattened record index, headers, bitmaps, and the
exact errors for broken headers and streams."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tests.builders.kdump import EXCLUDED, write_kdump
from vdecode.errors import CorruptInput, UnsupportedInput
from vdecode.sources.files import FileView
from vdecode.sources.flattened import (FLAT_RECORD, FLAT_RECORD_DTYPE, MAKEDUMPFILE_HEADER,
                                       FlattenedView, read_flat_index)
from vdecode.sources.kdump import KdumpLayouts, read_kdump

PAGES = {0: b"\x55" * 4096, 1: bytes(range(256)) * 16, 2: bytes(4096), 3: b"ab" * 2048}


def common(layout, data: bytes, size: int) -> None:
    """construct's ``common()``: parse, build back to the same bytes, ``sizeof``."""
    obj = layout.parse(data)
    assert layout.build(obj) == data
    assert layout.sizeof() == size == len(data)


@pytest.mark.parametrize("word_size", [64, 32])
@pytest.mark.parametrize("little", [True, False])
def test_layouts_round_trip(little, word_size, tmp_path):
    lay = KdumpLayouts(little, word_size == 64)
    write_kdump(tmp_path / "k", PAGES, flattened=False, little_endian=little, nr_cpus=3,
                word_size=word_size)
    raw = (tmp_path / "k").read_bytes()
    hsize, ssize = (464, 104) if word_size == 64 else (452, 80)
    common(lay.disk_dump_header, raw[:hsize], hsize)
    common(lay.kdump_sub_header, raw[4096:4096 + ssize], ssize)
    assert lay.kdump_sub_header.parse(raw[4096:4096 + ssize]).max_mapnr_64 == 4
    common(lay.page_desc, raw[0x4000:0x4000 + 24], 24)
    assert lay.page_desc.sizeof() == lay.page_desc_dtype.itemsize
    assert lay.disk_dump_header.parse(raw[:464]).nr_cpus == 3
    common(MAKEDUMPFILE_HEADER, b"makedumpfile\0\0\0\0" + struct.pack(">qq", 1, 1), 32)
    common(FLAT_RECORD, struct.pack(">qq", 0x1000, 24), 16)
    assert FLAT_RECORD.sizeof() == FLAT_RECORD_DTYPE.itemsize


def naive_rearrange(path) -> bytes:
    """makedumpfile -R in a few lines: apply the records in order, later wins, gaps are zero."""
    raw = open(path, "rb").read()
    out = bytearray()
    pos = 4096
    while True:
        off, n = struct.unpack_from(">qq", raw, pos)
        if off == -1:
            return bytes(out)
        if n and off + n > len(out):      # a write of 0 bytes past the end does not extend a file
            out += bytes(off + n - len(out))
        out[off:off + n] = raw[pos + 16:pos + 16 + n]
        pos += 16 + n


def test_real_capture_headers(captures):
    path = captures["basic"].dump("kdump-zlib")
    with FileView(path) as view:
        kd = read_kdump(view)
        h = kd.header
        assert (h.header_version, h.block_size, h.status, h.status_names) == (6, 4096, 1, ["zlib"])
        assert h.utsname["machine"] == "x86_64" and h.little_endian
        assert h.nr_cpus == 1 and h.sub_hdr_size == 1 and h.bitmap_blocks == 64
        assert kd.max_mapnr == 0x100000 == kd.sub_header.max_mapnr_64
        assert kd.sub_header.dump_level == 1 and kd.sub_header.offset_note == 4096 + 104
        assert kd.flat.n_records == 1255 and not kd.flat.overlapping
        assert np.array_equal(kd.bitmap1, kd.bitmap2)        # QEMU writes identical bitmaps
        # the in-place view equals makedumpfile -R's output, byte for byte
        assert bytes(kd.data.memory()) == naive_rearrange(path)
        del kd


@pytest.mark.parametrize("shuffle", [None, 7])
def test_flattened_equals_plain(tmp_path, shuffle):
    write_kdump(tmp_path / "flat", PAGES, shuffle=shuffle, record_size=1000)
    write_kdump(tmp_path / "plain", PAGES, flattened=False)
    with FileView(tmp_path / "flat") as f, FileView(tmp_path / "plain") as p:
        kd = read_kdump(f)
        assert bytes(kd.data.memory()) == bytes(p.memory())
        assert bytes(kd.data.view(0x4010, 40)) == bytes(p.view(0x4010, 40))   # straddles records
        del kd


def test_flattened_later_record_wins(tmp_path):
    at = 0x4060 + 4096     # page 0's data, after the page_desc table and the shared zero page
    lay = write_kdump(tmp_path / "flat", PAGES, codec="none",
                      extra_records=[(0, b""), (at + 10, b"\xee" * 20), (at + 20, b"\xdd" * 4)])
    assert lay.data_of[0] == at
    with FileView(tmp_path / "flat") as f:
        ix = read_flat_index(f)
        assert ix.overlapping and ix.n_records == len(lay.records) - 1    # the empty record is dropped
        rearranged = FlattenedView(f, ix)
        assert bytes(rearranged.memory()) == naive_rearrange(tmp_path / "flat")
        assert bytes(rearranged.view(at + 8, 18)) == b"\x55\x55" + b"\xee" * 10 + b"\xdd" * 4 + b"\xee" * 2
        assert rearranged.file_offset(at + 20) == lay.records[-1][2]
        assert rearranged.file_offset(0x1000 + 104 + 8) is None                 # a gap
        del rearranged


def test_big_endian_and_excluded(tmp_path):
    write_kdump(tmp_path / "be", {0: PAGES[0], 5: EXCLUDED, 9: PAGES[1]}, little_endian=False,
                machine="s390x")
    with FileView(tmp_path / "be") as f:
        kd = read_kdump(f)
        assert not kd.header.little_endian and kd.header.utsname["machine"] == "s390x"
        assert kd.max_mapnr == 10
        assert kd.bitmap1.tolist() == [0b100001, 0b10] and kd.bitmap2.tolist() == [0b000001, 0b10]
        del kd


# --- malformed input -------------------------------------------------------------------------

def open_bytes(tmp_path, data: bytes, name: str = "bad.kdump"):
    path = tmp_path / name
    path.write_bytes(data)
    with FileView(path) as view:
        kd = read_kdump(view)
        del kd


def patched(data: bytes, offset: int, fmt: str, *values) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)


@pytest.fixture
def flat(tmp_path) -> bytes:
    write_kdump(tmp_path / "flat", PAGES)
    return (tmp_path / "flat").read_bytes()


@pytest.fixture
def plain(tmp_path) -> bytes:
    write_kdump(tmp_path / "plain", PAGES, flattened=False)
    return (tmp_path / "plain").read_bytes()


@pytest.mark.parametrize("cut,reason", [
    (16, "at offset 0x0: makedumpfile_header (32 bytes) runs past the end of the file (16 bytes)"),
    (31, "at offset 0x0: makedumpfile_header (32 bytes) runs past the end of the file (31 bytes)"),
    (4096, "at offset 0x1000: flattened stream ends without its end marker (-1, -1)"),
    (4104, "at offset 0x1000: flattened record header (16 bytes) runs past the end of the file "
           "(4104 bytes)"),
    (4112, "at offset 0x1000: flattened record for offset 0x0: size 464 runs past the end of the "
           "file (4112 bytes)"),
    (4576, "at offset 0x11e0: flattened stream ends without its end marker (-1, -1)"),
    (4642, "at offset 0x11e0: flattened record for offset 0x1000: size 104 runs past the end of "
           "the file (4642 bytes)"),
])
def test_flattened_truncated(tmp_path, flat, cut, reason):
    with pytest.raises(CorruptInput) as err:
        open_bytes(tmp_path, flat[:cut])
    assert str(err.value) == f"{tmp_path / 'bad.kdump'} {reason}"


def test_flattened_without_end_marker(tmp_path, flat):
    """A stream cut after its last record holds everything: it opens, flagged incomplete."""
    path = tmp_path / "cut.kdump"
    path.write_bytes(flat[:-16])
    with FileView(path) as view:
        kd = read_kdump(view)
        assert kd.truncated and kd.incomplete
        assert kd.flat.cut_offset == len(flat) - 16
        assert kd.flat.cut_reason == "flattened stream ends without its end marker (-1, -1)"
        del kd


@pytest.mark.parametrize("offset,size,reason", [
    (-5, 464, "flattened record: offset -0x5 is not a file offset"),
    (1 << 60, 464, "flattened record: offset 0x1000000000000000 is not a file offset"),
    (0, -1, "flattened record for offset 0x0: size -1 is negative"),
    (0, -(1 << 63), "flattened record for offset 0x0: size -9223372036854775808 is negative"),
    (0, (1 << 63) - 1, "flattened record for offset 0x0: size 9223372036854775807 runs past the "
                       "end of the file ({n} bytes)"),
])
def test_flattened_bad_record(tmp_path, flat, offset, size, reason):
    with pytest.raises(CorruptInput) as err:
        open_bytes(tmp_path, patched(flat, 4096, ">qq", offset, size))
    assert str(err.value) == f"{tmp_path / 'bad.kdump'} at offset 0x1000: {reason.format(n=len(flat))}"


def test_flattened_bad_signature(tmp_path, flat):
    with pytest.raises(CorruptInput) as err:
        open_bytes(tmp_path, patched(flat, 12, "4s", b"\0\0\0x"))
    assert str(err.value) == (f"{tmp_path / 'bad.kdump'} at offset 0x0: makedumpfile_header: "
                              "signature b'makedumpfile\\x00\\x00\\x00x', expected "
                              "b'makedumpfile\\x00\\x00\\x00\\x00'")


def test_flattened_bad_header(tmp_path, flat):
    with pytest.raises(CorruptInput) as err:
        open_bytes(tmp_path, patched(flat, 16, ">q", 2))
    assert str(err.value) == (f"{tmp_path / 'bad.kdump'} at offset 0x10: makedumpfile_header: "
                              "type 2, version 1 (expected 1, 1)")


@pytest.mark.parametrize("cut,reason", [
    (0, "at offset 0x0: disk_dump_header (464 bytes) runs past the end of the file (0 bytes)"),
    (8, "at offset 0x0: disk_dump_header (464 bytes) runs past the end of the file (8 bytes)"),
    (0x1a8, "at offset 0x0: disk_dump_header (464 bytes) runs past the end of the file (424 bytes)"),
    (464, "at offset 0x1b0: disk_dump_header: sub_hdr_size 1 (blocks of 4096 bytes) runs past the "
          "end of the file (464 bytes)"),
    (4096, "at offset 0x1000: kdump_sub_header (104 bytes) runs past the end of the file "
           "(4096 bytes)"),
    (4200, "at offset 0x2000: bitmap 1 (4096 bytes) runs past the end of the file (4200 bytes)"),
    (12288, "at offset 0x3000: bitmap 2 (4096 bytes) runs past the end of the file (12288 bytes)"),
])
def test_plain_truncated(tmp_path, plain, cut, reason):
    with pytest.raises(CorruptInput) as err:
        open_bytes(tmp_path, plain[:cut])
    assert str(err.value) == f"{tmp_path / 'bad.kdump'} {reason}"


@pytest.mark.parametrize("offset,fmt,value,error,reason", [
    (0, "8s", b"KDUMP!! ", CorruptInput,
     "at offset 0x0: disk_dump_header: signature b'KDUMP!! ', expected b'KDUMP   '"),
    (8, "<i", 0, CorruptInput, "at offset 0x8: disk_dump_header: header_version 00000000 is not a "
                               "small positive number in either byte order"),
    (0x1ac, "<i", 3000, CorruptInput, "at offset 0x1ac: disk_dump_header: block_size 3000 is not a "
                                      "power of two in [512, 65536]"),
    (0x1ac, "<i", 1 << 20, CorruptInput, "at offset 0x1ac: disk_dump_header: block_size 1048576 is "
                                         "not a power of two in [512, 65536]"),
    (0x1b0, "<i", -1, CorruptInput, "at offset 0x1b0: disk_dump_header: sub_hdr_size -1 (blocks of "
                                    "4096 bytes) runs past the end of the file ({n} bytes)"),
    (0x1b4, "<I", 3, CorruptInput, "at offset 0x1b4: disk_dump_header: bitmap_blocks 3 is not a "
                                   "positive even number (two bitmaps)"),
    (0x1b4, "<I", 0xfffffffe, CorruptInput,
     "at offset 0x2000: bitmap 1 (8796093018112 bytes) runs past the end of the file ({n} bytes)"),
    (4096 + 96, "<Q", 1 << 40, CorruptInput, "at offset 0x1060: max_mapnr 0x10000000000 exceeds the "
                                             "0x8000 bits of a bitmap (2 blocks for both)"),
    (4096 + 12, "<i", 1, UnsupportedInput, "at offset 0x100c: kdump_sub_header: split dump (one "
                                           "file of a set of pfns 0x0-0x0) is not supported"),
])
def test_plain_bad_header(tmp_path, plain, offset, fmt, value, error, reason):
    with pytest.raises(error) as err:
        open_bytes(tmp_path, patched(plain, offset, fmt, value))
    assert type(err.value) is error
    assert str(err.value) == f"{tmp_path / 'bad.kdump'} {reason.format(n=len(plain))}"


def test_flattened_errors_name_the_rearranged_offset(tmp_path, flat):
    data = patched(flat, 4112 + 0x1ac, "<i", 3000)     # block_size inside the first record
    with pytest.raises(CorruptInput) as err:
        open_bytes(tmp_path, data)
    assert str(err.value) == (f"{tmp_path / 'bad.kdump'} (rearranged) at offset 0x1ac: "
                              "disk_dump_header: block_size 3000 is not a power of two in "
                              "[512, 65536]")


def test_flattened_gap_cannot_allocate(tmp_path):
    """A far record makes the rearranged file huge; a bitmap inside the gap must not be copied."""
    write_kdump(tmp_path / "flat", PAGES, extra_records=[(1 << 50, b"x")])
    data = patched((tmp_path / "flat").read_bytes(), 4112 + 0x1b4, "<I", 1 << 20)   # bitmap_blocks
    with pytest.raises(CorruptInput) as err:
        open_bytes(tmp_path, data)
    assert str(err.value) == (f"{tmp_path / 'bad.kdump'} (rearranged) at offset 0x2000: bitmap 1 "
                              f"(2147483648 bytes) is larger than the whole flattened file "
                              f"({len(data)} bytes)")


@pytest.mark.parametrize("seed", range(5))
def test_later_wins_against_naive(tmp_path, seed):
    """Many overlapping records: the sweep gives what applying them in order gives."""
    rng = np.random.default_rng(seed)
    extra = [(int(rng.integers(0, 0x6000)), bytes([int(rng.integers(1, 255))]) * int(rng.integers(1, 3000)))
             for _ in range(60)]
    write_kdump(tmp_path / "flat", PAGES, codec="none", extra_records=extra, shuffle=seed)
    with FileView(tmp_path / "flat") as f:
        ix = read_flat_index(f)
        assert ix.overlapping
        assert bytes(FlattenedView(f, ix).memory()) == naive_rearrange(tmp_path / "flat")


def test_flat_index_cache(tmp_path):
    """A large stream's index is kept and found again; a cache that does not fit is ignored."""
    from vdecode.sources.flattened import flat_index_cache_path
    write_kdump(tmp_path / "flat", PAGES, record_size=100, shuffle=2)
    cache = tmp_path / "cache"
    with FileView(tmp_path / "flat") as f:
        walked = read_flat_index(f)
        read_flat_index(f, cache_dir=cache)
        assert not cache.exists()                                       # too few records to keep
        first = read_flat_index(f, cache_dir=cache, cache_min_records=10)
        kept = flat_index_cache_path(f, cache)
        assert kept.exists()
        again = read_flat_index(f, cache_dir=cache, cache_min_records=10)
        for ix in (first, again):
            for field in ("starts", "ends", "file_offsets"):
                assert np.array_equal(getattr(ix, field), getattr(walked, field))
            assert (ix.n_records, ix.overlapping, ix.size, ix.cut_offset) == \
                (walked.n_records, walked.overlapping, walked.size, None)
        bad = dict(np.load(kept))
        bad["file_offsets"] = bad["file_offsets"] + (1 << 40)            # would read past the end
        np.savez(kept, **bad)
        assert np.array_equal(read_flat_index(f, cache_dir=cache).file_offsets, walked.file_offsets)
        kept.write_bytes(b"not an npz")
        assert np.array_equal(read_flat_index(f, cache_dir=cache).file_offsets, walked.file_offsets)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.binary(min_size=0, max_size=90)), max_size=40),
       st.integers(0, 400), st.integers(0, 120))
def test_flattened_view_equals_naive_rearrangement(records, at, n):
    """Any record list, overlapping or not: in-place reads equal makedumpfile -R's file."""
    import tempfile
    stream = bytearray(b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1)).ljust(4096, b"\0")
    for off, blob in records:
        stream += struct.pack(">qq", off, len(blob)) + blob
    stream += struct.pack(">qq", -1, -1)
    with tempfile.NamedTemporaryFile() as tmp:
        tmp.write(stream)
        tmp.flush()
        expected = naive_rearrange(tmp.name)
        with FileView(tmp.name) as f:
            view = FlattenedView(f, read_flat_index(f))
            assert view.size == len(expected)
            assert bytes(view.memory()) == expected
            if at + n <= len(expected):
                assert bytes(view.view(at, n)) == expected[at:at + n]
                assert view.covered(at, n) == all(
                    any(o <= x < o + len(b) for o, b in records) for x in range(at, at + n))
            del view
