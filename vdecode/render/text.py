"""The post-mortem view for people: the :class:`~vdecode.reconstruct.postmortem.records.View`
record within 80 columns, drawn with ``rich`` in colour on a terminal, and plain when piped (the compact
form piped is drawn by :mod:`vdecode.render.plain`, the same bytes without importing rich).

Two forms (``docs/view.md``): the compact one (``vdecode DUMP``: one line per device, per queue
and per pending or in-flight chain, alike neighbouring chains folded into one line, one line per
finding) and the full one (``-v``: status and feature lines, queue tables, every chain's
descriptor table, the last used entries, each finding's evidence, rule and QEMU's reaction).

Values that were not read from a QEMU core or guest memory carry a marker, explained by a legend
line: ``~`` inferred from the log and the rings, ``*`` from an earlier QMP reply, ``^`` ring
addresses found by carving guest RAM.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from typing import TYPE_CHECKING, Any

from vdecode.render.plain import PlainConsole, PlainPadding, PlainText
from vdecode.reconstruct.timeline.durations import duration_text
from vdecode.render.wrapping import phrases, wrap_units

if TYPE_CHECKING:                 # rich is imported when it draws: start-up time
    from rich.table import Table

    from vdecode.reconstruct.postmortem.records import (CarvedGroup, CarvedQueue, Chain, Device,
                                                        Finding, Queue, TracedElement, View,
                                                        ViewTrace)

__all__ = ("render_view_text", "progress_bar", "MARKERS", "CHAIN_LIMIT", "CHAIN_LINES",
           "fold_chains")
CHAIN_LIMIT = 16        # -v: chains drawn per state (pending, in flight) without --all
CHAIN_LINES = 12        # compact: chain lines per queue without --all (the rest summed up in one)

MARKERS = {"inferred": "~", "log": "*", "carved": "^"}
SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan", "unknown": "magenta"}
HEALTH_STYLE = {"ok": "green", "unread": "dim", "?": "dim", "absent": "magenta"}


class Kit:
    """What the drawing functions draw with: rich's ``Text``, ``Padding`` and console, or the plain
    stand-ins of :mod:`vdecode.render.plain` where nothing needs rich (the compact form without
    colour), so that a piped answer does not import it."""

    def __init__(self, text: Any, padding: Any, console: Any, getvalue: Any) -> None:
        self.Text, self.Padding, self.print, self.getvalue = text, padding, console.print, getvalue
        self.width: int = console.width if isinstance(console.width, int) else 80

    @classmethod
    def for_output(cls, width: int, *, rich: bool, color: bool) -> Kit:
        if not rich:
            con = PlainConsole(width)
            return cls(PlainText, PlainPadding, con, con.getvalue)
        from rich.console import Console
        from rich.padding import Padding
        from rich.text import Text
        buf = io.StringIO()
        con = Console(file=buf, width=width, force_terminal=color,
                      color_system="standard" if color else None,
                      highlight=False, emoji=False, markup=False, soft_wrap=False)
        return cls(Text, Padding, con, buf.getvalue)


def _mark(value: Any, how: str | None, used: set[str]) -> str:
    if value is None:
        return "?"
    m = MARKERS.get(how or "", "")
    if m:
        used.add(how)
    return f"{value}{m}"


def _hex(v: int | None) -> str:
    return "?" if v is None else f"{v:#x}"


def _dev_label(view: View, path: str) -> str:
    for d in view.devices:
        if d.path == path:
            return d.name or path
    return path


def _para(k: Kit, text: Any, indent: int, style: str = "") -> None:
    """A paragraph wrapped within the width, every line indented (no wrap to column 0)."""
    body = k.Text(text, style=style) if isinstance(text, str) else text
    k.print(k.Padding(body, (0, 0, 0, indent), expand=False))


def _table(*cols: str, **kw: Any) -> Table:
    from rich import box
    from rich.table import Table
    t = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0), show_edge=False,
              header_style="bold", **kw)
    for c in cols:
        t.add_column(c, overflow="fold")
    return t


def _devices(k: Kit, view: View, used: set[str]) -> None:
    for d in view.devices:
        head = k.Text()
        head.append(d.name or "?", style="bold")
        head.append(f"  id {d.device_id}  {d.path}")
        k.print(head)
        status = " ".join(d.status_flags) or ("0" if d.status == 0 else "?")
        line = k.Text("  status ")
        line.append(_mark(status, d.provenance["status"], used),
                    style="red" if d.broken or "NEEDS_RESET" in d.status_flags else "")
        line.append(f"  vhost {'?' if d.vhost is None else 'yes' if d.vhost else 'no'}")
        if d.broken:
            line.append("  BROKEN", style="bold red")
        k.print(line)
        feats = d.features
        _para(k, "features " + (" ".join(feats) if feats is not None else "?")
              + MARKERS.get(d.provenance["features"], ""), 2, "dim")
        if d.provenance["features"] in MARKERS:
            used.add(d.provenance["features"])
        if d.queues:
            t = _table("q", "size", "avail", "used", "last-avail", "in-flight", "pending",
                       "notify", "health")
            for q in d.queues:
                p = q.provenance
                n = q.notification
                t.add_row(str(q.index), _mark(q.size, p["size"], used),
                          _mark(q.indices.avail_idx, p["avail_idx"], used),
                          _mark(q.shown_used_idx, p["used_idx"], used),
                          _mark(q.indices.last_avail_idx, p["last_avail_idx"], used),
                          _mark(q.inflight, p["inflight"], used),
                          "?" if q.pending is None else str(q.pending),
                          n.text if n else "?",
                          k.Text(q.health, style=HEALTH_STYLE.get(q.health, "bold yellow")))
            k.print(k.Padding(t, (0, 0, 0, 2), expand=False))
        if d.idle_queues_hidden:
            k.print(k.Text(f"  {d.idle_queues_hidden} idle queue(s) not shown (--all shows "
                           f"them)", style="dim"))
        k.print()


def _chain_block(k: Kit, c: Chain) -> None:
    if c.avail_idx is not None:
        what, where = "head", f"avail idx {c.avail_idx} slot {c.slot}"
    else:                                    # a packed ring: the buffer id and its first slot
        what, where = "id", f"slot {c.slot}"
    title = k.Text(f"  {c.state} {what} {c.head}  {where}  {c.length} desc, "
                   f"out {c.bytes_out} in {c.bytes_in} bytes")
    if c.problems:
        title.append("  " + ",".join(c.problems), style="bold red")
    k.print(title)
    if c.indirect:
        k.print(f"    indirect table {c.indirect[0]:#x} len {c.indirect[1]}")
    t = _table("desc", "addr", "len", "flags")
    for d in c.descriptors:
        t.add_row(str(d.index), f"{d.addr:#x}", str(d.len), ",".join(d.flags_names) or "-")
    if c.descriptors:
        k.print(k.Padding(t, (0, 0, 0, 4), expand=False))
    if c.preview:
        k.print(k.Text(f"    {c.preview.kind}: {c.preview.summary}"))
    if c.taken is not None:
        _para(k, k.Text(f"trace: {taken_text(c.taken)}", style="dim"), 4)


def _detail(k: Kit, view: View, qd: Queue, used: set[str], chain_limit: int | None) -> None:
    head = k.Text(f"queue {qd.index} of {_dev_label(view, qd.device)}", style="bold")
    head.append(f"  size {qd.size}")
    k.print(head)
    k.print(f"  {qd.device}")
    r, p = qd.rings, qd.provenance
    a_name, u_name = ("driver", "device") if qd.packed_events else ("avail", "used")
    k.print(f"  rings  desc {_hex(r.desc)}  {a_name} {_hex(r.avail)}  {u_name} "
            f"{_hex(r.used)}" + MARKERS.get(p["rings"], ""))
    if p["rings"] in MARKERS:
        used.add(p["rings"])
    if qd.ring_error:
        k.print(k.Text(f"  ring not read: {qd.ring_error}", style="red"))
        k.print()
        return
    qm = qd.indices
    if qd.packed_events:
        names = {0: "ENABLE", 1: "DISABLE", 2: "DESC"}
        for label, (off_wrap, flags) in (("driver event", qd.packed_events.driver_event),
                                         ("device event", qd.packed_events.device_event)):
            k.print(f"  {label}  off_wrap {off_wrap:#06x} (idx {off_wrap & 0x7FFF} wrap "
                    f"{off_wrap >> 15})  flags {names.get(flags, flags)}")
    ev = qd.event_idx
    if ev is not None:                       # a split ring, read
        k.print(f"  avail  flags {qm.avail_flags:#x} {' '.join(qm.avail_flags_names)}".rstrip()
                + f"  idx {qm.avail_idx}" + (f"  used_event {qm.used_event}" if ev else ""))
        k.print(f"  used   flags {qm.used_flags:#x} {' '.join(qm.used_flags_names)}".rstrip()
                + f"  idx {qm.guest_used_idx}" + (f"  avail_event {qm.avail_event}" if ev else ""))
    sig = qm.signalled_used if qm.signalled_used_valid else "-"
    _para(k, "QEMU   " + "  ".join([
        f"last_avail_idx {_mark(qm.last_avail_idx, p['last_avail_idx'], used)}",
        f"shadow_avail_idx {_mark(qm.shadow_avail_idx, p['shadow_avail_idx'], used)}",
        f"used_idx {_mark(qm.used_idx, p['used_idx'], used)}",
        f"inuse {_mark(qm.inuse, p['inuse'], used)}",
        f"signalled_used {_mark(sig, p['signalled_used'], used)}"]), 2)
    hidden = 0
    for state in ("pending", "in-flight"):
        chains = [c for c in qd.chains if c.state == state]
        if chain_limit is not None and len(chains) > chain_limit:
            hidden += len(chains) - chain_limit
            chains = chains[:chain_limit]
        if chains:
            k.print(k.Text(f" {state} chains ({len(chains)})", style="bold"))
            for c in chains:
                _chain_block(k, c)
    if hidden:
        k.print(k.Text(f"  {hidden} more chain(s) not shown (--all shows them)",
                       style="dim"))
    if not qd.chains and not hidden:
        k.print("  no pending or in-flight chains")
    if qd.used_entries:
        k.print(k.Text(" last used entries", style="bold"))
        t = _table("used idx", "slot", "id", "len", "preview (buffers may be reused)")
        for e in qd.used_entries:
            t.add_row(str(e.used_idx), str(e.slot), str(e.id), str(e.len),
                      (e.preview.summary if e.preview else "")
                      + (" (in flight at the pause)" if e.returned is not None else ""))
        k.print(k.Padding(t, (0, 0, 0, 2), expand=False))
        for e in qd.used_entries:
            if e.returned is not None:
                _para(k, k.Text(f"used idx {e.used_idx}: {taken_text(e.returned)}",
                                style="dim"), 2)
    k.print()


def _carved(k: Kit, groups: tuple[CarvedGroup, ...]) -> None:
    _para(k, "No QMP log and no QEMU core: QEMU's devices are unknown. Rings carved from guest "
             "RAM, grouped by the driver's device (avail/used are the guest's indices; "
             "outstanding = avail - used; a packed ring's are its event areas' offsets and wrap "
             "counters):", 0)
    k.print()
    devices = [g for g in groups if not g.firmware]
    firmware = [g for g in groups if g.firmware]
    for g in devices:
        dev = f"driver device {g.driver_device:#x}" if g.driver_device is not None else \
            "no driver record"
        k.print(k.Text(f"{g.kind or 'unknown device'}  ({dev})", style="bold"))
        t = _table("q", "name", "size", "desc", "avail", "used", "out", "conf")
        for r in g.rings:
            t.add_row("?" if r.index is None else str(r.index), r.name or "",
                      str(r.size), f"{r.desc:#x}", *_carved_indices(r),
                      str(r.outstanding), f"{r.confidence:.2f}")
        k.print(k.Padding(t, (0, 0, 0, 2), expand=False))
    if not groups:
        k.print("No rings found.")
    if firmware:
        # not devices: rings the boot firmware set up, polled and abandoned to the kernel
        k.print()
        k.print(k.Text("Boot firmware's rings (SeaBIOS/OVMF; abandoned at boot, not devices)",
                       style="bold"))
        t = _table("kind", "size", "desc", "avail", "used", "conf")
        for g in firmware:
            for r in g.rings:
                t.add_row(g.kind or "?", str(r.size), f"{r.desc:#x}",
                          *_carved_indices(r), f"{r.confidence:.2f}")
        k.print(k.Padding(t, (0, 0, 0, 2), expand=False))
        whys = []
        for g in firmware:
            if g.firmware not in whys:
                whys.append(g.firmware)
        for why in whys:
            _lines(k, wrap_units(["why:", *(w + ";" for w in why[:-1]), why[-1]], k.width, 2, 4),
                   "dim")
    else:
        k.print()           # (a table ends with its own blank line; the reasons do not)


def _carved_indices(r: CarvedQueue) -> tuple[str, str]:
    """A carved ring's avail and used cells: a split ring's indices, a packed ring's decoded
    positions (``71 wrap 1``: descriptor offset and wrap counter)."""
    if r.packed:
        return (f"{r.avail_idx} wrap {r.packed.avail_wrap}",
                f"{r.used_idx} wrap {r.packed.used_wrap}")
    return str(r.avail_idx), str(r.used_idx)


def _findings(k: Kit, view: View) -> None:
    fs = view.findings
    k.print(k.Text(f"Findings ({len(fs)})" if fs else "Findings: none", style="bold"))
    for f in fs:
        where = _dev_label(view, f.device) + (f" q{f.queue}" if f.queue is not None else "")
        _finding_title(k, f.severity, f.title, where)
        for why in f.evidence.get("why", ()):        # what decided it (index wrap or back)
            _lines(k, wrap_units(["why:", *phrases(why)], k.width, 6, 8), "dim")
        for e in _elements(f) if f.code.startswith("trace-") else ():
            _lines(k, wrap_units(phrases(taken_text(e)), k.width, 6, 8), "dim")
        if f.severity == "info":
            continue
        pairs = [f"{name} {_ev(v)}" for name, v in f.evidence.items() if name != "why"]
        if pairs:     # one "name value" pair is a unit: a line never parts a name from its value
            units = ["evidence:", *(p + ";" for p in pairs[:-1]), pairs[-1]]
            _lines(k, wrap_units(units, k.width, 6, 8), "dim")
        _lines(k, wrap_units(["rule:", *phrases(f.rule)], k.width, 6, 8), "dim")
        _lines(k, wrap_units(["QEMU:", *phrases(f.qemu)], k.width, 6, 8), "dim")


FINDING_HANG = 10       # a finding's continuation lines start under its title (2 + "WARNING ")


def _lines(k: Kit, lines: list[str], style: str = "") -> None:
    """Lines already laid out within the width (:mod:`vdecode.render.wrapping`), one paragraph
    each: neither rich nor the plain console wraps them again."""
    for line in lines:
        k.print(k.Text(line, style=style))


def _finding_title(k: Kit, severity: str, title: str, where: str) -> None:
    """``  WARNING where: title``, wrapped at word boundaries and never inside a parenthesis or
    an ``a -> b`` step, continuation lines under the title (a hanging indent)."""
    sev = f"{severity.upper():7}"
    lines = wrap_units([f"{sev} {where}:", *phrases(title)], k.width, 2, FINDING_HANG)
    first = k.Text("  ")
    first.append(sev, style=SEVERITY_STYLE.get(severity, ""))
    first.append(lines[0][2 + len(sev):])
    k.print(first)
    _lines(k, lines[1:])


# --- the compact form ------------------------------------------------------------------------

def _status_word(d: Device) -> str:
    """``DRIVER_OK`` for a device the driver runs (whatever else is set on the way there), else
    every status flag (``ACKNOWLEDGE DRIVER``, ``FAILED``...)."""
    flags = d.status_flags
    if d.status is None:
        return "status ?"
    if "DRIVER_OK" in flags and not {"FAILED", "NEEDS_RESET"} & set(flags):
        return "DRIVER_OK"
    return " ".join(flags) or "status 0"


def _compact_devices(k: Kit, view: View, used: set[str], show_all: bool) -> None:
    details = {(qd.device, qd.index) for qd in view.queue_detail}
    selected = view.selection.queue if view.selection is not None else None
    dev_worst: dict[str, str] = {}
    for f in view.findings:
        if f.queue is None and f.severity in ("error", "warning"):
            dev_worst.setdefault(f.device, f.code)
    for d in view.devices:
        if selected is not None and (d.path, selected) not in details:
            continue                                  # --queue N: devices that have queue N
        line = k.Text()
        line.append(d.name or "?", style="bold")
        line.append(f"  {d.path}  ")
        line.append(_mark(_status_word(d), d.provenance["status"], used),
                    style="red" if d.broken or "NEEDS_RESET" in d.status_flags else "")
        if d.vhost:
            line.append("  vhost")
        if d.broken:
            line.append("  BROKEN", style="bold red")
        if d.path in dev_worst:
            line.append(f"  {dev_worst[d.path]}", style="bold yellow")
        _para(k, line, 0)
        for q in d.queues:
            _compact_queue(k, q, used)
            if q.detailed:
                _compact_chains(k, q, show_all)
        if d.idle_queues_hidden:
            _para(k, f"+{d.idle_queues_hidden} idle queue(s) not shown (--all shows them)",
                  2, "dim")


def _compact_queue(k: Kit, q: Queue, used: set[str]) -> None:
    p, n, i = q.provenance, q.notification, q.indices
    line = k.Text(f"q{q.index} size {_mark(q.size, p['size'], used)}  ")
    if not q.packed:
        line.append(f"avail {_mark(i.avail_idx, p['avail_idx'], used)} ")
    line.append(f"used {_mark(q.shown_used_idx, p['used_idx'], used)} "
                f"last {_mark(i.last_avail_idx, p['last_avail_idx'], used)}  "
                f"pending {'?' if q.pending is None else q.pending} "
                f"inflight {_mark(q.inflight, p['inflight'], used)}  ")
    # the next kick and the next interrupt both due is the usual state: said only otherwise
    off = ["kick"] * (not n or not n.next_kick) + ["irq"] * (not n or not n.next_interrupt)
    if off:
        line.append(f"{','.join(off)} {'off' if n else '?'}  ")
    worst = q.worst or q.health
    line.append(worst, style=HEALTH_STYLE.get(q.health, "bold yellow"))
    _para(k, line, 2)


def _bytes_text(values: list[int], direction: str) -> str | None:
    """``1536 bytes in``, or for a run of several sizes the commonest and the others:
    ``1536 bytes in (12 × 2048)``.

    >>> _bytes_text([1536, 2048, 1536], "in")
    '1536 bytes in (1 × 2048)'
    >>> _bytes_text([0, 0], "out") is None
    True
    """
    counts: dict[int, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    if set(counts) == {0}:
        return None
    ranked = sorted(counts, key=lambda v: (-counts[v], v))
    text = f"{ranked[0]} bytes {direction}"
    others = ranked[1:]
    if len(others) > 3:
        return text + f" ({len(values) - counts[ranked[0]]} others {min(others)}–{max(others)})"
    if others:
        text += " (" + ", ".join(f"{counts[v]} × {v}" for v in others) + ")"
    return text


def _what(c: Chain) -> str:
    """The chain's decoded kind without its byte counts (they are said once per run)."""
    pv = c.preview
    if not pv:
        return ""
    summary = pv.summary
    for n in (c.bytes_in, c.bytes_out):
        summary = summary.replace(f" {n} bytes", "")
    return f"{pv.kind} {summary}".strip()


