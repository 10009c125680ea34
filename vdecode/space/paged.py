"""
Paged address space over a kdump-compressed dump
------------------------------------------------
Guest-physical reads from the facts :mod:`vdecode.sources.kdump` found: bitmap 2 says which pfns
were dumped, the number of set bits before pfn *p* is the index of its ``page_desc`` (crash
``diskdump.c`` ``pfn_to_pos``; here a prefix count per 64-bit word of the bitmap, made once with
a popcount and ``cumsum``), and the descriptor says where the page's bytes are and how they are
compressed (makedumpfile ``diskdump_mod.h`` ``DUMP_DH_COMPRESSED_*``; libkdumpfile ``diskdump.c``).

Pages are decompressed on demand through a small LRU cache. Every decompressor must produce exactly
one block: a descriptor whose ``size`` exceeds ``block_size`` is refused before decompressing, and
output longer or shorter than one block (a bomb, a truncated stream) is :class:`CorruptInput`.
Excluded pages, pfns that are not RAM and pages an incomplete dump never wrote are
:class:`MissingData`.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from functools import cache

import numpy as np

from vdecode.errors import CorruptInput, MissingData
from vdecode.sources.compressed import default_cache_dir
from vdecode.sources.elf_dump import NT_PRSTATUS, vcpus_from_notes
from vdecode.sources.files import FileView, Gpa
from vdecode.binary import struct_of
from vdecode.sources.kdump import DUMP_DH_COMPRESSED_INCOMPLETE, DUMP_DH_COMPRESSED_ZLIB, KdumpFile, KdumpLayouts, note_head, \
    read_kdump, read_kdump_notes, read_vmcoreinfo
from vdecode.space.page_codecs import CODECS, PageDecoders
from vdecode.space.page_pool import decode_pages
from vdecode.space.absence import Absent, absent_of, part_of
from vdecode.space.dump import Dump

__all__ = ("PagedSpace", "open_kdump")

PAGE_DESC_SIZE = KdumpLayouts(True).page_desc.sizeof()      # 24 in either byte order and word size
CACHE_PAGES = 256              # decompressed pages kept (1 MiB at 4 KiB pages)
CHEAP_COUNT_DESCS = 1 << 16    # open_kdump counts pages by codec when the table is at most this long


@cache
def _popcount8() -> np.ndarray:
    """Set bits of each byte value 0..255 (a memoised constant table)."""
    return np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1, dtype=np.int64)


def _popcount(a: np.ndarray) -> np.ndarray:
    """Set bits of each element (``np.bitwise_count`` from numpy 2; a byte table before)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(a)
    return _popcount8()[a.view(np.uint8)].reshape(a.shape + (a.itemsize,)).sum(axis=-1)


