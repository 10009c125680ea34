"""``vdecode cache list`` and ``clear``: the cache folder's entries as a table, JSON or one line."""

from __future__ import annotations

import json
from collections.abc import Sequence

from vdecode.render.info import human_size
from vdecode.sources.cache import Entry

__all__ = ("age_text", "render_cache_json", "render_cache_text", "render_cleared")

_KIND_NOTE = {"index": "  (kdump record index)", "unindexed": "  (no entry file: unused)",
              "unfinished": "  (being written, or left by a killed run)"}


def age_text(seconds: float) -> str:
    """How long ago, as a person says it (the list is read to choose what to clear).

    >>> age_text(5), age_text(600), age_text(7300), age_text(3 * 86400 + 5)
    ('just now', '10 min ago', '2 h ago', '3 days ago')
    """
    s = max(0, int(seconds))
    if s < 60:
        return "just now"
    if s < 3600:
        return f"{s // 60} min ago"
    if s < 2 * 86400:
        return f"{s // 3600} h ago"
    return f"{s // 86400} days ago"


def _cap_text(cap: int | None, cap_from: str) -> str:
    return "no cap" if cap is None else f"cap {human_size(cap)}, {cap_from}"


def render_cache_text(entries: Sequence[Entry], folder: str, cap: int | None, cap_from: str,
                      now: float) -> str:
    """One line per entry, most recently used first, then the total."""
    lines = [f"cache: {folder}  ({_cap_text(cap, cap_from)})"]
    if entries:
        lines.append(f"{'on disk':>10}  {'apparent':>10}  {'last used':<12}  source")
        for e in sorted(entries, key=lambda e: -e.last_used):
            lines.append(f"{human_size(e.on_disk):>10}  {human_size(e.apparent):>10}  "
                         f"{age_text(now - e.last_used):<12}  {e.source}{_KIND_NOTE.get(e.kind, '')}")
    n = len(entries)
    lines.append(f"total: {n} {'entry' if n == 1 else 'entries'}, "
                 f"{human_size(sum(e.on_disk for e in entries))} on disk, "
                 f"{human_size(sum(e.apparent for e in entries))} apparent")
    return "\n".join(lines) + "\n"


def render_cache_json(entries: Sequence[Entry], folder: str, cap: int | None) -> str:
    """The same as one JSON object (times as epoch seconds, sizes in bytes)."""
    return json.dumps({
        "folder": folder, "cap": cap,
        "entries": [{"key": e.key, "kind": e.kind, "source": e.source, "files": list(e.files),
                     "on_disk": e.on_disk, "apparent": e.apparent,
                     "last_used": round(e.last_used, 3)} for e in entries],
        "on_disk": sum(e.on_disk for e in entries),
        "apparent": sum(e.apparent for e in entries)}, indent=2) + "\n"


def render_cleared(removed: Sequence[Entry], folder: str) -> str:
    n = len(removed)
    return (f"{folder}: removed {n} {'entry' if n == 1 else 'entries'}, "
            f"{human_size(sum(e.on_disk for e in removed))} freed\n")
