"""Format 6: qmp-shell transcripts (the ``(QEMU)`` prompt) and its ``-l`` log.

qmp-shell (PyPI ``qemu.qmp`` 0.0.6 ``qemu/qmp/qmp_shell.py``) reads commands in its own syntax,
``name key=value ...`` (values JSON, Python literals or bare strings; ``a.b=1`` nests), and
prints: with ``-v`` the JSON it sends, then the reply as JSON (``-p``: 4-space indent, sorted
keys). Events are printed as Python ``dict`` reprs when the user presses Enter on an empty line.
The prompt is ``(QEMU) `` (``TRANS> `` inside a transaction); with piped input the command is not
echoed and the prompt is glued to the next output. No ids: commands pair with replies in order.

``-l FILE`` writes each command merged with its reply into one object (same compact/pretty
setting); :class:`.builder.LogBuilder` splits such objects, so the log reads as a stream of
objects (``read`` handles both).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from typing import Any

from vdecode.sources.qmp_log.builder import LogBuilder
from vdecode.sources.qmp_log.qmpjson import ObjectCollector, decode_qmp_json, loads_json

__all__ = ("NAME", "sniff", "read", "parse_shell_command")

NAME = "qmp-shell"
_PROMPT = re.compile(r"^\s*(?:\(QEMU\)|TRANS>)\s?")
_BANNER = ("Welcome to the QMP low-level shell!", "Connected to QEMU ")
_MERGED = re.compile(r'^\s*\{.*"execute".*"(?:return|error)"\s*:')
_PRETTY_SORTED = re.compile(r'^\s+"arguments": ')


def sniff(head: list[str]) -> int:
    score = 0
    for i, text in enumerate(head):
        if text.startswith(_BANNER[0]):
            score += 50
        elif _PROMPT.match(text):
            score += 3
        elif _MERGED.match(text):
            score += 3
        elif text.strip() == "{" and i + 1 < len(head) and _PRETTY_SORTED.match(head[i + 1]):
            score += 2        # -p -l: sorted keys put "arguments" before "execute"
    return score


def read(lines: Iterable[tuple[int, str]], b: LogBuilder) -> None:
    c = ObjectCollector()
    typed: tuple[dict[str, Any], int] | None = None   # a command in shell syntax, not yet sent
    for n, text in lines:
        text = text.rstrip("\r")
        if c.active:
            whole = c.add_or_drop(text, b.warn, "object")
            if whole is not None:
                typed = _emit(b, whole, c.line, typed)
            continue
        s = text
        pm = _PROMPT.match(s)
        if pm is not None:
            s = s[pm.end():]
        s = s.strip()
        if not s or s.startswith(_BANNER) or s == "Disconnected":
            continue
        if s.startswith("{"):
            whole = c.start(s, n)
            if whole is not None:
                typed = _emit(b, whole, n, typed)
            continue
        if pm is None:
            if not s.startswith(("Error while parsing", "Command failed", "Error:")):
                b.warn(n, f"not qmp-shell output, skipped: {s[:60]}")
            continue
        if typed is not None:
            b.message(typed[0], line=typed[1])          # sent, but its reply was not shown
        try:
            typed = (parse_shell_command(s), n)
        except ValueError as err:
            b.warn(n, f"qmp-shell command not understood: {err}")
            typed = None
    if c.active:
        b.warn(c.line, "object cut off at the end of the log, skipped")
    if typed is not None:
        b.message(typed[0], line=typed[1])


def _emit(b: LogBuilder, text: str, line: int | None, typed):
    try:
        msg = decode_qmp_json(text)
    except ValueError as err:
        b.warn(line, f"QMP message is not JSON: {err}")
        return typed
    if isinstance(msg, dict) and ("execute" in msg or "exec-oob" in msg):
        b.message(msg, line=line)               # -v echo of the typed command (or a -l record)
        return None
    if typed is not None and isinstance(msg, dict) and ("return" in msg or "error" in msg):
        b.message(typed[0], line=typed[1])
        typed = None
    b.message(msg, line=line)
    return typed


def parse_shell_command(text: str) -> dict[str, Any]:
    """A qmp-shell command line as the QMP command it sends.

    >>> parse_shell_command("x-query-virtio-queue-status path=/m/d/virtio-backend queue=0")
    {'execute': 'x-query-virtio-queue-status', 'arguments': {'path': '/m/d/virtio-backend', 'queue': 0}}

    :raises ValueError: when an argument has no ``=``.
    """
    words = text.split()
    if not words:
        raise ValueError("empty command")
    args: dict[str, Any] = {}
    for w in words[1:]:
        key, eq, value = w.partition("=")
        if not eq:
            raise ValueError(f"argument {w!r} is not key=value")
        parts = key.split(".")
        node = args
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"argument {key!r} nests into a value")
        node[parts[-1]] = _value(value)
    return {"execute": words[0], "arguments": args}


def _value(text: str) -> Any:
    # qmp_shell.py __parse_value: int, then true/false, then JSON-ish literals, else a string
    try:
        return int(text)
    except ValueError:
        pass
    if text in ("true", "false"):
        return text == "true"
    if text.startswith(("[", "{")):
        try:
            return loads_json(text)
        except ValueError:
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                pass
    return text
