"""
Is there a ring at these addresses?
-----------------------------------
The carver's rules applied to one ring whose addresses are given (a log's ``vring-desc``/
``-avail``/``-used``, or a driver's ``struct vring`` translated): :func:`check_ring` for a split
ring (virtio 1.2 spec 2.7; the checks of :mod:`vdecode.virtio.ring_scan`'s passes 2 and 3),
:func:`check_packed_ring` for a packed one (2.8: the descriptor ring's flags, ids and buffers,
the driver and device event suppression areas). Also what guest RAM can be read and where it
lies (:func:`readable_ranges`, :class:`~vdecode.space.ram_map.RamMap`), for the buffer-address checks.
"""

from __future__ import annotations

import numpy as np

from vdecode.space.ram_map import RamMap
from vdecode.errors import MissingData
from vdecode.space.base import AddressSpace, Gpa
from vdecode.virtio.carved_ring import DESC_FLAGS_MASK, NUMS, OVERLAP, CarvedRing, confidence
from vdecode.virtio.layouts import vring_layouts
from vdecode.virtio.packed_ring import VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED
from vdecode.virtio.ring_scan import layout_of, pass2, pass3

__all__ = ("check_ring", "check_packed_ring", "ring_at", "readable_ranges")


def readable_ranges(space: AddressSpace) -> list[tuple[int, int]]:
    """What can be scanned: a kdump's dumped pages (``dumped_ranges``: excluded pages are RAM but
    not there), a bundle's kept runs (``kept_ranges``), else :meth:`ranges`."""
    for attr in ("dumped_ranges", "kept_ranges"):
        fn = getattr(space, attr, None)
        if fn is not None:
            return fn()
    return space.ranges()


def check_ring(space: AddressSpace, num: int, desc: int, avail: int, used: int, *,
               little_endian: bool = True,
               ram: RamMap | None = None) -> CarvedRing | None:
    """Whether a split ring of ``num`` entries stands at these addresses, by the carver's rules.

    :return: the ring as a :class:`CarvedRing` (``evidence`` says what was seen), or ``None``
        when it is not one (bad sizes, heads or ids out of range, links or buffers outside,
        ``avail.idx - used.idx > num``, or bytes the dump lacks).
    """
    if num not in NUMS or min(desc, avail, used) < 0 or desc % 16 or avail % 2 or used % 4:
        return None
    return ring_at(space, num, desc, avail, used, "<" if little_endian else ">",
                       ram if ram is not None else RamMap.of(space))


