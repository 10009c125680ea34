"""
Split virtqueues in guest memory
--------------------------------
Reads a split ring (virtio 1.2 spec 2.7; QEMU v7.2.0 ``hw/virtio/virtio.c`` ``VRingDesc``,
``VRingAvail``, ``VRingUsed``) from an :class:`~vdecode.space.base.AddressSpace`: the descriptor
table as one numpy structured array, ``avail->flags/idx/ring[]/used_event`` and
``used->flags/idx/ring[]/avail_event``. Only the bytes of the three areas are read, each once, so
the cost follows ``num``, never the dump size. Event words are read only when
``VIRTIO_RING_F_EVENT_IDX`` was negotiated, like QEMU's region caches
(``virtio_queue_get_avail_size``/``_used_size``).

Nothing here checks the ring's contents; :mod:`vdecode.virtio.chains` walks and validates.
"""

from __future__ import annotations


import numpy as np

from vdecode.errors import MissingData, RingError
from vdecode.frozen import record
from vdecode.space.base import AddressSpace, Gpa
from vdecode.virtio.layouts import VIRTQUEUE_MAX_SIZE, VRING_DESC_SIZE, VringLayouts

__all__ = ("SplitRing", "read_split_ring", "read_desc_table", "read_avail_ring", "read_used_ring",
           "validate_num")


def validate_num(source: str, num: int, *, limit: int = VIRTQUEUE_MAX_SIZE) -> int:
    """Bound a queue size before sizing reads with it.

    :raises RingError: ``num`` is 0 or above ``limit`` (spec maximum 32768).
    """
    if not 0 < num <= limit:
        raise RingError(source, f"queue size {num} is outside 1..{limit}")
    return num


def _read(space: AddressSpace, gpa: int, n: int, what: str) -> bytes:
    try:
        return bytes(space.read(Gpa(gpa), n))      # a copy: arrays must not pin the mapped file
    except MissingData as err:
        raise MissingData(err.source, f"{what}: {err.reason}", offset=err.offset) from err


def read_desc_table(space: AddressSpace, desc_gpa: int, num: int, layouts: VringLayouts,
                    what: str = "descriptor table") -> np.ndarray:
    """``num`` ``struct vring_desc`` at ``desc_gpa`` as one structured array (``layouts.desc_dtype``).

    Also reads an indirect table (``num`` = ``len // 16``).

    :raises MissingData: a byte of the table is not in the dump.
    """
    data = _read(space, desc_gpa, num * VRING_DESC_SIZE, f"{what} at guest-physical {desc_gpa:#x}")
    return np.frombuffer(data, dtype=layouts.desc_dtype)


@record
class AvailRing:
    """``struct vring_avail``: ``used_event`` is ``None`` when EVENT_IDX is off."""

    flags: int
    idx: int
    ring: np.ndarray            # u16[num], heads by slot
    used_event: int | None


@record
class UsedRing:
    """``struct vring_used``: ``avail_event`` is ``None`` when EVENT_IDX is off."""

    flags: int
    idx: int
    ring: np.ndarray            # used_elem_dtype[num]: id, len
    avail_event: int | None


def read_avail_ring(space: AddressSpace, avail_gpa: int, num: int, layouts: VringLayouts, *,
                    event_idx: bool, queue: str = "queue") -> AvailRing:
    """The avail ring at ``avail_gpa`` (one read of ``4 + 2*num (+2)`` bytes)."""
    size = layouts.avail_size(num, event_idx)
    words = np.frombuffer(_read(space, avail_gpa, size, f"{queue} avail ring at guest-physical {avail_gpa:#x}"),
                          dtype=layouts.u16_dtype)
    return AvailRing(int(words[0]), int(words[1]), words[2:2 + num],
                     int(words[2 + num]) if event_idx else None)


def read_used_ring(space: AddressSpace, used_gpa: int, num: int, layouts: VringLayouts, *,
                   event_idx: bool, queue: str = "queue") -> UsedRing:
    """The used ring at ``used_gpa`` (one read of ``4 + 8*num (+2)`` bytes)."""
    size = layouts.used_size(num, event_idx)
    data = _read(space, used_gpa, size, f"{queue} used ring at guest-physical {used_gpa:#x}")
    head = np.frombuffer(data, dtype=layouts.used_header_dtype, count=1)[0]
    ring = np.frombuffer(data, dtype=layouts.used_elem_dtype, count=num, offset=4)
    event = int(np.frombuffer(data, dtype=layouts.u16_dtype, count=1, offset=4 + 8 * num)[0]) \
        if event_idx else None
    return UsedRing(int(head["flags"]), int(head["idx"]), ring, event)


@record
class SplitRing:
    """One split virtqueue as the guest left it."""

    num: int
    descs: np.ndarray           # layouts.desc_dtype[num]
    avail: AvailRing
    used: UsedRing
    layouts: VringLayouts


def read_split_ring(space: AddressSpace, desc_gpa: int, avail_gpa: int, used_gpa: int, num: int,
                    layouts: VringLayouts, *, event_idx: bool, queue: str = "queue") -> SplitRing:
    """Read the three areas of a split ring.

    :param desc_gpa: ``vring.desc`` (QMP ``vring-desc``); likewise ``avail_gpa``, ``used_gpa``.
    :param num: ``vring.num``, bounded by :func:`validate_num` before any read.
    :param event_idx: ``VIRTIO_RING_F_EVENT_IDX`` negotiated: read ``used_event``/``avail_event``.
    :param queue: names the queue in error messages (e.g. ``"queue 2 of /machine/..."``).
    :raises RingError: ``num`` out of range.
    :raises MissingData: part of the ring is not in the dump.
    """
    validate_num(space.name, num)
    return SplitRing(
        num=num,
        descs=read_desc_table(space, desc_gpa, num, layouts, f"{queue} descriptor table"),
        avail=read_avail_ring(space, avail_gpa, num, layouts, event_idx=event_idx, queue=queue),
        used=read_used_ring(space, used_gpa, num, layouts, event_idx=event_idx, queue=queue),
        layouts=layouts,
    )
