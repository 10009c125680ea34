"""Bulk kdump reads on every core and with libdeflate give the bytes and the errors of one core
and zlib: the real capture read whole both ways, damaged pages among thousands, and libdeflate
against zlib on mutated streams."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.builders.kdump import write_kdump
from tests.space.test_paged import BS, RANDOM, TEXT, bomb, store_page
from vdecode.errors import VdecodeError
from vdecode.space import inflate, page_pool
from vdecode.space.inflate import inflate_block, zlib_block
from vdecode.space.open import open_dump


def read_all(space, batch: int) -> bytes:
    """Every dumped page, in runs of ``batch``."""
    parts = []
    for start, size in space.dumped_ranges():
        pfn, end = start // BS, (start + size) // BS
        while pfn < end:
            n = min(batch, end - pfn)
            parts.append(bytes(space.read_pages(pfn, n)))
            pfn += n
    return b"".join(parts)


@pytest.fixture
def pool_for_any_read(monkeypatch):
    """Every bulk read may use the pool; the list holds what each use of it gave (``None``: the
    pool could not be had)."""
    monkeypatch.setattr(page_pool, "POOL_MIN_PAGES", 1)
    used = []
    real = page_pool._in_pool
    monkeypatch.setattr(page_pool, "_in_pool", lambda *a: used.append(real(*a)) or used[-1])
    return used


def test_real_capture_read_by_the_pool_equals_one_core(captures, pool_for_any_read):
    with open_dump(captures["basic"].dump("kdump-zlib")) as dump:
        space = dump.space
        space.bulk_workers = 1
        one = read_all(space, 8192)
        assert not pool_for_any_read
        space.bulk_workers = 2
        every = read_all(space, 8192)
        # the pool did the reads (this test runs one thread)
        assert pool_for_any_read and all(u is not None for u in pool_for_any_read)
        assert every == one
        assert len(one) == 41024 * BS
        one_small = read_all(space, 1000)          # bytearray results, not mappings
        assert one_small == one


def many_pages(tmp_path, damaged: int, blob: bytes | None):
    """A plain kdump of 3000 zlib, raw and zero pages, page ``damaged`` replaced by ``blob``."""
    rng = np.random.default_rng(7)
    pages = {p: (TEXT[p % 100:] + TEXT[:p % 100]) if p % 3 else
             (RANDOM if p % 2 else bytes(BS)) for p in range(3000)}
    pages[17] = rng.integers(0, 256, BS, dtype=np.uint8).tobytes()
    path = tmp_path / "many.kdump"
    lay = write_kdump(path, pages, flattened=False)
    if blob is not None:
        store_page(path, lay, damaged, blob, 1)
    return path, pages


def outcome(path, workers: int) -> tuple[bytes | None, str | None]:
    with open_dump(path) as dump:
        dump.space.bulk_workers = workers
        try:
            got = dump.space.read_pages(0, 3000)
        except VdecodeError as err:
            return None, str(err)
        return bytes(got), None


@pytest.mark.parametrize("blob", [None, "bomb", zlib.compress(b"x" * 100), zlib.compress(TEXT)[:20],
                                  b"not zlib", zlib.compress(TEXT) + b"trailing"],
                         ids=["whole", "bomb", "short", "truncated", "not-zlib", "trailing"])
def test_damaged_page_among_thousands(tmp_path, pool_for_any_read, monkeypatch, blob):
    path, pages = many_pages(tmp_path, 2345, bomb("zlib") if blob == "bomb" else blob)
    one = outcome(path, 1)
    assert not pool_for_any_read
    assert outcome(path, 2) == one
    assert pool_for_any_read[0] is not None      # the pool read them, handed the bad one back
    monkeypatch.setattr(inflate, "_libdeflate_zlib", None)        # zlib alone: the same again
    assert outcome(path, 1) == one
    if blob is None or (isinstance(blob, bytes) and blob.endswith(b"trailing")):
        if blob is not None:
            pages[2345] = TEXT                # the stream stored there; zlib ignores what follows
        assert one[0] == b"".join(pages[p] for p in range(3000))
    else:
        assert one[1].startswith(f"{path} at offset ") and "page data for pfn 0x929 (zlib" in one[1]


def test_one_question_does_not_start_the_pool(tmp_path, monkeypatch):
    path, pages = many_pages(tmp_path, 0, None)
    monkeypatch.setattr(page_pool, "_in_pool", lambda *a: pytest.fail("the pool was asked"))
    with open_dump(path) as dump:
        dump.space.bulk_workers = 2
        assert bytes(dump.space.read(5 * BS, 3 * BS)) == pages[5] + pages[6] + pages[7]
        assert bytes(dump.space.read_pages(0, 1000)) == b"".join(pages[p] for p in range(1000))


STREAMS = [zlib.compress(TEXT), zlib.compress(bytes(BS)), zlib.compress(RANDOM), zlib.compress(TEXT, 1)]
STREAMS += [(lambda c: c.compress(TEXT) + c.flush())(zlib.compressobj(6, zlib.DEFLATED, w))
            for w in range(9, 16)]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(0, len(STREAMS) - 1), edits=st.lists(st.tuples(st.integers(0, 10**6),
                                                                    st.integers(0, 255)), max_size=3),
       cut=st.one_of(st.none(), st.integers(0, 2000)), tail=st.sampled_from([b"", b"junk"]))
def test_libdeflate_accepts_what_zlib_accepts(k, edits, cut, tail):
    b = bytearray(STREAMS[k])
    for at, value in edits:
        b[at % len(b)] = value
    b = bytes(b[:cut] if cut is not None else b) + tail
    fast, ref = inflate_block(b, BS), zlib_block(b, BS)
    assert (fast is None) == (ref is None)
    assert fast is None or bytes(fast) == ref


def test_preset_dictionary_is_refused_by_both():
    c = zlib.compressobj(6, zlib.DEFLATED, 15, 9, zlib.Z_DEFAULT_STRATEGY, zdict=b"virtio")
    stream = c.compress(TEXT) + c.flush()
    assert inflate_block(stream, BS) is None and zlib_block(stream, BS) is None
