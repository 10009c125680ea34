"""A QEMU ``simple`` backend trace file written from a ``log`` backend trace, for tests.

Debian's QEMU is built with the ``log`` backend only, so the simpletrace reader is tested on real
traces turned into the binary format here, following QEMU's ``trace/simple.c`` and
``scripts/simpletrace.py`` (header: ``u64 ~0, u64 0xf2b177cb0aa429b4, u64 4``; every event's
mapping record ``u64 0, u64 id, u32 len, name`` first, as ``st_write_event_mapping`` writes them
when the file opens; then ``u64 1, u64 id, u64 timestamp_ns, u32 length, u32 pid, args``, a
string argument as ``u32 len`` and its bytes, any other as a ``u64``).

The arguments are taken back out of each line's text with the event's format string turned into
a pattern here (its own parse, not the reader's printf), from the declarations in
``formats/trace/events.json``; a line of an event without a declaration is written without
arguments, as the reader then only counts it.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

EVENTS = Path(__file__).resolve().parents[2] / "formats" / "trace" / "events.json"
_LINE = re.compile(r"(\d+)@(\d+)\.(\d+):([a-z][a-z0-9_]*) ?(.*)")
_PIECE = re.compile(r'%[-#0 +]*\d*(?:"\s*PRI([diuxX])\d+\s*"|(?:hh|h|ll|l|z|j|t)?([diuxXps]))')
_PATTERN = {"p": r"(0x[0-9a-f]+|\(nil\))", "d": r"(-?\d+)", "i": r"(-?\d+)", "u": r"(\d+)",
            "x": r"([0-9a-f]+)", "X": r"([0-9A-F]+)", "s": r"(.*?)"}


def _declarations() -> dict[str, tuple[list[str], re.Pattern, list[str]]]:
    out = {}
    for name, (args, fmt) in json.loads(EVENTS.read_text())["events"].items():
        convs, parts, pos = [], [], 0
        for m in _PIECE.finditer(fmt):
            parts.append(re.escape(fmt[pos:m.start()]))
            conv = m.group(1) or m.group(2)
            parts.append(_PATTERN[conv])
            convs.append(conv)
            pos = m.end()
        parts.append(re.escape(fmt[pos:]))
        out[name] = (args, re.compile("".join(parts) + "$"), convs)
    return out


def _value(text: str, conv: str) -> int:
    if conv == "p":
        return 0 if text == "(nil)" else int(text, 16)
    if conv in "xX":
        return int(text, 16)
    return int(text) & (2 ** 64 - 1)           # a negative int: its sign-extended u64


def log_to_simpletrace(text: bytes, *, version: int = 4) -> bytes:
    """The simpletrace file of the log-backend trace ``text`` (``PID@SECS:event args`` lines;
    other lines are left out: the simple backend writes only events)."""
    decls = _declarations()
    lines = [m for m in (_LINE.fullmatch(ln) for ln in text.decode().splitlines()) if m]
    ids: dict[str, int] = {}
    for m in lines:
        ids.setdefault(m.group(4), 100 + len(ids))     # ids are the build's order, not 0..n
    out = bytearray(struct.pack("<QQQ", 2 ** 64 - 1, 0xF2B177CB0AA429B4, version))
    for name, eid in ids.items():
        raw = name.encode()
        out += struct.pack("<QQI", 0, eid, len(raw)) + raw
    for m in lines:
        pid, secs, frac, name, args = m.groups()
        ns = int(secs) * 10 ** 9 + int(frac.ljust(9, "0")[:9])
        payload = b""
        decl = decls.get(name)
        if decl is not None:
            types, pattern, convs = decl
            got = pattern.match(args)
            assert got is not None, (name, args)
            for arg, conv, value in zip(types, convs, got.groups()):
                if conv == "s":
                    raw = value.encode()
                    payload += struct.pack("<I", len(raw)) + raw
                else:
                    payload += struct.pack("<Q", _value(value, conv))
        out += struct.pack("<QQQII", 1, ids[name], ns, 24 + len(payload), int(pid)) + payload
    return bytes(out)
