"""
Inflating one kdump page fast
-----------------------------
:func:`inflate_block` inflates a zlib page (makedumpfile ``DUMP_DH_COMPRESSED_ZLIB``) with
libdeflate (the ``deflate`` package) where it imports, else zlib. On the real captures' kdump
(14,535 zlib pages) libdeflate inflates 2.0-2.9 times as fast as zlib on one core, ISA-L
(``isal``) 2.0-2.4 times (``bench/bench_kdump.py`` prints the comparison); neither binding
releases the GIL, which is why bulk reads use processes (:mod:`vdecode.space.page_pool`).

It accepts only a stream that inflates to exactly one block and ends with a right Adler-32; for
anything else it answers ``None`` and the caller's zlib (:mod:`vdecode.space.page_codecs`) says
what is wrong, so errors do not depend on which library is installed. This module imports
nothing heavy: pool workers import it.
"""

from __future__ import annotations

import zlib

try:
    from deflate import DeflateError as _DeflateError, zlib_decompress as _libdeflate_zlib
    INFLATE = "libdeflate"
except ImportError:                      # an install without the wheel: zlib does it all
    _libdeflate_zlib, _DeflateError = None, Exception
    INFLATE = "zlib"

__all__ = ("INFLATE", "inflate_block", "zlib_block")


def zlib_block(buf: bytes | memoryview, bs: int) -> bytes | None:
    """:func:`inflate_block` by zlib alone (the fallback, and the reference in tests)."""
    d = zlib.decompressobj()
    try:
        page = d.decompress(buf, bs)
    except zlib.error:
        return None
    return page if len(page) == bs and d.eof else None


def inflate_block(buf: bytes | memoryview, bs: int) -> bytes | bytearray | None:
    """A zlib page that inflates to exactly ``bs`` bytes (the stream ended, its Adler-32
    right), or ``None`` for anything else."""
    if _libdeflate_zlib is None:
        return zlib_block(buf, bs)
    try:
        page = _libdeflate_zlib(buf, bs)       # refuses more than bs bytes and bad checksums
    except _DeflateError:
        return None
    return page if len(page) == bs else None
