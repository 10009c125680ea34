"""
Carving split rings out of guest RAM
------------------------------------
Finds split virtqueues (virtio 1.2 spec 2.7 "Split Virtqueues") in a guest-physical
:class:`~vdecode.space.base.AddressSpace` without knowing where the driver put them, from two
structural anchors, each found by numpy over bounded chunks of RAM (no Python loop per offset):

* **Ring anchor** (any guest): a descriptor table starting on a page (the legacy interface's
  queue PFN; every allocator we know gives a page), the driver area right behind it
  (``avail = desc + 16*num``, ``vring_init``) and the device area at ``align_up(avail + 4 + 2*num
  (+2), A)`` for ``A`` a power of two from the spec's minimum 4 to a page: 4096 is the legacy
  layout, 64 (``SMP_CACHE_BYTES``) what Linux's modern ``vring_create_virtqueue_split`` uses.
  Pass 1 gathers only the two ring headers per page, size and alignment (``flags <= 1``,
  ``(avail.idx - used.idx) mod 2**16 <= num``, not both zero); pass 2 checks the survivors of one
  size together: every head and used id ``< num``, descriptor flags and ``next`` in range,
  buffer addresses inside guest RAM; pass 3 walks the chains of the used window and of the
  outstanding heads of the few rings left (:func:`~vdecode.virtio.chains.walk_all_chains`).
* **Driver anchor**: the spec's ``struct vring { unsigned int num; desc; avail; used; }`` (legacy
  interface, 2.7.2 / Linux ``include/uapi/linux/virtio_ring.h``), which a driver keeps beside
  its queue: a power-of-two ``num`` followed by three pointers with ``avail - desc == 16*num``.
  The pointers are driver-virtual; the offset to guest-physical is voted from the rings the
  ring anchor found, then every such record is translated. This finds the rings the ring anchor
  cannot (a queue the driver never used is all zeros, like any free page) and settles the
  device area's alignment. Where Linux's ``struct virtqueue`` precedes it, the queue's name
  (``"req.0"``, ``"input.0"``) is read too, for :mod:`vdecode.reconstruct.rings.match`.

Memory stays bounded whatever the dump size: chunks of ``CHUNK`` bytes (plus the largest ring's
extent), one more than the threads scanning them (:func:`~vdecode.cores.usable_cores`) at a
time; the result does not depend on how many. Confidence is ``1 - prod(1 - w)`` over the evidence found; see
``docs/carving.md``.

The passes are in :mod:`vdecode.virtio.ring_scan`, the driver anchor in
:mod:`vdecode.virtio.driver_records`, the one-ring checks in :mod:`vdecode.virtio.ring_checks`,
what a carved ring is in :mod:`vdecode.virtio.carved_ring`.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

import numpy as np

from vdecode.cores import usable_cores
from vdecode.space.ram_map import RamMap
from vdecode.errors import MissingData
from vdecode.space.base import AddressSpace, Gpa
from vdecode.virtio.carved_ring import (CONFIDENCE_THRESHOLD, OVERLAP, PAGE, UNKNOWN_LAYOUT_FACTOR,
                                        CarvedRing, confidence)
from vdecode.virtio.driver_records import apply_drivers, driver_records
from vdecode.virtio.ring_checks import readable_ranges
from vdecode.virtio.ring_scan import layout_of, pass1, pass2, pass3

__all__ = ("CarvedRing", "carve_rings", "CONFIDENCE_THRESHOLD", "ProgressFn")

CHUNK = 64 << 20

ProgressFn = Callable[[int, int], None]


# --- reading RAM in bounded chunks ---------------------------------------------------------


def _chunks(space: AddressSpace, progress: ProgressFn | None, chunk: int = CHUNK):
    """``(gpa, buffer, primary)``: ``buffer`` holds ``primary`` (at most ``chunk``) bytes to
    anchor in plus up to ``OVERLAP`` bytes after them, so a ring that starts in the primary part
    is whole. A kdump decodes each chunk on every core (:mod:`vdecode.space.page_pool`)."""
    ranges = readable_ranges(space)
    total = sum(int(n) for _, n in ranges)
    done = 0
    for start, size in ranges:
        start, size = int(start), int(size)
        off = 0
        while off < size:
            primary = min(chunk, size - off)
            want = min(primary + OVERLAP, size - off)
            for gpa, buf in _read_present(space, start + off, want):
                yield gpa, buf, max(0, min(primary - (gpa - start - off), len(buf)))
            off += primary
            done += primary
            if progress:
                progress(done, total)


def _read_present(space: AddressSpace, gpa: int, n: int):
    """The readable parts of ``[gpa, gpa+n)``, halving around pages the dump lacks."""
    try:
        yield gpa, np.frombuffer(space.read(Gpa(gpa), n), dtype=np.uint8)
        return
    except MissingData:
        if n <= PAGE:
            return
    half = (n // 2 + PAGE - 1) // PAGE * PAGE
    yield from _read_present(space, gpa, half)
    yield from _read_present(space, gpa + half, n - half)


# --- the carver -----------------------------------------------------------------------------


def carve_rings(space: AddressSpace, *, progress: ProgressFn | None = None,
                little_endian: bool = True, threshold: float = 0.0,
                workers: int | None = None) -> list[CarvedRing]:
    """Every split ring the structure of guest RAM shows, best first per descriptor table.

    :param space: guest-physical memory (``Dump.space``).
    :param progress: called as ``progress(bytes_done, bytes_total)`` after each chunk.
    :param little_endian: the rings' byte order (virtio 1.x: little; legacy: the guest's).
    :param threshold: drop candidates whose confidence is below this
        (:data:`CONFIDENCE_THRESHOLD` is the one reports count precision at).
    :param workers: threads scanning chunks at once (default: the cores this process may use);
        the result does not depend on it.
    :return: :class:`CarvedRing`\\ s sorted by ``desc``; one per descriptor table.
    """
    bo = "<" if little_endian else ">"
    ram = RamMap.of(space)
    found: dict[int, list[CarvedRing]] = {}
    drivers: list[tuple] = []
    for chunk_drivers, rings in _scan_chunks(space, progress, bo, ram, workers):
        drivers.extend(chunk_drivers)
        for r in rings:
            found.setdefault(r.desc, []).append(r)
    rings = {d: _best(c) for d, c in found.items()}
    rings = apply_drivers(space, rings, drivers, bo, ram)
    kept = _without_overlaps(list(rings.values()))
    return [r for r in sorted(kept, key=lambda r: r.desc) if r.confidence >= threshold]


def _scan_chunks(space: AddressSpace, progress: ProgressFn | None, bo: str, ram: RamMap,
                 workers: int | None):
    """Each chunk's ``(driver records, ring candidates)``, in RAM order. The chunks are read here,
    one after the other (a kdump decodes them; the space need not be thread-safe), and scanned by
    ``workers`` threads: numpy's loops release the GIL, so the cores scan together. At most
    ``workers + 1`` chunks are held at once, so memory stays bounded."""
    workers = usable_cores() if workers is None else max(1, workers)
    chunks = _chunks(space, progress)
    if workers == 1:
        for gpa, buf, primary in chunks:
            yield _scan_chunk(buf, primary, gpa, bo, ram)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="vdecode-carve") as pool:
        pending: deque[Future] = deque()
        for gpa, buf, primary in chunks:
            pending.append(pool.submit(_scan_chunk, buf, primary, gpa, bo, ram))
            while len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _scan_chunk(buf: np.ndarray, primary: int, gpa: int, bo: str,
                ram: RamMap) -> tuple[list[tuple], list[CarvedRing]]:
    """One chunk's driver records and ring-anchor candidates (passes 1 to 3)."""
    drivers = driver_records(buf, primary, gpa, bo)
    rings = []
    for num, p, u in pass1(buf, primary, gpa, bo):
        keep = pass2(buf, num, p, u, bo, ram)
        for pi, ui in zip(p[keep].tolist(), u[keep].tolist()):
            ev, (af, ai, uf, ui_), empty = pass3(buf, gpa, num, pi, ui, bo, ram)
            desc, avail, used = gpa + pi, gpa + pi + 16 * num, gpa + ui
            layout, known = layout_of(num, avail, used)
            if known:
                ev.add("layout")
            conf = confidence(ev) * (1.0 if known else UNKNOWN_LAYOUT_FACTOR)
            rings.append(CarvedRing(num, desc, avail, used, af, ai, uf, ui_, round(conf, 4),
                                    layout, tuple(sorted(ev)), empty=empty))
    return drivers, rings


