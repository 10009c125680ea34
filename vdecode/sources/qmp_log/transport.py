"""What mail and web pages do to a pasted log, undone before any format reader sees it.

Logs reach bug reports through e-mail and archives (``shared/reference/qmp-logs.md`` §16):
quoted-printable (``mon=3D0x...``, soft line breaks ``=`` cutting JSON mid-token), ``> `` quoting,
HTML entities (``&quot;``) and no-break spaces. :func:`detect_wrappers` looks at the first lines;
:func:`unwrap` undoes what it found, line by line, keeping each logical line's first physical line
number.
"""

from __future__ import annotations

import html
import quopri
import re
from collections.abc import Iterable, Iterator

__all__ = ("detect_wrappers", "unwrap")

_QP_HINT = re.compile(r"=3D|=20$|=09$|=0D$")
_QUOTE = re.compile(r"^(?:[ \t]*>)+ ?")
_HTML_HINT = ("&quot;", "&gt;", "&lt;", "&#34;", "&amp;")


def detect_wrappers(head: list[str]) -> frozenset[str]:
    """``{"quote", "qp", "html"}``: the wrappers the first lines show.

    >>> sorted(detect_wrappers(["> mon=3D0x1 msg=3D{}", "> more"]))
    ['qp', 'quote']
    """
    found = set()
    lines = [t for t in head if t.strip()]
    if lines and sum(1 for t in lines if _QUOTE.match(t)) * 2 >= len(lines):
        found.add("quote")
    if any(_QP_HINT.search(t.rstrip("\r")) for t in head):
        found.add("qp")
    if any(h in t for t in head for h in _HTML_HINT) and not any('"' in t for t in head):
        found.add("html")
    return frozenset(found)


def unwrap(lines: Iterable[tuple[int, str]], wrappers: frozenset[str]
           ) -> Iterator[tuple[int, str]]:
    """``lines`` with the wrappers undone (quote prefix, then QP soft breaks and escapes, HTML)."""
    if not wrappers:
        yield from lines
        return
    quote, qp, entities = "quote" in wrappers, "qp" in wrappers, "html" in wrappers
    pending: list[str] = []
    first = 0
    for n, text in lines:
        if quote:
            m = _QUOTE.match(text)
            if m is not None:
                text = text[m.end():]
        if qp:
            text = text.rstrip("\r")
            if not pending:
                first = n
            if text.endswith("=") and not text.endswith("=="):
                pending.append(text[:-1])       # soft line break: the line goes on
                continue
            pending.append(text)
            text = quopri.decodestring("".join(pending).encode("utf-8", "surrogateescape")
                                       ).decode("utf-8", "replace")
            pending.clear()
            n = first
        if entities:
            text = html.unescape(text)
        yield n, text.replace("\u00a0", " ")
    if pending:
        yield first, quopri.decodestring("".join(pending).encode("utf-8", "surrogateescape")
                                         ).decode("utf-8", "replace")
