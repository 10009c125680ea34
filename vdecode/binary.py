"""Numpy dtypes derived from Construct declarations: each binary layout is written once.

A layout is declared as a construct ``Struct`` (readable, checked, documented field by field);
where whole tables of it are read at once (descriptor tables, kdump page descriptors, program
headers, flattened-format records) :func:`dtype_of` turns that same ``Struct`` into the matching
numpy dtype, so the two can never disagree. Only fixed-size members have a dtype: integers
(``Int64ul`` and friends), arrays of them, fixed byte strings and padding.

Example::

    >>> from construct import Int16ul, Int32ul, Int64ul, Struct
    >>> desc = Struct("addr" / Int64ul, "len" / Int32ul, "flags" / Int16ul, "next" / Int16ul)
    >>> dt = dtype_of(desc)
    >>> dt.itemsize == desc.sizeof(), dt.names
    (True, ('addr', 'len', 'flags', 'next'))
"""

from __future__ import annotations

import struct as _struct

import numpy as np
from construct import Array, Construct, FormatField, Renamed, SizeofError, Struct

__all__ = ("dtype_of", "struct_of")

# struct-module format letters -> numpy kinds (construct's FormatField keeps the struct format)
_KIND = {"b": "i1", "B": "u1", "h": "i2", "H": "u2", "i": "i4", "I": "u4", "l": "i4", "L": "u4",
         "q": "i8", "Q": "u8", "e": "f2", "f": "f4", "d": "f8"}
_ORDER = {"<": "<", ">": ">", "=": "=", "!": ">", "@": "="}


def _member(con: Construct):
    """The dtype of one fixed-size member: an integer, an Array of them, a nested Struct, or
    (anything else of fixed size: Bytes, Padding) opaque bytes."""
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


def dtype_of(struct: Struct) -> np.dtype:
    """The numpy dtype with ``struct``'s members, offsets and size (unnamed members as padding)."""
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


def struct_of(struct: Struct) -> "_struct.Struct":
    """A ``struct.Struct`` unpacking ``struct``'s integer members in order, for single records read
    in a hot loop (one kdump page descriptor per page read), where construct's parse is too slow."""
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
