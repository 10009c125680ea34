"""``vdecode triage --html``: the fleet as one self-contained HTML page.

One row per VM, grouped by verdict (the worst finding's code, worst groups first, as the text
table), with its inputs, QEMU, the queues that are not ok and the worst finding or error. When
each VM's report was written too (``--pictures``), its name links to it and each queue that is not
ok to that queue's picture. No script, no reference outside the page but those links.
"""

from __future__ import annotations

from html import escape
from typing import Any

from vdecode.render.report_html import STYLE, queue_anchor

__all__ = ("render_fleet_html",)

_GROUP_CLASS = {0: "sev-error", 1: "sev-warning", 2: "sev-unknown", 3: "sev-info"}


def _e(v: Any) -> str:
    return escape("" if v is None else str(v))


def _rank(r: dict[str, Any]) -> tuple[int, str]:
    """Errors first, then warnings, then VMs without an answer, then ``ok``."""
    sev = (r["worst"] or {}).get("severity")
    if sev in ("error", "warning"):
        return (0 if sev == "error" else 1), r["verdict"]
    return (3, "") if r["verdict"] == "ok" else (2, r["verdict"])


def _what(r: dict[str, Any]) -> str:
    if r["verdict"] == "incomplete" and r.get("absent"):
        return _e(r["absent"]["lines"][0])
    if r["worst"]:
        w = r["worst"]
        q = f" queue {w['queue']}" if w["queue"] is not None else ""
        return (f'<span class="sev sev-{_e(w["severity"])}">{_e(w["severity"])}</span> '
                f"<code>{_e(w['device'].removesuffix('/virtio-backend'))}</code>{q}: "
                f"{_e(w['title'])}")
    if r["errors"]:
        return _e(r["errors"][0]["message"]) + (f" (+{len(r['errors']) - 1})"
                                                if len(r["errors"]) > 1 else "")
    return _e("; ".join(r["notes"][:1])) if r["verdict"] != "ok" else ""


def _queues(r: dict[str, Any], page: str | None) -> str:
    out = []
    for di, d in enumerate(r["devices"]):
        for q in d["queues"]:
            if q["health"] == "ok":
                continue
            text = (f"{_e(d['name'].removeprefix('virtio-'))}:{q['index']} {_e(q['health'])}"
                    + (f" p{q['pending']}" if q["pending"] else "")
                    + (f" f{q['inflight']}" if q["inflight"] else ""))
            out.append(f'<a href="{_e(page)}#{queue_anchor(di, q["index"])}">{text}</a>'
                       if page else text)
    return ", ".join(out)


def render_fleet_html(records: list[dict[str, Any]], pages: dict[str, str] | None = None) -> str:
    """The page.

    :param pages: each VM's report page (a relative path), by VM name, when written.
    """
    pages = pages or {}
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(_rank(r), []).append(r)
    rows = []
    for key in sorted(groups):
        members = groups[key]
        rows.append(f'<tr><th colspan="6"><span class="sev {_GROUP_CLASS[key[0]]}">'
                    f"{_e(members[0]['verdict'] if key[1] else 'ok')}</span> "
                    f"{len(members)} VM(s)</th></tr>")
        for r in members:
            ins = r["inputs"]
            files = [x for x in (ins["dump"], ins["memory"], *ins["logs"]) if x]
            page = pages.get(r["vm"])
            vm = f'<a href="{_e(page)}">{_e(r["vm"])}</a>' if page else _e(r["vm"])
            qemu = (f"{r['qemu']['state']} {r['qemu']['version'] or ''}".strip()
                    if r["qemu"]["state"] else "")
            rows.append(f'<tr data-verdict="{_e(r["verdict"])}"><td>{vm}</td><td><code>'
                        + "<br>".join(_e(f.rsplit("/", 1)[-1]) for f in files)
                        + f"</code></td><td>{_e(qemu)}</td><td class=\"n\">"
                        f"{r['counts']['devices']}</td><td>{_queues(r, page)}</td>"
                        f"<td>{_what(r)}</td></tr>")
    vms = [r for r in records if r["verdict"] != "unrecognised"]
    counts: dict[str, int] = {}
    for r in vms:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    summary = ", ".join(f"{n} {v}" for v, n in sorted(counts.items(), key=lambda t: (-t[1], t[0])))
    body = (f"<h1>vdecode triage: {len(vms)} VM(s)</h1><p>{_e(summary)}</p>"
            "<table><tr><th>VM</th><th>inputs</th><th>QEMU</th><th>devices</th>"
            "<th>queues not ok</th><th>worst finding / error</th></tr>" + "".join(rows)
            + "</table>")
    style = STYLE.replace("\n", "")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>vdecode triage</title><style>{style}</style></head>\n<body>\n{body}\n"
            "</body></html>\n")
