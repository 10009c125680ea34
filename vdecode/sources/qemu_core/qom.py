"""
The QOM composition tree in a QEMU core
---------------------------------------
QEMU 8.2+ keeps no ``virtio_list``: ``qmp_x_query_virtio`` (QEMU v10.0.2
``hw/virtio/virtio-qmp.c``) walks the composition tree with ``object_child_foreach_recursive``
from ``object_get_root()`` (``qom/object.c`` ``do_object_child_foreach``: each child, then its own
children, in ``GHashTableIter`` order of ``Object.properties``), keeping the realized
``VirtIODevice`` objects. This module repeats that walk on the core: from one device up
``Object.parent`` to the root, then down through every ``child<...>`` ``ObjectProperty``.

``GHashTable`` is glib's private ``struct _GHashTable`` (``glib/ghash.c``): ``size`` slots,
``hashes[i] >= 2`` marks a used slot (``HASH_IS_REAL``), and ``g_hash_table_iter_next`` visits
slots in index order. ``keys``/``values`` hold pointers when ``have_big_keys``/``have_big_values``
is set, else ``guint``.
"""

from __future__ import annotations

import numpy as np

from vdecode.errors import CorruptInput
from vdecode.sources.qemu_core.memory import MAX_DEVICES, CoreReader, profile_mismatch

__all__ = ("walk_qom_tree", "find_qom_root")

MAX_OBJECTS = 1 << 16          # bound on the objects a walk visits (a q35 VM has a few hundred)
MAX_HASH_SIZE = 1 << 20        # bound on one properties table's slots
HASH_IS_REAL_MIN = 2           # glib/ghash.c: 0 unused, 1 tombstone


def _u64(rd: CoreReader, addr: int, what: str) -> int:
    return int(np.frombuffer(bytes(rd.read(addr, 8, what)), "<u8")[0])


def find_qom_root(rd: CoreReader, obj: int) -> int:
    """``object_get_root()``: follow ``Object.parent`` from ``obj`` until it is ``NULL``.

    :raises CorruptInput: a loop, or more than ``MAX_DEVICES`` levels.
    """
    lay = rd.layout
    parent_off = lay.off("Object", "parent")
    seen = set()
    at = obj
    for _ in range(MAX_DEVICES):
        seen.add(at)
        up = _u64(rd, at + parent_off, f"Object.parent of {at:#x}")
        if up == 0:
            return at
        if up in seen or not rd.valid(up, lay.sizes["Object"]):
            raise profile_mismatch(lay, rd.mem, "Object.parent leads to the QOM root",
                                   f"object {at:#x}: parent {up:#x}", rd.file_offset(at))
        at = up
    raise CorruptInput(rd.name, f"QOM tree: more than {MAX_DEVICES} levels above {obj:#x}")


def _hash_values(rd: CoreReader, table: int) -> list[int]:
    """The values of a ``GHashTable *`` in ``g_hash_table_iter_next`` order."""
    lay = rd.layout
    h = rd.struct("GHashTable", table, f"GHashTable at {table:#x}")
    size = int(h["size"])
    if not 0 < size <= MAX_HASH_SIZE or size & (size - 1):
        raise profile_mismatch(lay, rd.mem, "GHashTable.size is a power of two",
                               f"GHashTable at {table:#x}: size {size}", rd.file_offset(table))
    big_values = True
    for bf in lay.data.get("bitfields", {}).get("GHashTable", []):
        if bf["name"] == "have_big_values":
            byte = bytes(rd.read(table + int(bf["byte"]), 1, "GHashTable bitfields"))[0]
            big_values = bool((byte >> int(bf["bit"])) & 1)
    hashes = np.frombuffer(bytes(rd.read(h["hashes"], 4 * size, f"hashes of {table:#x}")), "<u4")
    width = 8 if big_values else 4
    values = np.frombuffer(bytes(rd.read(h["values"], width * size, f"values of {table:#x}")),
                           "<u8" if big_values else "<u4")
    used = np.flatnonzero(hashes >= HASH_IS_REAL_MIN)
    if len(used) != int(h["nnodes"]):
        raise profile_mismatch(lay, rd.mem, "GHashTable.nnodes == used slots",
                               f"GHashTable at {table:#x}: nnodes {int(h['nnodes'])}, "
                               f"{len(used)} used slots", rd.file_offset(table))
    return [int(v) for v in values[used]]


def _children(rd: CoreReader, obj: int) -> list[int]:
    """``do_object_child_foreach``'s children of ``obj``: ``child<...>`` properties' ``opaque``."""
    lay = rd.layout
    props = _u64(rd, obj + lay.off("Object", "properties"), f"Object.properties of {obj:#x}")
    if props == 0:
        return []
    out = []
    for prop in _hash_values(rd, props):
        p = rd.struct("ObjectProperty", prop, f"ObjectProperty at {prop:#x}")
        # qom/object.c object_property_is_child(): strstart(prop->type, "child<")
        if p["type"] and rd.valid(p["type"], 6) and bytes(rd.read(p["type"], 6, "type")) == b"child<":
            out.append(int(p["opaque"]))
    return out


def walk_qom_tree(rd: CoreReader, root: int) -> list[int]:
    """Every object below ``root`` in ``object_child_foreach_recursive`` order (pre-order).

    :raises CorruptInput: a loop, or more than ``MAX_OBJECTS`` objects.
    """
    order: list[int] = []
    seen = {root}
    stack = list(reversed(_children(rd, root)))
    while stack:
        obj = stack.pop()
        if obj in seen:
            raise CorruptInput(rd.name, f"QOM tree: object {obj:#x} is reached twice",
                               offset=rd.file_offset(obj))
        if len(order) >= MAX_OBJECTS:
            raise CorruptInput(rd.name, f"QOM tree: more than {MAX_OBJECTS} objects")
        seen.add(obj)
        order.append(obj)
        stack.extend(reversed(_children(rd, obj)))
    return order
