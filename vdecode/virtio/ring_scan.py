"""
The ring anchor's vectorised passes
-----------------------------------
Split rings (virtio 1.2 spec 2.7) read from one chunk of guest RAM by numpy, with no Python loop
per offset: a descriptor table on a page, the driver area right behind it (``avail = desc +
16*num``, ``vring_init``) and the device area at one of :data:`~vdecode.virtio.carved_ring.USED_ALIGNS`.

* :func:`pass1` gathers only the two ring headers per page, size and alignment (``flags <= 1``,
  ``(avail.idx - used.idx) mod 2**16 <= num``, not both zero);
* :func:`pass2` checks the survivors of one size together: every head and used id ``< num``,
  descriptor flags and ``next`` in range, buffer addresses inside guest RAM;
* :func:`pass3` walks the chains of the used window and of the outstanding heads of one ring left
  (:func:`~vdecode.virtio.chains.walk_all_chains`) and says what evidence it shows.

:func:`~vdecode.virtio.carve.carve_rings` runs them over RAM in chunks;
:func:`~vdecode.virtio.ring_checks.check_ring` runs pass 2 and 3 on one ring at given addresses.
"""

from __future__ import annotations

import numpy as np

from vdecode.space.ram_map import RamMap
from vdecode.virtio.carved_ring import DESC_FLAGS_MASK, NUMS, PAGE, USED_ALIGNS
from vdecode.virtio.chains import END_DONE, walk_all_chains
from vdecode.virtio.layouts import VRING_DESC_F_NEXT, vring_layouts

__all__ = ("pass1", "pass2", "pass3", "layout_of")

BATCH_ELEMS = 1 << 20                     # bound on a pass-2 gather (survivors x num)
PREFIX = 16                               # entries pass 2 checks before the whole ring


