"""The carver's fast paths find exactly what the straightforward ones found: pass 1's strided
page rejection against the per-page gathers it replaced, pass 2's prefix check against the whole
ring, and the chunks scanned by threads against one thread, on the real captures, the recorded
driver-reset captures (tests/data/carve) and synthetic buffers with ring headers planted at every
size and at odd offsets."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings, strategies as st
from pathlib import Path

from vdecode.space.open import open_dump
from vdecode.virtio import carve, ring_scan
from vdecode.virtio.carve import carve_rings
from vdecode.virtio.carved_ring import DESC_FLAGS_MASK, NUMS, OVERLAP, PAGE, USED_ALIGNS
from vdecode.virtio.ring_scan import pass1

CARVE_DATA = Path(__file__).resolve().parent.parent / "data" / "carve"
MiB = 1 << 20


# The pass 1 of before the strided page pass, kept word for word as the reference.
def reference_pass1(buf: np.ndarray, primary: int, gpa: int, bo: str) -> list[tuple[int, np.ndarray, np.ndarray]]:
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


def same_candidates(a, b) -> bool:
    return [(n, p.tolist(), u.tolist()) for n, p, u in a] == [(n, p.tolist(), u.tolist()) for n, p, u in b]


def planted(seed: int, size: int) -> np.ndarray:
    """Random-looking RAM with split-ring headers planted for every size, some at each device
    area alignment (descriptor flags in range, small avail and used indices, heads and ids below
    num), among zero pages and noise: pass 1 keeps many, rejects the rest."""
    rng = np.random.default_rng(seed)
    buf = rng.integers(0, 256, size, dtype=np.uint8)
    buf[rng.random(size) < 0.5] = 0                        # plenty of zero words, as in RAM
    w16 = buf[:size & ~7].view("<u2")
    for num in NUMS:
        for page in rng.integers(0, size // PAGE, 6).tolist():
            p = page * PAGE
            a = (p + 16 * num) >> 1
            end = p + 16 * num + 4 + 2 * num
            al = int(rng.choice(USED_ALIGNS))
            u = ((end + rng.choice([0, 2]) + al - 1) // al * al) >> 1
            if u + 3 + 4 * num >= len(w16):
                continue
            w16[(p >> 1) + 6:(p >> 1) + 8 * num:8] = rng.integers(0, DESC_FLAGS_MASK + 1, num)
            aidx = int(rng.integers(1, 60))
            w16[a], w16[a + 1] = rng.integers(0, 2), aidx
            w16[a + 2:a + 2 + num] = rng.integers(0, num, num)
            w16[u], w16[u + 1] = rng.integers(0, 2), max(0, aidx - int(rng.integers(0, 2)))
            w16[u + 2:u + 2 + 4 * num:4] = rng.integers(0, num, num)       # used ids, low half
            w16[u + 3:u + 3 + 4 * num:4] = 0                                # and high half
    return buf


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), gpa_page=st.integers(0, 1 << 20),
       shift=st.sampled_from([0, 2, 6, 64, 1000, 4095]), tail=st.integers(0, 3 * PAGE),
       big=st.booleans())
def test_pass1_equals_the_gathers_it_replaced(seed, gpa_page, shift, tail, big):
    size = (2 * MiB if big else 64 * PAGE) + tail
    buf = planted(seed, size)
    gpa = gpa_page * PAGE - shift                 # chunks that start off a page boundary too
    primary = max(0, size - OVERLAP // 4)
    found = 0
    for bo in "<>":
        got = pass1(buf, primary, gpa, bo)
        assert same_candidates(got, reference_pass1(buf, primary, gpa, bo))
        found += sum(len(p) for _, p, _ in got)
    if shift == 0:         # the planted headers sit on the chunk's pages: pass 1 finds them
        assert found


def carve_fixture(tmp_path_factory, case: str) -> Path:
    out = tmp_path_factory.mktemp(case) / "dump.elf"
    with open(CARVE_DATA / case / "dump.elf.zst", "rb") as src, open(out, "wb") as dst:
        zstandard.ZstdDecompressor().copy_stream(src, dst)
    return out


def rings_of(path, monkeypatch=None, **kw) -> list[list[dict]]:
    with open_dump(path) as dump:
        return [[dataclasses.asdict(r) for r in carve_rings(dump.space, little_endian=le, **kw)]
                for le in (True, False)]


def straightforward(monkeypatch):
    """The reference settings: pass 1 as it was, pass 2 on whole rings, one thread."""
    monkeypatch.setattr(carve, "pass1", reference_pass1)
    monkeypatch.setattr(ring_scan, "PREFIX", 1 << 20)


@pytest.mark.parametrize("case", ["reset", "resetstale", "reboot"])
def test_recorded_captures_carve_as_before(tmp_path_factory, monkeypatch, case):
    path = carve_fixture(tmp_path_factory, case)
    fast = rings_of(path)
    assert fast[0]                                               # rings are there to find
    assert rings_of(path, workers=1) == fast
    with monkeypatch.context() as m:
        m.setattr(carve, "CHUNK", 1 * MiB)                       # many chunks, many threads
        assert rings_of(path, workers=3) == fast
    straightforward(monkeypatch)
    assert rings_of(path, workers=1) == fast


@pytest.mark.parametrize("kind", ["elf", "kdump-zlib"])
def test_real_captures_carve_as_before(capture, monkeypatch, kind):
    if not capture.has_dump(kind):
        pytest.skip(f"{capture.name} has no {kind} dump")
    path = capture.dump(kind)
    fast = rings_of(path)
    assert fast[0]
    assert rings_of(path, workers=1) == fast
    straightforward(monkeypatch)
    assert rings_of(path, workers=1) == fast


def test_holes_of_a_sparse_dump_are_skipped_not_read(tmp_path, monkeypatch):
    from tests.builders.elf_dump import write_elf_dump
    from tests.builders.rings import put_split_ring
    from vdecode.space.segmented import SegmentedSpace
    from vdecode.virtio.layouts import VRING_DESC_F_WRITE, vring_layouts
    lay = vring_layouts(True)
    low, high = bytearray(4 * MiB), bytearray(4 * MiB)
    chains = [[(0x3000, 512, VRING_DESC_F_WRITE)]] * 20
    put_split_ring(low, 0x100000, 256, used_align=64, layouts=lay, chains=chains, completed=12,
                   driver_at=0x300100, driver_index=0, driver_device=0xFFFF888000310000)
    put_split_ring(high, 0x200000, 128, used_align=64, layouts=lay, chains=chains, completed=5,
                   driver_at=0x300300, driver_index=1, driver_device=0xFFFF888000310000)
    path = write_elf_dump(tmp_path / "sparse.elf", [(0, bytes(low)), (4 * MiB, (764 * MiB, None)),
                                                    (768 * MiB, bytes(high)),
                                                    (772 * MiB, (252 * MiB, None))])
    assert path.stat().st_blocks * 512 < 32 * MiB                   # the holes cost no disk
    read = []
    real = carve._read_present

    def spy(space, gpa, n):
        read.append(n)
        return real(space, gpa, n)
    monkeypatch.setattr(carve, "_read_present", spy)
    with open_dump(path) as dump:
        skipped = carve_rings(dump.space)
        # 16 chunks of RAM: read are the two with data, the one whose overlap reaches the
        # second, and the last (its file block is shared with the section names after RAM)
        assert len(read) <= 4 and sum(read) < 300 * MiB
        monkeypatch.setattr(SegmentedSpace, "reads_as_zeros", lambda self, gpa, n: False)
        assert carve_rings(dump.space) == skipped                    # reading the zeros finds no more
    descs = {r.desc for r in skipped}
    assert {0x100000, 768 * MiB + 0x200000} <= descs


def test_a_forgotten_range_reads_the_same(tmp_path):
    from tests.builders.elf_dump import write_elf_dump
    data = np.random.default_rng(3).integers(0, 256, 3 * MiB, dtype=np.uint8).tobytes()
    path = write_elf_dump(tmp_path / "d.elf", [(0, data)])
    with open_dump(path) as dump:
        assert bytes(dump.space.read(4096, MiB)) == data[4096:4096 + MiB]
        dump.space.forget(0, 3 * MiB)
        assert bytes(dump.space.read(4096, MiB)) == data[4096:4096 + MiB]
        assert not dump.space.reads_as_zeros(0, 4096)


def test_zero_pages_of_a_kdump_are_skipped_not_read(tmp_path, monkeypatch):
    from tests.builders.kdump import write_kdump
    from tests.builders.rings import put_split_ring
    from vdecode.space.paged import PagedSpace
    from vdecode.virtio.layouts import VRING_DESC_F_WRITE, vring_layouts
    mem = bytearray(4 * MiB)
    put_split_ring(mem, 0x100000, 256, used_align=64, layouts=vring_layouts(True),
                   chains=[[(0x3000, 512, VRING_DESC_F_WRITE)]] * 20, completed=12,
                   driver_at=0x300100, driver_index=0, driver_device=0xFFFF888000310000)
    pages = {p: bytes(mem[p * 4096:(p + 1) * 4096]) for p in range(1024)}
    path = tmp_path / "zeros.kdump"
    write_kdump(path, pages, ram=[(0, (320 * MiB) // 4096)], dumped_zero=[(1024, (316 * MiB) // 4096)])
    read = []
    real = carve._read_present
    monkeypatch.setattr(carve, "_read_present", lambda s, gpa, n: read.append(n) or real(s, gpa, n))
    with open_dump(path) as dump:
        skipped = carve_rings(dump.space)
        assert len(read) == 1                      # 5 chunks of RAM, 4 of them the zero page
        monkeypatch.setattr(PagedSpace, "reads_as_zeros", lambda self, gpa, n: False)
        assert carve_rings(dump.space) == skipped
    assert [r.desc for r in skipped] == [0x100000]