def _fold_key(c: Chain) -> tuple:
    return (c.state, _what(c), c.length, c.indirect is not None, c.problems, c.avail_idx is None)


def fold_chains(chains: tuple[Chain, ...]) -> list[list[Chain]]:
    """Neighbouring chains (consecutive in avail order, same state) that are alike, as runs:
    same decoded kind, descriptor count, problems and direct/indirect; byte counts may differ.

    >>> from vdecode.reconstruct.postmortem.records import Chain
    >>> c = lambda h, n: Chain("pending", h, h, h, None, (), 0, n, (), None)
    >>> [len(run) for run in fold_chains([c(1, 8), c(2, 8), c(3, 16)])]
    [3]
    """
    runs: list[list[Chain]] = []
    for c in chains:
        if runs and _fold_key(runs[-1][-1]) == _fold_key(c):
            runs[-1].append(c)
        else:
            runs.append([c])
    return runs


def _run_label(run: list[Chain]) -> str:
    word = "head" if run[0].avail_idx is not None else "id"
    hs = [c.head for c in run]
    if len(hs) == 1:
        return f"{word} {hs[0]}"
    if all(b == a + 1 for a, b in zip(hs, hs[1:])):
        return f"{word}s {hs[0]}–{hs[-1]}"
    if len(hs) <= 4:
        return f"{word}s " + ",".join(map(str, hs))
    if run[0].avail_idx is not None:
        return f"avail idx {run[0].avail_idx}–{run[-1].avail_idx} ({word}s {hs[0]},…)"
    return f"{word}s {hs[0]},{hs[1]},…,{hs[-1]}"


