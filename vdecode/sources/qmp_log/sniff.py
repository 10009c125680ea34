"""Which format a QMP log is in, from its first lines.

Each format module has ``sniff(head) -> int`` (how many of the first lines are its own) and
``read(lines, builder)``. The highest score wins; ties go to the earlier, more specific format in
:data:`READERS` (envelopes before the libvirt lines they carry, libvirt before bare JSON).
"""

from __future__ import annotations

from typing import Any

from vdecode.errors import InputError
from vdecode.sources.qmp_log import (arrows, journal, jsonl, libvirt, qemu_qmp, qmp_shell, trace,
                                     virsh, wire)

__all__ = ("READERS", "FORMATS", "reader_for", "sniff_format")

# Most specific first: ties go to the earlier reader.
READERS: tuple[Any, ...] = (jsonl, journal.KUBEVIRT, journal.JOURNALD, libvirt, trace, qemu_qmp,
                            qmp_shell, virsh, arrows, wire)
FORMATS: tuple[str, ...] = tuple(m.NAME for m in READERS)


def reader_for(fmt: str, source: str) -> Any:
    """The reader module for a format name.

    :raises InputError: for an unknown name (the message lists the known ones).
    """
    for m in READERS:
        if m.NAME == fmt:
            return m
    raise InputError(source, f"unknown log format {fmt!r}; known: {', '.join(FORMATS)}")


def sniff_format(head: list[str], source: str) -> Any:
    """The reader whose format the first lines show.

    :raises InputError: when no format recognises any line.
    """
    best, best_score = None, 0
    for m in READERS:
        score = m.sniff(head)
        if score > best_score:
            best, best_score = m, score
    if best is None:
        if not any(t.strip() for t in head):
            raise InputError(source, "empty log: no QMP traffic")
        first = next(i for i, t in enumerate(head, 1) if t.strip())
        raise InputError(source, f"not a QMP log in any known format ({', '.join(FORMATS)}); "
                                 "name one with --log-format", line=first)
    return best
