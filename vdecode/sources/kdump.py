"""
kdump-compressed dumps
----------------------
Reads makedumpfile's diskdump format as QEMU writes it (QEMU v7.2.0 ``dump/dump.c``
``create_kdump_vmcore``; makedumpfile ``diskdump_mod.h``, ``makedumpfile.h``):

- the **flattened** stream (``makedumpfile -F``, every QEMU ``kdump-*`` before 8.2): a 4 KiB
  ``makedumpfile_header`` and records ``{int64 offset; int64 buf_size}`` (big-endian), each
  followed by ``buf_size`` bytes destined for ``offset`` of the rearranged file, applied in stream
  order (later wins, makedumpfile.c ``rearrange_dumpdata``), ending with ``(-1, -1)``;
- the **rearranged** file (``makedumpfile -R`` output, QEMU >= 8.2 ``kdump-raw-*``):
  ``disk_dump_header`` (block 0), ``kdump_sub_header`` (block 1), bitmaps 1 and 2,
  ``page_desc[]``, page data.

This module turns the file into facts: the parsed headers (frozen dataclasses), the two bitmaps and
the notes; a flattened stream is read in place through :mod:`vdecode.sources.flattened`. Page
lookup and decompression live in :mod:`vdecode.space.paged`.
"""

from __future__ import annotations

import os
import struct

import numpy as np
from construct import Bytes, Const, Int32sb, Int32sl, Int32ub, Int32ul, Int64sb, Int64sl, Int64ub, \
    Int64ul, Struct

from vdecode.binary import dtype_of
from vdecode.errors import CorruptInput, UnsupportedInput
from vdecode.frozen import record
from vdecode.sources.elf_dump import ElfNote, vmcoreinfo_from_notes
from vdecode.sources.files import FileView, parse_at
from vdecode.sources.flattened import MAKEDUMPFILE_SIGNATURE, FlatIndex, FlattenedView, \
    read_flat_index

__all__ = ("DUMP_DH_COMPRESSED_INCOMPLETE", "DUMP_DH_COMPRESSED_LZO", "DUMP_DH_COMPRESSED_SNAPPY",
           "DUMP_DH_COMPRESSED_ZLIB", "DUMP_DH_COMPRESSED_ZSTD", "DUMP_DH_EXCLUDED_VMEMMAP",
           "DiskDumpHeader", "KDUMP_SIGNATURE", "KdumpFile", "KdumpLayouts", "KdumpSubHeader",
           "MAX_BLOCK_SIZE", "note_head", "read_kdump", "read_kdump_notes", "read_vmcoreinfo")

KDUMP_SIGNATURE = b"KDUMP   "

# status bits of disk_dump_header (makedumpfile diskdump_mod.h); the same bits flag a page_desc
DUMP_DH_COMPRESSED_ZLIB = 0x1
DUMP_DH_COMPRESSED_LZO = 0x2
DUMP_DH_COMPRESSED_SNAPPY = 0x4
DUMP_DH_COMPRESSED_INCOMPLETE = 0x8
DUMP_DH_EXCLUDED_VMEMMAP = 0x10
DUMP_DH_COMPRESSED_ZSTD = 0x20
STATUS_NAMES = {DUMP_DH_COMPRESSED_ZLIB: "zlib", DUMP_DH_COMPRESSED_LZO: "lzo",
                DUMP_DH_COMPRESSED_SNAPPY: "snappy", DUMP_DH_COMPRESSED_INCOMPLETE: "incomplete",
                DUMP_DH_EXCLUDED_VMEMMAP: "excluded_vmemmap", DUMP_DH_COMPRESSED_ZSTD: "zstd"}

# Largest page size in use (arm64/ppc64 64 KiB). Bounding it bounds every per-page buffer,
# including what an LZO stream of at most one block can expand to.
MAX_BLOCK_SIZE = 1 << 16
MIN_BLOCK_SIZE = 512
UTSNAME_FIELDS = ("sysname", "nodename", "release", "version", "machine", "domainname")

