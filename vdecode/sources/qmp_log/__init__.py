"""Captured QMP traffic, from every log format people have, as :class:`QmpLog` records.

``read_qmp_log(path)`` undoes mail wrapping (:mod:`.transport`), sniffs the format from the first
lines (or takes ``fmt``), streams the file line by line through that format's reader, and pairs commands with replies
(:mod:`.builder`). Records a reader cannot use are skipped with a warning naming the file and
line, in ``QmpLog.warnings``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names load on first use (PEP 562): reconstruction needs only the record types of .model and
# .knowledge, and importing every format reader (regexes, gzip, zstandard, shlex, html) for that
# cost a tenth of a --queue answer's start-up.
_HOME = {"read_qmp_log": "read", "FORMATS": "sniff", "LogKnowledge": "knowledge",
         "describe_monitor": "knowledge", "select_monitors": "knowledge", "QmpEvent": "model",
         "QmpExchange": "model", "QmpLog": "model", "LoggedMonitor": "model"}

__all__ = ("read_qmp_log", "select_monitors", "describe_monitor", "FORMATS", "LogKnowledge",
           "QmpEvent", "QmpExchange", "QmpLog", "LoggedMonitor")


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
