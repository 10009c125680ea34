"""
Packed virtqueues
-----------------
Reads ``struct pvirtq_desc`` rings and the two ``struct pvirtq_event_suppress`` areas (virtio 1.2
spec 2.8 "Packed Virtqueues"; QEMU v7.2.0 ``hw/virtio/virtio.c`` ``VRingPackedDesc``,
``VRingPackedDescEvent``), and finds the elements the driver made available that the device has
not taken, from ``last_avail_idx`` on, with array operations over the whole ring.

A descriptor is available when its ``AVAIL`` bit differs from its ``USED`` bit and ``AVAIL``
equals the driver's wrap counter for that lap (2.8.1). The wrap counter at ``last_avail_idx`` is
read from the descriptor there and flips where the walk passes the end of the ring, so stale
descriptors of the previous lap are not mistaken for new ones.
"""

from __future__ import annotations


import numpy as np

from vdecode.errors import MissingData
from vdecode.frozen import record
from vdecode.space.base import AddressSpace, Gpa
from vdecode.space.ram_map import RamMap
from vdecode.virtio.layouts import VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_SIZE, vring_layouts

__all__ = ("find_used_boundary", "VRING_PACKED_DESC_F_AVAIL", "VRING_PACKED_DESC_F_USED", "VRING_PACKED_EVENT_FLAG_ENABLE",
           "VRING_PACKED_EVENT_FLAG_DISABLE", "VRING_PACKED_EVENT_FLAG_DESC", "packed_desc_dtype",
           "PackedRing", "PackedWalk", "read_packed_ring", "walk_packed_pending")

# include/standard-headers/linux/virtio_ring.h
VRING_PACKED_DESC_F_AVAIL = 1 << 7
VRING_PACKED_DESC_F_USED = 1 << 15
VRING_PACKED_EVENT_FLAG_ENABLE = 0
VRING_PACKED_EVENT_FLAG_DISABLE = 1
VRING_PACKED_EVENT_FLAG_DESC = 2


def packed_desc_dtype(little_endian: bool = True) -> np.dtype:
    """``struct pvirtq_desc`` {le64 addr; le32 len; le16 id; le16 flags} (16 bytes)."""
    return vring_layouts(little_endian).packed_desc_dtype


@record
class PackedRing:
    """A packed ring: descriptors, the driver event area (``vring.avail`` in QEMU) and the device
    event area (``vring.used``), each event as ``(off_wrap, flags)``."""

    num: int
    descs: np.ndarray
    driver_event: tuple[int, int]
    device_event: tuple[int, int]


def find_used_boundary(ring: PackedRing) -> int:
    """Where the device writes its next used element (QEMU's ``vq->used_idx``), from the flags.

    QEMU 7.2 ``virtqueue_packed_fill_desc`` writes each used element at ``used_idx + i`` with
    ``AVAIL == USED == used_wrap_counter``; the slots before ``used_idx`` carry this lap's bit,
    the slots from it on either the previous lap's (used, other bit) or a driver's new offer
    (``AVAIL != USED``). So the boundary is the first slot that is not used with slot 0's lap,
    and 0 when slot 0 itself is not such a slot or every slot is (the device just wrapped).
    Chains without INDIRECT leave their tails ``AVAIL != USED`` and would end the scan early;
    Linux uses one slot per request when it negotiated INDIRECT.

    >>> import numpy as np
    >>> flags = np.array([0x8080] * 7 + [0], dtype="<u2")
    >>> d = np.zeros(8, dtype=packed_desc_dtype(True)); d["flags"] = flags
    >>> find_used_boundary(PackedRing(8, d, (0, 0), (0, 0)))
    7
    """
    flags = ring.descs["flags"].astype(np.uint32)
    avail = (flags & VRING_PACKED_DESC_F_AVAIL) != 0
    used = (flags & VRING_PACKED_DESC_F_USED) != 0
    this_lap = (avail == used) & (used == used[0])
    if not this_lap[0]:
        return 0
    off = np.flatnonzero(~this_lap)
    return int(off[0]) if off.size else 0


