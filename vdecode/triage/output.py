"""Triage records out: a rich table grouped by verdict, JSON lines, CSV; and the progress bar.

The table puts the worst groups first: VMs whose worst finding is an error, then warnings, then
VMs without an answer (unreadable inputs, no QEMU state), then ``ok``.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ("render_jsonl", "render_csv", "render_table", "progress_bar", "CSV_COLUMNS")

CSV_COLUMNS = ("vm", "verdict", "worst_severity", "worst_device", "worst_queue", "worst_title",
               "dump", "format", "memory", "logs", "qemu_state", "qemu_version", "profile",
               "devices", "queues", "problem_queues", "pending", "inflight", "errors",
               "warnings", "info", "input_errors")


def render_jsonl(records: list[dict[str, Any]]) -> str:
    """One JSON object a line, keys in the record's order."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def _row(r: dict[str, Any]) -> dict[str, Any]:
    w = r["worst"] or {}
    c = r["counts"]
    return {"vm": r["vm"], "verdict": r["verdict"], "worst_severity": w.get("severity"),
            "worst_device": w.get("device"), "worst_queue": w.get("queue"),
            "worst_title": w.get("title"), "dump": r["inputs"]["dump"],
            "format": r["inputs"]["format"], "memory": r["inputs"]["memory"],
            "logs": " ".join(r["inputs"]["logs"]), "qemu_state": r["qemu"]["state"],
            "qemu_version": r["qemu"]["version"], "profile": r["qemu"]["profile"],
            "devices": c["devices"], "queues": c["queues"], "problem_queues": c["problem_queues"],
            "pending": c["pending"], "inflight": c["inflight"], "errors": c["errors"],
            "warnings": c["warnings"], "info": c["info"],
            "input_errors": " | ".join(e["message"] for e in r["errors"])}


def render_csv(records: list[dict[str, Any]]) -> str:
    """One row per VM, :data:`CSV_COLUMNS`; lists joined by spaces, errors by ``" | "``."""
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: "" if v is None else v for k, v in _row(r).items()})
    return out.getvalue()


def _rank(r: dict[str, Any]) -> tuple[int, str]:
    sev = (r["worst"] or {}).get("severity")
    if sev == "error":
        return 0, r["verdict"]
    if sev == "warning":
        return 1, r["verdict"]
    return (3, "") if r["verdict"] == "ok" else (2, r["verdict"])


def _queues_text(r: dict[str, Any]) -> str:
    bad = [f"{d['name'].removeprefix('virtio-')}:{q['index']} {q['health']}"
           + (f" p{q['pending']}" if q["pending"] else "")
           + (f" f{q['inflight']}" if q["inflight"] else "")
           for d in r["devices"] for q in d["queues"] if q["health"] != "ok"]
    return ", ".join(bad[:4]) + (f" +{len(bad) - 4}" if len(bad) > 4 else "")


def render_table(records: list[dict[str, Any]], *, width: int = 120, color: bool = False) -> str:
    """The summary for people: one section per verdict, worst first; then a count line."""
    table = Table(title=None, show_lines=False, expand=False, pad_edge=False)
    for name, kw in (("verdict", {"style": "bold"}), ("vm", {"overflow": "fold"}), ("inputs", {"overflow": "fold"}),
                     ("qemu", {}), ("dev", {"justify": "right"}), ("queues not ok", {}),
                     ("worst finding / error", {"overflow": "fold"})):
        table.add_column(name, **kw)
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(_rank(r), []).append(r)
    for n, key in enumerate(sorted(groups)):
        if n:
            table.add_section()
        for i, r in enumerate(groups[key]):
            ins = r["inputs"]
            files = [x for x in (ins["dump"], ins["memory"], *ins["logs"]) if x]
            inputs = " + ".join(f.rsplit("/", 1)[-1] for f in files) or "-"
            qemu = (f"{r['qemu']['state']} {r['qemu']['version'] or ''}".strip()
                    if r["qemu"]["state"] else "-")
            if r["verdict"] == "incomplete" and r.get("absent"):
                what = r["absent"]["lines"][0]
            elif r["worst"]:
                w = r["worst"]
                what = f"{w['severity']}: {w['title']}"
            elif r["errors"]:
                what = r["errors"][0]["message"] + (f" (+{len(r['errors']) - 1})"
                                                    if len(r["errors"]) > 1 else "")
            else:
                what = "; ".join(r["notes"][:1]) if r["verdict"] != "ok" else ""
            style = {0: "red", 1: "yellow", 2: "magenta"}.get(key[0])
            table.add_row(r["verdict"] if i == 0 else "", r["vm"], inputs, qemu,
                          str(r["counts"]["devices"]), _queues_text(r), what, style=style)
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system="standard" if color else None,
                      force_terminal=color, highlight=False)
    console.print(table)
    vms = [r for r in records if r["verdict"] != "unrecognised"]     # files, not VMs
    verdicts = {}
    for r in vms:
        verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
    summary = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items(), key=lambda t: (-t[1], t[0])))
    errs = sum(1 for r in vms if r["errors"])
    files = len(records) - len(vms)
    console.print(f"{len(vms)} VMs: {summary}; {errs} with unreadable inputs"
                  + (f"; {files} file(s) not recognised" if files else ""))
    return buf.getvalue()


def progress_bar(label: str):
    """Triage's bar: VMs done of all, and the time taken (stderr, only on a terminal)."""
    from vdecode.render.text import progress_bar as bar
    return bar(label, counted=True)