def _areas(r: CarvedRing) -> list[tuple[int, int]]:
    return [(r.desc, r.desc + 16 * r.num), (r.avail, r.avail + 6 + 2 * r.num),
            (r.used, r.used + 6 + 8 * r.num)]


def _without_overlaps(rings: list[CarvedRing]) -> list[CarvedRing]:
    """Two rings cannot share bytes: where candidates overlap (a bigger table read through a
    real ring's avail ring, say) the more confident one stays."""
    rings.sort(key=lambda r: (-r.confidence, r.desc))
    taken: list[tuple[int, int]] = []          # sorted, disjoint
    out = []
    for r in rings:
        areas = _areas(r)
        clash = False
        for lo, hi in areas:
            i = bisect.bisect_right(taken, (lo, float("inf"))) - 1
            if (i >= 0 and taken[i][1] > lo) or (i + 1 < len(taken) and taken[i + 1][0] < hi):
                clash = True
                break
        if not clash:
            out.append(r)
            for a in areas:
                bisect.insort(taken, a)
    return out


def _best(cands: list[CarvedRing]) -> CarvedRing:
    """Per descriptor table: the most confident reading; equally good device-area positions
    are counted as ``alternatives`` (a written one, then the Linux cache-line one, then legacy,
    is kept) and cost a tenth of the confidence."""
    order = {"cacheline": 0, "legacy": 1}
    # a device area that has been written (used.idx != 0) beats an untouched one
    cands.sort(key=lambda r: (-r.confidence, r.used_idx == 0, -r.num, order.get(r.layout, 2), r.used))
    top = cands[0]
    ties = sum(1 for r in cands[1:] if r.confidence == top.confidence
               and (r.used_idx == 0) == (top.used_idx == 0))
    if not ties:
        return top
    return replace(top, alternatives=ties, confidence=round(top.confidence * 0.9, 4))
