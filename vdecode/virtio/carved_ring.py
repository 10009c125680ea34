"""
What a carved ring is
---------------------
:class:`CarvedRing` (one split or packed ring found in guest RAM, with the evidence for it), the
sizes and device-area alignments the carver tries (virtio 1.2 spec 2.7 "Split Virtqueues": ``num``
a power of two up to QEMU's ``VIRTQUEUE_MAX_SIZE``; the device area aligned to at least 4, a
cache line in Linux's modern ``vring_create_virtqueue_split``, a page in the legacy layout of
``vring_init``), and the evidence weights: confidence is ``1 - prod(1 - w)`` over the evidence
found (``docs/carving.md``).
"""

from __future__ import annotations


from vdecode.frozen import record
from vdecode.virtio.layouts import (VIRTQUEUE_MAX_SIZE, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT,
                                    VRING_DESC_F_WRITE)

__all__ = ("CarvedRing", "CONFIDENCE_THRESHOLD", "NUMS", "USED_ALIGNS", "PAGE", "OVERLAP",
           "DESC_FLAGS_MASK", "W_DRIVER", "UNKNOWN_LAYOUT_FACTOR", "ring_extent", "confidence")

PAGE = 4096
NUMS = tuple(1 << k for k in range(VIRTQUEUE_MAX_SIZE.bit_length()))     # 1 .. 32768
USED_ALIGNS = (4, 64, 128, 256, 4096)     # spec minimum, cache lines (Linux modern), legacy page
CONFIDENCE_THRESHOLD = 0.5
DESC_FLAGS_MASK = VRING_DESC_F_NEXT | VRING_DESC_F_WRITE | VRING_DESC_F_INDIRECT

# Evidence weights: confidence = 1 - prod(1 - w).
W_DRIVER = 0.9       # a struct vring in guest memory names these three addresses
W_CHAINS = 0.5       # used ids / outstanding heads are chains ending in the table, buffers in RAM
W_DESCS = 0.3        # non-zero descriptors, all with addresses in RAM
W_INDICES = 0.3      # non-zero idx with avail.idx - used.idx <= num
W_LAYOUT = 0.1       # device area at the legacy (4096) or Linux cache-line (64) alignment
W_PACKED = 0.3       # a packed descriptor ring with the spec's flags and valid event areas
UNKNOWN_LAYOUT_FACTOR = 0.6   # ring-anchor candidates whose device area no allocator would place


def ring_extent(num: int, align: int = PAGE) -> int:
    """Bytes from ``desc`` to the end of ``used`` (with event words) for the single-block layout.

    >>> ring_extent(256), ring_extent(256, 64)
    (10246, 6726)
    """
    avail_end = 16 * num + 4 + 2 * num + 2
    return -(-avail_end // align) * align + 4 + 8 * num + 2


OVERLAP = -(-ring_extent(VIRTQUEUE_MAX_SIZE) // PAGE) * PAGE


@record
class CarvedRing:
    """One split ring found in guest memory.

    ``desc``/``avail``/``used`` are guest-physical (QMP ``vring-desc``/``-avail``/``-used``);
    ``layout`` is ``"legacy"`` (device area page-aligned), ``"cacheline"`` (64), ``"align-N"``,
    or ``"driver"`` (taken from a driver's ``struct vring`` only). ``evidence`` names what was
    seen; ``alternatives`` counts other device-area positions that fitted equally well (0 when
    settled). ``name``/``index`` are the driver's queue name and index, ``device_va`` its
    ``struct virtio_device *`` (the same for every queue of one device), when found;
    ``driver_va`` is the driver's pointer to the descriptor table and ``driver_gpa`` where its
    ``struct vring`` record is (a slim dump must keep that page and the 96 bytes before it).
    ``little_endian`` is the ring's byte order (a legacy ring of a big-endian guest: big).
    """

    num: int
    desc: int
    avail: int
    used: int
    avail_flags: int
    avail_idx: int
    used_flags: int
    used_idx: int
    confidence: float
    layout: str
    evidence: tuple[str, ...] = ()
    alternatives: int = 0
    empty: bool = False
    name: str | None = None
    index: int | None = None
    driver_va: int | None = None
    driver_gpa: int | None = None
    device_va: int | None = None
    little_endian: bool = True

    @property
    def in_flight(self) -> int:
        """``avail.idx - used.idx`` modulo 2**16: buffers the device has not returned."""
        return (self.avail_idx - self.used_idx) & 0xFFFF


def packed_position(off_wrap: int) -> tuple[int, int]:
    """``(index, wrap counter)`` of a packed ring's event suppression ``off_wrap`` (virtio 1.1
    2.7.10 / 1.2 2.8.10: bits 0-14 the descriptor ring offset, bit 15 the wrap counter).

    >>> packed_position(32839), packed_position(1)
    ((71, 1), (1, 0))
    """
    return off_wrap & 0x7FFF, off_wrap >> 15


def packed_outstanding(ahead: int, behind: int, num: int) -> int:
    """Descriptors from position ``behind`` to ``ahead`` (each an ``off_wrap``) of a packed ring
    of ``num`` entries: the wrap counter tells laps apart (it is 1 on the first lap, flips at
    each), so positions count over two laps, as a split ring's indices count modulo 2**16.

    >>> packed_outstanding(0x8000 | 3, 250, 256)    # 250 on lap 0 (wrap 0), 3 on the next
    9
    """
    def pos(off_wrap: int) -> int:
        idx, wrap = packed_position(off_wrap)
        return idx + (0 if wrap else num)
    return (pos(ahead) - pos(behind)) % (2 * num)


def confidence(evidence: set[str]) -> float:
    """``1 - prod(1 - w)`` over the evidence names (unknown names weigh nothing).

    >>> confidence({"driver"}), confidence({"chains", "descs"})
    (0.9, 0.65)
    """
    weights = {"driver": W_DRIVER, "chains": W_CHAINS, "descs": W_DESCS, "indices": W_INDICES,
               "layout": W_LAYOUT, "packed": W_PACKED}
    p = 1.0
    for e in evidence:
        p *= 1.0 - weights.get(e, 0.0)
    return round(1.0 - p, 4)
