"""Format 5: ``virsh qemu-monitor-command`` output and ``virsh qemu-monitor-event`` lines.

``qemu-monitor-command DOM '{...}'`` prints QEMU's reply as libvirt re-serialised it: compact
(``{"return":{...},"id":"libvirt-15"}``) or, with ``--pretty``, 2-space indented. The command
itself is printed only when the transcript includes the shell line (``$ virsh
qemu-monitor-command DOM '{"execute":...}'``); it is read from there when present, shell quoting
undone. ``qemu-monitor-event`` prints (libvirt 9.0 ``tools/virsh-domain.c``
``virshEventQemuPrint``)::

    event STOP at 1795575900.373695 for domain 'vd-guest1': <null>
    2026-11-25 03:05:00.374+0000: event STOP for domain 'vd-guest1': <null>    (--timestamp)

with ``--pretty`` data spread over lines. The monitor key is the domain name.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from vdecode.sources.qmp_log.builder import LogBuilder
from vdecode.sources.qmp_log.libvirt import libvirt_time
from vdecode.sources.qmp_log.qmpjson import (SKIPPED, ObjectCollector, decode_message,
                                              decode_qmp_json)

__all__ = ("NAME", "sniff", "read")

NAME = "virsh"
_EVENT = re.compile(r"^(?:(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3})\+0000: )?event (\w+)"
                    r"(?: at (-?\d+)\.(\d+))? for domain '?(.*?)'?: (.*)$")
_COMMAND = re.compile(r"^\s*(?:\S*[$#] )?virsh\b.*\bqemu-monitor-command\b(.*)$")
_LIBVIRT_REPLY = re.compile(r'^\s*\{.*"id":\s*"libvirt-\d+"')
_ID_LINE = re.compile(r'^\s+"id": "libvirt-\d+"')


def sniff(head: list[str]) -> int:
    score = 0
    for text in head:
        if _EVENT.match(text) or _COMMAND.match(text):
            score += 3
        elif _LIBVIRT_REPLY.match(text) and '"execute"' not in text:
            score += 2
        elif _ID_LINE.match(text):
            score += 2
    return score


def read(lines: Iterable[tuple[int, str]], b: LogBuilder) -> None:
    c = ObjectCollector()
    domain = ""
    for n, text in lines:
        text = text.rstrip("\r")
        if c.active:
            whole = c.add_or_drop(text, b.warn, "object")
            if whole is not None:
                _emit(b, whole, c.meta, c.line)
            continue
        s = text.strip()
        if not s:
            continue
        m = _EVENT.match(s)
        if m is not None:
            ts, ms, name, sec, usec, dom, data = m.groups()
            t = libvirt_time(ts, ms) if ts else None
            event = {"event": name}
            if sec is not None:
                event["timestamp"] = {"seconds": int(sec), "microseconds": int(usec)}
            meta = (dom, t, event)
            if data.strip() == "<null>":
                b.message(event, t=t, monitor=dom, line=n, vm=dom)
            elif data.lstrip().startswith("{"):
                whole = c.start(data.lstrip(), n, meta=meta)
                if whole is not None:
                    _emit(b, whole, meta, n)
            else:
                b.warn(n, f"event data is not JSON: {data[:60]}")
            continue
        m = _COMMAND.match(s)
        if m is not None:
            domain = _command(b, m.group(1), n) or domain
            continue
        if s.startswith("{"):
            whole = c.start(s, n, meta=(domain, None, None))
            if whole is not None:
                _emit(b, whole, c.meta, n)
            continue
        b.warn(n, f"not virsh output, skipped: {s[:60]}")
    if c.active:
        b.warn(c.line, "object cut off at the end of the log, skipped")


def _command(b: LogBuilder, args: str, line: int) -> str | None:
    try:
        words = shlex.split(args)
    except ValueError as err:
        b.warn(line, f"virsh command line not understood: {err}")
        return None
    words = [w for w in words if not w.startswith("--")]
    if len(words) < 2:
        return None
    dom, text = words[0], " ".join(words[1:])
    try:
        msg = decode_qmp_json(text)
    except ValueError as err:
        b.warn(line, f"virsh command is not QMP JSON: {err}")
        return dom
    b.message(msg, monitor=dom, line=line, vm=dom)
    return dom


def _emit(b: LogBuilder, text: str, meta, line: int | None) -> None:
    dom, t, event = meta
    msg = decode_message(b, text, line)
    if msg is SKIPPED:
        return
    if event is not None:
        event = dict(event)
        event["data"] = msg
        msg = event
    b.message(msg, t=t, monitor=dom, line=line, vm=dom or None)