class KdumpLayouts:
    """diskdump structs for one byte order (the dump target's; only flattened records are fixed
    big-endian) and one word size: QEMU writes ``DiskDumpHeader64``/``KdumpSubHeader64`` for a
    64-bit ELF class (every x86 dump) and the packed ``*32`` variants otherwise (32-bit ARM),
    which match i386 makedumpfile."""

    def __init__(self, little_endian: bool, is64: bool = True) -> None:
        self.little_endian, self.is64 = little_endian, is64
        i32, u32, i64, u64 = ((Int32sl, Int32ul, Int64sl, Int64ul) if little_endian
                              else (Int32sb, Int32ub, Int64sb, Int64ub))
        long, ulong = (i64, u64) if is64 else (i32, u32)
        # where the fields error messages name sit (DiskDumpHeader64 / DiskDumpHeader32)
        self.offset_of = ({"block_size": 0x1ac, "sub_hdr_size": 0x1b0, "bitmap_blocks": 0x1b4,
                           "max_mapnr": 0x1b8, "split": 12, "max_mapnr_64": 96} if is64 else
                          {"block_size": 0x1a0, "sub_hdr_size": 0x1a4, "bitmap_blocks": 0x1a8,
                           "max_mapnr": 0x1ac, "split": 8, "max_mapnr_64": 72})
        self.disk_dump_header = Struct(             # 464 bytes (QEMU DiskDumpHeader64), 452 (32)
            "signature" / Const(KDUMP_SIGNATURE),
            "header_version" / i32,
            "utsname" / Bytes(65 * 6) * "struct new_utsname: six char[65]",
            "_pad" / Bytes(6 if is64 else 2) * "aligns struct timeval",
            "tv_sec" / long,
            "tv_usec" / long,
            "status" / u32 * "DUMP_DH_* bits",
            "block_size" / i32,
            "sub_hdr_size" / i32 * "in blocks",
            "bitmap_blocks" / u32 * "both bitmaps, in blocks",
            "max_mapnr" / u32 * "obsolete from header_version 6 (max_mapnr_64)",
            "total_ram_blocks" / u32,
            "device_blocks" / u32,
            "written_blocks" / u32,
            "current_cpu" / u32,
            "nr_cpus" / i32,
        )
        self.kdump_sub_header = Struct(             # 104 bytes (KdumpSubHeader64), 80 (packed 32)
            "phys_base" / ulong,
            "dump_level" / i32,
            "split" / i32 * "header_version >= 2",
            "start_pfn" / ulong,
            "end_pfn" / ulong,
            "offset_vmcoreinfo" / u64 * "header_version >= 3",
            "size_vmcoreinfo" / ulong,
            "offset_note" / u64 * "header_version >= 4",
            "note_size" / ulong,
            "offset_eraseinfo" / u64 * "header_version >= 5",
            "size_eraseinfo" / ulong,
            "start_pfn_64" / u64 * "header_version >= 6",
            "end_pfn_64" / u64,
            "max_mapnr_64" / u64,
        )
        self.page_desc = Struct(                    # 24 bytes, makedumpfile diskdump_mod.h
            "offset" / i64 * "rearranged-file offset of the page data",
            "size" / u32 * "bytes stored; block_size when flags == 0",
            "flags" / u32 * "DUMP_DH_COMPRESSED_* bit, 0 for a raw page",
            "page_flags" / u64,
        )
        self.page_desc_dtype = dtype_of(self.page_desc)     # the table is read whole, by numpy


@record
class DiskDumpHeader:
    """``struct disk_dump_header`` as parsed (block 0 of the rearranged file)."""

    little_endian: bool
    is64: bool
    header_version: int
    utsname: dict
    tv_sec: int
    tv_usec: int
    status: int
    block_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    max_mapnr: int
    total_ram_blocks: int
    device_blocks: int
    written_blocks: int
    current_cpu: int
    nr_cpus: int

    @property
    def status_names(self) -> list[str]:
        """``status`` bits by name, unknown bits as hex (drgn's ``decode_flags`` habit)."""
        names = [n for bit, n in STATUS_NAMES.items() if self.status & bit]
        unknown = self.status & ~sum(STATUS_NAMES)
        return names + ([f"{unknown:#x}"] if unknown else [])


@record
class KdumpSubHeader:
    """``struct kdump_sub_header`` (block 1), fields newer than ``header_version`` left at 0."""

    phys_base: int
    dump_level: int
    split: int
    offset_vmcoreinfo: int
    size_vmcoreinfo: int
    offset_note: int
    note_size: int
    offset_eraseinfo: int
    size_eraseinfo: int
    start_pfn_64: int
    end_pfn_64: int
    max_mapnr_64: int


