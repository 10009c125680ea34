"""``vdecode trace``: a QEMU trace's per-queue timeline as text (screen-sized) or JSON."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from vdecode.reconstruct.timeline.queues import Element, Moment, QueueTimeline, Timeline
from vdecode.render.wrapping import wrap_hanging

__all__ = ("render_trace_json", "render_trace_text")


def render_trace_json(tl: Timeline) -> str:
    """One object: the trace's facts and ``queues``, one record per queue (pointers as QEMU
    prints them, ``0x…``; times in Unix seconds, ``null`` without timestamps)."""
    out = {
        "trace": tl.source,
        "lines": tl.lines,
        "events": tl.events,
        "timestamps": tl.timestamps,
        "backend": tl.backend,
        "clock": tl.clock,
        "start": _moment(tl.start),
        "end": _moment(tl.end),
        "pause": None if tl.pause is None else {**_moment(tl.pause), "reason": tl.pause_reason},
        "named_by": tl.named_by,
        "ignored_events": dict(tl.ignored),
        "notes": list(tl.notes),
        "queues": [_queue(q) for q in tl.queues],
    }
    return json.dumps(out, indent=1) + "\n"


def _queue(q: QueueTimeline) -> dict[str, Any]:
    return {
        "path": q.path, "vdev": _hex(q.vdev), "queue": q.queue, "vq": _hex(q.vq),
        "popped": q.popped, "returned": q.returned, "flushed": q.flushed,
        "in_flight": None if q.in_flight is None else len(q.in_flight),
        "inuse": q.inuse,
        "in_flight_at_pause": None if q.in_flight_at_pause is None else len(q.in_flight_at_pause),
        "completed_after_pause": q.completed_after_pause,
        "resets": q.resets, "dropped_by_reset": q.dropped_by_reset,
        "left_unreturned": q.left_unreturned, "returned_unseen": q.returned_unseen,
        "last_notify_from_guest": _moment(q.last_kick),
        "last_notify_to_guest": _moment(q.last_interrupt),
        "elements": None if q.in_flight is None else [_element(e) for e in q.in_flight],
        "elements_at_pause": None if q.in_flight_at_pause is None
        else [_element(e) for e in q.in_flight_at_pause],
    }


def _element(e: Element) -> dict[str, Any]:
    return {"elem": _hex(e.elem), "popped_at": e.popped.t, "line": e.popped.line,
            "in_num": e.in_num, "out_num": e.out_num, "request": e.request}


def _moment(m: Moment | None) -> dict[str, Any] | None:
    return None if m is None else {"line": m.line, "t": m.t}


def _hex(v: int | None) -> str | None:
    return None if v is None else f"{v:#x}"


# --- text -----------------------------------------------------------------------------------

def render_trace_text(tl: Timeline, width: int = 80) -> str:
    """The timeline in ``width`` columns: a header, a table a device, the elements in flight at
    the pause and at the end, the notes."""
    lines: list[str] = []
    ref = tl.pause or tl.end                     # times are shown relative to this
    span = ""
    if tl.start and tl.end and tl.start.t is not None and tl.end.t is not None:
        span = f", {tl.end.t - tl.start.t:.1f} s from {_clock(tl.start.t, tl.clock)}"
    unit = "records" if tl.backend == "simpletrace" else "lines"
    lines += wrap_hanging(f"trace: {tl.source} ({tl.lines} {unit}, {tl.events} events used{span})",
                          width, 0, 2)
    if tl.pause is not None:
        at = f"{_clock(tl.pause.t, tl.clock)}, " if tl.pause.t is not None else ""
        place = "record" if tl.backend == "simpletrace" else "line"
        lines += wrap_hanging(f"paused: {at}{place} {tl.pause.line} ({tl.pause_reason})", width, 0, 2)
    else:
        lines.append("paused: not in the trace")
    rel = "the pause" if tl.pause is not None else "the trace's end"
    lines += wrap_hanging(f"queues named by the {'core' if tl.named_by == 'core' else 'trace'}; "
                        f"times relative to {rel}" + ("" if tl.timestamps else " (lines: no times)"), width, 0, 2)
    lines.append("")
    head = f"{'queue':<5} {'vq':<15} {'popped':>7} {'returned':>8} {'flight':>6} {'@pause':>6} " \
           f"{'resets':>6}  {'kick':>8} {'irq':>8}"
    lines.append(head[:width])
    last_dev: object = object()
    for q in tl.queues:
        dev = q.path or (f"vdev {q.vdev:#x}" if q.vdev is not None else "vdev unknown")
        if dev != last_dev:
            lines.append(dev[:width])
            last_dev = dev
        row = (f"{'?' if q.queue is None else q.queue:>5} {q.vq:#15x} {_n(q.popped):>7} "
               f"{_n(q.returned):>8} {_n(None if q.in_flight is None else len(q.in_flight)):>6} "
               f"{_n(None if q.in_flight_at_pause is None else len(q.in_flight_at_pause)):>6} "
               f"{q.resets:>6}  {_since(q.last_kick, ref):>8} {_since(q.last_interrupt, ref):>8}")
        lines.append(row[:width])
    for title, get in (("in flight when the VM paused", lambda q: q.in_flight_at_pause),
                       ("in flight at the trace's end", lambda q: q.in_flight)):
        rows = [(q, e) for q in tl.queues for e in (get(q) or ())]
        if title.endswith("paused") and tl.pause is None:
            continue
        lines.append("")
        done = sum(q.completed_after_pause or 0 for q in tl.queues) if title.endswith("paused") \
            else None
        extra = f"; {done} returned after it" if done else ""
        lines.append(f"{title}: {len(rows)}{extra}")
        for q, e in rows:
            who = (_short(q.path) if q.path else f"vdev {q.vdev:#x}" if q.vdev else "?") + \
                  f" q{'?' if q.queue is None else q.queue}"
            text = (f"{who} elem {e.elem:#x} taken {_before(e.popped, ref, rel)} "
                    f"(line {e.popped.line}, {e.out_num} out + {e.in_num} in)")
            lines += wrap_hanging(text, width, 2, 4)
            if e.request:                       # what the device made of it, on its own line
                lines += wrap_hanging(e.request, width, 4, 6)
    if tl.ignored:
        lines.append("")
        ign = ", ".join(f"{k} {v}" for k, v in sorted(tl.ignored.items()))
        lines += wrap_hanging(f"events not used: {ign}", width, 0, 2)
    if tl.notes:
        lines.append("")
        for n in tl.notes:
            lines += wrap_hanging(f"note: {n}", width, 0, 2)
    return "\n".join(lines) + "\n"


def _n(v: int | None) -> str:
    return "-" if v is None else str(v)


def _short(path: str) -> str:
    """``/machine/peripheral/blk0/virtio-backend`` → ``blk0``: the id, what the user named."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[-1] == "virtio-backend":
        return parts[-2]
    return path


def _since(m: Moment | None, ref: Moment | None) -> str:
    """A time relative to ``ref`` (``-1.2ms``, ``+0.3ms``, ``-2.1s``), else the line."""
    if m is None:
        return "-"
    if m.t is None or ref is None or ref.t is None:
        return f"l{m.line}"
    d = m.t - ref.t
    a = abs(d)
    sign = "-" if d < 0 else "+"
    if a < 1e-3:
        return f"{sign}{a * 1e6:.0f}us"
    if a < 1:
        return f"{sign}{a * 1e3:.1f}ms"
    return f"{sign}{a:.1f}s"


def _before(m: Moment, ref: Moment | None, rel: str) -> str:
    """``21.4ms before the pause`` (or after), else ``at line N``."""
    s = _since(m, ref)
    if s.startswith(("-", "+")):
        return f"{s[1:]} {'before' if s[0] == '-' else 'after'} {rel}"
    return f"at line {m.line}"


def _clock(t: float | None, clock: str | None = "unix") -> str:
    if t is None:
        return "?"
    if clock == "monotonic":                     # simpletrace: QEMU's get_clock(), not a date
        return f"{t:.6f} s of the host's monotonic clock"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f") + " UTC"
