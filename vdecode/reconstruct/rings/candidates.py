"""Rank carved rings as candidates for a known device's queues.

:func:`match_rings` ties queues of a log's (or a QEMU core's) devices to rings
:func:`~vdecode.virtio.carve.carve_rings` found, from the logged ``vring_num`` and features, the
guest driver's bookkeeping the carver read (queue index, ``struct virtio_device *``) and the
buffers' kind (:func:`~vdecode.reconstruct.rings.kinds.classify_ring`); each
:class:`RingMatch` says how.
"""

from __future__ import annotations

from collections import Counter

from vdecode.frozen import record
from vdecode.reconstruct.rings.kinds import RingKind, classify_ring
from vdecode.sources.qemu_state import VirtIODeviceState
from vdecode.space.base import AddressSpace
from vdecode.virtio.carved_ring import CONFIDENCE_THRESHOLD, CarvedRing
from vdecode.virtio.device import (VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, has_feature,
                                   is_big_endian)

__all__ = ("RingMatch", "match_rings")


@record
class RingMatch:
    """A queue of a known device tied to a carved ring (``ring`` ``None``: no candidate)."""

    path: str
    queue: int
    ring: CarvedRing | None
    how: str
    ambiguous: int = 0


def match_rings(space: AddressSpace, devices: list[VirtIODeviceState], wanted: list[tuple[int, int]],
                rings: list[CarvedRing], claimed: dict[int, CarvedRing | None]) -> list[RingMatch]:
    """Tie the queues ``wanted`` (``(device number, queue)`` into ``devices``) to carved rings.

    Candidates have the logged ``vring_num``, are not a ring another queue holds (``claimed``:
    ``desc`` -> the ring checked at a logged address), and fit the device's features (a legacy
    device's rings use the page-aligned legacy layout and the device's byte order). They are
    ranked by: the driver's queue
    index equal to the queue number; the same ``struct virtio_device`` as the device's other
    queues (or the only driver device whose queues have this device's indices and sizes);
    buffers of the device's type (other types count against); confidence.
    """
    by_dev_va: dict[int, set[int]] = {}
    for (di, qi), r in ((k, v) for k, v in _sibling_rings(devices, claimed).items()):
        if r is not None and r.device_va is not None:
            by_dev_va.setdefault(di, set()).add(r.device_va)
    taken: set[int] = set(claimed)
    kinds: dict[int, RingKind] = {}
    out: list[RingMatch] = []
    # Whole devices first: a driver's queues (one struct virtio_device) whose indices and sizes
    # are exactly the device's logged queues; a shape only one device has settles its queues.
    shapes: dict[int, dict[int, int]] = {}
    for r in rings:
        if r.device_va is not None and r.index is not None:
            shapes.setdefault(r.device_va, {})[r.index] = r.num
    holds: dict[int, set[int]] = {}
    for r in rings:
        if r.device_va is not None:
            holds.setdefault(r.device_va, set()).add(r.desc)
    fits: dict[int, list[int]] = {}
    for di in dict.fromkeys(d for d, _ in wanted):
        want = {qn: q.vring_num for qn, q in devices[di].queues.items() if q.desc}
        # a driver device that holds a ring the log named for a queue now stale is the old
        # (freed) driver's, not the one that moved the queue
        old = {devices[di].queues[qn].desc for d, qn in wanted if d == di}
        fits[di] = [va for va, shape in shapes.items() if shape == want and not holds[va] & old]
    owners = Counter(va for vas in fits.values() for va in vas)
    for di, qn in wanted:
        dev = devices[di]
        q = dev.queues[qn]
        little = not is_big_endian(dev)
        legacy = not has_feature(dev, VIRTIO_F_VERSION_1)
        packed = has_feature(dev, VIRTIO_F_RING_PACKED)
        only = [va for va in fits.get(di, ()) if owners[va] == 1]
        group = by_dev_va.get(di) or (set(only) if len(only) == 1 else None)
        scored = []
        for r in rings:
            if r.num != q.vring_num or r.desc in taken or r.confidence < CONFIDENCE_THRESHOLD \
                    or r.desc == q.desc:     # the logged ring itself was judged stale
                continue
            if group is not None and r.device_va not in group:
                continue
            if legacy and r.layout != "legacy" or packed != (r.layout == "packed"):
                continue
            if r.little_endian != little:     # a big-endian guest's legacy rings are its own
                continue
            how = [f"size {r.num}"]
            score = r.confidence
            if r.index is not None:
                if r.index != qn:
                    continue
                score += 2.0
                how.append(f"driver queue index {qn}")
            if group is not None:
                score += 1.0
                how.append("the driver device whose queues have this device's sizes"
                           if di not in by_dev_va else "same driver device as its other queues")
            if r.desc not in kinds:
                kinds[r.desc] = classify_ring(space, r, little_endian=little)
            k = kinds[r.desc]
            if k.kind is not None and dev.name is not None:
                if k.kind == dev.name:
                    score += 0.5
                    how.append(k.reason)
                else:                       # a guess from buffers never overrules the driver
                    score -= 0.5
            how.append(f"confidence {r.confidence:.2f} ({', '.join(r.evidence)})")
            scored.append((score, r, how))
        if not scored:
            out.append(RingMatch(dev.canonical_path, qn, None, "no carved ring fits"))
            continue
        scored.sort(key=lambda t: (-t[0], t[1].desc))
        best, ring, how = scored[0]
        ties = sum(1 for s, _, _ in scored[1:] if s == best)
        taken.add(ring.desc)
        out.append(RingMatch(dev.canonical_path, qn, ring, "; ".join(how), ties))
    return out


def _sibling_rings(devices: list[VirtIODeviceState], claimed: dict[int, CarvedRing | None]
                   ) -> dict[tuple[int, int], CarvedRing | None]:
    out = {}
    for di, dev in enumerate(devices):
        for qn, q in dev.queues.items():
            if q.desc in claimed:
                out[(di, qn)] = claimed[q.desc]
    return out
