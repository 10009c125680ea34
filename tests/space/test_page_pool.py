"""Bulk kdump reads on every core and with libdeflate give the bytes and the errors of one core
and zlib: the real capture read whole both ways, damaged pages among thousands, and libdeflate
against zlib on mutated streams."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.builders.kdump import write_kdump
from tests.space.test_paged import BS, RANDOM, TEXT, bomb, store_page
from vdecode.space import inflate, page_pool
from vdecode.space.inflate import inflate_block, zlib_block
from vdecode.space.open import open_dump


# The pool forks only a process that runs one thread, and a test session may hold threads (a
# Dask cluster's, say): each read that must use the pool runs in a fresh process.
READ = r"""
import hashlib, json, sys
from vdecode.errors import VdecodeError
from vdecode.space import inflate, page_pool
from vdecode.space.open import open_dump
path, workers, batch, zlib_only = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
page_pool.POOL_MIN_PAGES = 1
if zlib_only:
    inflate._libdeflate_zlib = None
used, real = [], page_pool._in_pool
def spy(*args):
    got = real(*args)
    used.append(got is not None)
    return got
page_pool._in_pool = spy
digest, error = hashlib.sha256(), None
with open_dump(path) as dump:
    dump.space.bulk_workers = workers
    try:
        for start, size in dump.space.dumped_ranges():
            pfn, end = start // 4096, (start + size) // 4096
            while pfn < end:
                n = min(batch, end - pfn)
                digest.update(bytes(dump.space.read_pages(pfn, n)))
                pfn += n
    except VdecodeError as err:
        error = str(err)
print(json.dumps({"sha": digest.hexdigest(), "error": error, "pooled": used}))
"""


def read_all(path, workers: int, batch: int, zlib_only: bool = False) -> dict:
    """Every dumped page in runs of ``batch`` on ``workers`` processes, read in a fresh process:
    the bytes' digest, the error if any, and whether each read got the pool."""
    out = subprocess.run([sys.executable, "-c", READ, str(path), str(workers), str(batch),
                          "1" if zlib_only else "0"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_real_capture_read_by_the_pool_equals_one_core(captures):
    path = captures["basic"].dump("kdump-zlib")
    one = read_all(path, 1, 8192)
    assert one["error"] is None and not one["pooled"]
    every = read_all(path, 2, 8192)
    assert every["pooled"] and all(every["pooled"])          # the pool did every read
    assert every["sha"] == one["sha"]
    assert read_all(path, 1, 1000)["sha"] == one["sha"]       # bytearray results, not mappings
    with open_dump(path) as dump:                              # and it is the dump's RAM
        digest = hashlib.sha256()
        for start, size in dump.space.dumped_ranges():
            digest.update(bytes(dump.space.read(start, size)))
        assert digest.hexdigest() == one["sha"]


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


@pytest.mark.parametrize("blob", [None, "bomb", zlib.compress(b"x" * 100), zlib.compress(TEXT)[:20],
                                  b"not zlib", zlib.compress(TEXT) + b"trailing"],
                         ids=["whole", "bomb", "short", "truncated", "not-zlib", "trailing"])
def test_damaged_page_among_thousands(tmp_path, blob):
    path, pages = many_pages(tmp_path, 2345, bomb("zlib") if blob == "bomb" else blob)
    one = read_all(path, 1, 3000)
    assert not one["pooled"]
    every = read_all(path, 2, 3000)
    assert every["pooled"] == [True]             # the pool read them, handed the bad one back
    zlib_only = read_all(path, 1, 3000, zlib_only=True)
    assert (every["sha"], every["error"]) == (one["sha"], one["error"]) \
        == (zlib_only["sha"], zlib_only["error"])
    if blob is None or (isinstance(blob, bytes) and blob.endswith(b"trailing")):
        if blob is not None:
            pages[2345] = TEXT                # the stream stored there; zlib ignores what follows
        assert one["error"] is None
        assert one["sha"] == hashlib.sha256(b"".join(pages[p] for p in range(3000))).hexdigest()
    else:
        assert one["error"].startswith(f"{path} at offset ") and \
            "page data for pfn 0x929 (zlib" in one["error"]


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
