"""One virtqueue's trace timeline drawn as an SVG strip, for ``vdecode report --trace``.

Left to right the trace's span (its time, or its lines without timestamps), cut into columns:
the pops of each column as bars above the axis (blue), the fills below it (green), and the
elements in flight (popped, not yet returned) as a step line over them, the most a column held.
A red line marks the pause (the VM stopping: ``vm_state_notify running 0``), orange dashed lines
the device's resets. When elements were in flight at the pause, a second strip zooms on the
pause: each such element a bar from its pop to its fill (or to the trace's end), so a drain of
a fraction of a millisecond shows as clearly as a request held for seconds.

Every drawn element carries ``data-*`` attributes with the values it stands for (a column's
``data-popped``/``data-returned``/``data-in-flight``, a mark's ``data-line``), which the tests
check against the timeline, and a ``<title>`` a browser shows on hover. The strip is a few
kilobytes whatever the trace's length: columns, not events.
"""

from __future__ import annotations

from html import escape

from vdecode.reconstruct.timeline.queues import (SERIES_FILL, SERIES_POP, SERIES_RESET,
                                                 QueueTimeline, Timeline)

__all__ = ("timeline_svg", "COLUMNS")

COLUMNS = 180
WIDTH, LEFT, RIGHT = 720, 44, 12
_BAND = 30                                  # height of the pops band and of the fills band
_FLIGHT_BAND = 22                           # height of the in-flight band, under them
_POP, _FILL, _FLIGHT, _PAUSE, _RESET = "#3a7fd8", "#30a050", "#222", "#d62020", "#e08a00"


def _x(v: float, lo: float, hi: float) -> float:
    span = hi - lo or 1.0
    return LEFT + (WIDTH - LEFT - RIGHT) * (v - lo) / span


def _fmt(v: float, timed: bool) -> str:
    if not timed:
        return f"line {int(v)}"
    a = abs(v)
    return f"{v * 1e3:.1f} ms" if a < 1 else f"{v:.2f} s"


def timeline_svg(q: QueueTimeline, tl: Timeline, label: str) -> str:
    """The strip (and the zoom on the pause, when the queue held elements then) of queue ``q``."""
    timed = tl.timestamps
    lo = tl.start.t if timed else tl.start.line
    hi = tl.end.t if timed else tl.end.line
    cols = COLUMNS
    width_v = (hi - lo) / cols or 1.0
    pops, fills, flight = [0] * cols, [0] * cols, [None] * cols
    after_col: list[int | None] = [None] * cols        # the level the column's last event left
    resets: list[float] = []
    for place, kind, after in q.series:
        c = min(cols - 1, max(0, int((place - lo) / width_v)))
        if kind == SERIES_POP:
            pops[c] += 1
        elif kind == SERIES_FILL:
            fills[c] += 1
        elif kind == SERIES_RESET:
            resets.append(place)
        flight[c] = max(flight[c] or 0, after)
        after_col[c] = after
    # a column shows the most it held; one without events the level the last event left
    held, last = [], 0
    for c in range(cols):
        held.append(max(flight[c], last) if flight[c] is not None else last)
        last = after_col[c] if after_col[c] is not None else last
    top = max(max(pops), max(fills), 1)
    most = max(max(held), 1)
    axis = 16 + _BAND
    base = axis + _BAND + 6 + _FLIGHT_BAND          # the in-flight band's floor
    h = base + 18
    out = [f'<svg class="timeline" width="{WIDTH}" height="{h}" viewBox="0 0 {WIDTH} {h}" '
           f'role="img" data-queue="{q.queue if q.queue is not None else ""}" '
           f'data-popped="{q.popped}" data-returned="{q.returned}" '
           f'data-in-flight="{len(q.in_flight) if q.in_flight is not None else ""}">',
           f"<title>{escape(label)}: {q.popped} popped, {q.returned} returned</title>",
           f'<text x="{LEFT}" y="11" font-size="10" fill="#555">'
           f"popped {q.popped} (blue, up to {top} a column) · returned {q.returned} (green) · "
           f"in flight (grey, at most {max(held)})</text>",
           f'<text x="{LEFT - 4}" y="{axis - _BAND + 8}" font-size="9" fill="{_POP}" '
           f'text-anchor="end">pop</text>'
           f'<text x="{LEFT - 4}" y="{axis + _BAND - 2}" font-size="9" fill="{_FILL}" '
           f'text-anchor="end">fill</text>'
           f'<text x="{LEFT - 4}" y="{base - 4}" font-size="9" fill="#555" '
           f'text-anchor="end">held</text>',
           f'<line x1="{LEFT}" y1="{axis}" x2="{WIDTH - RIGHT}" y2="{axis}" stroke="#999"/>']
    step = (WIDTH - LEFT - RIGHT) / cols
    for c in range(cols):
        x = LEFT + c * step
        if pops[c]:
            bh = _BAND * pops[c] / top
            out.append(f'<rect class="pops" x="{x:.1f}" y="{axis - bh:.1f}" width="{step:.1f}" '
                       f'height="{bh:.1f}" fill="{_POP}" data-col="{c}" data-popped="{pops[c]}"/>')
        if fills[c]:
            bh = _BAND * fills[c] / top
            out.append(f'<rect class="fills" x="{x:.1f}" y="{axis:.1f}" width="{step:.1f}" '
                       f'height="{bh:.1f}" fill="{_FILL}" data-col="{c}" '
                       f'data-returned="{fills[c]}"/>')
    pts = [f"{LEFT:.1f},{base:.1f}"]
    for c in range(cols):
        y = base - _FLIGHT_BAND * held[c] / most
        pts += [f"{LEFT + c * step:.1f},{y:.1f}", f"{LEFT + (c + 1) * step:.1f},{y:.1f}"]
    pts.append(f"{WIDTH - RIGHT:.1f},{base:.1f}")
    out.append(f'<line x1="{LEFT}" y1="{base}" x2="{WIDTH - RIGHT}" y2="{base}" stroke="#ccc"/>')
    out.append(f'<polygon class="in-flight" points="{" ".join(pts)}" fill="#bbb" '
               f'stroke="{_FLIGHT}" stroke-width="0.8" data-most="{max(held)}" '
               f'data-last="{last}"/>')
    for r in resets:
        x = _x(r, lo, hi)
        out.append(f'<line class="reset" x1="{x:.1f}" y1="16" x2="{x:.1f}" y2="{base}" '
                   f'stroke="{_RESET}" stroke-dasharray="3,2"><title>reset</title></line>')
    if tl.pause is not None:
        pv = tl.pause.t if timed else tl.pause.line
        x = _x(pv, lo, hi)
        out.append(f'<line class="pause" x1="{x:.1f}" y1="16" x2="{x:.1f}" y2="{base}" '
                   f'stroke="{_PAUSE}" stroke-width="2" data-line="{tl.pause.line}"><title>pause '
                   f"({escape(tl.pause_reason or '')})</title></line>")
    out.append(f'<text x="{LEFT}" y="{h - 4}" font-size="10" fill="#555">'
               f"{escape('start' if timed else _fmt(lo, False))}</text>")
    out.append(f'<text x="{WIDTH - RIGHT}" y="{h - 4}" font-size="10" fill="#555" '
               f'text-anchor="end">{escape(_fmt(hi - lo, timed) if timed else _fmt(hi, False))}'
               f"</text>")
    out.append("</svg>")
    zoom = _pause_zoom(q, tl, label) if q.in_flight_at_pause else ""
    return "".join(out) + zoom


