"""Format 1: the captures' JSON-lines transcript, one ``{"t", "dir", "msg"}`` object a line.

Written by ``shared/capture/capture.py`` and by ``vdecode log --json``: ``t`` is Unix seconds,
``dir`` is ``"->"`` (to QEMU) or ``"<-"`` (from QEMU), ``msg`` the QMP message as sent. Optional
``mon`` and ``vm`` members name the monitor when a transcript holds several.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from vdecode.sources.qmp_log.builder import LogBuilder
from vdecode.sources.qmp_log.qmpjson import SKIPPED, json_record, loads_json

__all__ = ("NAME", "sniff", "read")

NAME = "jsonl"
_HEAD = re.compile(r'^\s*\{.*"msg"\s*:')


def sniff(head: list[str]) -> int:
    """How many of the first lines look like ``{"t", "dir", "msg"}`` records."""
    score = 0
    for text in head:
        if _HEAD.match(text) and '"dir"' in text:
            try:
                rec = loads_json(text)
            except ValueError:
                continue
            if isinstance(rec, dict) and "msg" in rec and "dir" in rec:
                score += 1
    return score


def read(lines: Iterable[tuple[int, str]], b: LogBuilder) -> None:
    for n, text in lines:
        if not text.strip():
            continue
        rec = json_record(b, n, text, "not JSON: ")
        if rec is SKIPPED:
            continue
        if not isinstance(rec, dict) or "msg" not in rec:
            b.warn(n, 'not a transcript record: expected {"t", "dir", "msg"}')
            continue
        t = rec.get("t")
        if not isinstance(t, (int, float)) or isinstance(t, bool):
            t = None
        mon = rec.get("mon")
        vm = rec.get("vm")
        b.message(rec["msg"], t=t, monitor=str(mon) if mon is not None else "", line=n,
                  vm=str(vm) if vm is not None else None)
