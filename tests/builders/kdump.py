"""Writer of kdump-compressed files for tests and benchmarks (libkdumpfile ``tests/mkdiskdump.c`` in
spirit): the rearranged layout of makedumpfile ``diskdump_mod.h`` and, by default, the flattened
stream QEMU v7.2.0 ``dump/dump.c`` writes (``write_start_flat_header``, ``write_buffer``).

It writes what :mod:`vdecode.sources.kdump` reads::

    layout = write_kdump(tmp_path / "x.kdump", {0: b"\\x55" * 4096, 1: EXCLUDED}, codec="lzo")
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

__all__ = ("EXCLUDED", "MISSING", "KdumpLayout", "compress_page", "elf_note", "flatten",
           "write_kdump")

FLAGS = {"none": 0, "zlib": 0x1, "lzo": 0x2, "snappy": 0x4, "zstd": 0x20}
INCOMPLETE = 0x8


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


EXCLUDED = _Marker("EXCLUDED")   # RAM (bitmap 1) but not dumped (bitmap 2 clear): makedumpfile -d
MISSING = _Marker("MISSING")     # dumped, but an incomplete dump never wrote it (page_desc all zero)


def elf_note(name: str, ntype: int, desc: bytes, little_endian: bool = True) -> bytes:
    """One ELF note (``Elf64_Nhdr``, name and descriptor padded to 4 bytes)."""
    raw = name.encode() + b"\0"
    pad = lambda b: b + bytes(-len(b) % 4)   # noqa: E731
    return (struct.pack(("<" if little_endian else ">") + "III", len(raw), len(desc), ntype)
            + pad(raw) + pad(desc))


def flatten(rearranged: bytes, chunk: int = 4096, seed: int | None = None) -> tuple[bytes, list[int]]:
    """A rearranged kdump as a flattened stream of ``chunk``-byte records (all-zero chunks left
    out, as gaps), optionally shuffled; returns the stream and where each record header is."""
    recs = [(o, rearranged[o:o + chunk]) for o in range(0, len(rearranged), chunk)]
    recs = [r for r in recs if any(r[1])] + [(len(rearranged) - 1, rearranged[-1:])]
    if seed is not None:
        random.Random(seed).shuffle(recs)
    out = bytearray(b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1).ljust(4096 - 16, b"\0"))
    heads = []
    for off, blob in recs:
        heads.append(len(out))
        out += struct.pack(">qq", off, len(blob)) + blob
    heads.append(len(out))
    out += struct.pack(">qq", -1, -1)
    return bytes(out), heads


def compress_page(page: bytes, codec: str) -> bytes:
    """One page compressed the way QEMU / makedumpfile do it (raw LZO1X, raw snappy)."""
    if codec == "zlib":
        return zlib.compress(page, 1)            # QEMU: compress2(..., Z_BEST_SPEED)
    if codec == "lzo":
        import lzallright
        return lzallright.LZOCompressor().compress(page)
    if codec == "snappy":
        import cramjam
        return bytes(cramjam.snappy.compress_raw(page))
    if codec == "zstd":
        import zstandard
        return zstandard.ZstdCompressor().compress(page)
    raise ValueError(codec)


@dataclass
class KdumpLayout:
    """Where things went, as rearranged-file offsets (and, flattened, the records written)."""

    block_size: int
    max_mapnr: int
    bitmap1_offset: int
    bitmap2_offset: int
    desc_offset: int
    data_offset: int
    size: int                                   # rearranged size
    desc_of: dict[int, int] = field(default_factory=dict)      # pfn -> its page_desc offset
    data_of: dict[int, int] = field(default_factory=dict)      # pfn -> its page data offset
    records: list[tuple[int, int, int]] = field(default_factory=list)  # (offset, size, file offset)
    file_size: int = 0

    def file_offset(self, offset: int) -> int:
        """File offset of rearranged ``offset`` (itself for a plain file)."""
        if not self.records:
            return offset
        for o, n, fo in reversed(self.records):
            if o <= offset < o + n:
                return fo + offset - o
        raise KeyError(offset)


def _set_bits(bitmap: np.ndarray, pfns: np.ndarray) -> None:
    np.bitwise_or.at(bitmap, pfns >> 3, (1 << (pfns & 7)).astype(np.uint8))


def write_kdump(path: str | Path, pages: Mapping[int, object], *, codec: str = "zlib",
                flattened: bool = True, incomplete: bool = False, block_size: int = 4096,
                max_mapnr: int | None = None, ram: Iterable[tuple[int, int]] = (),
                dumped_zero: Iterable[tuple[int, int]] = (), little_endian: bool = True,
                header_version: int = 6, nr_cpus: int = 1, machine: str = "x86_64",
                release: str = "", notes: bytes = b"", zero_page: bool = True,
                record_size: int | None = None, shuffle: int | None = None, word_size: int = 64,
                extra_records: Iterable[tuple[int, bytes]] = (), status: int | None = None,
                end_marker: bool = True) -> KdumpLayout:
    """Write a kdump-compressed file.

    :param pages: pfn -> one block of bytes, :data:`EXCLUDED` or :data:`MISSING`. All-zero pages
        share QEMU's zero page (unless ``zero_page=False``).
    :param codec: ``"zlib"``, ``"lzo"``, ``"snappy"``, ``"zstd"`` or ``"none"``; a page that does
        not shrink is stored raw, as QEMU does.
    :param flattened: write makedumpfile's flattened stream (QEMU 7.2) instead of the plain file.
    :param incomplete: set status flag 0x8 (pages given as :data:`MISSING` keep zero descriptors).
    :param ram: extra (first pfn, count) runs that exist but are excluded (bitmap 1 only).
    :param dumped_zero: (first pfn, count) runs dumped as the shared zero page (vectorised, for
        large sparse dumps).
    :param record_size: flattened data/desc chunk size (QEMU: 4 pages of cache).
    :param shuffle: seed to write the flattened records in a random order.
    :param extra_records: (offset, bytes) records appended to the stream (later wins).
    :param status: header status override (default: the codec bit, plus 0x8 if ``incomplete``).
    :param end_marker: write the (-1, -1) end marker of a flattened stream.
    :param word_size: 64 (``DiskDumpHeader64``, x86) or 32 (the packed ``*32`` headers, 32-bit ARM).
    """
    bs = block_size
    bo = "<" if little_endian else ">"
    ram = list(ram)
    dumped_zero = list(dumped_zero)
    top = max([p + 1 for p in pages] + [s + n for s, n in ram] + [s + n for s, n in dumped_zero]
              + [1])
    max_mapnr = max_mapnr if max_mapnr is not None else top
    bm_len = -(-(-(-max_mapnr // 8)) // bs) * bs
    bitmap1 = np.zeros(bm_len, dtype=np.uint8)
    bitmap2 = np.zeros(bm_len, dtype=np.uint8)
    for s, n in ram:
        _set_bits(bitmap1, np.arange(s, s + n, dtype=np.int64))
    zero_pfns = [np.arange(s, s + n, dtype=np.int64) for s, n in dumped_zero]
    zero_pfns = np.concatenate(zero_pfns) if zero_pfns else np.zeros(0, dtype=np.int64)
    listed = np.array(sorted(pages), dtype=np.int64)
    dumped_listed = np.array([p for p in sorted(pages) if pages[p] is not EXCLUDED], dtype=np.int64)
    _set_bits(bitmap1, listed)
    _set_bits(bitmap1, zero_pfns)
    _set_bits(bitmap2, dumped_listed)
    _set_bits(bitmap2, zero_pfns)
    dumped = np.union1d(dumped_listed, zero_pfns)

    note_area = notes
    sub_size = 104 if word_size == 64 else 80
    sub_hdr_size = -(-(sub_size + len(note_area)) // bs)
    bitmap_blocks = 2 * bm_len // bs
    bm1_off = (1 + sub_hdr_size) * bs
    bm2_off = bm1_off + bm_len
    desc_off = bm2_off + bm_len
    data_off = desc_off + len(dumped) * 24

    descs = np.zeros(len(dumped), dtype=[("offset", bo + "i8"), ("size", bo + "u4"),
                                         ("flags", bo + "u4"), ("page_flags", bo + "u8")])
    data = bytearray(bs)             # QEMU writes the shared zero page first
    layout = KdumpLayout(bs, max_mapnr, bm1_off, bm2_off, desc_off, data_off, 0)
    index = {int(p): i for i, p in enumerate(dumped_listed.tolist())}
    pos_of = np.searchsorted(dumped, dumped_listed)
    zero = bytes(bs)
    is_zero_pfn = np.zeros(len(dumped), dtype=bool)
    is_zero_pfn[np.searchsorted(dumped, zero_pfns)] = True
    descs["offset"][is_zero_pfn] = data_off
    descs["size"][is_zero_pfn] = bs
    for p, i in index.items():
        k = int(pos_of[i])
        page = pages[p]
        layout.desc_of[p] = desc_off + 24 * k
        if page is MISSING:
            continue
        page = bytes(page)
        if len(page) != bs:
            raise ValueError(f"page {p:#x} is {len(page)} bytes, not {bs}")
        if zero_page and page == zero:
            descs[k] = (data_off, bs, 0, 0)
            layout.data_of[p] = data_off
            continue
        stored, flags = page, 0
        if codec != "none":
            c = compress_page(page, codec)
            if len(c) < bs:
                stored, flags = c, FLAGS[codec]
        descs[k] = (data_off + len(data), len(stored), flags, 0)
        layout.data_of[p] = data_off + len(data)
        data += stored

    if status is None:
        status = FLAGS[codec] | (INCOMPLETE if incomplete else 0)
    uts = b"".join(s.encode().ljust(65, b"\0")
                   for s in ("", "", release, "", machine, ""))
    long, pad = ("q", 6) if word_size == 64 else ("i", 2)
    header = (b"KDUMP   " + struct.pack(bo + "i", header_version) + uts + bytes(pad)
              + struct.pack(bo + 2 * long + "IiiIIIIIIi", 0, 0, status, bs, sub_hdr_size,
                            bitmap_blocks, min(max_mapnr, 0xFFFFFFFF), 0, 0, 0, 0, nr_cpus))
    note_at = bs + sub_size if note_area else 0
    if word_size == 64:
        sub = struct.pack(bo + "QiiQQQQQQQQQQQ", 0, 1, 0, 0, 0, 0, 0, note_at, len(note_area), 0,
                          0, 0, 0, max_mapnr)
    else:   # QEMU KdumpSubHeader32, packed
        sub = struct.pack(bo + "IiiIIQIQIQIQQQ", 0, 1, 0, 0, 0, 0, 0, note_at, len(note_area), 0,
                          0, 0, 0, max_mapnr)
    parts = [(0, header), (bs, sub + note_area)]
    parts += [(bm1_off, bitmap1.tobytes()), (bm2_off, bitmap2.tobytes()),
              (desc_off, descs.tobytes()), (data_off, bytes(data))]
    layout.size = data_off + len(data)

    path = Path(path)
    if not flattened:
        with open(path, "wb") as f:
            for off, blob in parts:
                f.seek(off)
                f.write(blob)
            f.truncate(layout.size)
        layout.file_size = layout.size
        return layout

    # QEMU order: headers, bitmap blocks (1 and 2 alternating), desc and data chunks interleaved
    chunk = record_size or 4 * bs
    recs: list[tuple[int, bytes]] = [(0, header), (bs, sub)]
    if note_area:
        recs.append((note_at, note_area))
    for i in range(0, bm_len, bs):
        recs += [(bm1_off + i, bitmap1[i:i + bs].tobytes()), (bm2_off + i, bitmap2[i:i + bs].tobytes())]
    d_bytes, p_bytes = descs.tobytes(), bytes(data)
    i = j = 0
    while i < len(d_bytes) or j < len(p_bytes):
        if j < len(p_bytes):
            recs.append((data_off + j, p_bytes[j:j + chunk]))
            j += chunk
        if i < len(d_bytes):
            recs.append((desc_off + i, d_bytes[i:i + chunk]))
            i += chunk
    if shuffle is not None:
        random.Random(shuffle).shuffle(recs)
    recs += list(extra_records)
    with open(path, "wb") as f:
        f.write(b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1).ljust(4096 - 16, b"\0"))
        pos = 4096
        for off, blob in recs:
            f.write(struct.pack(">qq", off, len(blob)))
            f.write(blob)
            layout.records.append((off, len(blob), pos + 16))
            pos += 16 + len(blob)
        if end_marker:
            f.write(struct.pack(">qq", -1, -1))
            pos += 16
    layout.file_size = pos
    return layout
