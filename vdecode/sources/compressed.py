"""
Compressed dumps as people attach them to bug reports
-----------------------------------------------------
A ``.zst``, ``.gz`` or ``.xz`` dump is decompressed once, streaming, into the cache folder
(:mod:`vdecode.sources.cache`) and read from there: dumps are read at random offsets, which a
compressed stream cannot do. Memory stays bounded (one chunk at a time), runs of zero bytes become
holes (a 64 GiB dump of a mostly idle guest stays small on disk), and a finished file is found
again by a fingerprint of the compressed file's content, so a touched, renamed or copied input
reuses it. A partial output never has the final name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from vdecode.errors import CorruptInput, InputError
from vdecode.sources.cache import cache_cap, default_cache_dir, fingerprint, lookup, store

__all__ = ("CHUNK", "ProgressFn", "default_cache_dir", "decompress_to_cache")

CHUNK = 1 << 20
ZSTD_FEED = 2048
ProgressFn = Callable[[int, int], None]   # (compressed bytes consumed, compressed total)


def decompress_to_cache(path: str | os.PathLike, kind: str, *, cache_dir: str | os.PathLike | None = None,
                        progress: ProgressFn | None = None) -> Path:
    """Decompress ``path`` (``kind``: ``"zstd"``, ``"gzip"``, ``"xz"``) once; return the cached file.

    :param progress: called with (compressed bytes read, compressed size) as the work goes on.
    :raises CorruptInput: when the compressed stream is damaged or truncated.
    :raises InputError: when the cache directory cannot be written.
    """
    import gzip                     # here, not at import: only compressed inputs pay for these
    import lzma
    import zlib

    import zstandard

    src = Path(path)
    name = str(path)
    st = src.stat()
    cache_cap()                         # a bad $VDECODE_CACHE_MAX is said before the work, not after
    out_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = fingerprint(src)
    found = lookup(out_dir, key)
    if found is not None:
        return found
    stem = src.name
    for suffix in (".zst", ".zstd", ".gz", ".xz"):
        if stem.endswith(suffix):
            stem = stem[:-len(suffix)]
            break
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        import tempfile                 # only when decompressing: start-up of every answer
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{key}-", suffix=".part")
    except OSError as err:
        raise InputError(str(out_dir), f"cannot write the decompression cache: "
                                       f"{err.strerror or err}") from err
    try:
        with open(src, "rb") as raw, os.fdopen(fd, "wb") as dst:
            _copy_sparse(_chunks(raw, kind), dst, raw, st.st_size, progress)
        out = store(out_dir, key, tmp, stem, source=src, kind=kind)
    except (OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError) as err:
        _discard(tmp)
        if isinstance(err, OSError) and not isinstance(err, gzip.BadGzipFile) and err.errno:
            raise InputError(name, f"cannot decompress into {out_dir}: {err.strerror or err}") from err
        raise CorruptInput(name, f"{kind} stream is damaged: {err or type(err).__name__}") from err
    except BaseException:
        _discard(tmp)
        raise
    return out


def _discard(part: str) -> None:
    """Remove an unfinished output (already renamed when the failure came after it was whole)."""
    try:
        os.unlink(part)
    except FileNotFoundError:
        pass


def _chunks(raw, kind: str) -> Iterator[bytes]:
    """Decompressed bytes of ``raw``, a bounded piece at a time.

    gzip and xz readers raise ``EOFError`` on a truncated stream by themselves. zstandard's
    stream reader ends a truncated frame silently, so zstd goes through ``decompressobj``, fed
    :data:`ZSTD_FEED` compressed bytes at a time: a zstd block of 128 KiB can be 4 bytes (RLE), so
    that bounds one call's output to 64 MiB even for a bomb.
    """
    import gzip
    import lzma

    if kind == "gzip":
        reader = gzip.GzipFile(fileobj=raw, mode="rb")
    elif kind == "xz":
        reader = lzma.LZMAFile(raw, mode="rb")
    else:
        yield from zstd_chunks(raw)
        return
    while chunk := reader.read(CHUNK):
        yield chunk


def zstd_chunks(raw) -> Iterator[bytes]:
    """The decompressed pieces of a zstd stream (every frame); ``EOFError`` when it ends inside a
    frame. Also the reader under compressed QMP logs and traces (``qmp_log.lines``)."""
    import zstandard

    dobj, fed = zstandard.ZstdDecompressor().decompressobj(), False
    while data := raw.read(ZSTD_FEED):
        while data:
            fed = True
            out = dobj.decompress(data)
            if out:
                yield out
            if dobj.eof:                       # a frame ended: the rest starts a new frame
                data, dobj, fed = dobj.unused_data, zstandard.ZstdDecompressor().decompressobj(), False
            else:
                data = b""
    if fed:
        raise EOFError("the compressed stream ends inside a zstd frame (truncated file)")


def _copy_sparse(chunks: Iterator[bytes], dst, raw, total: int, progress: ProgressFn | None) -> None:
    """Write ``chunks`` to ``dst`` in pieces of :data:`CHUNK` bytes; all-zero pieces become holes."""
    zero = bytes(CHUNK)
    size, buf = 0, bytearray()

    def flush(piece: bytes | bytearray) -> None:
        if piece == zero[:len(piece)]:
            dst.seek(len(piece), os.SEEK_CUR)
        else:
            dst.write(piece)

    for out in chunks:
        buf += out
        size += len(out)
        while len(buf) >= CHUNK:
            flush(buf[:CHUNK])
            del buf[:CHUNK]
        if progress is not None:
            progress(raw.tell(), total)
    flush(buf)
    dst.truncate(size)
