"""QMP JSON as people log it: lenient decoding and multi-line objects assembled by brace balance.

QEMU's parser accepts ``'single-quoted'`` strings (``qobject/json-lexer.c``), so hand-typed
commands in transcripts may not be JSON; qmp-shell prints events as Python ``dict`` reprs; pretty
monitors (``pretty=on``), ``virsh --pretty`` and ``qemu.qmp`` debug logs spread one message over
many lines. :func:`decode_qmp_json` tries strict JSON, then QMP-JSON, then a Python literal;
:class:`ObjectCollector` gathers lines until the braces balance, ignoring braces inside strings.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ("decode_qmp_json", "loads_json", "ObjectCollector", "balanced_end", "MAX_OBJECT_LINES")

MAX_OBJECT_LINES = 200_000       # an unbalanced brace must not swallow a whole 100 MB log
MAX_OBJECT_CHARS = 16 << 20

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|[{}\[\]]')
_SQ_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'((?:[^\'\\]|\\.)*)\'')
_PY_WORD = re.compile(r'"(?:[^"\\]|\\.)*"|\b(true|false|null)\b')


def loads_json(text: str) -> Any:
    """``json.loads``, with nesting too deep for Python's parser as a ``ValueError`` too.

    >>> loads_json("[" * 100000)
    Traceback (most recent call last):
    ...
    ValueError: JSON nested too deeply
    """
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def decode_qmp_json(text: str) -> Any:
    """Decode one QMP message as JSON, QMP-JSON (single quotes) or a Python literal.

    >>> decode_qmp_json("{ 'execute': 'qmp_capabilities' }")
    {'execute': 'qmp_capabilities'}
    >>> decode_qmp_json("{'return': {}, 'ok': True}")
    {'return': {}, 'ok': True}

    :raises ValueError: with the strict JSON parser's reason when no reading works.
    """
    try:
        return loads_json(text)
    except ValueError as err:
        first = err
    if "'" in text:
        try:
            return loads_json(_SQ_STRING.sub(_requote, text))
        except ValueError:
            pass
    try:
        # Python reprs (qmp-shell events, old Python QMP logs); literal_eval evaluates no code.
        # Its SyntaxWarnings ("invalid escape sequence") are about the log, not about vdecode.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.literal_eval(_PY_WORD.sub(_pyword, text))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        raise first from None


def _requote(m: re.Match) -> str:
    if m.group(1) is None:
        return m.group(0)
    body = m.group(1).replace("\\'", "'").replace('"', '\\"')
    return f'"{body}"'


def _pyword(m: re.Match) -> str:
    w = m.group(1)
    return m.group(0) if w is None else {"true": "True", "false": "False", "null": "None"}[w]


def balanced_end(text: str, depth: int = 0) -> tuple[int, int]:
    """Scan ``text`` for brackets outside strings, starting at nesting ``depth``.

    :return: ``(depth, end)``: the depth after the scan, and the index just past the bracket
        that brought the depth back to 0 (``-1`` if it never did).

    >>> balanced_end('{"a": "}"} trailing prose')
    (0, 10)
    >>> balanced_end('{"a": [1,')
    (2, -1)
    """
    for m in _TOKEN.finditer(text):
        c = m.group(0)
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth == 0:
                return 0, m.end()
    return depth, -1


class ObjectCollector:
    """Gathers one JSON object spread over several lines.

    ``start(text, line, meta)`` begins with the text from the opening ``{``; ``add(text)`` adds the
    next line. Both return the whole object's text once the braces balance (text after the
    closing brace on that line is dropped: prose after a pasted object), else ``None``. ``line``
    and ``meta`` stay readable after the object completes, until the next ``start``.
    """

    __slots__ = ("parts", "depth", "line", "size", "meta", "active")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.depth = 0
        self.line: int | None = None
        self.size = 0
        self.meta: Any = None
        self.active = False

    def start(self, text: str, line: int, meta: Any = None) -> str | None:
        self.parts, self.depth, self.line, self.size, self.meta = [], 0, line, 0, meta
        self.active = True
        return self.add(text)

    def add(self, text: str) -> str | None:
        depth, end = balanced_end(text, self.depth)
        if end >= 0:
            self.parts.append(text[:end])
            whole = "\n".join(self.parts)
            self.reset()
            return whole
        self.parts.append(text)
        self.depth = depth
        self.size += len(text)
        return None

    def add_or_drop(self, text: str, warn: Callable[[int | None, str], None],
                    what: str = "message") -> str | None:
        """:meth:`add`, and when the object can no longer close (too long, or more closing than
        opening braces), drop it with a warning at its first line."""
        whole = self.add(text)
        if whole is None and self.too_big():
            warn(self.line, f"unbalanced braces: {what} never closes, skipped")
            self.reset()
        return whole

    def follow(self, text: str, new_record: bool, warn: Callable[[int | None, str], None],
               emit: Callable[[str, Any, int | None], None], record: str = "log record") -> bool:
        """One line while an object is being collected (the line readers' shared step): a line
        that starts a new ``record`` cuts the object off (a warning at its first line; the line is
        left to the caller), any other continues it, ``emit(text, meta, line)`` getting the object
        once it closes. Whether the line was taken (``False`` when nothing was being collected).
        """
        if not self.active:
            return False
        if new_record:
            warn(self.line, f"message cut off by the next {record}, skipped")
            self.reset()
            return False
        whole = self.add_or_drop(text, warn)
        if whole is not None:
            emit(whole, self.meta, self.line)
        return True

    def too_big(self) -> bool:
        return len(self.parts) > MAX_OBJECT_LINES or self.size > MAX_OBJECT_CHARS or self.depth < 0

    def reset(self) -> None:
        self.parts, self.depth, self.size, self.active = [], 0, 0, False
