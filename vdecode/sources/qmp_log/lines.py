"""Reads a log file as numbered text lines, streaming, with every line's length bounded.

Logs are opened ``"rb"`` and read one line at a time, so a 100 MB log costs one line of memory
here. Bytes that are not UTF-8 are replaced (a binary-garbage line is then skipped by the format
reader with a warning); a line longer than :data:`MAX_LINE` is cut into pieces and the pieces
after the first are reported, not kept.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from vdecode.errors import InputError

__all__ = ("MAX_LINE", "open_lines", "read_head")

MAX_LINE = 64 << 20       # query-qmp-schema replies are megabytes on one line; nothing real is 64 MiB


def open_lines(path: str | os.PathLike, warn=None) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line of ``path``, line ends stripped.

    A trailing ``\\r`` is kept (libvirt's split ``SEND_MSG`` records need to see it).

    :param warn: ``warn(line, reason)`` called for lines that are cut.
    :raises InputError: when the file cannot be opened or read.
    """
    name = str(path)
    try:
        f = open(path, "rb")
    except OSError as err:
        raise InputError(name, f"cannot open: {err.strerror or err}") from err
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
        except OSError as err:
            raise InputError(name, f"cannot read: {err.strerror or err}", line=n + 1) from err


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
