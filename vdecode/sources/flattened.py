"""
Flattened makedumpfile streams
------------------------------
makedumpfile ``-F`` and every QEMU ``kdump-*`` format before 8.2 (QEMU v7.2.0 ``dump/dump.c``
``write_start_flat_header``, ``write_buffer``; makedumpfile ``makedumpfile.h`` ``struct
makedumpfile_header``, ``struct makedumpfile_data_header``): a 4 KiB header, then records
``{int64 offset; int64 buf_size}`` (big-endian), each followed by ``buf_size`` bytes destined for
``offset`` of the rearranged file, applied in stream order (later wins, makedumpfile.c
``rearrange_dumpdata``), ending with ``(-1, -1)``.

:func:`read_flat_index` walks the record headers once (never the data) into numpy arrays;
:class:`FlattenedView` reads the rearranged file in place through them.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import tempfile
from pathlib import Path

import numpy as np
from construct import Const, Int64sb, Struct

from vdecode.binary import dtype_of, struct_of
from vdecode.errors import CorruptInput, InputError
from vdecode.sources.cache import cache_cap, evict, mark_used
from vdecode.frozen import record
from vdecode.sources.files import FileView, parse_at

__all__ = ("END_FLAG_FLAT_HEADER", "FLAT_RECORD", "FLAT_RECORD_DTYPE", "FLAT_INDEX_CACHE_MIN",
           "FlatIndex", "FlattenedView", "MAKEDUMPFILE_HEADER", "MAKEDUMPFILE_SIGNATURE",
           "flat_index_cache_path", "read_flat_index", "walk_flat_records")

MAKEDUMPFILE_SIGNATURE = b"makedumpfile"
MAX_SIZE_MDF_HEADER = 4096                 # makedumpfile.h: the flattened header is one 4 KiB block
TYPE_FLAT_HEADER = 1
VERSION_FLAT_HEADER = 1
END_FLAG_FLAT_HEADER = -1

# Logical offsets beyond this cannot come from a real dump and would overflow int64 sums.
MAX_LOGICAL_OFFSET = 1 << 56

# A rearranged range may hold gaps (header padding) beyond the bytes the stream carries, never more
# than this much beyond the stream's size.
GAP_SLACK = 1 << 20

MAKEDUMPFILE_HEADER = Struct(                       # makedumpfile.h struct makedumpfile_header
    "signature" / Const(MAKEDUMPFILE_SIGNATURE + bytes(4)),
    "type" / Int64sb * "TYPE_FLAT_HEADER (1)",
    "version" / Int64sb * "VERSION_FLAT_HEADER (1)",
)
FLAT_RECORD = Struct(                               # makedumpfile.h struct makedumpfile_data_header
    "offset" / Int64sb * "offset in the rearranged file; -1 ends the stream",
    "buf_size" / Int64sb * "bytes that follow this header",
)
FLAT_RECORD_DTYPE = dtype_of(FLAT_RECORD)


@record(eq=False)
class FlatIndex:
    """Where each byte of the rearranged file lives in a flattened stream.

    ``starts``/``ends`` are sorted, non-overlapping rearranged-file ranges and ``file_offsets``
    where each range's bytes start in the stream, already resolved so that a later record wins.
    Bytes no record wrote read as zero (as after ``makedumpfile -R``).
    """

    starts: np.ndarray
    ends: np.ndarray
    file_offsets: np.ndarray
    n_records: int
    overlapping: bool
    size: int            # rearranged-file size: the end of the furthest record
    cut_offset: int | None = None    # where a stream without its end marker stops
    cut_reason: str | None = None    # and how (the message for what it lacks)


# Streams with at least this many records keep their index in the cache directory: the walk
# touches every record header (about 1 us each warm, and on a cold cache most of the file).
FLAT_INDEX_CACHE_MIN = 1 << 16
FLAT_INDEX_CACHE_VERSION = 1


def flat_index_cache_path(view: FileView, cache_dir: str | os.PathLike) -> Path:
    """Where the index of ``view`` is kept: keyed by the file's resolved path, size and mtime."""
    return Path(cache_dir) / f"{flat_index_key(view.path)}-{view.path.name}.flatindex.npz"


