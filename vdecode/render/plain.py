"""Plain text drawn the way ``rich`` draws it, without importing ``rich``.

The compact view piped to a file or another program (``vdecode DUMP --queue 2 | less``, every
script and CI job) has no colours and no tables, only paragraphs wrapped within the width. rich
costs ~30 ms of imports, a tenth of a whole ``--queue`` answer, for nothing there. These classes
take the part of ``rich.text.Text``, ``rich.padding.Padding`` and ``rich.console.Console`` that the
compact form uses, and wrap as rich does (``rich/_wrap.py``: a word is its non-space run with the
spaces after it; a word that does not fit goes to the next line; one longer than a line is folded
at the width), so that the output is the same bytes; ``tests/render/test_plain.py`` compares the
two on every view the tests build, at several widths.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ("PlainText", "PlainPadding", "PlainConsole", "wrap")

_WORD = re.compile(r"\s*\S+\s*")


def _cells(s: str) -> int:
    """Terminal cells of ``s``: East Asian wide and full-width characters take two, combining
    marks none (what rich's ``cell_len`` counts)."""
    if s.isascii():
        return len(s)
    return sum(0 if unicodedata.combining(ch) else
               2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)


def _chop(word: str, width: int) -> list[str]:
    """``word`` cut into pieces of at most ``width`` cells."""
    pieces, cur, n = [], "", 0
    for ch in word:
        w = _cells(ch)
        if cur and n + w > width:
            pieces.append(cur)
            cur, n = "", 0
        cur += ch
        n += w
    pieces.append(cur)
    return pieces


def wrap(text: str, width: int) -> list[str]:
    """The lines rich makes of ``text`` within ``width`` cells (trailing spaces kept as rich keeps
    them; the caller strips them when it prints without colour).

    >>> wrap("alpha beta gamma", 11)
    ['alpha beta ', 'gamma']
    >>> wrap("abcdefghij xy", 4)
    ['abcd', 'efgh', 'ij ', 'xy']
    """
    out: list[str] = []
    for line in text.split("\n"):
        breaks: list[int] = []
        offset = 0
        for m in _WORD.finditer(line):
            start, word = m.start(), m.group(0)
            need = _cells(word.rstrip())
            if width - offset >= need:
                offset += _cells(word)
            elif need > width:
                pieces = _chop(word, width)
                for i, piece in enumerate(pieces):
                    if start:
                        breaks.append(start)
                    if i == len(pieces) - 1:
                        offset = _cells(piece)
                    else:
                        start += len(piece)
            elif offset and start:
                breaks.append(start)
                offset = _cells(word)
        cuts = [0, *breaks, len(line)]
        out.extend(line[a:b] for a, b in zip(cuts, cuts[1:]))
    return out


class PlainText:
    """A run of text; styles are accepted and dropped (no colour without a terminal)."""

    def __init__(self, text: str = "", style: str = "") -> None:
        self.plain = text

    def append(self, text: str, style: str = "") -> PlainText:
        self.plain += text
        return self


class PlainPadding:
    """A paragraph indented by ``pad[3]`` columns on every line (rich ``Padding((0, 0, 0, n))``)."""

    def __init__(self, body: PlainText | str, pad: tuple[int, int, int, int], expand: bool = False) -> None:
        self.body = body
        self.left = pad[3]


class PlainConsole:
    """Collects printed paragraphs, wrapped within ``width``, as one string."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.parts: list[str] = []

    def print(self, obj: PlainText | PlainPadding | str | None = None) -> None:
        if obj is None:
            self.parts.append("\n")
            return
        left = obj.left if isinstance(obj, PlainPadding) else 0
        body = obj.body if isinstance(obj, PlainPadding) else obj
        text = body if isinstance(body, str) else body.plain
        if not text and isinstance(obj, PlainPadding):
            return                            # rich measures an empty padded paragraph as no lines
        for line in wrap(text, self.width - left):
            self.parts.append(" " * left + line + "\n")

    def getvalue(self) -> str:
        return "".join(self.parts)
