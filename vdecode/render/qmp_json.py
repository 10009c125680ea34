"""Byte-exact QMP JSON, as QEMU 7.2's monitor writes it.

Mirrors ``qobject/json-writer.c`` (compact mode: ``", "`` and ``": "`` separators, QEMU's string
escapes), ``monitor/monitor.c:monitor_puts`` (every ``\\n`` sent as ``\\r\\n``) and, above all,
``qobject/qdict.c``'s member order: a QDict iterates its 512 hash buckets in order, and inside a
bucket the most recently inserted key comes first. QAPI's output visitor inserts members in schema
order, so the printed order is a function of the key names and the schema order only; it is
computed here for every object, never typed in as a table.

Reconstruction hands over plain values whose ``dict`` order is QEMU's insertion (schema) order.
"""

from __future__ import annotations

from typing import Any

QDICT_BUCKET_MAX = 512  # QEMU include/qapi/qmp/qdict.h


def tdb_hash(name: str) -> int:
    """QEMU 7.2 ``qobject/qdict.c:tdb_hash``, on the key's UTF-8 bytes (32-bit unsigned).

    >>> tdb_hash("return") % 512, tdb_hash("id") % 512
    (401, 486)
    """
    data = name.encode("utf-8")
    value = (0x238F13AF * len(data)) & 0xFFFFFFFF
    for i, byte in enumerate(data):
        value = (value + (byte << (i * 5 % 24))) & 0xFFFFFFFF
    return (1103515243 * value + 12345) & 0xFFFFFFFF


def qdict_order(keys: list[str]) -> list[str]:
    """The order ``qdict_first``/``qdict_next`` visit keys inserted in ``keys`` order.

    >>> qdict_order(["return", "id"]), qdict_order(["error", "id"])
    (['return', 'id'], ['id', 'error'])
    """
    # Stable sort by bucket over the reversed insertion order: within a bucket, later first
    # (QLIST_INSERT_HEAD in qdict_put_obj).
    rev = list(reversed(keys))
    return sorted(rev, key=lambda k: tdb_hash(k) % QDICT_BUCKET_MAX)


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
            "\t": "\\t"}


def _quote(s: str) -> str:
    # qobject/json-writer.c quoted_str(): named escapes, then \uXXXX (upper-case hex) for
    # control characters and everything from 0x7F up; astral code points as surrogate pairs.
    out = ['"']
    for ch in s:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
            continue
        cp = ord(ch)
        if 0x20 <= cp < 0x7F:
            out.append(ch)
        elif cp < 0x10000:
            out.append(f"\\u{cp:04X}")
        else:
            cp -= 0x10000
            out.append(f"\\u{0xD800 | (cp >> 10):04X}\\u{0xDC00 | (cp & 0x3FF):04X}")
    out.append('"')
    return "".join(out)


def encode(value: Any) -> str:
    """One QObject in QEMU's compact JSON, with QDict member order.

    >>> encode({"error": {"class": "GenericError", "desc": "x"}, "id": 5})
    '{"id": 5, "error": {"class": "GenericError", "desc": "x"}}'
    """
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{" + ", ".join(f"{_quote(k)}: {encode(value[k])}"
                               for k in qdict_order(list(value))) + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        return "[" + ", ".join(encode(v) for v in value) + "]"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _quote(value)
    raise TypeError(f"not a QObject: {type(value).__name__}")


def encode_message(message: dict[str, Any]) -> bytes:
    """A whole monitor line: the object, ``\\n`` turned into ``\\r\\n`` by ``monitor_puts``."""
    return (encode(message) + "\r\n").encode("ascii")
