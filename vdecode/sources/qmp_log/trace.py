"""Format 7b: QEMU's own trace output for its QMP monitors (``-trace handle_qmp_command`` etc.).

QEMU v7.2.0 ``monitor/trace-events`` with the ``log`` backend writes::

    handle_qmp_command mon %p req: %s        a command as QEMU parsed it (re-serialised)
    monitor_qmp_respond mon %p resp: %s      every message QEMU sends: replies, events, greeting

prefixed by ``TID@SECONDS.MICROS:`` with ``-msg timestamp=on`` (or an ISO-8601 UTC time in later
QEMUs). A pretty monitor's ``resp:`` spans lines. The monitor key is the ``mon`` pointer; events
are traced once per monitor. Other trace events and QEMU's stderr are skipped quietly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from functools import partial

from vdecode.sources.qmp_log.builder import LogBuilder
from vdecode.sources.qmp_log.qmpjson import ObjectCollector, decode_qmp_json

__all__ = ("NAME", "sniff", "read")

NAME = "trace"
_LINE = re.compile(r"^(?:\d+@(\d+\.\d+):|(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z) )?"
                   r"(handle_qmp_command|monitor_qmp_respond) mon (0x[0-9a-fA-F]+|\(nil\)) "
                   r"(?:req|resp): (.*)$")
_ANY_TRACE = re.compile(r"^(?:\d+@\d+\.\d+:|\d{4}-\d\d-\d\dT\S+ )?[a-z_0-9]+ ")


_STAMPED_TRACE = re.compile(r"^\d+@\d+\.\d+:[a-z_0-9]+ ")


def sniff(head: list[str]) -> int:
    # QMP trace lines count most; other timestamped trace events say "trace output" too
    return sum(3 if _LINE.match(text) else 1 if _STAMPED_TRACE.match(text) else 0
               for text in head)


def read(lines: Iterable[tuple[int, str]], b: LogBuilder) -> None:
    c = ObjectCollector()
    for n, text in lines:
        text = text.rstrip("\r")
        m = _LINE.match(text)
        cut = m is not None or bool(_ANY_TRACE.match(text) and not text.startswith(" "))
        if c.follow(text, cut, b.warn, partial(_emit, b), "trace record"):
            continue
        if m is None:
            continue
        secs, iso, _event, mon, rest = m.groups()
        t = float(secs) if secs else _iso(iso) if iso else None
        meta = (t, mon)
        whole = c.start(rest, n, meta=meta)
        if whole is not None:
            _emit(b, whole, meta, n)
    if c.active:
        b.warn(c.line, "message cut off at the end of the log, skipped")


def _iso(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _emit(b: LogBuilder, text: str, meta, line: int | None) -> None:
    t, mon = meta
    try:
        msg = decode_qmp_json(text)
    except ValueError as err:
        b.warn(line, f"QMP message is not JSON: {err}")
        return
    b.message(msg, t=t, monitor=mon, line=line)