def _run_line(k: Kit, run: list[Chain]) -> Any:
    c = run[0]
    what = _what(c)
    descs = f"{c.length} desc" if c.length != 1 or not what else ""
    if c.indirect:
        descs = f"indirect table {c.indirect[1]} bytes" + (f" ({descs})" if descs else "")
    sizes = [b for b in (_bytes_text([x.bytes_out for x in run], "out"),
                         _bytes_text([x.bytes_in for x in run], "in")) if b] or ["0 bytes"]
    parts = [p for p in (what, descs, *sizes) if p]
    count = f"{len(run)} × " if len(run) > 1 else ""
    state = "" if c.state == "pending" else f"{c.state} "
    line = k.Text(f"{state}{_run_label(run)}: {count}{', '.join(parts)}")
    if c.taken is not None and c.taken.before_pause_s is not None:
        line.append(f"; taken {duration_text(c.taken.before_pause_s)} before the pause",
                    style="dim")
    if c.problems:
        line.append("  " + ",".join(c.problems), style="bold red")
    return line


def _compact_chains(k: Kit, qd: Queue, show_all: bool) -> None:
    if qd.ring_error:
        _para(k, k.Text(f"ring not read: {qd.ring_error}", style="red"), 4)
        return
    runs = fold_chains(qd.chains)
    shown = runs if show_all or len(runs) <= CHAIN_LINES else runs[:CHAIN_LINES - 1]
    for run in shown:
        _para(k, _run_line(k, run), 4)
    rest = [c for run in runs[len(shown):] for c in run]
    if rest:
        where = (f" at avail idx {rest[0].avail_idx}–{rest[-1].avail_idx}"
                 if rest[0].avail_idx is not None and rest[-1].avail_idx is not None else "")
        _para(k, k.Text(f"… {len(rest)} more chain(s){where} in {len(runs) - len(shown)} "
                        f"line(s) (--all lists them)", style="dim"), 4)


