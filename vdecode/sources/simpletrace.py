"""QEMU's ``simple`` trace backend: the binary trace file, as records the trace reader uses
-----------------------------------------------------------------------------------------
QEMU's ``trace/simple.c`` (``--enable-trace-backends=simple``, ``-trace file=FILE``) and
``scripts/simpletrace.py`` define the file, little-endian on the hosts QEMU writes it::

    header   u64 0xffffffffffffffff, u64 magic 0xf2b177cb0aa429b4, u64 version 4
    record   u64 type: 0 an event-mapping record, 1 an event record
    mapping  u64 event id, u32 length, the event's name
    event    u64 event id, u64 timestamp_ns, u32 record length (from the event id on), u32 pid,
             then the arguments: a string as u32 length and its bytes, any other as a u64

The arguments carry no names or types: they are the event's declaration's, from QEMU's
``trace-events`` (``formats/trace/events.json``: the events vdecode uses). Each record becomes
the text the ``log`` backend would have printed (its format string filled in), so both backends
go through one reader (:mod:`vdecode.sources.trace`). Times are QEMU's ``get_clock()``
(CLOCK_MONOTONIC on Linux): seconds since the host booted, not Unix time. Records of events
without a declaration here are counted by name; the "dropped" record (id 0xfffffffffffffffe,
its argument the count) says the trace buffer overflowed.
"""

from __future__ import annotations

import functools
import json
import re
import struct
from collections.abc import Iterator
from typing import BinaryIO

from vdecode.errors import CorruptInput

__all__ = ("MAGIC", "is_simpletrace", "simpletrace_records", "event_declarations", "format_args")

HEADER_EVENT_ID = 0xFFFFFFFFFFFFFFFF
DROPPED_EVENT_ID = 0xFFFFFFFFFFFFFFFE
MAGIC = 0xF2B177CB0AA429B4
VERSION = 4
_HEADER = struct.Struct("<QQQ")
_REC = struct.Struct("<QQII")            # event id, timestamp_ns, record length, pid
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_BLOCK = 4 << 20
_MAX_RECORD = 1 << 20                    # QEMU's whole trace buffer is 64 KiB: a bigger one is damage
_STRING_TYPES = ("const char*", "char*", "const char *", "char *")   # tracetool's is_string


def is_simpletrace(head: bytes) -> bool:
    """Whether ``head`` (the file's first 16 bytes) is a simpletrace header."""
    return head[:16] == struct.pack("<QQ", HEADER_EVENT_ID, MAGIC)


@functools.lru_cache(maxsize=1)
def event_declarations() -> dict[str, tuple[tuple[tuple[bool, bool, str], ...], str]]:
    """``name -> ((is_string, is_signed, type) per argument, format)`` from
    ``formats/trace/events.json``."""
    from vdecode.profiles import formats_dir
    data = json.loads((formats_dir() / "trace" / "events.json").read_text())
    out = {}
    for event, (args, fmt) in data["events"].items():
        decl = []
        for a in args:
            typ = a[:-len(re.search(r"(\w+)$", a).group(1))].strip()     # "void *", "uint8_t"
            string = a.lstrip().startswith(_STRING_TYPES) and a.count("*") == 1
            signed = typ in ("int", "int8_t", "int16_t", "int32_t", "int64_t", "long",
                             "ssize_t", "long long")
            decl.append((string, signed, typ))
        out[event] = (tuple(decl), fmt)
    return out


# a printf conversion of QEMU's trace-events formats: flags and width, then a length modifier or
# a PRI macro ("%"PRIu64"), then the conversion
_CONV = re.compile(r'%([-#0 +]*\d*)(?:"\s*PRI([diuxX])(?:8|16|32|64)\s*"|(?:hh|h|ll|l|z|j|t)?([diuxXcps%]))')
_WIDTH = {"uint8_t": 8, "bool": 8, "uint16_t": 16, "int8_t": 8, "int16_t": 16}