def flat_index_key(path: str | os.PathLike) -> str:
    """The index's key: the file's resolved path, size and mtime (an index is small and checked
    against the file when loaded; a touched file's old one ages out of the cache)."""
    st = os.stat(path)
    return hashlib.sha256(f"{Path(path).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0"
                          f"{FLAT_INDEX_CACHE_VERSION}".encode()).hexdigest()[:16]


def _load_cached(path: Path, view: FileView) -> FlatIndex | None:
    """A cached index, or ``None`` when it is missing, unreadable or does not fit the file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            st, en, fo, meta = z["starts"], z["ends"], z["file_offsets"], z["meta"]
            cut_reason = str(z["cut_reason"]) if "cut_reason" in z.files else None
    except (OSError, ValueError, KeyError):
        return None
    if (st.dtype != np.int64 or en.dtype != np.int64 or fo.dtype != np.int64 or meta.shape != (5,)
            or not (len(st) == len(en) == len(fo))):
        return None
    n_records, overlapping, size, cut_offset, file_size = meta.tolist()
    ok = (file_size == view.size and bool(np.all(en > st)) and bool(np.all(en[:-1] <= st[1:]))
          and bool(np.all(fo >= MAX_SIZE_MDF_HEADER + 16))
          and bool(np.all(fo + (en - st) <= view.size)) and (len(en) == 0 or size == int(en[-1])))
    if not ok:
        return None
    return FlatIndex(st, en, fo, int(n_records), bool(overlapping), int(size),
                     None if cut_offset < 0 else int(cut_offset), cut_reason)


def _save_cached(path: Path, index: FlatIndex, view: FileView) -> None:
    """Keep the index for the next open; a cache that cannot be written is skipped."""
    meta = np.array([index.n_records, int(index.overlapping), index.size,
                     -1 if index.cut_offset is None else index.cut_offset, view.size], dtype=np.int64)
    extra = {"cut_reason": np.array(index.cut_reason)} if index.cut_reason else {}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, starts=index.starts, ends=index.ends, file_offsets=index.file_offsets,
                     meta=meta, **extra)
        os.replace(tmp, path)
    except OSError:
        return


def read_flat_index(view: FileView, *, cache_dir: str | os.PathLike | None = None,
                    cache_min_records: int = FLAT_INDEX_CACHE_MIN) -> FlatIndex:
    """The record index of a flattened stream: from the cache when ``cache_dir`` holds one that
    fits the file, else by :func:`walk_flat_records`, kept in ``cache_dir`` when the stream has at
    least ``cache_min_records`` records.

    :raises CorruptInput: as :func:`walk_flat_records`.
    """
    cached = None
    if cache_dir is not None:
        cached = flat_index_cache_path(view, cache_dir)
        index = _load_cached(cached, view)
        if index is not None:
            mark_used(cached)             # "last used", for the cache's size cap
            return index
    index = walk_flat_records(view)
    if cached is not None and index.n_records >= cache_min_records:
        _save_cached(cached, index, view)
        try:
            evict(cache_dir, cache_cap(), keep={cached.name[:16]})
        except (OSError, InputError):
            pass                          # the index is kept; the cap is kept on the next add
    return index


def walk_flat_records(view: FileView) -> FlatIndex:
    """Walk the record headers of a flattened stream once (the data is skipped, never read).

    A stream cut short (no end marker, a last record or record header running past the end of
    the file) keeps what it holds: the bytes of a partial last record count, and ``cut_offset`` /
    ``cut_reason`` say where and how it stops. :func:`read_kdump` refuses it when the headers or
    bitmaps are not all there, and otherwise reads it as an incomplete dump.

    :raises CorruptInput: a bad ``makedumpfile_header``, or a record with a negative or
        implausible offset or a negative size.
    """
    sig = bytes(view.view(0, 16, "makedumpfile_header"))
    if sig != MAKEDUMPFILE_SIGNATURE + bytes(4):
        raise CorruptInput(view.name, f"makedumpfile_header: signature {sig!r}, expected "
                                      f"{MAKEDUMPFILE_SIGNATURE + bytes(4)!r}", offset=0)
    hdr = parse_at(MAKEDUMPFILE_HEADER, view, 0, "makedumpfile_header")
    if hdr.type != TYPE_FLAT_HEADER or hdr.version != VERSION_FLAT_HEADER:
        raise CorruptInput(view.name, f"makedumpfile_header: type {hdr.type}, version {hdr.version}"
                                      f" (expected {TYPE_FLAT_HEADER}, {VERSION_FLAT_HEADER})",
                           offset=0x10)
    mem, size = view.memory(), view.size
    unpack = struct_of(FLAT_RECORD).unpack_from
    starts: list[int] = []
    sizes: list[int] = []
    fileoffs: list[int] = []
    pos = MAX_SIZE_MDF_HEADER
    cut: tuple[int, str] | None = None
    while True:   # the records form a chain (each header follows the previous data): one pass
        if pos + 16 > size:
            cut = (pos, "flattened stream ends without its end marker (-1, -1)" if pos == size else
                   f"flattened record header (16 bytes) runs past the end of the file ({size} bytes)")
            break
        off, n = unpack(mem, pos)
        if off == END_FLAG_FLAT_HEADER:
            break
        if off < 0 or off > MAX_LOGICAL_OFFSET:
            raise CorruptInput(view.name, f"flattened record: offset {off:#x} is not a file offset",
                               offset=pos)
        if n < 0:
            raise CorruptInput(view.name, f"flattened record for offset {off:#x}: size {n} is "
                                          "negative", offset=pos)
        if pos + 16 + n > size:
            cut = (pos, f"flattened record for offset {off:#x}: size {n} runs past the end of the "
                        f"file ({size} bytes)")
            if size - pos - 16 > 0:       # the part that was written
                starts.append(off)
                sizes.append(size - pos - 16)
                fileoffs.append(pos + 16)
            break
        if n:
            starts.append(off)
            sizes.append(n)
            fileoffs.append(pos + 16)
        pos += 16 + n
    s = np.array(starts, dtype=np.int64)
    e = s + np.array(sizes, dtype=np.int64)
    f = np.array(fileoffs, dtype=np.int64)
    n_records = len(starts)
    order = np.argsort(s, kind="stable")
    ss, se, sf = s[order], e[order], f[order]
    overlapping = bool(np.any(se[:-1] > ss[1:]))
    if overlapping:
        ss, se, sf = _resolve_later_wins(s, e, f)
    return FlatIndex(ss, se, sf, n_records, overlapping, int(e.max()) if n_records else 0,
                     *(cut or (None, None)))


def _resolve_later_wins(s: np.ndarray, e: np.ndarray, f: np.ndarray):
    """Cut overlapping records into elementary ranges, each owned by the last record covering it:
    one sweep over the range boundaries with a heap of the records open there (highest stream
    index on top, expired ones dropped lazily), O(n log n) whatever the overlaps."""
    bounds = np.unique(np.concatenate([s, e]))
    lo = np.searchsorted(bounds, s).tolist()
    hi = np.searchsorted(bounds, e).tolist()
    by_start = sorted(range(len(lo)), key=lo.__getitem__)
    owner = np.full(len(bounds) - 1, -1, dtype=np.int64)
    heap: list[tuple[int, int]] = []
    j = 0
    for k in range(len(bounds) - 1):
        while j < len(by_start) and lo[by_start[j]] == k:
            i = by_start[j]
            heapq.heappush(heap, (-i, hi[i]))
            j += 1
        while heap and heap[0][1] <= k:
            heapq.heappop(heap)
        if heap:
            owner[k] = -heap[0][0]
    keep = np.flatnonzero(owner >= 0)
    w = owner[keep]
    starts = bounds[keep]
    return starts, bounds[keep + 1], f[w] + (starts - s[w])


class FlattenedView:
    """The rearranged file of a flattened stream, read in place: :class:`FileView`'s interface
    (``name``, ``size``, ``view``) over rearranged-file offsets. Zero-copy when the bytes sit in one
    record, otherwise copied out (gaps read as zero)."""

    def __init__(self, file: FileView, index: FlatIndex) -> None:
        self.file, self.index = file, index
        self.name = f"{file.name} (rearranged)"
        self.size = index.size
        self._mv = file.memory()

    def view(self, offset: int, n: int, what: str = "data") -> memoryview:
        """Bytes ``[offset, offset+n)`` of the rearranged file.

        :raises CorruptInput: when the range runs past the end of the rearranged file.
        """
        if offset < 0 or n < 0 or offset + n > self.size:
            raise CorruptInput(self.name, f"{what} ({n} bytes) runs past the end of the rearranged "
                                          f"file ({self.size} bytes)", offset=offset)
        if n > self.file.size + GAP_SLACK:
            # gaps read as zeros, so only the stream's own size bounds what a copy may cost
            raise CorruptInput(self.name, f"{what} ({n} bytes) is larger than the whole flattened "
                                          f"file ({self.file.size} bytes)", offset=offset)
        ix = self.index
        i = int(np.searchsorted(ix.starts, offset, side="right")) - 1
        if i >= 0 and offset + n <= ix.ends[i]:
            fo = int(ix.file_offsets[i] + (offset - ix.starts[i]))
            return self._mv[fo:fo + n]
        out = bytearray(n)
        i = max(i, 0)
        end = offset + n
        while i < len(ix.starts) and ix.starts[i] < end:
            a, b = max(offset, int(ix.starts[i])), min(end, int(ix.ends[i]))
            if a < b:
                fo = int(ix.file_offsets[i] + (a - ix.starts[i]))
                out[a - offset:b - offset] = self._mv[fo:fo + (b - a)]
            i += 1
        return memoryview(out)

    def map_offsets(self, offsets: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Stream offsets of many ``[offset, offset+size)`` ranges at once; -1 for a range that
        is not inside one record (straddling, in a gap, or out of bounds)."""
        ix = self.index
        if not len(ix.starts):
            return np.full(len(offsets), -1, dtype=np.int64)
        i = np.searchsorted(ix.starts, offsets, side="right") - 1
        j = np.maximum(i, 0)
        ok = (i >= 0) & (offsets >= 0) & (offsets + sizes <= ix.ends[j])
        return np.where(ok, ix.file_offsets[j] + (offsets - ix.starts[j]), -1)

    def covered(self, offset: int, n: int) -> bool:
        """Whether records wrote every byte of ``[offset, offset+n)`` (no gap)."""
        ix = self.index
        i = int(np.searchsorted(ix.starts, offset, side="right")) - 1
        end = offset + n
        if i < 0 or offset < 0:
            return n <= 0
        reach = offset
        while i < len(ix.starts) and ix.starts[i] <= reach < end:
            reach = max(reach, int(ix.ends[i]))
            i += 1
        return reach >= end

    def file_offset(self, offset: int) -> int | None:
        """Where rearranged offset ``offset`` lives in the stream, or ``None`` for a gap."""
        ix = self.index
        i = int(np.searchsorted(ix.starts, offset, side="right")) - 1
        if i >= 0 and offset < ix.ends[i]:
            return int(ix.file_offsets[i] + (offset - ix.starts[i]))
        return None

    def memory(self) -> memoryview:
        return self.view(0, self.size, "rearranged file")