def _unique_label(view: View, path: str) -> str:
    """The device's name, with its QOM parent's name when several devices share it
    (``virtio-blk legacyblk``)."""
    name = _dev_label(view, path)
    if sum(d.name == name for d in view.devices) > 1:
        parts = path.removesuffix("/virtio-backend").rsplit("/", 1)
        return f"{name} {parts[-1]}"
    return name


def _absent_lines(k: Kit, absent: Any) -> None:
    """What the input lacks (:class:`vdecode.space.absence.Absent`), right under the title: every
    answer below is built on it."""
    if not absent:
        return
    for part in absent.parts:
        head = "absent by design" if part.by_design else "INCOMPLETE DUMP"
        _para(k, k.Text(f"{head}: {part.text()}",
                        style="dim" if part.by_design else "bold magenta"), 0)


def _fold_absent(fs: tuple[Finding, ...]) -> list[tuple[Finding, str, str]]:
    """Each finding as ``(finding, title, queue text)``, with one line per device for the queues
    whose rings are absent (a cut dump has dozens)."""
    out: list[list] = []
    seen: dict[str, list] = {}
    for f in fs:
        q = f" q{f.queue}" if f.queue is not None else ""
        if f.code != "absent" or f.queue is None:
            out.append([f, f.title, q])
        elif f.device in seen:
            seen[f.device][3].append(f.queue)
        else:
            seen[f.device] = [f, f.title, q, [f.queue]]
            out.append(seen[f.device])
    for g in seen.values():
        f, queues = g[0], g[3]
        if len(queues) > 1:
            why = f.title.split(": ")[1] if ": " in f.title else f.title
            g[1] = f"{len(queues)} queues not read: {why}"
            g[2] = f" q{queues[0]}-q{queues[-1]}"
    return [(g[0], g[1], g[2]) for g in out]


