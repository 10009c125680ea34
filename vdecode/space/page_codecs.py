"""
kdump page codecs
-----------------
One decoder per ``page_desc`` compression flag (makedumpfile ``diskdump_mod.h``
``DUMP_DH_COMPRESSED_*``; libkdumpfile ``diskdump.c``, which also checks every decompressor's
output length against the page size). Each returns exactly one block or says why not: a bomb (more
than one block), a short or truncated stream, a codec error. Memory stays bounded: zlib and zstd
stop at one block, snappy's and zstd's declared sizes are checked before decompressing, and an LZO
stream of at most one block (64 KiB) expands at most ~255-fold.

Bulk reads inflate zlib pages with :func:`vdecode.space.inflate.inflate_block` (libdeflate where
it is installed); it accepts only a stream that is one whole block, and anything else comes here,
where zlib says why.
"""

from __future__ import annotations

import zlib

from vdecode.sources.kdump import DUMP_DH_COMPRESSED_LZO, DUMP_DH_COMPRESSED_SNAPPY, \
    DUMP_DH_COMPRESSED_ZLIB, DUMP_DH_COMPRESSED_ZSTD
from vdecode.space.inflate import INFLATE, inflate_block

__all__ = ("CODECS", "INFLATE", "PageDecoders", "inflate_block")

CODECS = {0: "raw", DUMP_DH_COMPRESSED_ZLIB: "zlib", DUMP_DH_COMPRESSED_LZO: "lzo",
          DUMP_DH_COMPRESSED_SNAPPY: "snappy", DUMP_DH_COMPRESSED_ZSTD: "zstd"}


class PageDecoders:
    """One decompressor per codec, created on first use; each returns exactly one block."""

    def __init__(self, block_size: int) -> None:
        self.bs = block_size
        self._lzo = None
        self._zstd = None

    def decode(self, flags: int, buf: bytes | memoryview) -> tuple[bytes | None, str]:
        """Decompressed block, or ``(None, why)`` when the stream is not one block."""
        bs = self.bs
        if flags == DUMP_DH_COMPRESSED_ZLIB:
            d = zlib.decompressobj()
            try:
                out = d.decompress(buf, bs)
                if d.unconsumed_tail:
                    return None, f"decompresses to more than one block ({bs} bytes)"
                out += d.flush()
            except zlib.error as err:
                return None, f"zlib: {err}"
            if not d.eof:
                return None, f"zlib stream is truncated after {len(out)} bytes"
        elif flags == DUMP_DH_COMPRESSED_LZO:
            import lzallright
            if self._lzo is None:
                self._lzo = lzallright.LZOCompressor()
            try:   # LZO1X expands at most ~255:1, so a block_size-bounded input is a bounded output
                out = self._lzo.decompress(bytes(buf), output_size_hint=bs)
            except (lzallright.LZOError, lzallright.InputNotConsumed) as err:
                return None, f"lzo: {type(err).__name__} {err}"
        elif flags == DUMP_DH_COMPRESSED_SNAPPY:
            import cramjam
            try:
                n = cramjam.snappy.decompress_raw_len(bytes(buf))   # the stream's own length prefix
                if n != bs:
                    return None, f"snappy stream declares {n} bytes, not one block ({bs})"
                target = bytearray(bs)
                n = cramjam.snappy.decompress_raw_into(bytes(buf), target)
            except cramjam.DecompressionError as err:
                return None, str(err)           # cramjam says "snappy: ..." itself
            out = bytes(target[:n])
        elif flags == DUMP_DH_COMPRESSED_ZSTD:
            import zstandard
            if self._zstd is None:
                self._zstd = zstandard.ZstdDecompressor()
            try:
                n = zstandard.frame_content_size(bytes(buf))
                if n not in (-1, bs):     # -1: the frame does not say
                    return None, f"zstd frame declares {n} bytes, not one block ({bs})"
                out = self._zstd.decompress(bytes(buf), max_output_size=bs)
            except zstandard.ZstdError as err:
                return None, f"zstd: {err}"
        else:
            return None, f"unknown compression flags {flags:#x}"
        if len(out) != bs:
            return None, f"decompresses to {len(out)} bytes, not one block ({bs})"
        return out, ""
