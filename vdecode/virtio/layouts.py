"""
Split-ring layouts
------------------
``struct vring_desc``, ``vring_avail`` and ``vring_used`` (virtio 1.2 spec, 2.7 "Split Virtqueues";
QEMU v7.2.0 ``hw/virtio/virtio.c``: ``VRingDesc``, ``VRingAvail``, ``VRingUsedElem``, ``VRingUsed``),
declared once each as a :class:`~vdecode.binary.Layout`: numpy dtypes for whole tables, and the
construct ``Struct``\\ s made from the same declarations when asked for. Byte order
is chosen once per :class:`VringLayouts`: little for virtio 1.x devices, the guest's for legacy
ones (QEMU ``include/hw/virtio/virtio-access.h`` ``virtio_access_is_big_endian``).

These layouts are fixed by the spec, so they live here rather than in ``formats/``.
"""

from __future__ import annotations

import functools

import numpy as np

from vdecode.binary import Layout

__all__ = ("VringLayouts", "vring_layouts", "VRING_DESC_F_NEXT", "VRING_DESC_F_WRITE",
           "VRING_DESC_F_INDIRECT", "VRING_AVAIL_F_NO_INTERRUPT", "VRING_USED_F_NO_NOTIFY",
           "VRING_DESC_SIZE", "VIRTQUEUE_MAX_SIZE")

# include/standard-headers/linux/virtio_ring.h
VRING_DESC_F_NEXT = 1
VRING_DESC_F_WRITE = 2
VRING_DESC_F_INDIRECT = 4
VRING_AVAIL_F_NO_INTERRUPT = 1
VRING_USED_F_NO_NOTIFY = 1
VRING_DESC_SIZE = 16                 # sizeof(VRingDesc)
VIRTQUEUE_MAX_SIZE = 32768           # the spec's largest split queue (QEMU's own cap is 1024)


class VringLayouts:
    """Split-ring structs and dtypes for one byte order.

    ``desc``/``desc_dtype`` is one ``struct vring_desc`` (16 bytes); ``avail_header`` and
    ``used_header`` are the ``flags``/``idx`` pair that opens each ring; ``used_elem`` is one
    ``struct vring_used_elem`` (8 bytes); ``u16_dtype`` reads ``avail->ring[]`` and the event words.
    Parsing and building agree with the dtypes byte for byte.

    Example::

        >>> lay = VringLayouts(little_endian=True)
        >>> lay.desc.sizeof(), lay.desc_dtype.itemsize
        (16, 16)
        >>> lay.desc.parse(bytes(range(16))).next
        3854
    """

    def __init__(self, little_endian: bool) -> None:
        self.little_endian = little_endian
        o = "<" if little_endian else ">"
        self.layouts = {
            "desc": Layout(
                o, ("addr", "u64", "guest-physical buffer address"),
                ("len", "u32", "buffer length (indirect: table size in bytes)"),
                ("flags", "u16", "VRING_DESC_F_NEXT | _WRITE | _INDIRECT"),
                ("next", "u16", "index of the next descriptor when NEXT is set")),
            "avail_header": Layout(o, ("flags", "u16"), ("idx", "u16")),
            "used_header": Layout(o, ("flags", "u16"), ("idx", "u16")),
            "used_elem": Layout(o, ("id", "u32", "head of the used chain"),
                                ("len", "u32", "bytes written")),
            # packed rings (virtio 1.2, 2.8): struct pvirtq_desc; always little-endian in practice
            # (VERSION_1 is required), declared per byte order like the rest for symmetry
            "packed_desc": Layout(
                o, ("addr", "u64", "guest-physical buffer address"), ("len", "u32", "buffer length"),
                ("id", "u16", "buffer id (the chain's last descriptor)"),
                ("flags", "u16", "AVAIL (bit 7), USED (bit 15), NEXT, WRITE, INDIRECT")),
            # the request header a virtio-blk driver puts first in each request (virtio 1.2,
            # 5.2.6), in the device's byte order: read by buffer previews and by the carver's
            # device guess
            "blk_outhdr": Layout(
                o, ("type", "u32", "VIRTIO_BLK_T_IN, _OUT, _FLUSH, _GET_ID, _DISCARD..."),
                ("ioprio", "u32", "request priority"), ("sector", "u64", "first 512-byte sector")),
        }
        self.u16_dtype = np.dtype(o + "u2")
        self.u32_dtype = np.dtype(o + "u4")    # balloon PFN arrays

    def __getattr__(self, name: str):
        """``desc``, ``desc_dtype`` and so on: the construct ``Struct`` or the numpy dtype of one
        layout, made (and kept) when first asked for."""
        lay = self.__dict__.get("layouts", {}).get(name.removesuffix("_dtype"))
        if lay is None:
            raise AttributeError(name)
        value = lay.dtype if name.endswith("_dtype") else lay.struct
        self.__dict__[name] = value
        return value

    def __repr__(self) -> str:
        return f"VringLayouts(little_endian={self.little_endian})"

    # Sizes of the three areas (QEMU virtio_queue_get_{desc,avail,used}_size).
    @staticmethod
    def desc_size(num: int) -> int:
        return VRING_DESC_SIZE * num

    @staticmethod
    def avail_size(num: int, event_idx: bool) -> int:
        return 4 + 2 * num + (2 if event_idx else 0)

    @staticmethod
    def used_size(num: int, event_idx: bool) -> int:
        return 4 + 8 * num + (2 if event_idx else 0)


@functools.lru_cache(maxsize=2)
def vring_layouts(little_endian: bool) -> VringLayouts:
    """The (immutable, shared) :class:`VringLayouts` for a byte order."""
    return VringLayouts(little_endian)


def ring_areas(q, packed: bool) -> list[tuple[str, int, int]]:
    """``(name, address, size)`` of a queue's ring areas (virtio 1.2 2.7, 2.8)."""
    num = q.vring_num or 0
    if packed:
        return [("desc", q.desc or 0, 16 * num), ("driver event", q.avail or 0, 4),
                ("device event", q.used or 0, 4)]
    return [("desc", q.desc or 0, 16 * num), ("avail", q.avail or 0, 6 + 2 * num),
            ("used", q.used or 0, 6 + 8 * num)]
