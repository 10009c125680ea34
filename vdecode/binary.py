"""Binary layouts, each written once: numpy dtypes for whole tables, records for single ones.

Two ways to declare a layout, both with one declaration:

* :class:`Layout`: the members as data (name, kind, what it means), for the layouts every answer
  reads (split rings, ELF headers, SMBIOS entry points). Its numpy dtype, a ``struct.Struct`` that
  parses one record, and the matching construct ``Struct`` are each made from the members the
  first time they are asked for: an answer that reads a bundle does not import construct at all
  (construct with pdb, hashlib and the rest it loads: some 10 ms of its start-up) and builds
  only the dtypes it reads;
* a construct ``Struct`` (readable, checked, documented field by field), for the layouts read
  from kdump and flattened files and QEMU's structs; :func:`dtype_of` turns it into the matching
  numpy dtype where whole tables are read at once (kdump page descriptors, flattened records).

Either way the two views cannot disagree. Only fixed-size members have a dtype: integers
(``Int64ul`` and friends), arrays of them, fixed byte strings and padding.

Example::

    >>> from construct import Int16ul, Int32ul, Int64ul, Struct
    >>> desc = Struct("addr" / Int64ul, "len" / Int32ul, "flags" / Int16ul, "next" / Int16ul)
    >>> dt = dtype_of(desc)
    >>> dt.itemsize == desc.sizeof(), dt.names
    (True, ('addr', 'len', 'flags', 'next'))
    >>> lay = Layout("<", ("addr", "u64"), ("len", "u32"), ("flags", "u16"), ("next", "u16"))
    >>> lay.dtype == dt, lay.parse(bytes(range(16))).next
    (True, 3854)
"""

from __future__ import annotations

import struct as _struct
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from construct import Construct, Struct

__all__ = ("Layout", "LayoutError", "Fields", "dtype_of", "struct_of")

# struct-module format letters -> numpy kinds (construct's FormatField keeps the struct format)
_KIND = {"b": "i1", "B": "u1", "h": "i2", "H": "u2", "i": "i4", "I": "u4", "l": "i4", "L": "u4",
         "q": "i8", "Q": "u8", "e": "f2", "f": "f4", "d": "f8"}
_ORDER = {"<": "<", ">": ">", "=": "=", "!": ">", "@": "="}


def _member(con: "Construct"):
    """The dtype of one fixed-size member: an integer, an Array of them, a nested Struct, or
    (anything else of fixed size: Bytes, Padding) opaque bytes."""
    from construct import Array, FormatField, Renamed, SizeofError, Struct

    while isinstance(con, Renamed):
        con = con.subcon
    if isinstance(con, FormatField):
        return np.dtype(_ORDER[con.fmtstr[0]] + _KIND[con.fmtstr[1]])
    if isinstance(con, Struct):
        return dtype_of(con)
    if isinstance(con, Array) and isinstance(con.count, int):
        return (_member(con.subcon), (con.count,))
    try:
        return np.dtype(f"V{con.sizeof()}")
    except SizeofError as err:                      # variable-size members have no dtype
        raise TypeError(f"{con!r} has no fixed size, so no dtype") from err


def dtype_of(struct: "Struct") -> np.dtype:
    """The numpy dtype with ``struct``'s members, offsets and size (unnamed members as padding)."""
    from construct import SizeofError

    names, formats, offsets = [], [], []
    offset = 0
    for sub in struct.subcons:
        try:
            size = sub.sizeof()
        except SizeofError as err:                  # variable-size members have no dtype
            raise TypeError(f"{sub!r} has no fixed size, so {struct!r} has no dtype") from err
        if sub.name is not None:
            names.append(sub.name)
            formats.append(_member(sub))
            offsets.append(offset)
        offset += size
    dt = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": offset})
    if dt.itemsize != struct.sizeof():
        raise TypeError(f"dtype of {struct!r} is {dt.itemsize} bytes, the struct {struct.sizeof()}")
    return dt


def struct_of(struct: "Struct") -> "_struct.Struct":
    """A ``struct.Struct`` unpacking ``struct``'s integer members in order, for single records read
    in a hot loop (one kdump page descriptor per page read), where construct's parse is too slow."""
    from construct import FormatField, Renamed

    order, letters = None, ""
    for sub in struct.subcons:
        con = sub
        while isinstance(con, Renamed):
            con = con.subcon
        if not isinstance(con, FormatField):
            raise TypeError(f"{sub!r} is not an integer member")
        if order not in (None, con.fmtstr[0]):
            raise TypeError(f"{struct!r} mixes byte orders")
        order, letters = con.fmtstr[0], letters + con.fmtstr[1:]
    return _struct.Struct((order or "<") + letters)


