"""
The driver anchor: ``struct vring`` records in guest RAM
--------------------------------------------------------
The spec's ``struct vring { unsigned int num; desc; avail; used; }`` (legacy interface, virtio
1.2 2.7.2 / Linux ``include/uapi/linux/virtio_ring.h``), which a driver keeps beside its queue: a
power-of-two ``num`` followed by three pointers with ``avail - desc == 16*num``. The pointers are
driver-virtual; :func:`apply_drivers` votes the offset to guest-physical from the rings the ring
anchor found, then translates every record and confirms its ring structurally
(:mod:`vdecode.virtio.ring_checks`). This finds the rings the ring anchor cannot (a queue the
driver never used is all zeros, like any free page) and settles the device area's alignment.
Where Linux's ``struct virtqueue`` (``include/linux/virtio.h``) precedes it, the queue's name
(``"req.0"``, ``"input.0"``), index and ``struct virtio_device *`` are read too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np

from vdecode.space.ram_map import RamMap
from vdecode.errors import MissingData
from vdecode.space.base import AddressSpace, Gpa
from vdecode.virtio.carved_ring import PAGE, W_DRIVER, CarvedRing, confidence
from vdecode.virtio.layouts import VIRTQUEUE_MAX_SIZE
from vdecode.virtio.ring_checks import check_packed_ring, ring_at

__all__ = ("driver_records", "apply_drivers")

SCAN_BLOCK = 1 << 17          # u64 words per step of the word scan: temporaries stay in cache


def _small_powers_candidates(words: np.ndarray) -> np.ndarray:
    """Indices of words in ``1..VIRTQUEUE_MAX_SIZE`` (power-of-two filtering follows on the few
    found), block by block into preallocated buffers."""
    tmp = np.empty(min(SCAN_BLOCK, len(words)), dtype=np.uint64)
    mask = np.empty(len(tmp), dtype=bool)
    one, top = np.uint64(1), np.uint64(VIRTQUEUE_MAX_SIZE)
    found = []
    for lo in range(0, len(words), SCAN_BLOCK):
        block = words[lo:lo + SCAN_BLOCK]
        t, m = tmp[:len(block)], mask[:len(block)]
        np.subtract(block, one, out=t)
        np.less(t, top, out=m)
        hit = np.flatnonzero(m)
        if len(hit):
            found.append(hit + lo)
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def driver_records(buf: np.ndarray, primary: int, gpa: int, bo: str) -> list[tuple]:
    """``struct vring`` look-alikes: ``(gpa of the struct, num, desc_va, avail_va, used_va,
    single)``. ``single``: the one-block shape (``avail - desc == 16*num``, used just after);
    otherwise three separate areas (desc on a page, areas disjoint), used only once the offset
    is known and only for rings that carry chains."""
    start = (-gpa) % 8
    n = (len(buf) - start) & ~7
    q = buf[start:start + n].view(bo + "u8")
    lim = min((primary - start + 7) // 8, len(q) - 3)
    if lim <= 0:
        return []
    words = q[:lim]
    if bo == ">":
        # ``unsigned int num`` and the padding after it: a big-endian u64 word reads num << 32
        words = (words >> np.uint64(32)) | (words << np.uint64(32))
    idx = _small_powers_candidates(words)
    num = words[idx]
    idx, num = idx[(num & (num - np.uint64(1))) == 0], num[(num & (num - np.uint64(1))) == 0]
    d = q[idx + 1]
    # both shapes below need a descriptor pointer that is non-zero and 16-aligned (the loose one
    # a page-aligned kernel pointer): most small powers of two in RAM are not followed by one
    pre = (d != 0) & (d % np.uint64(16) == 0)
    idx, num, d = idx[pre], num[pre], d[pre]
    a, u = q[idx + 2], q[idx + 3]
    single = (a - d == num * np.uint64(16)) & (d % np.uint64(16) == 0) & (d != 0)
    gap = u - a - (np.uint64(4) + np.uint64(2) * num)
    single &= (u > a) & (gap <= np.uint64(PAGE + 2))
    top = np.uint64(1 << 63)               # driver pointers: the upper (kernel) half
    loose = ~single & (d >= top) & (a >= top) & (u >= top) & (d % np.uint64(PAGE) == 0) \
        & (a % np.uint64(2) == 0) & (u % np.uint64(4) == 0) & (num >= np.uint64(2))
    if loose.any():
        k = np.flatnonzero(loose)
        nn = num[k].astype(np.int64)
        da, du, au = ((x - y).astype(np.int64) for x, y in ((a[k], d[k]), (u[k], d[k]), (u[k], a[k])))
        loose[k] = ((da >= 16 * nn) | (-da >= 6 + 2 * nn)) & ((du >= 16 * nn) | (-du >= 6 + 8 * nn)) \
            & ((au >= 6 + 2 * nn) | (-au >= 6 + 8 * nn))
    ok = single | loose
    return [(gpa + start + 8 * int(i), int(k), int(x), int(y), int(z), bool(s))
            for i, k, x, y, z, s in zip(idx[ok], num[ok], d[ok], a[ok], u[ok], single[ok])]


def _read_cstr(space: AddressSpace, gpa: int) -> str | None:
    try:
        raw = bytes(space.read(Gpa(gpa), 32))
    except MissingData:
        return None
    end = raw.find(b"\0")
    s = raw[:end] if end > 0 else b""
    if not s or not all(0x20 < c < 0x7F for c in s):
        return None
    return s.decode()


def _driver_queue(space: AddressSpace, struct_gpa: int, num: int, offset: int,
                  bo: str) -> tuple[str | None, int | None, int | None]:
    """Linux (6.x) ``struct vring_virtqueue`` holds ``struct virtqueue { list; callback; const
    char *name; struct virtio_device *vdev; unsigned int index, num_free, num_max; ... }`` 96
    bytes before its ``struct vring``: ``(name, index, vdev)`` when those fields are sane
    (``vdev`` a pointer in the same mapping, ``num_free <= num``, ``num_max`` 0 or ``num``), the
    name only when it points into that mapping (module ``.rodata`` names do not)."""
    if struct_gpa < 96:
        return None, None, None
    try:
        raw = np.frombuffer(bytes(space.read(Gpa(struct_gpa - 96), 96)), dtype=bo + "u8")
    except MissingData:
        return None, None, None
    name_va, vdev = int(raw[3]), int(raw[4])
    lo, hi = (0, 32) if bo == "<" else (32, 0)       # where a u32 sits in its u64 word
    index, num_free = (int(raw[5]) >> lo) & 0xFFFFFFFF, (int(raw[5]) >> hi) & 0xFFFFFFFF
    num_max = (int(raw[6]) >> lo) & 0xFFFFFFFF
    if not (offset < vdev < offset + (1 << 46)) or num_free > num or num_max not in (0, num) \
            or index >= 1024:
        return None, None, None
    name = _read_cstr(space, name_va - offset) if offset < name_va < offset + (1 << 46) else None
    return name, index, vdev


def apply_drivers(space: AddressSpace, rings: dict[int, CarvedRing], drivers: list[tuple],
                  bo: str, ram: RamMap, dbo: str | None = None,
                  offset: int | None = None) -> dict[int, CarvedRing]:
    """Vote the driver-virtual offset from records whose layout matches a carved ring (unless
    ``offset`` is known), then translate every record and confirm its ring structurally (rings
    in byte order ``bo``, the driver's ``struct virtqueue`` in the guest's, ``dbo``: default
    ``bo``)."""
    dbo = dbo or bo
    if offset is not None:
        return _translate(space, rings, drivers, bo, ram, dbo, offset)
    by_shape: dict[tuple[int, int, int], list[int]] = {}
    for r in rings.values():
        by_shape.setdefault((r.num, r.avail - r.desc, r.used - r.desc), []).append(r.desc)
    votes: Counter[int] = Counter()
    for _, num, d, a, u, _single in drivers:
        for desc in by_shape.get((num, a - d, u - d), ()):
            # (an offset of 0: a kernel whose RAM is identity-mapped, s390x's)
            if d >= desc and (d - desc) % PAGE == 0:
                votes[d - desc] += 1
    if not votes:
        return rings
    offset, count = votes.most_common(1)[0]
    if count < 2 and len(votes) > 1:
        return rings
    return _translate(space, rings, drivers, bo, ram, dbo, offset)


def _translate(space: AddressSpace, rings: dict[int, CarvedRing], drivers: list[tuple], bo: str,
               ram: RamMap, dbo: str, offset: int) -> dict[int, CarvedRing]:
    out = dict(rings)
    top = ram.top
    for sgpa, num, d, a, u, single in drivers:
        desc, avail, used = d - offset, a - offset, u - offset
        if not (0 <= min(desc, avail, used) and max(desc, avail, used) < top) \
                or not space.is_present(Gpa(desc), 16 * num):
            continue
        if single:
            ring = ring_at(space, num, desc, avail, used, bo, ram)
        else:
            # Three separate areas: Linux allocates a split ring in one block, a packed ring in
            # three, so a packed reading (descriptors marked AVAIL/USED) wins; a packed ring
            # read as split has no NEXT flags and passes too. Else a split ring, with chains.
            ring = check_packed_ring(space, num, desc, avail, used, little_endian=bo == "<", ram=ram)
            if ring is None:
                ring = ring_at(space, num, desc, avail, used, bo, ram)
        if ring is None or (not single and not {"chains", "packed"} & set(ring.evidence)):
            continue
        name, index, vdev = _driver_queue(space, sgpa, num, offset, dbo)
        old = out.get(desc)
        if old is not None and old.num == num and (old.avail, old.used) == (avail, used):
            ev = set(old.evidence) | {"driver"}
            out[desc] = replace(old, evidence=tuple(sorted(ev)), confidence=confidence(ev),
                                alternatives=0, name=name, index=index, driver_va=d,
                                driver_gpa=sgpa, device_va=vdev)
        elif old is None or old.confidence < W_DRIVER:
            ev = set(ring.evidence) | {"driver"}
            out[desc] = replace(ring, evidence=tuple(sorted(ev)), confidence=confidence(ev),
                                name=name, index=index, driver_va=d, device_va=vdev,
                                driver_gpa=sgpa)
    return out