def _compact_findings(k: Kit, view: View) -> None:
    fs = view.findings
    k.print()
    k.print(k.Text(f"Findings ({len(fs)})" if fs else "Findings: none", style="bold"))
    for f, title, queues in _fold_absent(fs):
        _finding_title(k, f.severity, title, _unique_label(view, f.device) + queues)
        elements = _elements(f) if f.code.startswith("trace-") else ()
        if elements and (f.code == "trace-completed-by-pause" or elements[0].request):
            # the trace's story in one line: the first element (the title says when, for one
            # still in flight)
            more = f" (+{len(elements) - 1} more, -v)" if len(elements) > 1 else ""
            text = taken_text(elements[0], short=True)
            if f.code != "trace-completed-by-pause":
                text = _request(elements[0])
            _lines(k, wrap_units(phrases(text + more), k.width,
                                 FINDING_HANG, FINDING_HANG + 2), "dim")
    if any(f.severity != "info" for f in fs):
        _para(k, "-v gives each finding's evidence, rule and what QEMU does with it", 2, "dim")



def _request(e: TracedElement) -> str:
    """The device's event that named the element, without the device pointer (said above)."""
    return re.sub(r"\bvdev 0x[0-9a-f]+ ", "", e.request or "")


def _elements(f: Finding) -> tuple[TracedElement, ...]:
    """A trace finding's elements (its evidence holds them as plain values, as in the JSON)."""
    from vdecode.reconstruct.postmortem.records import TracedElement
    return tuple(TracedElement.from_json_obj(e) for e in f.evidence.get("elements", ()))


