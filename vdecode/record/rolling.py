"""The recorder's size-bounded rolling transcript: ``FILE``, ``FILE.1`` ... ``FILE.K``.

Written in the captures' JSON-lines format (``{"t", "dir", "msg"}`` a line,
:mod:`vdecode.sources.qmp_log.jsonl`). Why it is safe to read at any moment:

* a snapshot is written with one ``write`` once all its replies are in, so the files hold only
  complete snapshots (a QEMU killed mid-snapshot loses that snapshot, not the log's shape);
* files rotate only between snapshots, and every file starts with the same header (QEMU's greeting
  and the ``query-version`` exchange), so each file alone names the release and holds at least one
  complete snapshot; ``--log FILE.1 --log FILE`` (oldest first) reads the history across them;
* ``FILE`` itself never goes missing (:meth:`RollingLog._rotate`).

``max_size`` bounds all the files together: each is rotated when the next snapshot would take it
past ``max_size // (keep + 1)`` (one snapshot larger than that still gets a file of its own).
"""

from __future__ import annotations

import json
import os

from vdecode.record.monitor import Record


def lines(records: list[Record]) -> bytes:
    """The transcript lines of ``records``."""
    return "".join(json.dumps({"t": round(t, 6), "dir": d, "msg": m}) + "\n"
                   for t, d, m in records).encode()


class RollingLog:
    """:param path: ``FILE``; rotated copies are ``FILE.1`` (newest) to ``FILE.keep``.
    :param max_size: bytes all the files may take together.
    :param keep: how many rotated files to keep beside ``FILE``."""

    def __init__(self, path: str, max_size: int, keep: int = 1) -> None:
        self.path, self.max_size, self.keep = path, max_size, keep
        self.per_file = max(1, max_size // (keep + 1))
        self.header = b""
        self.rotations = 0
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self._size = 0

    def start(self, header: list[Record]) -> None:
        """Write the header (greeting, handshake, version) that every file begins with."""
        self.header = lines(header)
        self._write(self.header)

    def append(self, records: list[Record], *, snapshot: bool) -> None:
        """Write ``records``: a whole snapshot (may rotate first) or events between snapshots."""
        data = lines(records)
        if snapshot and self._size > len(self.header) and \
                self._size + len(data) > self.per_file:
            self._rotate(self.header + data)   # the new file's header and first snapshot
        else:
            self._write(data)

    def files(self) -> list[str]:
        """The files written, oldest first (as ``--log`` takes them)."""
        rotated = [f"{self.path}.{i}" for i in range(self.keep, 0, -1)
                   if os.path.exists(f"{self.path}.{i}")]
        return [*rotated, self.path]

    def close(self) -> None:
        os.close(self._fd)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:                            # one write normally; a short one goes on
            view = view[os.write(self._fd, view):]
        self._size += len(data)

    def _rotate(self, first: bytes) -> None:
        """``FILE`` becomes ``FILE.1`` (and so on), and a new ``FILE`` holds ``first``. ``FILE``
        is never missing: it is linked to ``FILE.1`` first, and the new one replaces it whole
        (where the file system has no hard links, it is renamed: absent for a moment)."""
        for i in range(self.keep - 1, 0, -1):
            if os.path.exists(f"{self.path}.{i}"):
                os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
        if self.keep:
            try:
                os.link(self.path, f"{self.path}.1.new")
                os.replace(f"{self.path}.1.new", f"{self.path}.1")
            except OSError:
                os.replace(self.path, f"{self.path}.1")
        old = self._fd
        tmp = f"{self.path}.new"
        self._fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self._size = 0
        self._write(first)
        os.replace(tmp, self.path)
        os.close(old)
        self.rotations += 1