@record(eq=False)
class KdumpFile:
    """An opened kdump: headers, bitmaps and where the ``page_desc`` table starts.

    ``data`` reads the rearranged file (a :class:`FileView`, or a :class:`FlattenedView` over a
    flattened stream). ``bitmap1`` (pages that exist) and ``bitmap2`` (pages dumped) are ``uint8``
    arrays of ``ceil(max_mapnr / 8)`` bytes, bit ``p & 7`` of byte ``p >> 3`` for pfn ``p``.
    """

    name: str
    file: FileView
    data: FileView | FlattenedView
    flat: FlatIndex | None
    layouts: KdumpLayouts
    header: DiskDumpHeader
    sub_header: KdumpSubHeader | None
    max_mapnr: int
    bitmap1_offset: int
    bitmap2_offset: int
    bitmap1: np.ndarray
    bitmap2: np.ndarray
    desc_offset: int
    data_end: int = 0        # where the page data should end (the last page_desc), 0 if unknown

    @property
    def block_size(self) -> int:
        return self.header.block_size

    @property
    def truncated(self) -> bool:
        """Cut short: a flattened stream without its end marker, or a rearranged file that ends
        before its ``page_desc`` table or the page data it names."""
        return (self.flat is not None and self.flat.cut_offset is not None) or \
            (self.flat is None and self.data_end > self.data.size)

    @property
    def incomplete(self) -> bool:
        """Pages may be missing: header status flag 0x8, or a flattened stream cut short."""
        return bool(self.header.status & DUMP_DH_COMPRESSED_INCOMPLETE) or self.truncated

    def has(self, offset: int, n: int) -> bool:
        """Whether the file holds ``[offset, offset+n)`` of the rearranged layout (for an
        incomplete dump: written, not a gap or past the end)."""
        if offset < 0 or offset + n > self.data.size:
            return False
        return self.flat is None or self.data.covered(offset, n)


def _byte_order(data: FileView | FlattenedView) -> bool:
    """Little-endian? ``header_version`` is a small positive number in the target's byte order."""
    raw = bytes(data.view(8, 4, "disk_dump_header"))
    for little in (True, False):
        v = int.from_bytes(raw, "little" if little else "big", signed=True)
        if 0 < v < 0x100:
            return little
    raise CorruptInput(data.name, f"disk_dump_header: header_version {raw.hex()} is not a small "
                                  "positive number in either byte order", offset=8)


def _is64(data: FileView | FlattenedView, little: bool) -> bool:
    """``DiskDumpHeader64``? Its block_size/sub_hdr_size/bitmap_blocks sit at 0x1ac, the packed
    32-bit header's at 0x1a0; where neither is plausible, the 64-bit checks say what is wrong."""
    raw = bytes(data.view(0, 0x1b8, "disk_dump_header"))
    for at, is64 in ((0x1ac, True), (0x1a0, False)):
        bs, sub, bitmaps = struct.unpack_from(("<" if little else ">") + "iiI", raw, at)
        if (MIN_BLOCK_SIZE <= bs <= MAX_BLOCK_SIZE and not bs & (bs - 1) and sub >= 0
                and bitmaps and not bitmaps % 2):
            return is64
    return True


