"""Reads a log file as numbered text lines, streaming, with every line's length bounded.

Logs are opened ``"rb"`` and read one line at a time, so a 100 MB log costs one line of memory
here. Bytes that are not UTF-8 are replaced (a binary-garbage line is then skipped by the format
reader with a warning); a line longer than :data:`MAX_LINE` is skipped with a warning. Logs
kept compressed (CI artefacts ``*.txt.gz``, ``*.zst``) are read through the decompressor, still
a line at a time.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Iterator

import zstandard

from vdecode.errors import InputError

__all__ = ("MAX_LINE", "open_lines", "read_head", "open_decompressed")

MAX_LINE = 16 << 20       # query-qmp-schema replies are ~1 MB on one line; nothing real is 16 MiB


def open_lines(path: str | os.PathLike, warn=None) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line of ``path``, line ends stripped.

    A trailing ``\\r`` is kept (libvirt's split ``SEND_MSG`` records need to see it).

    :param warn: ``warn(line, reason)`` called for lines that are cut.
    :raises InputError: when the file cannot be opened or read.
    """
    name = str(path)
    f = open_decompressed(path, name)
    n = 0
    with f:
        read = f.readline
        try:
            while True:
                raw = read(MAX_LINE)
                if not raw:
                    return
                n += 1
                if len(raw) == MAX_LINE and not raw.endswith(b"\n"):
                    # skip the rest of an over-long line, a chunk at a time
                    while True:
                        more = read(MAX_LINE)
                        if not more or more.endswith(b"\n"):
                            break
                    if warn is not None:
                        warn(n, f"line longer than {MAX_LINE} bytes, skipped")
                    continue
                if raw.endswith(b"\n"):
                    raw = raw[:-1]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = raw.decode("utf-8", "replace")
                yield n, text
        except (EOFError, zlib.error, zstandard.ZstdError, gzip.BadGzipFile) as err:
            # a compressed log cut short (or corrupt) still gives the lines before the damage
            if n == 0:
                raise InputError(name, f"cannot decompress: {err}", line=1) from err
            if warn is not None:
                warn(n + 1, f"compressed log ends here: {err}")
        except OSError as err:
            raise InputError(name, f"cannot read: {err.strerror or err}", line=n + 1) from err


_GZIP, _ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


def open_decompressed(path: str | os.PathLike, name: str, what: str | None = None):
    """The file, or its decompressed stream when it is gzip or zstd (by magic): QMP logs and
    trace files alike.

    :param what: what the file should be (``"a trace file"``): a directory is then said to be
        none, rather than "cannot open".
    :raises InputError: the file cannot be opened.
    """
    try:
        f = open(path, "rb")
        magic = f.read(4)
        f.seek(0)
    except IsADirectoryError as err:
        if what is None:
            raise InputError(name, f"cannot open: {err.strerror or err}") from err
        raise InputError(name, f"is a directory, not {what}") from err
    except OSError as err:
        raise InputError(name, f"cannot open: {err.strerror or err}") from err
    if magic[:2] == _GZIP:
        return gzip.GzipFile(fileobj=f, mode="rb")
    if magic == _ZSTD:
        return _ZstdReader(f)
    return f


class _ZstdReader(io.BufferedIOBase):
    """A zstd file as a buffered stream that says where the file ends inside a frame: zstandard's
    own stream reader ends there silently, and a log or trace cut short must say so. What was
    decompressed before the cut is read first; the next read raises ``EOFError`` (a
    ``BufferedReader`` would drop the data of the read that meets the cut with it)."""

    def __init__(self, f) -> None:
        from vdecode.sources.compressed import zstd_chunks

        self._f = f
        self._chunks = zstd_chunks(f)
        self._buf = bytearray()
        self._pos = 0
        self._done = False
        self._err: EOFError | None = None

    def readable(self) -> bool:
        return True

    def _fill(self, want: int, stop: bytes | None = None) -> None:
        """Decompress until ``want`` bytes are buffered (or ``stop`` is among them), or the end."""
        if stop is not None and self._buf.find(stop, self._pos) >= 0:
            return
        while not self._done and len(self._buf) - self._pos < want:
            try:
                chunk = next(self._chunks, None)
            except EOFError as err:
                self._err, self._done = err, True
                break
            if chunk is None:
                self._done = True
                break
            if self._pos > (1 << 20):               # drop what was read, now and then
                del self._buf[:self._pos]
                self._pos = 0
            self._buf += chunk
            if stop is not None and stop in chunk:    # one byte: only the new piece can hold it
                return

    def _take(self, n: int) -> bytes:
        if n == 0 and self._err is not None:        # everything before the cut is read: say so
            err, self._err = self._err, None
            raise err
        out = bytes(self._buf[self._pos:self._pos + n])
        self._pos += n
        return out

    def read(self, size: int | None = -1) -> bytes:
        want = (1 << 62) if size is None or size < 0 else size
        self._fill(want)
        return self._take(min(want, len(self._buf) - self._pos))

    read1 = read

    def peek(self, size: int = 1) -> bytes:
        self._fill(max(size, 1))
        return bytes(self._buf[self._pos:])

    def readline(self, size: int | None = -1) -> bytes:
        limit = (1 << 62) if size is None or size < 0 else size
        self._fill(limit, b"\n")
        end = self._buf.find(b"\n", self._pos)
        avail = len(self._buf) - self._pos
        n = avail if end < 0 else end + 1 - self._pos
        return self._take(min(n, limit))

    def close(self) -> None:
        self._f.close()
        super().close()


def read_head(path: str | os.PathLike, max_lines: int = 200,
              max_bytes: int = 1 << 20) -> list[str]:
    """The first lines of ``path`` (at most ``max_lines`` / about ``max_bytes``), for sniffing.

    :raises InputError: when the file cannot be opened or read, or is a directory.
    """
    out: list[str] = []
    size = 0
    for _, text in open_lines(path):
        out.append(text[:max_bytes])
        size += len(text)
        if len(out) >= max_lines or size >= max_bytes:
            break
    return out
