"""Format 3: ``->`` / ``<-`` pastes, as in QEMU's QAPI docs, patches and bug reports.

``docs/interop/qmp-spec.rst`` and the ``Example:`` blocks of ``qapi/*.json`` (QEMU v7.2.0) write
a command as ``-> { ... }`` and what QEMU sends as ``<- { ... }``; a message may be wrapped by hand
over lines without a marker, and inside ``.json`` sources every line carries a ``# `` prefix.
Hand-written JSON may be single-quoted; text after the closing brace (prose) is ignored. Lines
outside messages are prose and skipped quietly; a message that does not decode (elisions such
as ``...``) is skipped with a warning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from vdecode.sources.qmp_log.builder import LogBuilder
from vdecode.sources.qmp_log.qmpjson import SKIPPED, ObjectCollector, decode_message

__all__ = ("NAME", "sniff", "read")

NAME = "arrows"
_ARROW = re.compile(r"^\s*(?:#\s*)?(->|<-)\s*(\{.*)$")
_COMMENT = re.compile(r"^\s*#\s?")


def sniff(head: list[str]) -> int:
    return 2 * sum(1 for text in head if _ARROW.match(text))


def read(lines: Iterable[tuple[int, str]], b: LogBuilder) -> None:
    c = ObjectCollector()
    for n, text in lines:
        text = text.rstrip("\r")
        m = _ARROW.match(text)
        if c.active and m is None:
            whole = c.add_or_drop(_COMMENT.sub("", text, count=1), b.warn)
            if whole is not None:
                _emit(b, whole, c.meta, c.line)
            continue
        if m is None:
            continue
        if c.active:
            b.warn(c.line, "message cut off by the next arrow, skipped")
        whole = c.start(m.group(2), n, meta=m.group(1))
        if whole is not None:
            _emit(b, whole, m.group(1), n)
    if c.active:
        b.warn(c.line, "message cut off at the end of the log, skipped")


def _emit(b: LogBuilder, text: str, arrow: str, line: int | None) -> None:
    msg = decode_message(b, text, line)
    if msg is SKIPPED:
        return
    if isinstance(msg, dict) and arrow == "->" and "execute" not in msg and "exec-oob" not in msg:
        b.warn(line, "'->' message is not a command, skipped")
        return
    b.message(msg, line=line)
