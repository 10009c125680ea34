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
extent), one more than the threads scanning them (:func:`~vdecode.cores.idle_cores`) at a
time; the result does not depend on how many. Confidence is ``1 - prod(1 - w)`` over the evidence found; see
``docs/carving.md``.

The passes are in :mod:`vdecode.virtio.ring_scan`, the driver anchor in
:mod:`vdecode.virtio.driver_records`, the one-ring checks in :mod:`vdecode.virtio.ring_checks`,
what a carved ring is in :mod:`vdecode.virtio.carved_ring`.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from vdecode.cores import idle_cores
from vdecode.space.ram_map import RamMap
from vdecode.errors import MissingData
from vdecode.space.base import AddressSpace, Gpa
from vdecode.virtio.carved_ring import (CONFIDENCE_THRESHOLD, OVERLAP, PAGE, UNKNOWN_LAYOUT_FACTOR,
                                        CarvedRing, confidence)
from vdecode.virtio.driver_records import apply_drivers, driver_records
from vdecode.virtio.ring_checks import readable_ranges
from vdecode.virtio.ring_scan import layout_of, pass1, pass2, pass3

__all__ = ("CarvedRing", "carve_rings", "carve_guest_rings", "CONFIDENCE_THRESHOLD", "ProgressFn", "CarveSplit",
           "chunk_plan", "scan_part", "split_carving")

CHUNK = 64 << 20

ProgressFn = Callable[[int, int], None]


# --- reading RAM in bounded chunks ---------------------------------------------------------


def chunk_plan(space: AddressSpace) -> list[tuple[int, int, int]]:
    """``(gpa, primary, want)`` of every chunk, in RAM order: ``primary`` (at most ``CHUNK``)
    bytes to anchor in, ``want`` bytes to read (the primary part plus up to ``OVERLAP`` bytes
    after it, so a ring that starts in the primary part is whole)."""
    plan = []
    for start, size in readable_ranges(space):
        start, size = int(start), int(size)
        off = 0
        while off < size:
            primary = min(CHUNK, size - off)
            plan.append((start + off, primary, min(primary + OVERLAP, size - off)))
            off += primary
    return plan


def _chunks(space: AddressSpace, progress: ProgressFn | None,
            plan: list[tuple[int, int, int]] | None = None):
    """``(gpa, buffer, primary)`` for each chunk of ``plan`` (default: all of RAM), read around
    the pages the dump lacks. A kdump decodes each chunk on every core
    (:mod:`vdecode.space.page_pool`). A chunk the space knows reads as zeros (a hole of a sparse
    dump, a zero tail) is not read: zeros hold no ring header and no driver record."""
    plan = chunk_plan(space) if plan is None else plan
    zeros = getattr(space, "reads_as_zeros", None)
    total = sum(primary for _, primary, _ in plan)
    done = 0
    for base, primary, want in plan:
        if zeros is None or not zeros(base, want):
            for gpa, buf in _read_present(space, base, want):
                yield gpa, buf, max(0, min(primary - (gpa - base), len(buf)))
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
                workers: int | None = None,
                guest_little_endian: bool | None = None,
                driver_offset: int | None = None) -> list[CarvedRing]:
    """Every split ring the structure of guest RAM shows, best first per descriptor table.

    :param space: guest-physical memory (``Dump.space``).
    :param progress: called as ``progress(bytes_done, bytes_total)`` after each chunk.
    :param little_endian: the rings' byte order (virtio 1.x: little; legacy: the guest's).
    :param guest_little_endian: the guest kernel's byte order, in which its driver records
        (``struct vring``, ``struct virtqueue``) are read; default: the rings'. A big-endian
        guest's virtio 1.x rings are little-endian, its records big-endian.
    :param driver_offset: the driver-virtual minus guest-physical offset of the records, when
        known (else voted from the records that match a ring).
    :param threshold: drop candidates whose confidence is below this
        (:data:`CONFIDENCE_THRESHOLD` is the one reports count precision at).
    :param workers: threads scanning chunks at once (default: the cores other work leaves free,
        :func:`~vdecode.cores.idle_cores`); the result does not depend on it.
    :return: :class:`CarvedRing`\\ s sorted by ``desc``; one per descriptor table.
    """
    bo = "<" if little_endian else ">"
    guest_le = little_endian if guest_little_endian is None else guest_little_endian
    dbo = "<" if guest_le else ">"
    ram = RamMap.of(space)
    # carving split across processes (triage) scans in one byte order: rings and records of
    # different orders are scanned here
    split = guest_le == little_endian
    scans = _split.prepared.get((space.name, little_endian)) if split else None
    if scans is None:
        if split and _split.from_bytes is not None:
            plan = chunk_plan(space)
            if sum(primary for _, primary, _ in plan) >= _split.from_bytes:
                raise CarveSplit(space.name, little_endian, len(plan))
        scans = _scan_chunks(space, progress, bo, ram, workers, dbo=dbo)
    elif progress:
        progress(1, 1)
    found: dict[int, list[CarvedRing]] = {}
    drivers: list[tuple] = []
    for chunk_drivers, rings in scans:
        drivers.extend(chunk_drivers)
        for r in rings:
            found.setdefault(r.desc, []).append(r)
    rings = {d: _best(c) for d, c in found.items()}
    rings = apply_drivers(space, rings, drivers, bo, ram, dbo=dbo, offset=driver_offset)
    kept = _without_overlaps(list(rings.values()))
    if not little_endian:
        kept = [replace(r, little_endian=False) for r in kept]
    return [r for r in sorted(kept, key=lambda r: r.desc) if r.confidence >= threshold]