def read_kdump(view: FileView, *, cache_dir: str | os.PathLike | None = None) -> KdumpFile:
    """Parse a kdump-compressed file (flattened or rearranged) up to its bitmaps.

    :param view: the whole file.
    :param cache_dir: where a large flattened stream's record index is kept between opens
        (:func:`vdecode.sources.flattened.read_flat_index`); ``None``: walk it every time.
    :raises CorruptInput: a header or bitmap that is missing, truncated or contradicts itself.
    :raises UnsupportedInput: a split dump (one file of a set).
    """
    head = bytes(view.view(0, min(view.size, 16), "signature"))
    flat = None
    data: FileView | FlattenedView = view
    if head.startswith(MAKEDUMPFILE_SIGNATURE):
        flat = read_flat_index(view, cache_dir=cache_dir)
        data = FlattenedView(view, flat)

    def require(offset: int, n: int) -> None:
        """A stream cut short must still hold the headers and bitmaps."""
        if flat is not None and flat.cut_offset is not None and not data.covered(offset, n):
            raise CorruptInput(view.name, flat.cut_reason, offset=flat.cut_offset)

    require(0, 0x1b8)
    name = data.name
    # Const failures are checked here, not in parse_at: one-line messages, and no view of the
    # mapped file left in a traceback (it would keep the file from closing)
    sig = bytes(data.view(0, min(data.size, 8), "disk_dump_header"))
    if data.size >= 8 and sig != KDUMP_SIGNATURE:
        raise CorruptInput(name, f"disk_dump_header: signature {sig!r}, expected "
                                 f"{KDUMP_SIGNATURE!r}", offset=0)
    little = _byte_order(data) if data.size >= 12 else True
    layouts = KdumpLayouts(little, _is64(data, little) if data.size >= 0x1b8 else True)
    require(0, layouts.disk_dump_header.sizeof())
    raw = parse_at(layouts.disk_dump_header, data, 0, "disk_dump_header")
    at = layouts.offset_of
    uts = {f: raw.utsname[i * 65:(i + 1) * 65].split(b"\0", 1)[0].decode("utf-8", "replace")
           for i, f in enumerate(UTSNAME_FIELDS)}
    header = DiskDumpHeader(layouts.little_endian, layouts.is64, raw.header_version, uts, raw.tv_sec, raw.tv_usec,
                            raw.status, raw.block_size, raw.sub_hdr_size, raw.bitmap_blocks,
                            raw.max_mapnr, raw.total_ram_blocks, raw.device_blocks,
                            raw.written_blocks, raw.current_cpu, raw.nr_cpus)
    bs = header.block_size
    if header.sub_hdr_size > 0 and MIN_BLOCK_SIZE <= bs <= MAX_BLOCK_SIZE:
        require(bs, layouts.kdump_sub_header.sizeof())
    if bs < MIN_BLOCK_SIZE or bs > MAX_BLOCK_SIZE or bs & (bs - 1):
        raise CorruptInput(name, f"disk_dump_header: block_size {bs} is not a power of two in "
                                 f"[{MIN_BLOCK_SIZE}, {MAX_BLOCK_SIZE}]", offset=at["block_size"])
    if header.sub_hdr_size < 0 or header.sub_hdr_size * bs > data.size:
        raise CorruptInput(name, f"disk_dump_header: sub_hdr_size {header.sub_hdr_size} (blocks of {bs}"
                                 f" bytes) runs past the end of the file ({data.size} bytes)",
                           offset=at["sub_hdr_size"])
    if header.bitmap_blocks == 0 or header.bitmap_blocks % 2:
        raise CorruptInput(name, f"disk_dump_header: bitmap_blocks {header.bitmap_blocks} is not a "
                                 "positive even number (two bitmaps)", offset=at["bitmap_blocks"])
    sub = None
    max_mapnr = header.max_mapnr
    if header.sub_hdr_size > 0:
        s = parse_at(layouts.kdump_sub_header, data, bs, "kdump_sub_header")
        hv = header.header_version

        def since(v: int, x: int) -> int:
            return x if hv >= v else 0

        sub = KdumpSubHeader(s.phys_base, s.dump_level, since(2, s.split),
                             since(3, s.offset_vmcoreinfo), since(3, s.size_vmcoreinfo),
                             since(4, s.offset_note), since(4, s.note_size),
                             since(5, s.offset_eraseinfo), since(5, s.size_eraseinfo),
                             since(6, s.start_pfn_64), since(6, s.end_pfn_64),
                             since(6, s.max_mapnr_64))
        if sub.split:
            raise UnsupportedInput(name, "kdump_sub_header: split dump (one file of a set of "
                                         f"pfns {sub.start_pfn_64:#x}-{sub.end_pfn_64:#x}) is not "
                                         "supported", offset=bs + at["split"])
        if hv >= 6:     # crash read_dump_header: max_mapnr_64 from version 6 on
            max_mapnr = sub.max_mapnr_64
    bitmap_len = header.bitmap_blocks // 2 * bs
    if max_mapnr > bitmap_len * 8:
        raise CorruptInput(name, f"max_mapnr {max_mapnr:#x} exceeds the {bitmap_len * 8:#x} bits "
                                 f"of a bitmap ({header.bitmap_blocks} blocks for both)",
                           offset=at["max_mapnr"] if sub is None or header.header_version < 6
                           else bs + at["max_mapnr_64"])
    bm1_off = (1 + header.sub_hdr_size) * bs
    bm2_off = bm1_off + bitmap_len
    nbytes = (max_mapnr + 7) // 8
    require(bm1_off, 2 * bitmap_len)
    # copied (two bitmaps of max_mapnr bits, 2 MiB each for 64 GiB): no view outlives the file
    bm1 = np.frombuffer(data.view(bm1_off, bitmap_len, "bitmap 1"), dtype=np.uint8)[:nbytes].copy()
    bm2 = np.frombuffer(data.view(bm2_off, bitmap_len, "bitmap 2"), dtype=np.uint8)[:nbytes].copy()
    if max_mapnr % 8:   # bits past max_mapnr in the last byte do not describe pages
        keep = np.uint8((1 << (max_mapnr % 8)) - 1)
        bm1[-1] &= keep
        bm2[-1] &= keep
    desc_off = bm2_off + bitmap_len
    return KdumpFile(view.name, view, data, flat, layouts, header, sub, max_mapnr, bm1_off, bm2_off,
                     bm1, bm2, desc_off,
                     _data_end(data, layouts, bm2, desc_off, bs) if flat is None else 0)


