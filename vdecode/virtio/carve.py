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
  (``"req.0"``, ``"input.0"``) is read too, for :mod:`vdecode.reconstruct.ring_match`.

Memory stays bounded whatever the dump size: one chunk of ``CHUNK`` bytes (plus the largest
ring's extent) at a time. Confidence is ``1 - prod(1 - w)`` over the evidence found; see
``docs/carving.md``.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from vdecode.errors import MissingData
from vdecode.space.base import AddressSpace, Gpa
from vdecode.virtio.chains import END_DONE, walk_all_chains
from vdecode.virtio.layouts import (VIRTQUEUE_MAX_SIZE, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT,
                                    VRING_DESC_F_WRITE, vring_layouts)

__all__ = ("CarvedRing", "carve_rings", "check_ring", "check_packed_ring", "ram_bounds", "CONFIDENCE_THRESHOLD", "NUMS", "USED_ALIGNS",
           "ring_extent", "ProgressFn")

PAGE = 4096
CHUNK = 64 << 20
NUMS = tuple(1 << k for k in range(VIRTQUEUE_MAX_SIZE.bit_length()))     # 1 .. 32768
USED_ALIGNS = (4, 64, 128, 256, 4096)     # spec minimum, cache lines (Linux modern), legacy page
CONFIDENCE_THRESHOLD = 0.5
BATCH_ELEMS = 1 << 20                     # bound on a pass-2 gather (survivors x num)
DESC_FLAGS_MASK = VRING_DESC_F_NEXT | VRING_DESC_F_WRITE | VRING_DESC_F_INDIRECT

# Evidence weights: confidence = 1 - prod(1 - w).
W_DRIVER = 0.9       # a struct vring in guest memory names these three addresses
W_CHAINS = 0.5       # used ids / outstanding heads are chains ending in the table, buffers in RAM
W_DESCS = 0.3        # non-zero descriptors, all with addresses in RAM
W_INDICES = 0.3      # non-zero idx with avail.idx - used.idx <= num
W_LAYOUT = 0.1       # device area at the legacy (4096) or Linux cache-line (64) alignment
W_PACKED = 0.3       # a packed descriptor ring with the spec's flags and valid event areas
UNKNOWN_LAYOUT_FACTOR = 0.6   # ring-anchor candidates whose device area no allocator would place

ProgressFn = Callable[[int, int], None]


def ring_extent(num: int, align: int = PAGE) -> int:
    """Bytes from ``desc`` to the end of ``used`` (with event words) for the single-block layout.

    >>> ring_extent(256), ring_extent(256, 64)
    (10246, 6726)
    """
    avail_end = 16 * num + 4 + 2 * num + 2
    return -(-avail_end // align) * align + 4 + 8 * num + 2


OVERLAP = -(-ring_extent(VIRTQUEUE_MAX_SIZE) // PAGE) * PAGE


@dataclass(frozen=True)
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

    @property
    def in_flight(self) -> int:
        """``avail.idx - used.idx`` modulo 2**16: buffers the device has not returned."""
        return (self.avail_idx - self.used_idx) & 0xFFFF


def _confidence(evidence: set[str]) -> float:
    weights = {"driver": W_DRIVER, "chains": W_CHAINS, "descs": W_DESCS, "indices": W_INDICES,
               "layout": W_LAYOUT, "packed": W_PACKED}
    p = 1.0
    for e in evidence:
        p *= 1.0 - weights.get(e, 0.0)
    return round(1.0 - p, 4)


# --- reading RAM in bounded chunks ---------------------------------------------------------


def _chunks(space: AddressSpace, progress: ProgressFn | None):
    """``(gpa, buffer, primary)``: ``buffer`` holds ``primary`` bytes to anchor in plus up to
    ``OVERLAP`` bytes after them, so a ring that starts in the primary part is whole."""
    ranges = readable_ranges(space)
    total = sum(int(n) for _, n in ranges)
    done = 0
    for start, size in ranges:
        start, size = int(start), int(size)
        off = 0
        while off < size:
            primary = min(CHUNK, size - off)
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


def _in_ram(addrs: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    i = np.searchsorted(starts, addrs, side="right") - 1
    return (i >= 0) & (addrs < ends[np.maximum(i, 0)])


# --- ring anchor ----------------------------------------------------------------------------


def _pass1(buf: np.ndarray, primary: int, gpa: int, bo: str) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Pages whose ring headers fit, per ``num``: ``(num, page offsets, used offsets)``."""
    n = len(buf) & ~7
    w16 = buf[:n].view(bo + "u2")
    w32 = buf[:n].view(bo + "u4")
    first = (-gpa) % PAGE
    pages = np.arange(first, primary, PAGE, dtype=np.int64)
    out = []
    for num in NUMS:
        a = pages + 16 * num
        ok = a + 8 + 2 * num <= n
        a, p = a[ok], pages[ok]
        if not len(a):
            continue
        aflags, aidx, head0 = w16[a >> 1], w16[(a >> 1) + 1], w16[(a >> 1) + 2]
        # avail.idx 0 with used.idx within num behind it only happens at the 2**16 wrap: such a
        # ring is left to the driver anchor, and free (zero) pages drop out here
        good = (aidx != 0) & (aflags <= 1) & (head0 < num) & (w16[(p >> 1) + 6] <= DESC_FLAGS_MASK)
        a, p, aidx = a[good], p[good], aidx[good]
        if not len(a):
            continue
        # a few more single words per candidate: the last head and the latest one published,
        # the last descriptor's flags (prunes big-num readings of small rings cheaply)
        latest = (aidx.astype(np.int64) - 1) % num
        good = (w16[(a >> 1) + 1 + num] < num) & (w16[(a >> 1) + 2 + latest] < num) \
            & (w16[(p >> 1) + 8 * (num - 1) + 6] <= DESC_FLAGS_MASK)
        a, p, aidx = a[good], p[good], aidx[good]
        if not len(a):
            continue
        ga = gpa + first + 16 * num          # every page's avail has the same offset in its page
        ends = sorted({(ga + 4 + 2 * num + e + al - 1) // al * al - ga
                       for al in USED_ALIGNS for e in (0, 2)})
        for d in ends:
            u = a + d
            fit = u + 4 + 8 * num + 2 <= n
            if not fit.any():
                continue
            uu = np.where(fit, u, 0)
            uflags, uidx, id0 = w16[uu >> 1], w16[(uu >> 1) + 1], w32[(uu >> 2) + 1]
            last = w32[(uu >> 2) + 1 + 2 * (num - 1) * fit]
            keep = fit & (uflags <= 1) & (((aidx.astype(np.int64) - uidx) & 0xFFFF) <= num) \
                & (id0 < num) & (last < num)
            if keep.any():
                out.append((num, p[keep], u[keep]))
    return out


def _gather(view: np.ndarray, base: np.ndarray, stride: int, count: int) -> np.ndarray:
    """``view[base[:, None] + stride * arange(count)]`` (element offsets)."""
    return view[base[:, None] + stride * np.arange(count, dtype=np.int64)[None, :]]


def _pass2(buf: np.ndarray, num: int, p: np.ndarray, u: np.ndarray, bo: str,
           ram: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Which of one size's survivors hold a whole consistent ring (vectorised per batch)."""
    n = len(buf) & ~7
    w16, w32 = buf[:n].view(bo + "u2"), buf[:n].view(bo + "u4")
    w64 = buf[:n].view(bo + "u8")
    keep = np.zeros(len(p), dtype=bool)
    step = max(1, BATCH_ELEMS // num)
    for s in range(0, len(p), step):
        pp, uu = p[s:s + step], u[s:s + step]
        a = pp + 16 * num
        ok = (_gather(w16, (a >> 1) + 2, 1, num) < num).all(axis=1)
        ok &= (_gather(w32, (uu >> 2) + 1, 2, num) < num).all(axis=1)
        flags = _gather(w16, (pp >> 1) + 6, 8, num)
        nxt = _gather(w16, (pp >> 1) + 7, 8, num)
        ok &= (flags <= DESC_FLAGS_MASK).all(axis=1)
        ok &= (((flags & VRING_DESC_F_NEXT) == 0) | (nxt < num)).all(axis=1)
        if ok.any() and (pp[ok] % 8 == 0).all():
            addrs = _gather(w64, pp[ok] >> 3, 2, num)
            inram = (addrs == 0) | _in_ram(addrs, *ram)
            sub = np.flatnonzero(ok)
            ok[sub] = inram.all(axis=1)
        keep[s:s + step] = ok
    return keep


def _pass3(buf: np.ndarray, gpa: int, num: int, p: int, u: int, bo: str,
           ram: tuple[np.ndarray, np.ndarray]) -> tuple[set[str], tuple, bool]:
    """Evidence for one ring that passed pass 2, from its chains."""
    lay = vring_layouts(bo == "<")
    descs = buf[p:p + 16 * num].view(lay.desc_dtype)
    a = p + 16 * num
    words = buf[a:a + 4 + 2 * num].view(lay.u16_dtype)
    aidx, heads = int(words[1]), words[2:]
    uh = buf[u:u + 4].view(lay.u16_dtype)
    uidx = int(uh[1])
    ids = buf[u + 4:u + 4 + 8 * num].view(lay.used_elem_dtype)["id"]
    evidence: set[str] = set()
    if aidx or uidx:
        evidence.add("indices")
    nz = descs["addr"] != 0
    if nz.any():
        evidence.add("descs")
    used_win = ids[(uidx - 1 - np.arange(min(num, uidx))) % num] if uidx else ids[:0]
    out = (aidx - uidx) & 0xFFFF
    out_heads = heads[(uidx + np.arange(out)) % num]
    probe = np.unique(np.concatenate([used_win.astype(np.int64), out_heads.astype(np.int64)]))
    if len(probe):
        table = walk_all_chains(descs)
        done = table.end[probe] == END_DONE
        live = descs["addr"][probe] != 0
        if done.all() and live.any():
            evidence.add("chains")
    empty = not nz.any() and not aidx and not uidx
    return evidence, (int(words[0]), aidx, int(uh[0]), uidx), empty


def _layout_of(num: int, avail: int, used: int) -> tuple[str, bool]:
    """The device area's alignment: legacy (page), a cache line (64: Linux's modern layout;
    128/256 other architectures) are layouts allocators use; tighter ones are not seen."""
    end = avail + 4 + 2 * num
    for al, name in ((PAGE, "legacy"), (64, "cacheline"), (128, "align-128"), (256, "align-256")):
        if used in ((end + al - 1) // al * al, (end + 2 + al - 1) // al * al):
            return name, True
    d = used & -used
    return f"align-{min(d, PAGE)}", False


# --- driver anchor --------------------------------------------------------------------------


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


def _driver_records(buf: np.ndarray, primary: int, gpa: int, bo: str) -> list[tuple]:
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
    idx = _small_powers_candidates(q[:lim])
    num = q[idx]
    idx, num = idx[(num & (num - np.uint64(1))) == 0], num[(num & (num - np.uint64(1))) == 0]
    d, a, u = q[idx + 1], q[idx + 2], q[idx + 3]
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
    index, num_free, num_max = int(raw[5]) & 0xFFFFFFFF, int(raw[5]) >> 32, int(raw[6]) & 0xFFFFFFFF
    if not (offset < vdev < offset + (1 << 46)) or num_free > num or num_max not in (0, num) \
            or index >= 1024:
        return None, None, None
    name = _read_cstr(space, name_va - offset) if offset < name_va < offset + (1 << 46) else None
    return name, index, vdev


# --- the carver -----------------------------------------------------------------------------


def carve_rings(space: AddressSpace, *, progress: ProgressFn | None = None,
                little_endian: bool = True, threshold: float = 0.0) -> list[CarvedRing]:
    """Every split ring the structure of guest RAM shows, best first per descriptor table.

    :param space: guest-physical memory (``Dump.space``).
    :param progress: called as ``progress(bytes_done, bytes_total)`` after each chunk.
    :param little_endian: the rings' byte order (virtio 1.x: little; legacy: the guest's).
    :param threshold: drop candidates whose confidence is below this
        (:data:`CONFIDENCE_THRESHOLD` is the one reports count precision at).
    :return: :class:`CarvedRing`\\ s sorted by ``desc``; one per descriptor table.
    """
    bo = "<" if little_endian else ">"
    ram = ram_bounds(space)
    found: dict[int, list[CarvedRing]] = {}
    drivers: list[tuple] = []
    for gpa, buf, primary in _chunks(space, progress):
        drivers.extend(_driver_records(buf, primary, gpa, bo))
        for num, p, u in _pass1(buf, primary, gpa, bo):
            keep = _pass2(buf, num, p, u, bo, ram)
            for pi, ui in zip(p[keep].tolist(), u[keep].tolist()):
                ev, (af, ai, uf, ui_), empty = _pass3(buf, gpa, num, pi, ui, bo, ram)
                desc, avail, used = gpa + pi, gpa + pi + 16 * num, gpa + ui
                layout, known = _layout_of(num, avail, used)
                if known:
                    ev.add("layout")
                conf = _confidence(ev) * (1.0 if known else UNKNOWN_LAYOUT_FACTOR)
                found.setdefault(desc, []).append(CarvedRing(
                    num, desc, avail, used, af, ai, uf, ui_, round(conf, 4), layout,
                    tuple(sorted(ev)), empty=empty))
    rings = {d: _best(c) for d, c in found.items()}
    rings = _apply_drivers(space, rings, drivers, bo, ram)
    kept = _without_overlaps(list(rings.values()))
    return [r for r in sorted(kept, key=lambda r: r.desc) if r.confidence >= threshold]


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


def _apply_drivers(space: AddressSpace, rings: dict[int, CarvedRing], drivers: list[tuple],
                   bo: str, ram: tuple[np.ndarray, np.ndarray]) -> dict[int, CarvedRing]:
    """Vote the driver-virtual offset from records whose layout matches a carved ring, then
    translate every record and confirm its ring structurally."""
    by_shape: dict[tuple[int, int, int], list[int]] = {}
    for r in rings.values():
        by_shape.setdefault((r.num, r.avail - r.desc, r.used - r.desc), []).append(r.desc)
    votes: Counter[int] = Counter()
    for _, num, d, a, u, _single in drivers:
        for desc in by_shape.get((num, a - d, u - d), ()):
            if d > desc and (d - desc) % PAGE == 0:
                votes[d - desc] += 1
    if not votes:
        return rings
    offset, count = votes.most_common(1)[0]
    if count < 2 and len(votes) > 1:
        return rings
    out = dict(rings)
    top = int(ram[1].max()) if len(ram[1]) else 0
    for sgpa, num, d, a, u, single in drivers:
        desc, avail, used = d - offset, a - offset, u - offset
        if not (0 <= min(desc, avail, used) and max(desc, avail, used) < top) \
                or not space.is_present(Gpa(desc), 16 * num):
            continue
        if single:
            ring = _check_ring(space, num, desc, avail, used, bo, ram)
        else:
            # Three separate areas: Linux allocates a split ring in one block, a packed ring in
            # three, so a packed reading (descriptors marked AVAIL/USED) wins; a packed ring
            # read as split has no NEXT flags and passes too. Else a split ring, with chains.
            ring = check_packed_ring(space, num, desc, avail, used, little_endian=bo == "<", ram=ram)
            if ring is None:
                ring = _check_ring(space, num, desc, avail, used, bo, ram)
        if ring is None or (not single and not {"chains", "packed"} & set(ring.evidence)):
            continue
        name, index, vdev = _driver_queue(space, sgpa, num, offset, bo)
        old = out.get(desc)
        if old is not None and old.num == num and (old.avail, old.used) == (avail, used):
            ev = set(old.evidence) | {"driver"}
            out[desc] = replace(old, evidence=tuple(sorted(ev)), confidence=_confidence(ev),
                                alternatives=0, name=name, index=index, driver_va=d,
                                driver_gpa=sgpa, device_va=vdev)
        elif old is None or old.confidence < W_DRIVER:
            ev = set(ring.evidence) | {"driver"}
            out[desc] = replace(ring, evidence=tuple(sorted(ev)), confidence=_confidence(ev),
                                name=name, index=index, driver_va=d, device_va=vdev,
                                driver_gpa=sgpa)
    return out


def readable_ranges(space: AddressSpace) -> list[tuple[int, int]]:
    """What can be scanned: a kdump's dumped pages (``dumped_ranges``: excluded pages are RAM but
    not there), a bundle's kept runs (``kept_ranges``), else :meth:`ranges`."""
    for attr in ("dumped_ranges", "kept_ranges"):
        fn = getattr(space, attr, None)
        if fn is not None:
            return fn()
    return space.ranges()


def ram_bounds(space: AddressSpace) -> tuple[np.ndarray, np.ndarray]:
    """Sorted starts and ends of guest RAM (excluded or unkept pages included: a buffer there is
    still a buffer in RAM), for buffer-address checks."""
    ranges = space.ranges()
    return (np.array([int(s) for s, _ in ranges], dtype=np.uint64),
            np.array([int(s) + int(n) for s, n in ranges], dtype=np.uint64))


def check_ring(space: AddressSpace, num: int, desc: int, avail: int, used: int, *,
               little_endian: bool = True,
               ram: tuple[np.ndarray, np.ndarray] | None = None) -> CarvedRing | None:
    """Whether a split ring of ``num`` entries stands at these addresses, by the carver's rules.

    :return: the ring as a :class:`CarvedRing` (``evidence`` says what was seen), or ``None``
        when it is not one (bad sizes, heads or ids out of range, links or buffers outside,
        ``avail.idx - used.idx > num``, or bytes the dump lacks).
    """
    if num not in NUMS or min(desc, avail, used) < 0 or desc % 16 or avail % 2 or used % 4:
        return None
    return _check_ring(space, num, desc, avail, used, "<" if little_endian else ">",
                       ram if ram is not None else ram_bounds(space))


def _check_ring(space: AddressSpace, num: int, desc: int, avail: int, used: int, bo: str,
                ram: tuple[np.ndarray, np.ndarray]) -> CarvedRing | None:
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
    if not _pass2(buf, num, np.array([p], np.int64), np.array([uo], np.int64), bo, ram)[0]:
        return None
    lay = vring_layouts(bo == "<")
    af, ai = (int(x) for x in buf[p + 16 * num:p + 16 * num + 4].view(lay.u16_dtype))
    uf, ui = (int(x) for x in buf[uo:uo + 4].view(lay.u16_dtype))
    if ((ai - ui) & 0xFFFF) > num or af > 1 or uf > 1:
        return None
    ev, (af, ai, uf, ui), empty = _pass3(buf, 0, num, p, uo, bo, ram)
    layout, known = _layout_of(num, avail, used)
    if avail != desc + 16 * num:
        layout, known = "separate", False
    if known:
        ev.add("layout")
    return CarvedRing(num, desc, avail, used, af, ai, uf, ui, _confidence(ev),
                      layout if known or layout == "separate" else "driver", tuple(sorted(ev)),
                      empty=empty)


VRING_PACKED_DESC_F_AVAIL = 1 << 7
VRING_PACKED_DESC_F_USED = 1 << 15
PACKED_FLAGS = VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED | DESC_FLAGS_MASK


def check_packed_ring(space: AddressSpace, num: int, desc: int, driver: int, device: int, *,
                      little_endian: bool = True,
                      ram: tuple[np.ndarray, np.ndarray] | None = None) -> CarvedRing | None:
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
    bo = "<" if little_endian else ">"
    ram = ram if ram is not None else ram_bounds(space)
    try:
        ring = np.frombuffer(bytes(space.read(Gpa(desc), 16 * num)),
                             [("addr", bo + "u8"), ("len", bo + "u4"), ("id", bo + "u2"),
                              ("flags", bo + "u2")])
        drv = np.frombuffer(bytes(space.read(Gpa(driver), 4)), bo + "u2")
        dev = np.frombuffer(bytes(space.read(Gpa(device), 4)), bo + "u2")
    except MissingData:
        return None
    flags = ring["flags"]
    marked = (flags & (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED)) != 0
    if (flags & ~np.uint16(PACKED_FLAGS)).any() or (ring["id"][marked] >= num).any() \
            or not marked.any():
        return None
    addrs = ring["addr"][ring["addr"] != 0]
    if not _in_ram(addrs, *ram).all():
        return None
    if drv[1] > 2 or dev[1] > 2 or (drv[0] & 0x7FFF) >= num or (dev[0] & 0x7FFF) >= num:
        return None
    ev = {"packed", "descs"} if len(addrs) else {"packed"}
    return CarvedRing(num, desc, driver, device, int(drv[1]), int(drv[0]), int(dev[1]),
                      int(dev[0]), _confidence(ev), "packed", tuple(sorted(ev)))