def taken_text(e: TracedElement, *, short: bool = False) -> str:
    """A traced element (a chain's ``taken``, a used entry's ``returned``, a trace finding's
    element) in words: when it was taken, which chain it is and how that is known, when the
    pause returned it."""
    before = e.before_pause_s
    when = (f"taken {duration_text(before)} before the pause" if before is not None
            and before >= 0 else f"taken at trace line {e.line}")
    if short:
        return when + (f": {_request(e)}" if e.request else "")
    chain = ""
    if e.avail_idx is not None:
        chain = f"avail idx {e.avail_idx}" + (f" head {e.head}" if e.head is not None else "")
        chain += f" ({e.tied_by or 'by pop order'})"
    back = ""
    if e.returned_line is not None:
        back = f"; returned at trace line {e.returned_line}" + (
            f", used idx {e.used_idx} len {e.len}" if e.used_idx is not None else "")
        if e.used_agrees is False:
            back += " (the used entry disagrees)"
    return (f"elem {e.elem:#x} {chain}: {when} (line {e.line}, {e.out_num} out + "
            f"{e.in_num} in){back}" + (f"; {_request(e)}" if e.request else ""))


def _trace_header(k: Kit, tr: ViewTrace) -> None:
    said = (f"paused at line {tr.pause.line} ({tr.pause_reason})" if tr.pause else "no pause in it")
    tied = {"core": "devices named by the QEMU core", "counts": "devices tied by their counts "
            "(inferred)", "none": "no device tied"}[tr.matched_by]
    _para(k, f"trace {tr.file}: {said}; {tied}", 0)


