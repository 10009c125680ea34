"""One virtqueue drawn as an SVG ring, from a queue the view read in detail
(:class:`~vdecode.reconstruct.postmortem.records.Queue`, ``detailed``).

The descriptor table is the outer ring (entry 0 at the top, clockwise), the avail ring the inner
one (a split ring's; a packed ring has only its descriptor ring). A slot is coloured by the chain
that holds it: pending (available, not taken), in-flight (taken, not completed), red when the
chain is broken (a loop, a link out of the table, a zero length...). Radial marks show where the
indices point, each modulo the ring size: the guest's ``avail->idx`` and ``used->idx``, QEMU's
``last_avail_idx`` and ``shadow_avail_idx``; marks at the same slot share one label.

Runs of neighbouring slots in one state are one arc, so a picture stays a few kilobytes whatever
the ring size. Every drawn element carries ``data-*`` attributes with the values it stands for
(``data-idx``, ``data-slot``, ``data-first``/``data-last``), which the tests check against the
queue's indices, and a ``<title>`` a browser shows on hover.
"""

from __future__ import annotations

import math
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vdecode.reconstruct.postmortem.records import Queue

__all__ = ("ring_svg", "COLOURS", "MARKERS")

COLOURS = {"free": "#e4e4e4", "pending": "#f0a030", "in-flight": "#3a7fd8", "broken": "#d62020"}
#: the indices drawn as marks: (name in the picture, the queue's ``indices`` member)
MARKERS = (("avail", "avail_idx"), ("used", "guest_used_idx"), ("last_avail", "last_avail_idx"),
           ("shadow", "shadow_avail_idx"))
_MARK_COLOUR = {"avail": "#b05a00", "used": "#1f5fb0", "last_avail": "#207030", "shadow": "#7040a0"}
SIZE = 440                   # the picture's width and height (user units)
_C = SIZE / 2
_DESC_R, _AVAIL_R, _WIDTH = 150.0, 126.0, 16.0
_MAX_LINKS = 96              # chains whose links are drawn (the rest are coloured only)


def _angle(pos: float, size: int) -> float:
    """Slot boundary ``pos`` (0..size) as an angle: 0 at the top, clockwise."""
    return 2 * math.pi * pos / size - math.pi / 2


def _point(r: float, a: float) -> tuple[float, float]:
    return _C + r * math.cos(a), _C + r * math.sin(a)