# Layout member kinds -> struct-module letters (numpy takes the same kinds as "<u8" and so on)
_LETTERS = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q", "i8": "b", "i16": "h", "i32": "i",
            "i64": "q"}
_CONSTRUCT = {"u8": "Int8u", "u16": "Int16u", "u32": "Int32u", "u64": "Int64u", "i8": "Int8s",
              "i16": "Int16s", "i32": "Int32s", "i64": "Int64s"}


class LayoutError(ValueError):
    """A record's bytes contradict its layout (a constant member that does not match)."""


class Fields(dict):
    """One parsed record: its members by name, as items and as attributes (as construct's
    ``Container``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class Layout:
    """A fixed-size binary layout declared once: its byte order (``"<"`` or ``">"``) and its
    members in order, each ``(name, kind)`` or ``(name, kind, what it holds)``.

    A kind is an integer (``"u8"`` .. ``"u64"``, ``"i8"`` .. ``"i64"``), a number of opaque bytes
    (an ``int``), or a ``bytes`` constant the record must hold there (a magic). Made from the
    members when first asked for:

    * :attr:`dtype`: the numpy dtype, for tables read whole (constants and bytes as ``V<n>``);
    * :meth:`parse`: one record as :class:`Fields` (a ``struct.Struct``; constants checked);
    * :attr:`struct`: the construct ``Struct`` with the members' descriptions, for building
      records and for reading the layout; the only part that imports construct.

    ``sizeof()``, ``parse()`` and ``build()`` are construct's names, so
    :func:`vdecode.sources.files.parse_at` and the writers take either.
    """

    def __init__(self, order: str, *members: tuple) -> None:
        if order not in ("<", ">"):
            raise ValueError(f"byte order {order!r}: '<' or '>'")
        self.order = order
        self.members = tuple((m[0], m[1], m[2] if len(m) > 2 else None) for m in members)
        self._unpack = _struct.Struct(order + "".join(
            f"{kind}s" if isinstance(kind, int) else f"{len(kind)}s" if isinstance(kind, bytes)
            else _LETTERS[kind] for _, kind, _ in self.members))
        self.size = self._unpack.size

    def __repr__(self) -> str:
        return f"Layout({self.order!r}, {', '.join(name for name, _, _ in self.members)})"

    def sizeof(self) -> int:
        return self.size

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.members)

    def parse(self, data: bytes | memoryview) -> Fields:
        """The record at the start of ``data``; :class:`LayoutError` when a constant differs
        (the text construct gives)."""
        values = self._unpack.unpack_from(data)
        for (name, kind, _), value in zip(self.members, values):
            if isinstance(kind, bytes) and value != kind:
                raise LayoutError(f"Error in path (parsing) -> {name}\n"
                                  f"parsing expected {kind!r} but parsed {value!r}")
        return Fields(zip(self.names, values))

    def build(self, values: dict) -> bytes:
        """The bytes of one record of ``values`` (constants filled in), through :attr:`struct`:
        writers and tests build records, answers only read them."""
        return self.struct.build(values)

    @cached_property
    def dtype(self) -> np.dtype:
        formats = [f"V{kind}" if isinstance(kind, int) else f"V{len(kind)}"
                   if isinstance(kind, bytes) else self.order + kind[0] + str(int(kind[1:]) // 8)
                   for _, kind, _ in self.members]
        offsets, at = [], 0
        for (_, kind, _), fmt in zip(self.members, formats):
            offsets.append(at)
            at += np.dtype(fmt).itemsize
        return np.dtype({"names": list(self.names), "formats": formats, "offsets": offsets,
                         "itemsize": self.size})

    @cached_property
    def struct(self) -> "Struct":
        import construct

        end = "l" if self.order == "<" else "b"
        subcons = []
        for name, kind, doc in self.members:
            con = (construct.Bytes(kind) if isinstance(kind, int)
                   else construct.Const(kind) if isinstance(kind, bytes)
                   else getattr(construct, _CONSTRUCT[kind] + end))
            sub = name / con
            subcons.append(sub * doc if doc else sub)
        return construct.Struct(*subcons)
