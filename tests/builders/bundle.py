"""Write small synthetic bundles (``docs/bundle.md``) note by note, for the reader's bad-input tests.

Real bundles come from ``vdecode bundle`` on the captures; these are for what vdecode never writes:
wrong JSON, wrong types, repeated or missing notes, newer versions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vdecode.render.elf_core import write_elf_core
from vdecode.sources.bundle_notes import NOTE_OWNER, VDB_META, VDB_QEMU_STATE, VDB_QMP_LOG

META = {"format": "vdecode-bundle", "bundle_version": 1, "vdecode_version": "0.1.0",
        "created": "2026-01-01T00:00:00Z",
        "origin": {"file": "dump.elf", "format": "elf", "size": 1 << 20,
                   "ram_ranges": [[0, 1 << 20]]},
        "logs": [], "vm": None, "options": {"header_bytes": 64, "full_buffers": False,
                                            "redact": False},
        "kept": {"bytes": 4096, "runs": 1}, "limits": []}


def write_bundle_file(path: str | os.PathLike, *, meta: dict | bytes | None = None,
                      state: dict | bytes | None = None, log: str | bytes | None = None,
                      extra: list[tuple[str, int, bytes]] = (),
                      segments=((0x1000, b"\x55" * 4096),)) -> Path:
    """A bundle with ``meta`` (default :data:`META`), an optional ``state``/``log``, and ``extra``
    notes; JSON values are encoded, bytes are written as given."""
    def enc(x) -> bytes:
        return x if isinstance(x, bytes) else (x.encode() if isinstance(x, str) else json.dumps(x).encode())

    notes = [(NOTE_OWNER, VDB_META, enc(META if meta is None else meta))]
    if state is not None:
        notes.append((NOTE_OWNER, VDB_QEMU_STATE, enc(state)))
    if log is not None:
        notes.append((NOTE_OWNER, VDB_QMP_LOG, enc(log)))
    notes += list(extra)
    return write_elf_core(path, segments, notes=notes, qemu_quirks=False)