def _ev(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(str(x) for x in v) or "-"
    if isinstance(v, int) and not isinstance(v, bool) and v > 0xFFFF:
        return f"{v:#x}"
    return str(v)


def render_view_text(view: View, *, width: int = 80, color: bool = False, compact: bool = False,
                     show_all: bool = False) -> str:
    """The view as text for a terminal of ``width`` columns (ANSI colours when ``color``).

    :param compact: the default form of ``vdecode DUMP`` (one line per device, queue, run of alike
        chains and finding); else the full form of ``-v``.
    :param show_all: ``--all``: every chain (the full form draws :data:`CHAIN_LIMIT` per state,
        the compact one :data:`CHAIN_LINES` lines per queue, without it).
    """
    k = Kit.for_output(width, rich=color or not compact or view.carved is not None,
                       color=color)
    inp = view.input
    src = {"core": "QEMU core", "log": "QMP log", "core+log": "QEMU core (log compared)",
           "none": "nothing"}.get(inp.qemu_state, inp.qemu_state)
    k.print(k.Text(f"{inp.dump} ({inp.format})", style="bold"))
    log = f" {inp.log}" if inp.log and "log" in inp.qemu_state else ""
    if log and inp.log_end:
        log += f" (ends {inp.log_end})"
    _para(k, f"QEMU state from {src}{log}"
          + (f", QEMU {inp.qemu_version}" if inp.qemu_version else ""), 0)
    _absent_lines(k, view.absent)
    if view.trace is not None:
        _trace_header(k, view.trace)
    k.print()
    used: set[str] = set()
    if view.carved is not None:
        _carved(k, view.carved)
    elif not view.devices:
        k.print("No virtio devices known.")
    if compact:
        _compact_devices(k, view, used, show_all)
        _compact_findings(k, view)
    else:
        if view.queue_detail:
            for qd in view.queue_detail:
                _detail(k, view, qd, used, None if show_all else CHAIN_LIMIT)
        else:
            _devices(k, view, used)
        _findings(k, view)
    notes = [*view.notes, *(f"trace: {n}" for n in (view.trace.notes if view.trace else ()))]
    if notes:
        k.print()
        for n in notes:
            _para(k, f"note: {n}", 0, "dim")
    if used:
        k.print()
        entries = [f"{MARKERS[m]} {view.legend[m]}" for m in ("inferred", "log", "carved")
                   if m in used]
        # each marker with its meaning is a unit: a line never parts them
        units = [e + "  " for e in entries[:-1]] + [entries[-1] + ";",
                                                   "unmarked: QEMU core or guest memory"]
        _lines(k, wrap_units(units, k.width), "dim")
    out = k.getvalue()
    if not color:       # rich pads wrapped paragraphs and cells to the width: drop the padding
        out = "\n".join(line.rstrip() for line in out.split("\n"))
    return out


@contextlib.contextmanager
def progress_bar(label: str, *, counted: bool = False):
    """A ``progress(done, total)`` callback drawing a rich bar on stderr (only on a terminal).

    :param counted: show ``done/total`` and the time elapsed (items, as triage's VMs) instead of
        a percentage (bytes, pages).
    """
    if not sys.stderr.isatty():        # the usual case, without importing rich
        yield lambda done, total: None
        return
    from rich.console import Console
    err = Console(stderr=True)
    if not err.is_terminal:
        yield lambda done, total: None
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn,
                               TextColumn, TimeElapsedColumn)
    columns = (MofNCompleteColumn(), TimeElapsedColumn()) if counted else (TaskProgressColumn(),)
    # a byte count ticks often: the bar is redrawn on each tick, with no refresh thread, so a
    # bulk kdump read under it may still fork its decoding pool (vdecode/space/page_pool.py)
    with Progress(TextColumn(label), BarColumn(), *columns, console=err, transient=True,
                  auto_refresh=counted) as bar:
        task = bar.add_task(label, total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)
            if not counted:
                bar.refresh()
        yield tick
