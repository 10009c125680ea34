"""Lines that fit the terminal: text wrapped at word boundaries with a hanging indent, keeping
phrases whole.

Findings say things like ``40005 completion(s) since the log (used idx 30005 -> 4474)``: a plain
word wrap cuts that inside the parenthesis (``(used idx`` / ``30005 -> 4474)``), which reads as
two statements. Here a parenthesised group and an ``a -> b`` step are one unit: when a unit does
not fit on the current line it starts the next one, under the hanging indent; only a unit longer
than a whole line is broken, at its words (and a word longer than a line, an address or a path,
is left whole: cutting it would change what it says).
"""

from __future__ import annotations

import re

__all__ = ("phrases", "wrap_units", "wrap_hanging")

_TOKEN = re.compile(r"\S+")


def phrases(text: str) -> list[str]:
    """``text`` cut into the units a line may not break: words, with a group in parentheses
    (or brackets, or braces) and ``a -> b`` (or ``a → b``) each kept as one unit.

    >>> phrases("40005 completion(s) since the log (used idx 30005 -> 4474)")
    ['40005', 'completion(s)', 'since', 'the', 'log', '(used idx 30005 -> 4474)']
    >>> phrases("went from 3 -> 5 today; ok {14 members} [2 items]")
    ['went', 'from', '3 -> 5', 'today;', 'ok', '{14 members}', '[2 items]']
    """
    units: list[str] = []
    depth = 0
    glue = False                      # the next word joins the last unit
    for word in _TOKEN.findall(text):
        if units and (depth > 0 or glue or word in ("->", "→")):
            units[-1] += " " + word
        else:
            units.append(word)
        glue = word in ("->", "→")
        depth = max(0, depth + sum(map(word.count, "([{")) - sum(map(word.count, ")]}")))
    return units


def wrap_units(units: list[str], width: int, indent: int = 0, hang: int | None = None,
               sep: str = " ") -> list[str]:
    """``units`` laid out in lines of at most ``width`` columns, joined by ``sep``: the
    first line indented by ``indent``, the others by ``hang`` (default: ``indent``). A unit that
    does not fit on a line of its own is broken at its spaces; a single word longer than a line
    stays whole (the only way a line exceeds ``width``).

    >>> wrap_units(["INFO", "a", "(b c d)"], 12, 0, 5)
    ['INFO a', '     (b c d)']
    >>> wrap_units(["path:", "/a/very/long/path/name"], 12, 0, 6)
    ['path: /a/very/long/path/name']
    """
    hang = indent if hang is None else hang
    lines: list[str] = []
    cur = ""
    for unit in units:
        lead = indent if not lines else hang
        room = width - lead
        candidate = unit if not cur else cur + sep + unit
        if len(candidate) <= room:
            cur = candidate
            continue
        if not lines and cur == units[0] and " " not in unit.strip() and \
                len(unit.strip()) > width - hang:
            cur = candidate                # a label's one value no line can hold: keep it beside
            continue                       # the label rather than leave the label alone
        if cur:
            lines.append(" " * lead + cur)
            cur = ""
            room = width - hang
        unit = unit.lstrip()               # a unit that starts a line has no space before it
        if len(unit) <= room or " " not in unit:
            cur = unit
            continue
        # a phrase longer than a line: its words, as plain wrapping would
        for word in unit.split(" "):
            lead = indent if not lines else hang
            room = width - lead
            candidate = word if not cur else cur + " " + word
            if len(candidate) <= room or not cur:
                cur = candidate
            else:
                lines.append(" " * lead + cur)
                cur = word
    if cur or not lines:
        lines.append(" " * (indent if not lines else hang) + cur)
    return [line.rstrip() for line in lines]


def wrap_hanging(text: str, width: int, indent: int = 0, hang: int | None = None) -> list[str]:
    """:func:`wrap_units` of :func:`phrases` of ``text``: a paragraph within ``width`` columns
    whose continuation lines are indented by ``hang``.

    >>> wrap_hanging("virtio-rng q0: 40005 completion(s) since the log (used idx 30005 -> 4474)", 50, 2, 4)
    ['  virtio-rng q0: 40005 completion(s) since the log', '    (used idx 30005 -> 4474)']
    """
    return wrap_units(phrases(text), width, indent, hang)
