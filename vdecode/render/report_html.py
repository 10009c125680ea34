"""``vdecode report``: one self-contained HTML page of a machine's report values.

It formats what :meth:`vdecode.api.Machine.report` gives (the view with every queue's detail, and
QMP replies) and nothing else: per device and queue a picture of the ring
(:mod:`vdecode.render.ring_svg`), the findings with their evidence, what changed between the log
and the dump, the decoded chains and used entries, and the QMP replies. The page has no script
and no reference outside itself (style inline, SVG inline, no font or image to fetch), so it opens
from a mail attachment in any browser.
"""

from __future__ import annotations

import json
import re
from html import escape
from typing import TYPE_CHECKING, Any

from vdecode.render.ring_svg import COLOURS, ring_svg

if TYPE_CHECKING:
    from vdecode.reconstruct.postmortem.records import Finding, Queue, View, ViewTrace
    from vdecode.reconstruct.postmortem.trace_join import TraceJoin

__all__ = ("render_report_html", "queue_anchor", "CHAIN_ROWS", "STYLE")

CHAIN_ROWS = 64          # chains listed per queue (the picture shows them all)

STYLE = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:72em;
 padding:0 1em;color:#1d1d1d;background:#fff}
h1{font-size:1.5em}h2{font-size:1.25em;border-bottom:1px solid #ccc;margin-top:2em}
h3{font-size:1.1em;margin-top:1.6em}h4{font-size:1em;margin:1em 0 .3em}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ddd;padding:2px 8px;
 text-align:left;vertical-align:top}th{background:#f3f3f3}
code,pre,td.n{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px}
td.n{text-align:right}pre{background:#f7f7f7;padding:.6em;overflow:auto;max-height:30em}
.sev{display:inline-block;padding:0 6px;border-radius:3px;color:#fff;font-size:12px}
.sev-error{background:#c62020}.sev-warning{background:#c77800}.sev-info{background:#607080}
.sev-unknown{background:#808080}.health-ok{color:#207030}.health-bad{color:#c62020;font-weight:bold}
.queue{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}
.queue svg{flex:none;border:1px solid #eee}.notes li{margin:.2em 0}
.broken{color:#c62020;font-weight:bold}.muted{color:#777}
"""


def queue_anchor(device_index: int, queue: int) -> str:
    """The page anchor of one queue's section: ``d1q0``."""
    return f"d{device_index}q{queue}"


def _e(v: Any) -> str:
    return escape("" if v is None else str(v))


def _num(v: Any) -> str:
    return "&mdash;" if v is None else (f"{v:#x}" if isinstance(v, int) and v > 0xffff
                                         else escape(str(v)))


def _table(rows: list[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in rows) \
        + "</table>"


def _evidence(ev: Any) -> str:
    if not ev:
        return ""
    return "<table class=\"evidence\">" + "".join(
        f"<tr><th>{_e(k)}</th><td><code>{_e(json.dumps(v, ensure_ascii=False))}</code></td></tr>"
        for k, v in ev.items()) + "</table>"


def _finding(f: Finding, where: str) -> str:
    return (f'<li><span class="sev sev-{_e(f.severity)}">{_e(f.severity)}</span> '
            f'<code>{_e(f.code)}</code> {where}: {_e(f.title)}<br>'
            f'<span class="muted">rule: {_e(f.rule)}; QEMU: {_e(f.qemu)}</span>'
            f"{_evidence(f.evidence)}</li>")


def _short(path: str) -> str:
    return path.removesuffix("/virtio-backend")


def _chains(q: Queue) -> str:
    chains = q.chains
    if not chains:
        return "<p class=\"muted\">no pending or in-flight chain</p>"
    rows = []
    for ch in chains[:CHAIN_ROWS]:
        descs = "<br>".join(f"{d.index}: {d.addr:#x} len {d.len}"
                            + (f" {'|'.join(d.flags_names)}" if d.flags_names else "")
                            for d in ch.descriptors)
        if ch.indirect is not None:
            descs = (f"indirect table {ch.indirect[0]:#x} len {ch.indirect[1]}"
                     + (f"<br>{descs}" if descs else ""))
        problems = ", ".join(ch.problems)
        cls = ' class="broken"' if problems else ""
        rows.append(f"<tr{cls}><td>{_e(ch.state)}</td>"
                    f"<td class=\"n\">{_num(ch.avail_idx)}</td><td class=\"n\">{ch.slot}"
                    f"</td><td class=\"n\">{ch.head}</td><td><code>{descs}</code></td>"
                    f"<td class=\"n\">{ch.bytes_out}</td><td class=\"n\">{ch.bytes_in}</td>"
                    f"<td>{_e(ch.preview.summary if ch.preview else '')}</td>"
                    f"<td>{_e(problems)}</td></tr>")
    more = (f"<p class=\"muted\">{len(chains) - CHAIN_ROWS} more chains (in the picture; "
            f"<code>vdecode DUMP --queue N --all</code> lists every one)</p>"
            if len(chains) > CHAIN_ROWS else "")
    return ("<details open><summary>" + f"{len(chains)} chain(s)</summary><table><tr>"
            "<th>state</th><th>avail idx</th><th>slot</th><th>head</th><th>descriptors</th>"
            "<th>out</th><th>in</th><th>buffers</th><th>problems</th></tr>"
            + "".join(rows) + "</table>" + more + "</details>")


def _used(q: Queue) -> str:
    used = q.used_entries
    if not used:
        return ""
    rows = "".join(f"<tr><td class=\"n\">{u.used_idx}</td><td class=\"n\">{u.slot}</td>"
                   f"<td class=\"n\">{u.id}</td><td class=\"n\">{u.len}</td>"
                   f"<td>{_e(u.preview.summary if u.preview else '')}</td></tr>"
                   for u in used)
    return (f"<details><summary>last {len(used)} used entries</summary><table><tr><th>used idx"
            "</th><th>slot</th><th>id</th><th>len</th><th>buffers</th></tr>" + rows
            + "</table></details>")


def _indices(q: Queue) -> str:
    i, prov, rings = q.indices, q.provenance, q.rings
    split = q.event_idx is not None          # the guest's indices: a split ring that was read
    cls = "health-ok" if q.health == "ok" else "health-bad"
    rows = [("health", f"<span class=\"{cls}\">{_e(q.health)}</span>"),
            ("pending", _num(q.pending)),
            ("notification", _e(q.notification.text if q.notification else None)),
            ("rings (desc / avail / used)", " / ".join(_num(a) for a in
                                                       (rings.desc, rings.avail, rings.used))),
            ("avail idx (guest)", _num(i.avail_idx if split else None)),
            ("used idx (guest)", _num(i.guest_used_idx if split else None)),
            ("last_avail_idx", f"{_num(i.last_avail_idx)} "
                               f"<span class=\"muted\">{_e(prov.get('last_avail_idx'))}</span>"),
            ("shadow_avail_idx", f"{_num(i.shadow_avail_idx)} "
                                 f"<span class=\"muted\">{_e(prov.get('shadow_avail_idx'))}</span>"),
            ("used_idx (QEMU)", _num(i.used_idx)), ("inuse", _num(i.inuse))]
    if q.ring_error:
        rows.append(("ring error", f"<span class=\"broken\">{_e(q.ring_error)}</span>"))
    return _table(rows)


def _qmp(replies) -> str:
    if not replies:
        return "<p class=\"muted\">no QEMU state in the inputs: QMP cannot answer</p>"
    out = []
    for command, args, reply in replies:
        label = command + (" " + json.dumps(args, ensure_ascii=False) if args else "")
        err = ' <span class="broken">error</span>' if "error" in reply else ""
        out.append(f"<details><summary><code>{_e(label)}</code>{err}"
                   f"</summary><pre>{_e(json.dumps(reply, indent=2, ensure_ascii=False))}"
                   f"</pre></details>")
    return "".join(out)


def _log_changes(view: View) -> list[str]:
    """Findings that compare the log's replies with the dump, and the notes on it."""
    items = [f'<li><code>{_e(f.code)}</code> {_where(f)}: {_e(f.title)}</li>'
             for f in view.findings
             if "log" in f.rule or any(str(k).startswith("log_") for k in f.evidence)]
    items += [f"<li>{_e(n)}</li>" for n in view.notes if "log" in n]
    return items


def _where(f: Finding) -> str:
    q = f" queue {f.queue}" if f.queue is not None else ""
    return f"<code>{_e(_short(f.device))}</code>{q}"


def render_report_html(report) -> str:
    """The page, one string (UTF-8 when written)."""
    view = report.view
    inp = view.input
    title = f"vdecode report: {inp.dump}"
    body = [f"<h1>{_e(title)}</h1>",
            _table([("input", _e(inp.dump)), ("format", _e(inp.format)),
                    ("QMP log (--log)", _e(inp.log) or "none"), ("QEMU state", _e(inp.qemu_state)),
                    ("QEMU", _e(inp.qemu_version) or "unknown"),
                    ("log ends", _e(inp.log_end) or "&mdash;")])]
    if view.absent:
        body.append("<p class=\"broken\">The input lacks bytes:</p><ul>"
                    + "".join(f"<li>{_e(x)}</li>" for x in view.absent.lines()) + "</ul>")
    # the summary: one row per device and queue, linking to its picture
    rows = []
    for di, dev in enumerate(view.devices):
        for q in dev.queues:
            cls = "health-ok" if q.health == "ok" else "health-bad"
            name = (f"<a href=\"#{queue_anchor(di, q.index)}\">queue {q.index}</a>"
                    if q.detailed else f"queue {q.index}")
            rows.append(f"<tr><td>{_e(dev.name)}</td><td><code>{_e(_short(dev.path))}"
                        f"</code></td><td>{name}</td><td class=\"n\">{_num(q.size)}</td>"
                        f"<td class=\"{cls}\">{_e(q.health)}</td><td class=\"n\">"
                        f"{_num(q.pending)}</td><td class=\"n\">{_num(q.inflight)}</td>"
                        f"<td class=\"n\">{_num(q.indices.avail_idx)}</td><td class=\"n\">"
                        f"{_num(q.shown_used_idx)}</td><td class=\"n\">"
                        f"{_num(q.indices.last_avail_idx)}</td></tr>")
    body.append("<h2 id=\"summary\">Devices and queues</h2><table><tr><th>device</th><th>path</th>"
                "<th>queue</th><th>size</th><th>health</th><th>pending</th><th>in flight</th>"
                "<th>avail idx</th><th>used idx</th><th>last_avail</th></tr>" + "".join(rows)
                + "</table>")
    body.append("<h2 id=\"findings\">Findings</h2>")
    body.append("<ul>" + "".join(_finding(f, _where(f)) for f in view.findings) + "</ul>"
                if view.findings else "<p>none</p>")
    changes = _log_changes(view)
    body.append("<h2 id=\"log\">Log versus dump</h2>"
                + ("<ul>" + "".join(changes) + "</ul>" if changes else
                   "<p class=\"muted\">" + ("no change between the log and the dump"
                                            if inp.log or inp.log_end else "no QMP log")
                   + "</p>"))
    body.append("<h2 id=\"queues\">Rings</h2><p>Outer ring: the descriptor table; inner ring: "
                "the avail ring (entry 0 at the top, clockwise). Marks: the guest's avail and used "
                "indices, QEMU's last_avail and shadow indices, each modulo the ring size; "
                f"<span style=\"color:{COLOURS['broken']}\">red</span>: a broken chain.</p>")
    for di, dev in enumerate(view.devices):
        flags = ", ".join(dev.status_flags) or "none"
        body.append(f"<h3>{_e(dev.name)} <code>{_e(_short(dev.path))}</code></h3>"
                    f"<p>status {_num(dev.status)} ({_e(flags)}); features: "
                    f"{_e(', '.join(dev.features or ()) or 'unknown')}</p>")
        for q in dev.queues:
            if q.detailed:
                body.append(f"<h4 id=\"{queue_anchor(di, q.index)}\">queue {q.index}</h4>"
                            f"<div class=\"queue\">{ring_svg(q)}<div>{_indices(q)}</div></div>"
                            f"{_chains(q)}{_used(q)}")
    if view.carved:
        rows = [f"<tr><td>{_e(g.kind)}</td><td class=\"n\">{r.index}</td><td class=\"n\">"
                f"{r.size}</td><td class=\"n\">{_num(r.desc)}</td><td class=\"n\">"
                f"{_num(r.avail_idx)}</td><td class=\"n\">{_num(r.used_idx)}</td>"
                f"<td class=\"n\">{r.outstanding}</td><td>{r.confidence}</td></tr>"
                for g in view.carved for r in g.rings]
        body.append("<h2 id=\"carved\">Rings carved from guest RAM</h2><table><tr><th>kind</th>"
                    "<th>index</th><th>size</th><th>desc</th><th>avail idx</th><th>used idx</th>"
                    "<th>outstanding</th><th>confidence</th></tr>" + "".join(rows) + "</table>")
    if report.trace is not None and view.trace is not None:
        body.append(_trace_section(report.trace, view.trace))
    body.append("<h2 id=\"qmp\">QMP replies</h2>" + _qmp(report.qmp))
    if view.notes:
        body.append("<h2 id=\"notes\">Notes</h2><ul class=\"notes\">"
                    + "".join(f"<li>{_e(n)}</li>" for n in view.notes) + "</ul>")
    return _page(title, "\n".join(body))


def _trace_section(join: TraceJoin, tr: ViewTrace) -> str:
    """The trace's timeline, a strip per traced queue of the selection (``render.trace_svg``)."""
    from vdecode.render.trace_svg import timeline_svg
    tl = join.timeline
    chosen = {(q.device, q.index) for q in tr.queues}
    pause = (f"the VM paused at line {tl.pause.line} ({_e(tl.pause_reason)})"
             if tl.pause is not None else "no pause in the trace")
    strips = []
    for q in join.queues:
        if (q.path, q.queue) not in chosen or not (q.timeline.popped or q.timeline.returned):
            continue
        label = f"{_short(q.path)} queue {q.queue}"
        tie = "" if q.agrees is not False else \
            ' <span class="broken">(the trace and the dump disagree)</span>'
        strips.append(f"<h4>{_e(label)}{tie}</h4>{timeline_svg(q.timeline, tl, label)}")
    idle = len(chosen) - len(strips)
    return (f"<h2 id=\"trace\">Trace timeline</h2><p><code>{_e(tl.source)}</code>: "
            f"{tl.events} events, {pause}. Per queue, left to right the trace's "
            f"{'time' if tl.timestamps else 'lines (no timestamps)'}: pops (blue, up) and "
            f"returns (green, down) per column, the elements in flight (grey), the pause (red) "
            f"and device resets (orange, dashed).</p>" + "".join(strips)
            + (f"<p class=\"muted\">{idle} traced queue(s) with no pop or return not drawn</p>"
               if idle else ""))


def _page(title: str, body: str) -> str:
    style = re.sub(r"\n", "", STYLE)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{style}</style></head>\n<body>\n{body}\n"
            f"</body></html>\n")