def _pause_zoom(q: QueueTimeline, tl: Timeline, label: str) -> str:
    """The elements in flight at the pause, each a bar from its pop to its fill (or the end)."""
    timed = tl.timestamps
    pv = tl.pause.t if timed else tl.pause.line
    end = tl.end.t if timed else tl.end.line
    els = q.in_flight_at_pause
    starts = [e.popped.t if timed else e.popped.line for e in els]
    stops = [(e.returned.t if timed else e.returned.line) if e.returned is not None else end
             for e in els]
    lo, hi = min(starts), max(max(stops), pv)
    pad = (hi - lo) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad
    row = 14
    h = 40 + row * len(els)
    out = [f'<svg class="pause-zoom" width="{WIDTH}" height="{h}" viewBox="0 0 {WIDTH} {h}" '
           f'role="img" data-elements="{len(els)}">',
           f"<title>{escape(label)}: {len(els)} in flight at the pause</title>",
           f'<text x="{LEFT}" y="12" font-size="10" fill="#555">around the pause: {len(els)} '
           f"element(s) in flight then, each from its pop to its return (red: never returned)"
           f"</text>"]
    for i, (e, a, b) in enumerate(zip(els, starts, stops)):
        y = 22 + i * row
        x0, x1 = _x(a, lo, hi), _x(b, lo, hi)
        back = e.returned is not None
        tip = (f"elem {e.elem:#x}: taken {_fmt(pv - a, timed) if timed else _fmt(a, False)}"
               f"{' before the pause' if timed else ''}; "
               + (f"returned {_fmt(b - pv, timed)} after it" if back and timed else
                  "returned after it" if back else "not returned"))
        out.append(f'<rect class="element" x="{x0:.1f}" y="{y}" width="{max(x1 - x0, 1.5):.1f}" '
                   f'height="{row - 4}" fill="{_POP if back else _PAUSE}" opacity="0.8" '
                   f'data-elem="{e.elem:#x}" data-line="{e.popped.line}" '
                   f'data-returned="{"1" if back else "0"}"><title>{escape(tip)}</title></rect>')
    x = _x(pv, lo, hi)
    out.append(f'<line class="pause" x1="{x:.1f}" y1="18" x2="{x:.1f}" y2="{h - 14}" '
               f'stroke="{_PAUSE}" stroke-width="2" data-line="{tl.pause.line}"/>')
    left = _fmt(lo - pv, timed) if timed else _fmt(lo, False)
    right = f"+{_fmt(hi - pv, timed)}" if timed else _fmt(hi, False)
    out.append(f'<text x="{LEFT}" y="{h - 3}" font-size="10" fill="#555">{escape(left)}</text>'
               f'<text x="{x - 3:.1f}" y="{h - 3}" font-size="10" fill="{_PAUSE}" '
               f'text-anchor="end">pause</text>'
               f'<text x="{WIDTH - RIGHT}" y="{h - 3}" font-size="10" fill="#555" '
               f'text-anchor="end">{escape(right)}</text></svg>')
    return "".join(out)