def read_packed_ring(space: AddressSpace, desc_gpa: int, driver_gpa: int, device_gpa: int,
                     num: int, *, little_endian: bool = True, queue: str = "queue") -> PackedRing:
    """Read a packed ring (``num`` already bounded by the caller).

    :raises MissingData: part of it is not in the dump (the message names the area).
    """
    dt = packed_desc_dtype(little_endian)
    u16 = vring_layouts(little_endian).u16_dtype

    def read(gpa: int, n: int, what: str) -> bytes:
        try:
            return bytes(space.read(Gpa(gpa), n))
        except MissingData as err:
            raise MissingData(err.source, f"{queue} {what} at guest-physical {gpa:#x}: {err.reason}",
                              offset=err.offset) from err

    descs = np.frombuffer(read(desc_gpa, VRING_DESC_SIZE * num, "packed descriptor ring"), dtype=dt)
    drv = np.frombuffer(read(driver_gpa, 4, "driver event area"), dtype=u16)
    dev = np.frombuffer(read(device_gpa, 4, "device event area"), dtype=u16)
    return PackedRing(num, descs, (int(drv[0]), int(drv[1])), (int(dev[0]), int(dev[1])))


@record
class PackedWalk:
    """The pending elements: ``first[k]`` is the slot of element ``k``'s first descriptor,
    ``slots[k]`` all its slots, ``ids[k]`` the buffer id (of its last descriptor), ``problems[k]``
    as in :class:`~vdecode.virtio.ring_walk.QueueWalk`, ``bad_descs[k]`` the slots at fault;
    ``incomplete`` counts descriptors of a chain the driver had not finished publishing."""

    first: np.ndarray
    slots: list[np.ndarray]
    ids: np.ndarray
    problems: list[list[str]]
    bad_descs: list[list[int]]
    incomplete: int = 0


def walk_packed_pending(ring: PackedRing, last_avail_idx: int, ram: RamMap) -> PackedWalk:
    """The elements available from ``last_avail_idx`` on, checked for zero lengths, buffers
    outside guest RAM and bad indirect table sizes (vectorised over the ring).

    :param last_avail_idx: QEMU's ``vq->last_avail_idx`` (a slot, ``< num``).
    :param ram: guest RAM (:class:`~vdecode.space.ram_map.RamMap`).
    """
    num, descs = ring.num, ring.descs
    flags = descs["flags"].astype(np.int64)
    start = int(last_avail_idx) % num
    order = (start + np.arange(num)) % num
    avail_bit = (flags & VRING_PACKED_DESC_F_AVAIL) != 0
    used_bit = (flags & VRING_PACKED_DESC_F_USED) != 0
    wrap = bool(avail_bit[start])
    expected = np.where(order >= start, wrap, not wrap)          # the counter flips at the end
    pending = (avail_bit[order] != used_bit[order]) & (avail_bit[order] == expected)
    stop = int(np.argmin(pending)) if not pending.all() else num
    run = order[:stop]
    ends = np.flatnonzero((flags[run] & VRING_DESC_F_NEXT) == 0)
    incomplete = len(run) - (int(ends[-1]) + 1 if len(ends) else 0)
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64) if len(ends) else np.zeros(0, np.int64)
    slots = [run[s:e + 1] for s, e in zip(starts.tolist(), ends.tolist())]
    problems: list[list[str]] = [[] for _ in slots]
    bad: list[list[int]] = [[] for _ in slots]
    if slots:
        owner = np.repeat(np.arange(len(slots)), [len(s) for s in slots])
        members = np.concatenate(slots)
        ln = descs["len"][members]
        indirect = (flags[members] & VRING_DESC_F_INDIRECT) != 0
        zero = ln == 0
        out = ram.outside(descs["addr"][members], ln) & ~zero
        bad_len = indirect & ((ln % VRING_DESC_SIZE) != 0)
        for mask, code in ((zero & ~indirect, "zero_len"), (zero & indirect, "indirect_len"),
                           (bad_len, "indirect_len"), (out & indirect, "indirect_map"),
                           (out & ~indirect, "bad_addr")):
            for k, d in zip(owner[mask].tolist(), members[mask].tolist()):
                if code not in problems[k]:
                    problems[k].append(code)
                bad[k].append(int(d))
    ids = descs["id"][run[ends]].astype(np.int64)
    first = run[starts].astype(np.int64)
    return PackedWalk(first, slots, ids, problems, bad, incomplete)