def _data_end(data: FileView, layouts: KdumpLayouts, bitmap2: np.ndarray, desc_off: int,
              block_size: int) -> int:
    """Where a rearranged file should end: past its ``page_desc`` table and the data of its last
    pages (QEMU and makedumpfile write page data in table order, so the last descriptors' data
    ends the file; zero pages all share one copy near the start, hence a tail of them is read,
    not one). Cheap: at most :data:`TAIL_DESCS` descriptors are read."""
    n = int(np.unpackbits(bitmap2).sum(dtype=np.int64))
    size = layouts.page_desc.sizeof()
    end = desc_off + n * size
    if n == 0 or end > data.size:
        return end
    k = min(n, TAIL_DESCS)
    tail = np.frombuffer(data.view(end - k * size, k * size, "page_desc table"),
                         dtype=layouts.page_desc_dtype)
    offs = tail["offset"].astype(np.int64)
    ends = offs + tail["size"].astype(np.int64)
    del tail
    # no page data lies past the table plus a block a page: a descriptor pointing beyond that
    # is damage (CorruptInput when read), not a sign of a cut
    most = end + (n + 1) * block_size
    ends = ends[(offs > 0) & (ends <= most)]
    return max(end, int(ends.max(initial=0)))



TAIL_DESCS = 1 << 16


MAX_NOTES = 1 << 16


def read_kdump_notes(kd: KdumpFile) -> list[ElfNote]:
    """The ELF notes QEMU copies after the sub-header (``offset_note``, ``note_size``): per-vCPU
    ``CORE``/``NT_PRSTATUS``, ``QEMU`` CPU state, the guest's ``VMCOREINFO``. Descriptor offsets
    are rearranged-file offsets.

    :raises CorruptInput: a note that runs past the note area or the file.
    """
    sub = kd.sub_header
    if sub is None or not sub.note_size:
        return []
    data = kd.data
    if kd.truncated and not kd.has(sub.offset_note, sub.note_size):
        return []
    area = bytes(data.view(sub.offset_note, sub.note_size, "ELF notes"))
    u32 = "<III" if kd.header.little_endian else ">III"
    notes: list[ElfNote] = []
    pos = 0
    while pos + 12 <= len(area) and len(notes) < MAX_NOTES:
        namesz, descsz, ntype = struct.unpack_from(u32, area, pos)
        name_at = pos + 12
        desc_at = name_at + (namesz + 3) // 4 * 4
        end = desc_at + (descsz + 3) // 4 * 4
        if desc_at + descsz > len(area):
            raise CorruptInput(data.name, f"ELF note ({namesz}-byte name, {descsz}-byte descriptor) "
                                          f"runs past the note area ({sub.note_size} bytes at "
                                          f"{sub.offset_note:#x})", offset=sub.offset_note + pos)
        name = area[name_at:name_at + namesz].split(b"\0", 1)[0].decode("ascii", "replace")
        notes.append(ElfNote(name, ntype, sub.offset_note + desc_at, descsz))
        pos = end
    return notes


def read_vmcoreinfo(kd: KdumpFile, notes: list[ElfNote]) -> dict:
    """Whether the guest wrote ``VMCOREINFO``, and its ``OSRELEASE``, ``PAGESIZE``, ``BUILD-ID``
    and ``CRASHTIME`` lines: the ELF reader's decoding, over the kdump's note area."""
    return vmcoreinfo_from_notes(notes, lambda note, n: note_head(kd, note, n))


def note_head(kd: KdumpFile, note: ElfNote, n: int) -> bytes | memoryview:
    """The first ``n`` bytes of ``note``'s descriptor (``read_kdump_notes`` checked it is in the
    note area)."""
    return kd.data.view(note.desc_offset, n, f"note {note.name} descriptor")
