"""Format 7a: ``qemu.qmp`` debug logs (``-->`` sent, ``<--`` received).

``qemu.qmp.protocol.AsyncProtocol._cb_outbound``/``_cb_inbound`` (PyPI ``qemu.qmp`` 0.0.6) log
``"--> %s"`` and ``"<-- %s"`` at DEBUG, where the message prints as ``json.dumps(indent=2)``: the
first line carries the logging prefix (``%(asctime)s - %(levelname)s: %(name)s.%(funcName)s``
in QEMU's functional tests, ``HH:MM:SS DEBUG|`` in avocado), the rest follows unprefixed until
the braces balance. The greeting and events are ``<--`` too. The monitor key is the logger's
nickname (``qemu.qmp.protocol.NICK``); times are the logging ``asctime`` read as UTC (Python logs
local time; a time-only prefix gives no time).

The legacy Python QMP library (QEMU before 2022, ``python/qemu/qmp.py`` ``cmd_obj``) logged
``>>> %s`` / ``<<< %s`` with Python ``dict`` reprs (``DEBUG:QMP:>>> {'execute': ...}``): the same
shape, read here too.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from functools import partial

from vdecode.sources.qmp_log.builder import LogBuilder
from vdecode.sources.qmp_log.qmpjson import ObjectCollector, decode_qmp_json

__all__ = ("NAME", "sniff", "read")

NAME = "qemu.qmp"
_LINE = re.compile(r"^(?P<pre>.*?)(?P<dir>-->|<--|>>>|<<<) (?P<rest>\{.*)$")
_ASCTIME = re.compile(r"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)[,.](\d{3})")
_NICK = re.compile(r"qemu\.qmp\.(?:protocol|qmp_client)(?:\.([\w.-]+?))?(?:\.[_a-z]+)? ")


def sniff(head: list[str]) -> int:
    score = 0
    for text in head:
        m = _LINE.match(text)
        if m is not None and m.group("pre").strip():
            score += 3 if "qemu.qmp" in text or "DEBUG" in text or "QMP" in text else 1
    return score


def read(lines: Iterable[tuple[int, str]], b: LogBuilder) -> None:
    c = ObjectCollector()
    for n, text in lines:
        text = text.rstrip("\r")
        m = _LINE.match(text)
        if c.follow(text, m is not None and bool(m.group("pre").strip()), b.warn,
                    partial(_emit, b)):
            continue
        if m is None:
            continue                            # library chatter: state transitions, tracebacks
        pre = m.group("pre")
        tm = _ASCTIME.search(pre)
        t = None
        if tm is not None:
            y, mo, d, h, mi, s, ms = (int(g) for g in tm.groups())
            t = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0)) + ms / 1000
        nick = _NICK.search(pre)
        meta = (t, nick.group(1) or "" if nick else "")
        whole = c.start(m.group("rest"), n, meta=meta)
        if whole is not None:
            _emit(b, whole, meta, n)
    if c.active:
        b.warn(c.line, "message cut off at the end of the log, skipped")


def _emit(b: LogBuilder, text: str, meta, line: int | None) -> None:
    t, nick = meta
    try:
        msg = decode_qmp_json(text)
    except ValueError as err:
        b.warn(line, f"QMP message is not JSON: {err}")
        return
    b.message(msg, t=t, monitor=nick, line=line)