def format_args(fmt: str, decl: tuple, values: list) -> str:
    """``fmt`` filled in as glibc's printf does with the record's values (``%p`` of NULL is
    ``(nil)``; a signed argument's u64 is its sign-extended value)."""
    out = []
    pos = 0
    k = 0
    for m in _CONV.finditer(fmt):
        out.append(fmt[pos:m.start()])
        pos = m.end()
        conv = m.group(2) or m.group(3)
        if conv == "%":
            out.append("%")
            continue
        v = values[k]
        string, signed, typ = decl[k]
        k += 1
        flags = m.group(1)
        if conv == "s":
            text = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        elif conv == "p":
            text = f"{v:#x}" if v else "(nil)"
        elif conv in "di":
            bits = 32 if typ in ("int", "int32_t") else 64
            v &= (1 << bits) - 1
            text = str(v - (1 << bits) if signed and v >> (bits - 1) else v)
        elif conv == "u":
            bits = 64 if typ in ("uint64_t", "size_t", "unsigned long", "uint64") else 32
            text = str(v & ((1 << _WIDTH.get(typ, bits)) - 1))
        elif conv in "xX":
            text = format(v, conv)
        else:                           # %c
            text = chr(v & 0xFF)
        if flags:
            width = int(flags.lstrip("-#0 +") or 0)
            fill = "0" if "0" in flags.lstrip("123456789") and "-" not in flags else " "
            text = text.ljust(width) if "-" in flags else text.rjust(width, fill)
        out.append(text)
    out.append(fmt[pos:])
    return "".join(out)


def simpletrace_records(f: BinaryIO, name: str) -> Iterator[tuple[int, float, str, str | None]]:
    """``(record number, seconds, event name, args text)`` for every event record of ``f`` (the
    header checked first); ``args`` is ``None`` for an event without a declaration here.

    :raises CorruptInput: a bad header or version, a record cut short, an unknown record type,
        a length that cannot be, an event id no mapping record named; with its offset.
    """
    decls = event_declarations()
    names: dict[int, str] = {DROPPED_EVENT_ID: "dropped"}
    buf = b""
    base = 0                                # file offset of buf[0]
    pos = 0                                 # read position in buf
    eof = False

    def need(n: int, what: str, at: int | None = None) -> bool:
        """At least ``n`` bytes at ``pos`` (False: the file ended cleanly before any); the
        error names ``at``, where the record starts."""
        nonlocal buf, base, pos, eof
        while len(buf) - pos < n and not eof:
            chunk = f.read(_BLOCK)
            if not chunk:
                eof = True
                break
            buf = buf[pos:] + chunk
            base += pos
            pos = 0
        if len(buf) - pos >= n:
            return True
        if len(buf) == pos and what == "record":
            return False
        raise CorruptInput(name, f"simpletrace {what} cut short: {len(buf) - pos} of {n} "
                                 f"bytes", offset=base + pos if at is None else at)

    if not need(_HEADER.size, "header"):
        raise CorruptInput(name, "empty simpletrace file", offset=0)
    hid, magic, version = _HEADER.unpack_from(buf, pos)
    if (hid, magic) != (HEADER_EVENT_ID, MAGIC):
        raise CorruptInput(name, "not a simpletrace file (bad header magic)", offset=0)
    if version != VERSION:
        raise CorruptInput(name, f"simpletrace version {version}: only version 4 (QEMU 2.9 on) "
                                 f"is read", offset=16)
    pos += _HEADER.size
    n = 0
    while need(8, "record"):
        at = base + pos
        (rtype,) = _U64.unpack_from(buf, pos)
        pos += 8
        if rtype == 0:                      # a mapping: event id and name
            need(12, "mapping record", at)
            eid, size = struct.unpack_from("<QI", buf, pos)
            if size > 1024:
                raise CorruptInput(name, f"simpletrace mapping record with a {size}-byte event "
                                         f"name", offset=at)
            pos += 12
            need(size, "mapping record", at)
            names[eid] = buf[pos:pos + size].decode("utf-8", "replace")
            pos += size
            continue
        if rtype != 1:
            raise CorruptInput(name, f"simpletrace record of unknown type {rtype}", offset=at)
        need(_REC.size, "event record", at)
        eid, ts, length, _pid = _REC.unpack_from(buf, pos)
        if length < _REC.size or length > _MAX_RECORD:
            raise CorruptInput(name, f"simpletrace event record of length {length}", offset=at)
        need(length, "event record", at)
        payload = buf[pos + _REC.size:pos + length]
        pos += length
        n += 1
        event = names.get(eid)
        if event is None:
            raise CorruptInput(name, f"simpletrace event id {eid} that no mapping record named",
                               offset=at)
        spec = decls.get(event)
        if spec is None:
            yield n, ts / 1e9, event, None
            continue
        decl, fmt = spec
        values = []
        off = 0
        try:
            for string, _signed, _typ in decl:
                if string:
                    (size,) = _U32.unpack_from(payload, off)
                    values.append(payload[off + 4:off + 4 + size])
                    off += 4 + size
                else:
                    values.append(_U64.unpack_from(payload, off)[0])
                    off += 8
        except struct.error:
            raise CorruptInput(name, f"simpletrace {event} record shorter than its "
                                     f"{len(decl)} argument(s)", offset=at) from None
        yield n, ts / 1e9, event, format_args(fmt, decl, values)