def ring_at(space: AddressSpace, num: int, desc: int, avail: int, used: int, bo: str,
            ram: RamMap) -> CarvedRing | None:
    """:func:`check_ring` without its checks of the arguments, for callers that made them
    (``bo`` ``"<"`` or ``">"``, ``ram`` the guest RAM)."""
    lo, hi = min(desc, avail, used), max(desc + 16 * num, avail + 6 + 2 * num, used + 6 + 8 * num)
    if hi - lo > OVERLAP or not space.is_present(Gpa(lo), hi - lo):
        # separately allocated areas: copy each into one scratch buffer in the pass-2 layout
        try:
            d = bytes(space.read(Gpa(desc), 16 * num))
            a = bytes(space.read(Gpa(avail), 6 + 2 * num))
            u = bytes(space.read(Gpa(used), 6 + 8 * num))
        except MissingData:
            return None
        buf = np.frombuffer(d + a + bytes(-len(d + a) % 8) + u, dtype=np.uint8)
        p, uo = 0, len(d + a) + (-len(d + a) % 8)
    else:
        buf = np.frombuffer(bytes(space.read(Gpa(lo), hi - lo)), dtype=np.uint8)
        if (avail - desc) != 16 * num:
            d = bytes(buf[desc - lo:desc - lo + 16 * num])
            a = bytes(buf[avail - lo:avail - lo + 6 + 2 * num])
            u = bytes(buf[used - lo:used - lo + 6 + 8 * num])
            buf = np.frombuffer(d + a + bytes(-len(d + a) % 8) + u, dtype=np.uint8)
            p, uo = 0, len(d + a) + (-len(d + a) % 8)
        else:
            p, uo = desc - lo, used - lo
            if p % 8:
                buf = np.frombuffer(bytes(buf[p:]), dtype=np.uint8)
                p, uo = 0, uo - p
    if uo % 4:
        return None
    if len(buf) % 8:                # the word views stop at a multiple of 8 bytes
        buf = np.concatenate([buf, np.zeros(8 - len(buf) % 8, dtype=np.uint8)])
    if not pass2(buf, num, np.array([p], np.int64), np.array([uo], np.int64), bo, ram)[0]:
        return None
    lay = vring_layouts(bo == "<")
    af, ai = (int(x) for x in buf[p + 16 * num:p + 16 * num + 4].view(lay.u16_dtype))
    uf, ui = (int(x) for x in buf[uo:uo + 4].view(lay.u16_dtype))
    if ((ai - ui) & 0xFFFF) > num or af > 1 or uf > 1:
        return None
    ev, (af, ai, uf, ui), empty = pass3(buf, 0, num, p, uo, bo, ram)
    layout, known = layout_of(num, avail, used)
    if avail != desc + 16 * num:
        layout, known = "separate", False
    if known:
        ev.add("layout")
    return CarvedRing(num, desc, avail, used, af, ai, uf, ui, confidence(ev),
                      layout if known or layout == "separate" else "driver", tuple(sorted(ev)),
                      empty=empty)


PACKED_FLAGS = VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED | DESC_FLAGS_MASK


def check_packed_ring(space: AddressSpace, num: int, desc: int, driver: int, device: int, *,
                      little_endian: bool = True,
                      ram: RamMap | None = None) -> CarvedRing | None:
    """Whether a packed ring (virtio 1.2 2.8) of ``num`` entries stands at these addresses: a
    descriptor ring (``addr``, ``len``, ``id``, ``flags``) with only the spec's flags, ids of
    the descriptors marked available or used ``< num``, buffers in RAM, and driver/device event
    areas (``off_wrap``, ``flags`` ``<= 2``) whose offsets are ``< num``. An untouched ring (no
    flags) is not accepted: nothing tells it from free memory.

    :return: a :class:`CarvedRing` with ``layout`` ``"packed"``, ``avail``/``used`` the driver
        and device event areas (QMP ``vring-avail``/``vring-used``) and their ``flags``/
        ``off_wrap`` in ``avail_flags``/``avail_idx`` and ``used_flags``/``used_idx``; or ``None``.
    """
    if num not in NUMS or desc % 16 or driver % 4 or device % 4 or min(desc, driver, device) < 0:
        return None
    lay = vring_layouts(little_endian)
    ram = ram if ram is not None else RamMap.of(space)
    try:
        ring = np.frombuffer(bytes(space.read(Gpa(desc), 16 * num)), lay.packed_desc_dtype)
        drv = np.frombuffer(bytes(space.read(Gpa(driver), 4)), lay.u16_dtype)
        dev = np.frombuffer(bytes(space.read(Gpa(device), 4)), lay.u16_dtype)
    except MissingData:
        return None
    flags = ring["flags"]
    marked = (flags & (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED)) != 0
    if (flags & ~np.uint16(PACKED_FLAGS)).any() or (ring["id"][marked] >= num).any() \
            or not marked.any():
        return None
    addrs = ring["addr"][ring["addr"] != 0]
    if not ram.contains(addrs).all():
        return None
    if drv[1] > 2 or dev[1] > 2 or (drv[0] & 0x7FFF) >= num or (dev[0] & 0x7FFF) >= num:
        return None
    ev = {"packed", "descs"} if len(addrs) else {"packed"}
    return CarvedRing(num, desc, driver, device, int(drv[1]), int(drv[0]), int(dev[1]),
                      int(dev[0]), confidence(ev), "packed", tuple(sorted(ev)))
