"""``read_qmp_log``: one QMP log file, whatever its format, as a :class:`QmpLog`."""

from __future__ import annotations

import os

from vdecode.sources.qmp_log.builder import LogBuilder
from vdecode.sources.qmp_log.knowledge import select_monitors
from vdecode.sources.qmp_log.lines import open_lines, read_head
from vdecode.sources.qmp_log.model import QmpLog
from vdecode.sources.qmp_log.sniff import reader_for, sniff_format
from vdecode.sources.qmp_log.transport import detect_wrappers, unwrap

__all__ = ("read_qmp_log",)


def read_qmp_log(path: str | os.PathLike, fmt: str | None = None, vm: str | None = None, *,
                 latest_only: bool = False) -> QmpLog:
    """Read a QMP log into exchanges, events and greetings per monitor.

    :param path: the log file.
    :param fmt: a format name from :data:`FORMATS`; sniffed from the first lines when ``None``.
    :param vm: keep only the monitors of this VM (name, UUID or monitor key).
    :param latest_only: keep only the newest answer per (command, arguments) and the run-state
        events: what reconstruction needs, in memory bounded by the log's subject, not its size.
    :raises InputError: when the file cannot be read or is in no known format.
    :raises QmpLogError: when ``vm`` matches no monitor (the message lists what was found).
    """
    source = str(path)
    head = read_head(path)
    wrappers = detect_wrappers(head)
    if wrappers:
        head = [t for _, t in unwrap(enumerate(head, 1), wrappers)]
    reader = reader_for(fmt, source) if fmt else sniff_format(head, source)
    b = LogBuilder(source, reader.NAME, latest_only=latest_only)
    lines = open_lines(path, b.warn)
    reader.read(unwrap(lines, wrappers) if wrappers else lines, b)
    log = b.finish()
    if vm is not None:
        log.monitors = select_monitors(log, vm)
    return log