def _words64(bitmap: np.ndarray) -> np.ndarray:
    """A bitmap (LSB first) as little-endian 64-bit words: bit ``p & 63`` of word ``p >> 6`` is
    bit ``p``; zero-padded to whole words."""
    padded = np.zeros(-(-len(bitmap) // 8) * 8, dtype=np.uint8)
    padded[:len(bitmap)] = bitmap
    return padded.view("<u8")


def _runs(bitmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) bit of each run of set bits (LSB first), vectorised over 64-bit
    little-endian words: edges between words from their first and last bits, edges inside a word
    only in the few words that are neither all zeros nor all ones (``np.unpackbits`` on those)."""
    w = _words64(bitmap)
    prev = np.zeros(len(w) + 1, dtype=np.uint8)                     # the bit before word k
    prev[1:] = w >> np.uint64(63)
    cur = np.zeros(len(w) + 1, dtype=np.uint8)                      # the first bit of word k
    cur[:-1] = w & np.uint64(1)
    starts = [np.flatnonzero(cur > prev) * 64]
    ends = [np.flatnonzero(cur < prev) * 64]
    inner = (w ^ (w << np.uint64(1))) & ~np.uint64(1)               # bit j != bit j-1, j = 1..63
    k = np.flatnonzero(inner)
    if k.size:
        flips = np.unpackbits(inner[k].view(np.uint8).reshape(-1, 8), axis=1,
                              bitorder="little").astype(bool)
        bits = np.unpackbits(w[k].view(np.uint8).reshape(-1, 8), axis=1,
                             bitorder="little").astype(bool)
        rows, cols = np.nonzero(flips)
        pos = k[rows] * 64 + cols
        up = bits[rows, cols]
        starts.append(pos[up])
        ends.append(pos[~up])
    return np.sort(np.concatenate(starts)), np.sort(np.concatenate(ends))


class PagedSpace:
    """Guest-physical memory of a kdump: bitmap rank → ``page_desc`` → (decompressed) page.

    :param kd: the parsed file (:func:`vdecode.sources.kdump.read_kdump`).
    :param cache_pages: decompressed pages kept in the LRU cache.
    """

    def __init__(self, kd: KdumpFile, cache_pages: int = CACHE_PAGES) -> None:
        self.kd = kd
        self.name = kd.name
        self.block_size = bs = kd.block_size
        self.shift = bs.bit_length() - 1
        # bitmap 2 as 64-bit words, and word_rank[k]: dumped pfns in words [0, k)
        self._words = _words64(kd.bitmap2)
        self._word_rank = np.zeros(len(self._words) + 1, dtype=np.int64)
        np.cumsum(_popcount(self._words), out=self._word_rank[1:])
        self.num_dumpable = int(self._word_rank[-1])
        self.data_offset = kd.desc_offset + self.num_dumpable * PAGE_DESC_SIZE
        if not kd.incomplete and self.data_offset > kd.data.size:
            raise CorruptInput(kd.data.name, f"page_desc table ({self.num_dumpable} entries, "
                                             f"{self.num_dumpable * PAGE_DESC_SIZE} bytes) runs past "
                                             f"the end of the file ({kd.data.size} bytes)",
                               offset=kd.desc_offset)
        self._desc = struct_of(kd.layouts.page_desc)         # the one declaration, in kdump.py
        self._dtype = kd.layouts.page_desc_dtype
        self._decoders = PageDecoders(bs)
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_pages = cache_pages
        self._ranges: list[tuple[Gpa, int]] | None = None
        self.bulk_workers: int | None = None     # processes a bulk read may use (None: every core)

    # --- pfn → page_desc ----------------------------------------------------------------------
    def _missing(self, pfn: int) -> MissingData:
        gpa = pfn << self.shift
        if pfn < 0:
            return MissingData(self.name, f"guest-physical {gpa:#x} is not an address")
        if pfn >= self.kd.max_mapnr:
            return MissingData(self.name, f"guest-physical {gpa:#x} is beyond the dump's last pfn "
                                          f"(max_mapnr {self.kd.max_mapnr:#x})")
        if self.kd.bitmap1[pfn >> 3] >> (pfn & 7) & 1:
            return MissingData(self.name, f"guest-physical {gpa:#x} (pfn {pfn:#x}) is excluded "
                                          "from the dump")
        return MissingData(self.name, f"guest-physical {gpa:#x} (pfn {pfn:#x}) is not RAM in the dump")

    def _dumped(self, pfn: int) -> bool:
        return 0 <= pfn < self.kd.max_mapnr and bool(self.kd.bitmap2[pfn >> 3] >> (pfn & 7) & 1)

    def desc_index(self, pfn: int) -> int:
        """Index of pfn's ``page_desc`` (set bits of bitmap 2 before it); pfn must be dumped."""
        below = int(self._words[pfn >> 6]) & ((1 << (pfn & 63)) - 1)
        return int(self._word_rank[pfn >> 6]) + below.bit_count()

    def _incomplete_missing(self, pfn: int) -> MissingData:
        flagged = bool(self.kd.header.status & DUMP_DH_COMPRESSED_INCOMPLETE)
        why = ("the flattened stream is cut short (no end marker)" if self.kd.truncated and
               self.kd.flat is not None else
               "the dump is incomplete (status flag 0x8)" if flagged else
               f"the file is cut short at offset {self.kd.data.size:#x}")
        return MissingData(self.name, f"guest-physical {pfn << self.shift:#x} (pfn {pfn:#x}) was "
                                      f"not written: {why}")

    def _read_descs(self, pfn: int, count: int) -> np.ndarray:
        """The ``page_desc`` entries of ``count`` dumped pfns from ``pfn`` (contiguous in the table)."""
        off = self.kd.desc_offset + self.desc_index(pfn) * PAGE_DESC_SIZE
        n = count * PAGE_DESC_SIZE
        if self.kd.incomplete and not self.kd.has(off, n):
            k = next(k for k in range(count) if not self.kd.has(off + k * PAGE_DESC_SIZE,
                                                                PAGE_DESC_SIZE))
            raise self._incomplete_missing(pfn + k)
        raw = self.kd.data.view(off, n, f"page_desc for pfn {pfn:#x}")
        return np.frombuffer(raw, dtype=self._dtype)

    # --- one page -----------------------------------------------------------------------------
    def read_page(self, pfn: int) -> bytes | memoryview:
        """One block of guest memory (``block_size`` bytes), zero-copy when stored raw.

        :raises MissingData: pfn not dumped (excluded, not RAM) or not written (incomplete dump).
        :raises CorruptInput: a descriptor or page data that cannot be decoded.
        """
        got = self._cache.get(pfn)
        if got is not None:
            self._cache.move_to_end(pfn)
            return got
        if not self._dumped(pfn):
            raise self._missing(pfn)
        kd = self.kd
        desc_off = kd.desc_offset + self.desc_index(pfn) * PAGE_DESC_SIZE
        if kd.incomplete and not kd.has(desc_off, PAGE_DESC_SIZE):
            raise self._incomplete_missing(pfn)
        offset, size, flags, _ = self._desc.unpack(kd.data.view(desc_off, PAGE_DESC_SIZE,
                                                                f"page_desc for pfn {pfn:#x}"))
        page = self._decode(pfn, desc_off, offset, size, flags)
        if flags:
            self._cache[pfn] = page
            if len(self._cache) > self._cache_pages:
                self._cache.popitem(last=False)
        return page

    def _decode(self, pfn: int, desc_off: int, offset: int, size: int,
                flags: int) -> bytes | memoryview:
        kd, bs = self.kd, self.block_size
        where = f"page_desc for pfn {pfn:#x}"
        # crash diskdump.c: PAGE_INCOMPLETE is offset 0; a cut stream also lacks whatever it
        # did not reach
        if kd.incomplete and (offset == 0 or (size <= bs and not kd.has(offset, size))):
            raise self._incomplete_missing(pfn)
        if size > bs:
            raise CorruptInput(kd.data.name, f"{where}: size {size} > block_size {bs}",
                               offset=desc_off)
        if flags == 0 and size != bs:
            raise CorruptInput(kd.data.name, f"{where}: raw page of {size} bytes, not block_size "
                                             f"{bs}", offset=desc_off)
        if flags not in CODECS:
            raise CorruptInput(kd.data.name, f"{where}: unknown compression flags {flags:#x}",
                               offset=desc_off)
        if offset < 0 or offset + size > kd.data.size:
            if kd.incomplete:
                raise self._incomplete_missing(pfn)
            raise CorruptInput(kd.data.name, f"{where}: data ({size} bytes at {offset:#x}) runs "
                                             f"past the end of the file ({kd.data.size} bytes)",
                               offset=desc_off)
        if offset < self.data_offset:
            raise CorruptInput(kd.data.name, f"{where}: data ({size} bytes at {offset:#x}) lies "
                                             f"before the page data ({self.data_offset:#x})",
                               offset=desc_off)
        buf = kd.data.view(offset, size, f"page data for pfn {pfn:#x}")
        if flags == 0:
            return buf
        out, why = self._decoders.decode(flags, buf)
        del buf     # no view of the mapped file may outlive this frame in a traceback
        if out is None:
            raise CorruptInput(kd.data.name, f"page data for pfn {pfn:#x} ({CODECS[flags]}, {size} "
                                             f"bytes): {why}", offset=offset)
        return out

    # --- many pages ---------------------------------------------------------------------------
    def read_pages(self, pfn: int, count: int) -> bytearray | memoryview:
        """``count`` consecutive blocks from ``pfn``: one bitmap check and one ``page_desc`` slice
        for the whole run, then one decode per page (a run of thousands of compressed pages on
        every core: :mod:`vdecode.space.page_pool`; the result is then a writable view of a shared
        mapping).

        :raises MissingData: the first pfn of the run that is not in the dump.
        :raises CorruptInput: the first descriptor or page that cannot be decoded.
        """
        bs, kd = self.block_size, self.kd
        if count <= 0:
            return bytearray(0)
        if pfn < 0 or pfn >= kd.max_mapnr:
            raise self._missing(pfn)
        inside = min(count, kd.max_mapnr - pfn)
        bits = np.unpackbits(kd.bitmap2[pfn >> 3:(pfn + inside + 7) >> 3], bitorder="little")
        bits = bits[pfn & 7:(pfn & 7) + inside]
        if not bits.all():          # the first pfn of the run that is not there
            raise self._missing(pfn + int(np.argmin(bits)))
        if inside < count:
            raise self._missing(kd.max_mapnr)
        descs = self._read_descs(pfn, count)
        offs, sizes = descs["offset"].astype(np.int64), descs["size"].astype(np.int64)
        flags = descs["flags"].tolist()
        del descs   # a view of the mapped file; a traceback through here must not hold it
        # where each page's stored bytes start in the file, -1 where that needs the slow path
        # (gaps, straddled records, out of bounds, an unwritten page of an incomplete dump)
        if kd.flat is not None:
            at = kd.data.map_offsets(offs, sizes)
        else:
            at = np.where((offs > 0) & (offs + sizes <= kd.file.size), offs, -1)
        at[offs < self.data_offset] = -1      # unwritten (0) or inside the headers: slow path
        # makedumpfile stores one zero page and points every zero page's descriptor at it: those
        # stay as the zeros ``out`` starts with (checked: the stored page is all zeros)
        flags_a = np.asarray(flags)
        zero = (offs == self.data_offset) & (flags_a == 0) & (sizes == bs) & (at >= 0)
        if zero.any():
            z = int(at[np.argmax(zero)])
            if kd.file.memory()[z:z + bs] != bytes(bs):
                zero[:] = False
        fast = np.flatnonzero(~zero & (at >= 0))
        out, left = decode_pages(count * bs, kd.file.memory(), kd.file.name, fast.tolist(),
                                 at[fast].tolist(), sizes[fast].tolist(), flags_a[fast].tolist(),
                                 bs, DUMP_DH_COMPRESSED_ZLIB, self.bulk_workers)
        # the rest, in order, by the careful decoder: the error is the first bad page's
        slow = sorted(left + np.flatnonzero(~zero & (at < 0)).tolist())
        if slow:
            desc0 = kd.desc_offset + self.desc_index(pfn) * PAGE_DESC_SIZE
            offs_l, sizes_l = offs.tolist(), sizes.tolist()
            for i in slow:
                out[i * bs:(i + 1) * bs] = self._decode(pfn + i, desc0 + i * PAGE_DESC_SIZE,
                                                        offs_l[i], sizes_l[i], flags[i])
        return out

    # --- AddressSpace -------------------------------------------------------------------------
    def read(self, gpa: Gpa, n: int) -> bytes | memoryview:
        """``n`` bytes at guest-physical ``gpa`` (zero-copy inside one raw page).

        :raises MissingData: a page in the range is not in the dump.
        :raises CorruptInput: a page in the range cannot be decoded.
        """
        if gpa < 0 or n < 0:
            raise MissingData(self.name, f"guest-physical {gpa:#x}+{n} is not an address range")
        bs, shift = self.block_size, self.shift
        first, last = gpa >> shift, (gpa + max(n, 1) - 1) >> shift
        lo = gpa & (bs - 1)
        if first == last:
            return self.read_page(first)[lo:lo + n]
        return memoryview(self.read_pages(first, last - first + 1))[lo:lo + n]

    def is_present(self, gpa: Gpa, n: int) -> bool:
        """Whether every byte of ``[gpa, gpa+n)`` is in the dump (dumped and, for an incomplete
        dump, written)."""
        if gpa < 0 or n <= 0:
            return n == 0 and gpa >= 0
        first, last = gpa >> self.shift, (gpa + n - 1) >> self.shift
        if last >= self.kd.max_mapnr:
            return False
        bits = np.unpackbits(self.kd.bitmap2[first >> 3:(last >> 3) + 1], bitorder="little")
        if not bits[first & 7:(first & 7) + last - first + 1].all():
            return False
        if self.kd.incomplete:
            try:
                descs = self._read_descs(first, last - first + 1)
            except MissingData:
                return False
            offs, sizes = descs["offset"].tolist(), descs["size"].tolist()
            return all(o > 0 and self.kd.has(o, s) for o, s in zip(offs, sizes))
        return True

    def reads_as_zeros(self, gpa: Gpa, n: int) -> bool:
        """Whether every page of ``[gpa, gpa+n)`` is dumped as makedumpfile's shared zero page
        (read without decoding anything); ``False`` when in doubt."""
        bs = self.block_size
        if gpa < 0 or n <= 0 or gpa % bs:
            return False
        pfn, count = gpa >> self.shift, -(-n // bs)
        if not self.is_present(gpa, count * bs):
            return False
        try:
            descs = self._read_descs(pfn, count)
        except MissingData:
            return False
        zero = (descs["offset"] == self.data_offset) & (descs["flags"] == 0) & (descs["size"] == bs)
        if not zero.all():
            return False
        z = self.kd.data.file_offset(self.data_offset) if self.kd.flat is not None \
            else self.data_offset
        return z is not None and 0 <= z and z + bs <= self.kd.file.size \
            and self.kd.file.memory()[z:z + bs] == bytes(bs)

    def forget(self, gpa: Gpa, n: int) -> None:
        """A bulk reader is done with ``[gpa, gpa+n)``: let go of the mapped file's pages (the
        compressed bytes are read once; resident memory does not grow with the file)."""
        self.kd.file.forget()

    def ranges(self) -> list[tuple[Gpa, int]]:
        """RAM ranges (bitmap 1: pages that exist, dumped or excluded), sorted and merged."""
        if self._ranges is None:
            starts, ends = _runs(self.kd.bitmap1)
            self._ranges = [(Gpa(int(s) << self.shift), int(e - s) << self.shift)
                            for s, e in zip(starts, ends)]
        return self._ranges

    def dumped_ranges(self) -> list[tuple[Gpa, int]]:
        """Ranges whose pages were dumped (bitmap 2); differs from :meth:`ranges` where
        makedumpfile excluded pages."""
        starts, ends = _runs(self.kd.bitmap2)
        return [(Gpa(int(s) << self.shift), int(e - s) << self.shift) for s, e in zip(starts, ends)]

    def bitmap_counts(self) -> dict[str, int]:
        """Pages by bitmap: ``ram`` (bitmap 1), ``dumpable`` (bitmap 2), ``excluded`` (1 and not 2)."""
        kd = self.kd
        return {"ram": int(_popcount(kd.bitmap1).sum(dtype=np.int64)), "dumpable": self.num_dumpable,
                "excluded": int(_popcount(kd.bitmap1 & ~kd.bitmap2).sum(dtype=np.int64))}

    def page_counts(self) -> dict[str, int]:
        """Pages by kind: ``ram`` (bitmap 1), ``dumpable`` (bitmap 2), ``excluded``, ``zero`` (the
        shared zero page), and per codec. Reads the whole ``page_desc`` table."""
        kd = self.kd
        counts = self.bitmap_counts()
        n = self.num_dumpable
        if kd.incomplete:
            n = max(0, min(n, (kd.data.size - kd.desc_offset) // PAGE_DESC_SIZE))
        descs = np.frombuffer(kd.data.view(kd.desc_offset, n * PAGE_DESC_SIZE, "page_desc table"),
                              dtype=self._dtype)
        written = descs["offset"] != 0 if kd.incomplete else np.ones(len(descs), dtype=bool)
        counts["zero"] = int(np.count_nonzero((descs["offset"] == self.data_offset)
                                              & (descs["flags"] == 0)))
        for flag, codec in CODECS.items():
            counts[codec] = int(np.count_nonzero((descs["flags"] == flag) & written))
        if kd.incomplete:
            counts["not_written"] = self.num_dumpable - int(np.count_nonzero(written))
        return counts


    def unwritten_pfns(self) -> np.ndarray:
        """The dumped pfns (bitmap 2) whose pages an incomplete dump does not hold: their
        ``page_desc`` is past the end or unwritten (offset 0), or their data is not in the file.
        Empty for a complete dump. Reads the ``page_desc`` table once (24 bytes a page)."""
        kd = self.kd
        if not kd.incomplete:
            return np.zeros(0, dtype=np.int64)
        bits = np.unpackbits(kd.bitmap2, bitorder="little")[:kd.max_mapnr]
        pfns = np.flatnonzero(bits)
        n = len(pfns)
        # descriptors the file holds: the table may itself stop at the cut
        have = max(0, min(n, (kd.data.size - kd.desc_offset) // PAGE_DESC_SIZE))
        if kd.flat is not None:
            while have and not kd.has(kd.desc_offset, have * PAGE_DESC_SIZE):
                lo, hi = 0, have                        # the longest written prefix of the table
                while lo < hi:
                    mid = (lo + hi + 1) // 2
                    if kd.has(kd.desc_offset, mid * PAGE_DESC_SIZE):
                        lo = mid
                    else:
                        hi = mid - 1
                have = lo
        descs = np.frombuffer(kd.data.view(kd.desc_offset, have * PAGE_DESC_SIZE, "page_desc table"),
                              dtype=self._dtype)
        offs, sizes = descs["offset"].astype(np.int64), descs["size"].astype(np.int64)
        del descs
        missing = np.ones(n, dtype=bool)
        if kd.flat is not None:
            at = kd.data.map_offsets(offs, sizes)
            ok = at >= 0
            for i in np.flatnonzero(~ok & (offs > 0)).tolist():     # straddling records
                ok[i] = kd.has(int(offs[i]), int(sizes[i]))
        else:
            ok = (offs > 0) & (offs + sizes <= kd.data.size)
        missing[:have] = ~(ok & (offs > 0))
        return pfns[missing]

    def count_absent(self) -> Absent | None:
        """What this kdump lacks (:mod:`vdecode.space.absence`): pages not written (a cut
        stream or file, the incomplete flag) and pages excluded by the dump level."""
        kd = self.kd
        parts = []
        unwritten = self.unwritten_pfns()
        if kd.incomplete:
            mask = np.zeros(kd.max_mapnr, dtype=bool)
            mask[unwritten] = True
            starts, ends = _runs(np.packbits(mask, bitorder="little"))
            ranges = [(int(s) << self.shift, int(e - s) << self.shift) for s, e in zip(starts, ends)]
            if kd.truncated and kd.flat is not None:
                reason = (f"the file ends at offset {kd.file.size:#x}, before the flattened "
                          f"stream's end marker; {len(unwritten)} of {self.num_dumpable} dumped "
                          f"pages are not in it")
                kind = "cut-short"
            elif kd.truncated:
                reason = (f"the file ends at offset {kd.data.size:#x}, its headers say "
                          f"{kd.data_end:#x}; {len(unwritten)} of {self.num_dumpable} dumped "
                          f"pages are not in it")
                kind = "cut-short"
            else:
                reason = (f"header status flag 0x8 (incomplete): {len(unwritten)} of "
                          f"{self.num_dumpable} dumped pages were not written")
                kind = "not-written"
            parts.append(part_of(kind, kd.name, reason, ranges))
        excluded = kd.bitmap1 & ~kd.bitmap2
        n_excl = int(_popcount(excluded).sum(dtype=np.int64))
        if n_excl:
            starts, ends = _runs(excluded)
            level = kd.sub_header.dump_level if kd.sub_header is not None else None
            why = (f"makedumpfile dump level {level}" if level is not None else "the dump's filter")
            parts.append(part_of("excluded", kd.name,
                                 f"{why} left out {n_excl} pages (free, zero, cache or user pages)",
                                 [(int(s) << self.shift, int(e - s) << self.shift)
                                  for s, e in zip(starts, ends)]))
        return absent_of(parts)


def _vcpus(kd: KdumpFile, notes: list) -> list[dict]:
    """Per vCPU, its notes and (x86_64) a few registers, decoded as the ELF reader does."""
    x86_64 = kd.header.utsname["machine"] == "x86_64" and kd.header.little_endian
    return vcpus_from_notes(notes, lambda note, n: note_head(kd, note, n), x86_64=x86_64)


def open_kdump(view: FileView, *, cache_dir: str | os.PathLike | None = None) -> Dump:
    """Open a kdump-compressed file (flattened stream or rearranged file) as a :class:`Dump`.

    :param view: the mapped file; it starts with ``b"KDUMP   "`` or ``b"makedumpfile"``.
    :param cache_dir: where the record index of a large flattened stream is kept between opens
        (default :func:`~vdecode.sources.compressed.default_cache_dir`; streams of fewer than
        :data:`~vdecode.sources.flattened.FLAT_INDEX_CACHE_MIN` records are never cached).
    :raises CorruptInput: headers, bitmaps or the ``page_desc`` table contradict themselves.
    :raises UnsupportedInput: a split dump.
    """
    kd = read_kdump(view, cache_dir=cache_dir if cache_dir is not None else default_cache_dir())
    space = PagedSpace(kd)
    h, sub = kd.header, kd.sub_header
    ranges = space.ranges()
    notes = read_kdump_notes(kd)
    info: dict = {
        "file_size": view.size,
        "machine": h.utsname["machine"],
        "endianness": "little" if h.little_endian else "big",
        "ram_ranges": [{"start": int(s), "end": int(s) + n, "size": n} for s, n in ranges],
        "ram_bytes": sum(n for _, n in ranges),
        "page_size": h.block_size,
        # counting by codec reads the whole page_desc table: only where that is cheap
        "pages": (space.page_counts() if space.num_dumpable <= CHEAP_COUNT_DESCS
                  else space.bitmap_counts()),
        "vcpus": _vcpus(kd, notes),
        "vmcoreinfo": read_vmcoreinfo(kd, notes),
        "notes": [{"name": n.name, "type": n.type, "size": n.desc_size} for n in notes
                  if n.name != "CORE" or n.type != NT_PRSTATUS][:64],
        "block_size": h.block_size,
        "header": "DiskDumpHeader64" if h.is64 else "DiskDumpHeader32",
        "header_version": h.header_version,
        "max_mapnr": kd.max_mapnr,
        "nr_cpus": h.nr_cpus,
        "current_cpu": h.current_cpu,
        "utsname": dict(h.utsname),
        "status": h.status,
        "status_flags": h.status_names,
        "incomplete": kd.incomplete,
    }
    if kd.truncated and kd.flat is not None:
        info["flattened_cut"] = f"at offset {kd.flat.cut_offset:#x}: {kd.flat.cut_reason}"
    if kd.flat is not None:
        info["flattened_records"] = kd.flat.n_records
        info["flattened_overlapping"] = kd.flat.overlapping
    if sub is not None:
        info.update(phys_base=sub.phys_base, dump_level=sub.dump_level)
    fmt = "kdump-flattened" if kd.flat is not None else "kdump"
    return Dump(path=view.name, format=fmt, space=space, info=info, files=[view],
                absent=space.count_absent())
