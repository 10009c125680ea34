"""Tiny guest memories holding split rings, for unit tests (volatility's ``BufferDataLayer`` idea).

:class:`BytesSpace` is an :class:`~vdecode.space.base.AddressSpace` over one or more byte runs;
:func:`put_ring` writes a split ring (descriptor table, avail ring, used ring) into a bytearray
with the structs of :class:`~vdecode.virtio.layouts.VringLayouts`, so tests build rings with the
same code path that parses them. :func:`put_split_ring` writes one in any layout (legacy, Linux's
cache-line one, separate areas) with real chains and, optionally, the guest driver's
``struct vring`` record, for the carver's tests (written into ELF dumps by ``elf_dump.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from vdecode.errors import MissingData
from vdecode.virtio.layouts import VringLayouts


class BytesSpace:
    """Guest-physical memory made of ``{gpa: bytes}`` runs (sorted, non-overlapping)."""

    def __init__(self, runs: dict[int, bytes | bytearray], name: str = "test-memory") -> None:
        self.name = name
        self.runs = sorted((gpa, bytes(data)) for gpa, data in runs.items())

    def read(self, gpa: int, n: int) -> bytes:
        for start, data in self.runs:
            if start <= gpa and gpa + n <= start + len(data):
                return data[gpa - start:gpa - start + n]
        raise MissingData(self.name, f"guest-physical {gpa:#x}+{n} is not in the dump")

    def ranges(self) -> list[tuple[int, int]]:
        return [(start, len(data)) for start, data in self.runs]

    def is_present(self, gpa: int, n: int) -> bool:
        return any(start <= gpa and gpa + n <= start + len(data) for start, data in self.runs)


@dataclass
class RingAt:
    desc: int
    avail: int
    used: int
    num: int


def put_ring(mem: bytearray, base: int, num: int, descs: list[tuple[int, int, int, int]],
             avail_heads: list[int], *, layouts: VringLayouts, avail_idx: int | None = None,
             avail_flags: int = 0, used: list[tuple[int, int]] = (), used_idx: int = 0,
             used_flags: int = 0, used_event: int = 0, avail_event: int = 0) -> RingAt:
    """Write a legacy-layout split ring at ``base`` (offset into ``mem``, also its gpa if ``mem``
    starts at 0): ``descs`` are ``(addr, len, flags, next)``, missing entries are zero."""
    desc_at = base
    avail_at = desc_at + 16 * num
    used_at = (avail_at + layouts.avail_size(num, True) + 4095) & ~4095
    for i, (addr, length, flags, nxt) in enumerate(descs):
        mem[desc_at + 16 * i:desc_at + 16 * i + 16] = layouts.desc.build(
            dict(addr=addr, len=length, flags=flags, next=nxt))
    mem[avail_at:avail_at + 4] = layouts.avail_header.build(
        dict(flags=avail_flags, idx=len(avail_heads) if avail_idx is None else avail_idx))
    order = "little" if layouts.little_endian else "big"
    for slot, head in enumerate(avail_heads):
        mem[avail_at + 4 + 2 * slot:avail_at + 6 + 2 * slot] = int(head).to_bytes(2, order)
    mem[avail_at + 4 + 2 * num:avail_at + 6 + 2 * num] = int(used_event).to_bytes(2, order)
    mem[used_at:used_at + 4] = layouts.used_header.build(dict(flags=used_flags, idx=used_idx))
    for slot, (id_, length) in enumerate(used):
        mem[used_at + 4 + 8 * slot:used_at + 12 + 8 * slot] = layouts.used_elem.build(dict(id=id_, len=length))
    mem[used_at + 4 + 8 * num:used_at + 6 + 8 * num] = int(avail_event).to_bytes(2, order)
    return RingAt(desc_at, avail_at, used_at, num)


def put_split_ring(mem: bytearray, desc: int, num: int, *, avail: int | None = None,
                   used: int | None = None, used_align: int = 4096, layouts: VringLayouts,
                   chains: list[list[tuple[int, int, int]]] = (), completed: int = 0,
                   avail_flags: int = 0, driver_at: int | None = None,
                   driver_offset: int = 0xFFFF888000000000, driver_index: int = 0,
                   driver_device: int = 0, guest_little_endian: bool | None = None) -> RingAt:
    """Write a split ring in any layout, with real chains, for the carver's tests.

    ``chains`` are lists of ``(addr, len, flags)`` buffers; each becomes a chain (NEXT links
    added) and an avail entry; the first ``completed`` of them are also in the used ring. The
    avail ring defaults to ``desc + 16*num`` and the used ring to ``align_up(avail + 6 + 2*num,
    used_align)`` (the legacy layout for 4096, Linux's modern one for 64). With ``driver_at``, a
    Linux-style ``struct vring_virtqueue`` tail is written there: ``struct virtqueue``'s ``vdev``,
    ``index``, ``num_free``, ``num_max`` 96 bytes before a ``struct vring`` with driver-virtual
    pointers (``gpa + driver_offset``), in ``guest_little_endian`` order (default: the ring's;
    a big-endian guest's virtio 1.x ring is little-endian, its driver's records big).
    """
    avail = desc + 16 * num if avail is None else avail
    used = (avail + 6 + 2 * num + used_align - 1) // used_align * used_align if used is None else used
    order = "little" if layouts.little_endian else "big"
    slot, heads = 0, []
    for chain in chains:
        heads.append(slot)
        for k, (addr, length, flags) in enumerate(chain):
            more = k + 1 < len(chain)
            mem[desc + 16 * slot:desc + 16 * slot + 16] = layouts.desc.build(dict(
                addr=addr, len=length, flags=flags | (1 if more else 0), next=slot + 1 if more else 0))
            slot += 1
    mem[avail:avail + 4] = layouts.avail_header.build(dict(flags=avail_flags, idx=len(heads)))
    for i, h in enumerate(heads):
        mem[avail + 4 + 2 * i:avail + 6 + 2 * i] = h.to_bytes(2, order)
    mem[used:used + 4] = layouts.used_header.build(dict(flags=0, idx=completed))
    for i, h in enumerate(heads[:completed]):
        mem[used + 4 + 8 * i:used + 12 + 8 * i] = layouts.used_elem.build(dict(id=h, len=1))
    if driver_at is not None:
        if guest_little_endian is not None:
            order = "little" if guest_little_endian else "big"
        u64 = lambda v: int(v).to_bytes(8, order)        # noqa: E731
        mem[driver_at - 64:driver_at - 56] = u64(driver_device or driver_offset + driver_at + 4096)
        _driver_counts(mem, driver_at, num, driver_index, order)
        mem[driver_at + 8:driver_at + 32] = (u64(desc + driver_offset) + u64(avail + driver_offset)
                                             + u64(used + driver_offset))
    return RingAt(desc, avail, used, num)


def put_packed_ring(mem: bytearray, desc: int, driver: int, device: int, num: int, *,
                    buffers: list[tuple[int, int, int]] = (), off_wrap: int = 0x8000,
                    event_flags: int = 2, driver_at: int | None = None,
                    driver_offset: int = 0xFFFF888000000000, driver_index: int = 0,
                    little_endian: bool = True) -> RingAt:
    """Write a packed ring (virtio 1.2 2.8): ``buffers`` ``(addr, len, id)`` as descriptors the
    device has used in the first wrap (AVAIL and USED set), and both event areas; with
    ``driver_at``, the driver's ``struct { num; desc; driver; device; }`` record (as
    :func:`put_split_ring` writes it, 96 bytes of ``struct virtqueue`` before)."""
    order = "little" if little_endian else "big"
    for i, (addr, length, id_) in enumerate(buffers):
        mem[desc + 16 * i:desc + 16 * i + 16] = (addr.to_bytes(8, order) + length.to_bytes(4, order)
                                                 + id_.to_bytes(2, order)
                                                 + (0x8080 | 2).to_bytes(2, order))
    for area in (driver, device):
        mem[area:area + 4] = off_wrap.to_bytes(2, order) + event_flags.to_bytes(2, order)
    if driver_at is not None:
        u64 = lambda v: int(v).to_bytes(8, order)        # noqa: E731
        mem[driver_at - 64:driver_at - 56] = u64(driver_offset + driver_at + 4096)
        _driver_counts(mem, driver_at, num, driver_index, order)
        mem[driver_at + 8:driver_at + 32] = (u64(desc + driver_offset) + u64(driver + driver_offset)
                                             + u64(device + driver_offset))
    return RingAt(desc, driver, device, num)


def _driver_counts(mem: bytearray, driver_at: int, num: int, index: int, order: str) -> None:
    """The ``unsigned int`` fields around a ``struct vring`` at ``driver_at``: ``struct
    virtqueue``'s ``index``, ``num_free`` (``num``: all free) and ``num_max`` 56 to 44 bytes
    before, and the record's ``num`` followed by its padding (in a big-endian guest a u32 is the
    upper half of its u64 word)."""
    u32 = lambda v: int(v).to_bytes(4, order)            # noqa: E731
    mem[driver_at - 56:driver_at - 40] = u32(index) + u32(num) + u32(num) + bytes(4)
    mem[driver_at:driver_at + 8] = u32(num) + bytes(4)
