"""``vdecode log``: what a QMP log holds, for people (text) and as the captures' JSON lines.

The JSON-lines form is the captures' transcript format, one ``{"t", "dir", "msg"}`` object a line
in log order (``"->"`` to QEMU, ``"<-"`` from it), so a log in any format converts to it; with
several monitors each line also names its ``"mon"`` (and ``"vm"`` when known).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from vdecode.render.wrapping import phrases, wrap_units
from vdecode.sources.qmp_log.knowledge import LogKnowledge, describe_monitor
from vdecode.sources.qmp_log.model import QmpExchange, QmpLog, LoggedMonitor

__all__ = ("render_log_text", "render_log_jsonl", "transcript")


def transcript(log: QmpLog) -> list[tuple[float | None, str, dict[str, Any], LoggedMonitor]]:
    """Every message of ``log`` as ``(t, dir, msg, monitor)`` in log order (line, then send first)."""
    rows: list[tuple[tuple[int, int, int], tuple]] = []
    seq = 0
    for m in log.monitors:
        if m.greeting is not None:
            rows.append(((m.greeting_line or 0, 0, seq), (m.greeting_t, "<-", m.greeting, m)))
            seq += 1
        for x in m.exchanges:
            if x.request is not None:
                rows.append(((x.line or 0, 1, seq), (x.t, "->", x.request, m)))
                seq += 1
            if x.reply is not None:
                line = x.line_reply if x.line_reply is not None else x.line
                rows.append(((line or 0, 2, seq), (x.t_reply, "<-", x.reply, m)))
                seq += 1
        for e in m.events:
            msg = e.raw if e.raw is not None else {"event": e.name, "data": e.data}
            rows.append(((e.line or 0, 2, seq), (e.t_log, "<-", msg, m)))
            seq += 1
    rows.sort(key=lambda r: r[0])
    return [r[1] for r in rows]


def render_log_jsonl(log: QmpLog) -> Iterator[str]:
    """The captures' transcript lines (``\\n``-terminated) for ``log``."""
    several = len(log.monitors) > 1
    for t, direction, msg, m in transcript(log):
        rec: dict[str, Any] = {"t": t, "dir": direction, "msg": msg}
        if several:
            rec["mon"] = m.key
            if m.vm:
                rec["vm"] = m.vm
        yield json.dumps(rec) + "\n"


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."


def _args(x: QmpExchange) -> str:
    a = x.arguments
    if not a:
        return ""
    return " " + " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}"
                          for k, v in a.items())


def _outcome(reply: dict[str, Any] | None) -> str:
    if reply is None:
        return "(no reply logged)"
    if "error" in reply:
        err = reply["error"] if isinstance(reply["error"], dict) else {}
        return f"error {err.get('class', '?')}: {err.get('desc', '')}"
    ret = reply.get("return")
    if isinstance(ret, dict):
        name = ret.get("name")
        return f"ok {{{len(ret)} members}}" + (f" {name}" if isinstance(name, str) else "")
    if isinstance(ret, list):
        return f"ok [{len(ret)} items]"
    return f"ok {json.dumps(ret)}"


ARGS_LINES = 2          # a command's arguments or an event's data beyond this many lines are cut
TRAFFIC_HANG = 6       # continuation lines: under the time, indented (room for a QOM path at 80)


def _traffic(when: str, what: str, detail: str, outcome: str | None, width: int) -> list[str]:
    """One exchange or event: ``time  command args  -> outcome``, wrapped at word boundaries
    within ``width``, continuation lines indented under the time. The arguments (or an event's data,
    which can be long JSON) are cut after :data:`ARGS_LINES` lines; the outcome, error texts
    included, never is."""
    hang = TRAFFIC_HANG
    detail = _clip(detail.strip(), ARGS_LINES * (width - hang))
    units = [f"    {when}  {what}", *phrases(detail)]
    if outcome is not None:
        first, _, rest = outcome.partition(" ")
        units += [f" -> {first}", *phrases(rest)]      # two spaces before the arrow, as before
    return wrap_units(units, width, 0, hang)


def _monitor_block(m: LoggedMonitor, width: int) -> list[str]:
    k = LogKnowledge(m)
    out = wrap_units(phrases(describe_monitor(m)), width, 0, 2)
    v = k.qemu_version
    if v is not None:
        pkg = k.qemu_package
        out.append(f"  QEMU {'.'.join(map(str, v))}" + (f" ({pkg})" if pkg else ""))
    first, last = k.span
    out.append(f"  time: {_when(first)} .. {_when(last)} UTC" if first is not None
               else "  time: not in the log")
    devices = k.virtio_devices()
    out.append(f"  virtio devices seen: {len(devices)}")
    for name, path in devices:
        out.extend(wrap_units([f"    {name or '?':<16}", path], width, 0, 21))
    out.append("  traffic:")
    rows: list[tuple[tuple[int, int], list[str]]] = []
    for x in m.exchanges:
        when = _when(x.t if x.t is not None else x.t_reply)
        what = x.command or "(request not logged)"
        rows.append(((x.line or 0, 0), _traffic(when, what, _args(x), _outcome(x.reply), width)))
    for e in m.events:
        data = f" {json.dumps(e.data)}" if e.data else ""
        when = _when(e.t_log if e.t_log is not None else e.t)
        rows.append(((e.line or 0, 1), _traffic(when, f"event {e.name}", data, None, width)))
    rows.sort(key=lambda r: r[0])
    for _, lines in rows:
        out.extend(lines)
    return out


def render_log_text(log: QmpLog, width: int = 80, max_warnings: int = 20) -> str:
    """A person's view: format, then per monitor/VM its QEMU, time span, virtio devices, traffic,
    within ``width`` columns (only a word longer than a line, a path, may pass it)."""
    out = [f"log: {log.path}", f"format: {log.format}",
           f"monitors: {len(log.monitors)}"]
    for m in log.monitors:
        out.append("")
        out.extend(_monitor_block(m, width))
    if log.warnings:
        out.append("")
        out.append(f"warnings: {len(log.warnings)}")
        for w in log.warnings[:max_warnings]:
            out.extend(wrap_units(phrases(w), width, 2, 4))
        if len(log.warnings) > max_warnings:
            out.append(f"  ... {len(log.warnings) - max_warnings} more")
    return "\n".join(out) + "\n"