def pass1(buf: np.ndarray, primary: int, gpa: int, bo: str) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Pages whose ring headers fit, per ``num``: ``(num, page offsets, used offsets)``.

    The first test reads the avail header of every page and size from nine small copies (8 bytes
    at one offset of every page: the page start, where a big ring's avail header lies, and
    ``16*num`` for the sizes whose header lies inside the page), so rejecting the pages that
    cannot hold a ring is one pass over one cache line a page, with no index arrays; only the
    few pages left are gathered from."""
    n = len(buf) & ~7
    w16 = buf[:n].view(bo + "u2")
    w32 = buf[:n].view(bo + "u4")
    first = (-gpa) % PAGE
    pages = np.arange(first, primary, PAGE, dtype=np.int64)
    base = first & ~1                   # u16 word (page >> 1) of the k-th page: byte base + k*PAGE
    # the first 8 bytes of every page, and of every page from 16*num on for the small sizes
    # (their avail header lies inside the page; a big ring's lies at the start of a later page)
    heads = {o: _page_words(buf, n, base + o, bo) for o in [0] + [16 * k for k in NUMS if k < 256]}
    desc0 = np.zeros(len(pages), dtype=bool)
    flags0 = _page_words(buf, n, base + 8, bo)[:len(pages), 2]     # the first descriptor's flags
    desc0[:len(flags0)] = flags0 <= DESC_FLAGS_MASK
    out = []
    for num in NUMS:
        # the pages whose avail ring fits in the buffer: a + 8 + 2*num <= n, a prefix of pages
        m = max(0, min(len(pages), -(-(n - 8 - 18 * num - first + 1) // PAGE)))
        if not m:
            continue
        if 16 * num < PAGE:
            words = heads[16 * num][:m]
        else:
            words = heads[0][16 * num // PAGE:16 * num // PAGE + m]
        aflags, aidx, head0 = words[:, 0], words[:, 1], words[:, 2]
        # avail.idx 0 with used.idx within num behind it only happens at the 2**16 wrap: such a
        # ring is left to the driver anchor, and free (zero) pages drop out here
        good = np.flatnonzero((aidx != 0) & (aflags <= 1) & (head0 < num) & desc0[:m])
        if not len(good):
            continue
        p = pages[good]
        a, aidx = p + 16 * num, aidx[good]
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


def _page_words(buf: np.ndarray, n: int, start: int, bo: str) -> np.ndarray:
    """The four u16 words at ``start + k*PAGE`` for every ``k`` whose 8 bytes lie before ``n``,
    copied into one small array ``(pages, 4)`` (one pass over one cache line a page)."""
    rows = max(0, (n - start - 8) // PAGE + 1)
    if not rows:
        return np.zeros((0, 4), dtype=bo + "u2")
    strided = np.lib.stride_tricks.as_strided(buf[start:], shape=(rows, 8), strides=(PAGE, 1),
                                              writeable=False)
    return np.ascontiguousarray(strided).view(bo + "u2")


def _gather(view: np.ndarray, base: np.ndarray, stride: int, count: int) -> np.ndarray:
    """``view[base[:, None] + stride * arange(count)]`` (element offsets)."""
    return view[base[:, None] + stride * np.arange(count, dtype=np.int64)[None, :]]


def _ring_ok(w16: np.ndarray, w32: np.ndarray, num: int, pp: np.ndarray, uu: np.ndarray,
             count: int) -> np.ndarray:
    """Pass 2's structural checks on the first ``count`` entries of each candidate's heads, used
    ids and descriptors (``count == num``: all of them)."""
    a = pp + 16 * num
    ok = (_gather(w16, (a >> 1) + 2, 1, count) < num).all(axis=1)
    ok &= (_gather(w32, (uu >> 2) + 1, 2, count) < num).all(axis=1)
    flags = _gather(w16, (pp >> 1) + 6, 8, count)
    nxt = _gather(w16, (pp >> 1) + 7, 8, count)
    ok &= (flags <= DESC_FLAGS_MASK).all(axis=1)
    ok &= (((flags & VRING_DESC_F_NEXT) == 0) | (nxt < num)).all(axis=1)
    return ok


def pass2(buf: np.ndarray, num: int, p: np.ndarray, u: np.ndarray, bo: str,
          ram: RamMap) -> np.ndarray:
    """Which of one size's survivors hold a whole consistent ring (vectorised per batch).

    The checks are a conjunction over every entry, so the first :data:`PREFIX` entries are
    checked first for all candidates and the whole ring only for those that passed: nearly every
    look-alike of a big ring fails in its first entries, and gathering ``num`` words for each was
    most of the carver's time on some guests (a big-endian guest's RAM read little-endian)."""
    n = len(buf) & ~7
    w16, w32 = buf[:n].view(bo + "u2"), buf[:n].view(bo + "u4")
    w64 = buf[:n].view(bo + "u8")
    keep = np.zeros(len(p), dtype=bool)
    step = max(1, BATCH_ELEMS // num)
    for s in range(0, len(p), step):
        pp, uu = p[s:s + step], u[s:s + step]
        ok = np.ones(len(pp), dtype=bool)
        if num > PREFIX:
            ok = _ring_ok(w16, w32, num, pp, uu, PREFIX)
        sub = np.flatnonzero(ok)
        if len(sub):
            ok[sub] = _ring_ok(w16, w32, num, pp[sub], uu[sub], num)
        if ok.any() and (pp[ok] % 8 == 0).all():
            addrs = _gather(w64, pp[ok] >> 3, 2, num)
            inram = (addrs == 0) | ram.contains(addrs)
            sub = np.flatnonzero(ok)
            ok[sub] = inram.all(axis=1)
        keep[s:s + step] = ok
    return keep


def pass3(buf: np.ndarray, gpa: int, num: int, p: int, u: int, bo: str,
          ram: RamMap) -> tuple[set[str], tuple, bool]:
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


def layout_of(num: int, avail: int, used: int) -> tuple[str, bool]:
    """The device area's alignment: legacy (page), a cache line (64: Linux's modern layout;
    128/256 other architectures) are layouts allocators use; tighter ones are not seen."""
    end = avail + 4 + 2 * num
    for al, name in ((PAGE, "legacy"), (64, "cacheline"), (128, "align-128"), (256, "align-256")):
        if used in ((end + al - 1) // al * al, (end + 2 + al - 1) // al * al):
            return name, True
    d = used & -used
    return f"align-{min(d, PAGE)}", False