def carve_guest_rings(space: AddressSpace, *, guest_little_endian: bool = True,
                      progress: ProgressFn | None = None,
                      threshold: float = 0.0) -> list[CarvedRing]:
    """The rings of a guest of either byte order: a little-endian guest's are
    :func:`carve_rings`'; a big-endian guest (s390x) has virtio 1.x rings in little-endian and
    legacy ones in its own order, so RAM is carved in both (its driver records in its own) and
    where candidates overlap the more confident one stays
    (``CarvedRing.little_endian`` says each ring's order)."""
    if guest_little_endian:
        return carve_rings(space, progress=progress, threshold=threshold)
    modern = carve_rings(space, progress=progress, threshold=threshold, guest_little_endian=False)
    # the few legacy rings cannot outvote chance matches: the offset is the modern rings' own
    offsets = Counter(r.driver_va - r.desc for r in modern if r.driver_va is not None)
    legacy = carve_rings(space, little_endian=False, threshold=threshold,
                         driver_offset=offsets.most_common(1)[0][0] if offsets else None)
    if offsets:
        # RAM read byte-swapped shows many 1-entry "rings" with a chain; once the driver's
        # records are readable, a legacy ring is one the driver records
        legacy = [r for r in legacy if r.driver_va is not None]
    return sorted(_without_overlaps(modern + legacy), key=lambda r: r.desc)


# --- carving split across processes (triage) -------------------------------------------------


class CarveSplit(BaseException):
    """Raised by :func:`carve_rings` inside :func:`split_carving` for a space of at least its
    ``from_bytes``: carve ``path`` (``little_endian``), whose RAM is ``chunks`` chunks, with
    :func:`scan_part` over parts of :func:`chunk_plan` on other workers, then ask again with
    the scans. A request, not an error (nothing is wrong with the input): a ``BaseException``,
    so the ``except Exception`` that keep one bad input from stopping a triage let it through."""

    def __init__(self, path: str, little_endian: bool, chunks: int) -> None:
        super().__init__(f"{path}: carve in {chunks} chunks elsewhere")
        self.path, self.little_endian, self.chunks = path, little_endian, chunks


class _Split(threading.local):
    prepared: dict[tuple[str, bool], list] = {}
    from_bytes: int | None = None


_split = _Split()


@contextmanager
def split_carving(prepared: dict[tuple[str, bool], list] | None = None,
                  from_bytes: int | None = None):
    """Within: :func:`carve_rings` of a space named in ``prepared`` (``(space name,
    little_endian)`` -> the scans :func:`scan_part` gave for the whole plan, in order) uses them,
    and one of a space with at least ``from_bytes`` of RAM to scan raises :class:`CarveSplit`
    instead of scanning. The rings are the same as carving in one process: the same chunks are
    scanned and merged in the same order."""
    old = (_split.prepared, _split.from_bytes)
    _split.prepared, _split.from_bytes = dict(prepared or {}), from_bytes
    try:
        yield
    finally:
        _split.prepared, _split.from_bytes = old


def scan_part(space: AddressSpace, first: int, last: int,
              little_endian: bool = True) -> list[tuple[list[tuple], list[CarvedRing]]]:
    """The scans of chunks ``first .. last-1`` of :func:`chunk_plan`, for another process to
    merge (:func:`split_carving`)."""
    bo = "<" if little_endian else ">"
    plan = chunk_plan(space)[first:last]
    return list(_scan_chunks(space, None, bo, RamMap.of(space), 1, plan))


def _scan_chunks(space: AddressSpace, progress: ProgressFn | None, bo: str, ram: RamMap,
                 workers: int | None, plan: list[tuple[int, int, int]] | None = None,
                 dbo: str | None = None):
    """Each chunk's ``(driver records, ring candidates)``, in RAM order. The chunks are read here,
    one after the other (a kdump decodes them; the space need not be thread-safe), and scanned by
    ``workers`` threads: numpy's loops release the GIL, so the cores scan together. At most
    ``workers + 1`` chunks are held at once, so memory stays bounded."""
    workers = idle_cores() if workers is None else max(1, workers)
    chunks = _chunks(space, progress, plan)
    # a chunk scanned is let go of (the space's forget): resident memory stays a few chunks
    forget = getattr(space, "forget", None) or (lambda gpa, n: None)
    if workers == 1:
        for gpa, buf, primary in chunks:
            yield _scan_chunk(buf, primary, gpa, bo, ram, dbo or bo)
            forget(gpa, len(buf))
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="vdecode-carve") as pool:
        pending: deque[tuple[Future, int, int]] = deque()
        for gpa, buf, primary in chunks:
            pending.append((pool.submit(_scan_chunk, buf, primary, gpa, bo, ram, dbo or bo), gpa,
                            len(buf)))
            while len(pending) > workers:
                fut, at, n = pending.popleft()
                yield fut.result()
                forget(at, n)
        while pending:
            fut, at, n = pending.popleft()
            yield fut.result()
            forget(at, n)


def _scan_chunk(buf: np.ndarray, primary: int, gpa: int, bo: str,
                ram: RamMap, dbo: str) -> tuple[list[tuple], list[CarvedRing]]:
    """One chunk's driver records (in the guest's byte order ``dbo``) and ring-anchor
    candidates (in the rings' ``bo``; passes 1 to 3)."""
    drivers = driver_records(buf, primary, gpa, dbo)
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
