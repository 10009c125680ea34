"""Format 2: raw wire transcripts (socat, nc, telnet, ``-qmp stdio``), compact or pretty.

What a terminal shows when a person talks to a QMP socket: the greeting, commands as typed (maybe
single-quoted, maybe spread over lines), replies and events as QEMU writes them (one line, or
4-space-indented over many with ``pretty=on``; QEMU v7.2.0 ``monitor/qmp.c``
``qmp_send_response``). Piped transcripts hold replies only. Objects are assembled by brace
balance; lines outside objects (shell prompts, QEMU's stderr, telnet banners) are skipped with a
warning. A qmp-shell ``-l`` log in compact or pretty form is also a stream of objects and reads
the same way (each object carries a command and its reply). A ``YYYY-MM-DD HH:MM:SS: `` prefix
(avocado-vt's per-monitor logs write every line sent and received so, in local time) gives the
line's time, read as UTC.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable

from vdecode.sources.qmp_log.builder import LogBuilder
from vdecode.sources.qmp_log.qmpjson import ObjectCollector, emit_message

__all__ = ("NAME", "sniff", "read", "read_objects")

NAME = "wire"
_QMP_START = re.compile(r"""^\s*\{\s*["']?(QMP|execute|exec-oob|return|error|event|timestamp|id|arguments)["']?\s*:""")
_PRETTY_OPEN = re.compile(r"^\s*\{\s*$")
_PRETTY_KEY = re.compile(r'^\s+"(QMP|execute|exec-oob|return|error|event|timestamp|id|arguments)":')
_TELNET = ("Trying ", "Connected to ", "Escape character is")
_STAMP = re.compile(r"^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d): (?=\{)")


def sniff(head: list[str]) -> int:
    score = 0
    for i, text in enumerate(head):
        m = _STAMP.match(text)
        if m is not None:
            text = text[m.end():]
        if _QMP_START.match(text):
            score += 1
        elif _PRETTY_OPEN.match(text) and i + 1 < len(head) and _PRETTY_KEY.match(head[i + 1]):
            score += 1
    return score


def read(lines: Iterable[tuple[int, str]], b: LogBuilder) -> None:
    read_objects(lines, b)


def read_objects(lines: Iterable[tuple[int, str]], b: LogBuilder, *, monitor: str = "",
                 quiet: bool = False) -> None:
    """Feed every top-level ``{...}`` object in ``lines`` to ``b``, in order.

    :param quiet: skip non-object lines without a warning.
    """
    c = ObjectCollector()
    for n, text in lines:
        if c.active and text.startswith("{") and c.parts and c.parts[0].strip() != "{":
            # an object starting at column 0 while a one-line-started object is still open: the
            # open one was a typo that never closes (pretty and hand-wrapped objects indent)
            b.warn(c.line, "object never closes before the next one, skipped")
            c.reset()
        if c.active:
            whole = c.add_or_drop(text.rstrip("\r"), b.warn, "object")
            if whole is not None:
                emit_message(b, whole, c.line, t=c.meta, monitor=monitor)
            continue
        s = text.strip().rstrip("\r")
        if not s:
            continue
        t = None
        m = _STAMP.match(s)
        if m is not None:
            t = calendar.timegm(tuple(int(g) for g in m.groups()) + (0, 0, 0))
            s = s[m.end():]
        i = s.find("{")
        if i < 0 or (i > 0 and not _is_prompt(s[:i])):
            if not quiet and not s.startswith(_TELNET):
                b.warn(n, f"not QMP JSON, skipped: {_clip(s)}")
            continue
        whole = c.start(s[i:], n, meta=t)
        if whole is not None:
            emit_message(b, whole, n, t=t, monitor=monitor)
    if c.active:
        b.warn(c.line, "object cut off at the end of the log, skipped")


def _is_prompt(prefix: str) -> bool:
    # "(QEMU) ", "$ ", "qmp> ", "> " glued before an object on a terminal
    return len(prefix) <= 40 and not any(ch.isalnum() for ch in prefix.replace("QEMU", ""))




def _clip(s: str, n: int = 60) -> str:
    return s if len(s) <= n else s[:n] + "..."
