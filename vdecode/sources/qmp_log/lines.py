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
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(f, closefd=True))
    return f


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