def _arc(r: float, first: int, last: int, size: int) -> str:
    """The path of slots ``first``..``last`` (inclusive) on a ring of radius ``r``."""
    if last - first + 1 >= size:                    # the whole ring: two halves (an arc needs ends)
        return _arc(r, 0, size // 2 - 1, size) + " " + _arc(r, size // 2, size - 1, size) \
            if size > 1 else f"M {_C - r:.2f} {_C:.2f} A {r} {r} 0 1 1 {_C + r:.2f} {_C:.2f} " \
                             f"A {r} {r} 0 1 1 {_C - r:.2f} {_C:.2f}"
    a0, a1 = _angle(first, size), _angle(last + 1, size)
    x0, y0 = _point(r, a0)
    x1, y1 = _point(r, a1)
    large = 1 if a1 - a0 > math.pi else 0
    return f"M {x0:.2f} {y0:.2f} A {r} {r} 0 {large} 1 {x1:.2f} {y1:.2f}"


def _runs(states: dict[int, str]) -> list[tuple[int, int, str]]:
    """``{slot: state}`` as ``(first, last, state)`` runs of neighbouring slots."""
    out: list[tuple[int, int, str]] = []
    for slot in sorted(states):
        st = states[slot]
        if out and out[-1][1] == slot - 1 and out[-1][2] == st:
            out[-1] = (out[-1][0], slot, st)
        else:
            out.append((slot, slot, st))
    return out


def _slot_states(q: Queue, size: int) -> tuple[dict[int, str], dict[int, str]]:
    """Which descriptor-table entries and avail-ring slots each chain holds, by state."""
    desc: dict[int, str] = {}
    avail: dict[int, str] = {}
    split = q.event_idx is not None
    for ch in q.chains:
        st = "broken" if ch.problems else ch.state
        if ch.slot is not None and split:
            avail[ch.slot % size] = st
        members = [ch.head] if ch.indirect is not None else \
            [d.index for d in ch.descriptors] or [ch.head]
        for i in members:
            if 0 <= i < size and desc.get(i) != "broken":
                desc[i] = st
    return desc, avail


def ring_svg(q: Queue, *, standalone: bool = False, title: str | None = None) -> str:
    """The SVG of one queue read in detail (the view's ``queue_detail``).

    :param standalone: a document of its own (``--svg``): XML declaration and namespace.
    :param title: the caption (default: the device path and queue index).
    """
    size = q.size or 0
    caption = title or f"{q.device} queue {q.index}"
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    out = [f'<svg{ns} class="ring" viewBox="0 0 {SIZE} {SIZE + 34}" width="{SIZE}" '
           f'height="{SIZE + 34}" role="img" data-device="{escape(q.device)}" '
           f'data-queue="{q.index}" data-size="{size}" '
           f'data-packed="{"true" if q.packed_events is not None else "false"}">',
           f"<title>{escape(caption)}</title>"]
    if size <= 0:
        out.append(f'<text x="{_C}" y="{_C}" text-anchor="middle">no ring (size 0)</text></svg>')
        return "\n".join(out) + "\n"
    split = q.event_idx is not None         # a split ring that was read: an avail ring
    rings = [("desc", _DESC_R, "descriptor table")] + ([("avail", _AVAIL_R, "avail ring")]
                                                      if split else [])
    desc_states, avail_states = _slot_states(q, size)
    for name, r, label in rings:
        out.append(f'<circle class="{name}-ring" cx="{_C}" cy="{_C}" r="{r}" fill="none" '
                   f'stroke="{COLOURS["free"]}" stroke-width="{_WIDTH}"><title>{label}: '
                   f'{size} entries</title></circle>')
        states = desc_states if name == "desc" else avail_states
        for first, last, st in _runs(states):
            what = f"{label} {first}" + (f"-{last}" if last > first else "") + f": {st}"
            out.append(f'<path class="slots {name} {st}" data-ring="{name}" data-state="{st}" '
                       f'data-first="{first}" data-last="{last}" d="{_arc(r, first, last, size)}" '
                       f'fill="none" stroke="{COLOURS[st]}" stroke-width="{_WIDTH}">'
                       f"<title>{escape(what)}</title></path>")
    # the chains' next links, as chords inside the descriptor ring
    drawn = 0
    for ch in q.chains:
        idx = [d.index for d in ch.descriptors] if ch.indirect is None else []
        if len(idx) < 2 or drawn >= _MAX_LINKS:
            continue
        drawn += 1
        broken = bool(ch.problems)
        pts = " ".join("{:.2f},{:.2f}".format(*_point(_DESC_R - _WIDTH / 2 - 2,
                                                      _angle(i % size + 0.5, size)))
                       for i in idx)
        what = f"chain head {ch.head}: " + " -> ".join(map(str, idx)) + \
            (f" ({', '.join(ch.problems)})" if broken else "")
        out.append(f'<polyline class="link{" broken" if broken else ""}" data-head="{ch.head}" '
                   f'points="{pts}" fill="none" stroke="'
                   f'{COLOURS["broken"] if broken else "#555"}" stroke-width="'
                   f'{2 if broken else 1}"><title>{escape(what)}</title></polyline>')
    # the index marks; several at one slot share a label
    at: dict[int, list[tuple[str, int]]] = {}
    for name, member in MARKERS:
        v = getattr(q.indices, member)
        if v is None:
            continue
        at.setdefault(v % size, []).append((name, v))
    inner = (_AVAIL_R if split else _DESC_R) - _WIDTH / 2 - 6
    placed: list[tuple[float, int]] = []       # labels' angles and rows: near ones step outwards
    for slot, marks in sorted(at.items()):
        a = _angle(slot, size)
        x0, y0 = _point(inner, a)
        x1, y1 = _point(_DESC_R + _WIDTH / 2 + 6, a)
        for name, v in marks:
            out.append(f'<line class="marker" data-name="{name}" data-idx="{v}" '
                       f'data-slot="{slot}" x1="{x0:.2f}" y1="{y0:.2f}" x2="{x1:.2f}" '
                       f'y2="{y1:.2f}" stroke="{_MARK_COLOUR[name]}" stroke-width="2">'
                       f"<title>{name} idx {v} (slot {slot})</title></line>")
        step = 0
        while any(abs(math.remainder(a - b, 2 * math.pi)) < 0.5 and row == step
                  for b, row in placed):
            step += 1
        placed.append((a, step))
        if step:                                 # a leader from the mark to its moved label
            x2, y2 = _point(_DESC_R + _WIDTH / 2 + 8 + 13 * step, a)
            out.append(f'<line class="leader" x1="{x1:.2f}" y1="{y1:.2f}" x2="{x2:.2f}" '
                       f'y2="{y2:.2f}" stroke="#999" stroke-width="0.5"/>')
        lx, ly = _point(_DESC_R + _WIDTH / 2 + 10 + 13 * step, a)
        anchor = "start" if math.cos(a) > 0.2 else "end" if math.cos(a) < -0.2 else "middle"
        text = ", ".join(f"{n} {v}" for n, v in marks)
        out.append(f'<text class="marker-label" x="{lx:.2f}" y="{ly + 4:.2f}" font-size="10" '
                   f'text-anchor="{anchor}" fill="{_MARK_COLOUR[marks[0][0]]}">{escape(text)}</text>')
    centre = [f"size {size}", f"{sum(1 for c in q.chains if c.state == 'pending')} pending",
              f"{sum(1 for c in q.chains if c.state == 'in-flight')} in flight"]
    for k, line in enumerate(centre):
        out.append(f'<text x="{_C}" y="{_C - 10 + 16 * k}" font-size="12" text-anchor="middle">'
                   f"{escape(line)}</text>")
    legend_y = SIZE + 20
    x = 10
    for st in ("pending", "in-flight", "broken", "free"):
        out.append(f'<rect x="{x}" y="{legend_y - 9}" width="10" height="10" '
                   f'fill="{COLOURS[st]}"/><text x="{x + 14}" y="{legend_y}" font-size="11">'
                   f"{st}</text>")
        x += 78
    out.append("</svg>")
    return "\n".join(out) + "\n"
