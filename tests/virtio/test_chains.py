"""chains: the numpy walk equals the scalar reference; QEMU 7.2's queue-element loop, on synthetic
rings and on the real captures' rings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders.rings import BytesSpace, put_ring
from vdecode.errors import MissingData
from vdecode.profiles import load_profile
from vdecode.virtio.bits import decode_desc_flags
from vdecode.virtio.chains import (END_BAD_NEXT, END_DONE, END_LOOP, QMP_ABORT_HEAD_OUT_OF_RANGE,
                                   QMP_ABORT_INDIRECT_LEN_ZERO, QMP_ABORT_INDIRECT_SHORT,
                                   QMP_CANNOT_MAP_INDIRECT, QMP_OK, chain_members, walk_all_chains,
                                   walk_all_chains_reference, walk_chain, walk_chain_qemu_qmp,
                                   walk_element, walk_elements)
from vdecode.virtio.layouts import (VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
                                    vring_layouts)
from vdecode.virtio.split_ring import read_split_ring

LE = vring_layouts(True)
NEXT, WRITE, INDIRECT = VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_DESC_F_INDIRECT


def table(rows) -> np.ndarray:
    return np.array([tuple(r) for r in rows], dtype=LE.desc_dtype)


@st.composite
def desc_tables(draw, max_n=48):
    n = draw(st.integers(1, max_n))
    flags = draw(st.lists(st.sampled_from([0, 1, 1, 1, 2, 3, 3, 4, 5, 7, 0x8001]), min_size=n, max_size=n))
    nexts = draw(st.lists(st.one_of(st.integers(0, n - 1), st.integers(0, n + 2), st.integers(0, 0xFFFF)),
                          min_size=n, max_size=n))
    return table([(i * 0x1000, i, f, x) for i, (f, x) in enumerate(zip(flags, nexts))])


@settings(max_examples=300, deadline=None)
@given(descs=desc_tables())
def test_numpy_walk_equals_the_scalar_reference(descs):
    fast, ref = walk_all_chains(descs), walk_all_chains_reference(descs)
    assert fast.length.tolist() == ref.length.tolist()
    assert fast.end.tolist() == ref.end.tolist()
    assert fast.last.tolist() == ref.last.tolist()


@settings(max_examples=100, deadline=None)
@given(descs=desc_tables(), data=st.data())
def test_chain_members_equal_the_scalar_walk(descs, data):
    heads = data.draw(st.lists(st.integers(0, len(descs) - 1), max_size=8))
    got = chain_members(descs, heads)
    for head, members in zip(heads, got):
        assert tuple(members.tolist()) == walk_chain(descs["flags"], descs["next"], head).members


@pytest.mark.parametrize("seed", range(4))
def test_numpy_walk_on_long_chains_and_cycles(seed):
    """Random functional graphs of 600 nodes: long tails into long cycles need every doubling round."""
    rng = np.random.default_rng(seed)
    n = 600
    nexts = rng.permutation(n) if seed % 2 else rng.integers(0, n + 5, n)
    flags = np.where(rng.random(n) < 0.97, NEXT, 0)
    descs = table([(0, 0, int(f), int(x)) for f, x in zip(flags, nexts)])
    fast, ref = walk_all_chains(descs), walk_all_chains_reference(descs)
    assert (fast.length.tolist(), fast.end.tolist(), fast.last.tolist()) == \
        (ref.length.tolist(), ref.end.tolist(), ref.last.tolist())


def test_walk_ends():
    descs = table([(0, 1, NEXT, 1), (0, 1, NEXT, 2), (0, 1, 0, 0),        # 0 -> 1 -> 2 done
                   (0, 1, NEXT, 4), (0, 1, NEXT, 3),                       # 3 <-> 4 loop
                   (0, 1, NEXT, 9)])                                       # 5 -> 9: out of range
    t = walk_all_chains(descs)
    assert t.length.tolist() == [3, 2, 1, 2, 2, 1]
    assert t.end.tolist() == [END_DONE] * 3 + [END_LOOP, END_LOOP, END_BAD_NEXT]
    assert t.last.tolist() == [2, 2, 2, 4, 3, 5]


# --- walk_element ------------------------------------------------------------------------------------

def test_element_with_indirect_table_is_read_and_expanded():
    mem = bytearray(0x3000)
    ind = table([(0xA000, 16, NEXT, 1), (0xB000, 0, NEXT | INDIRECT, 2), (0xC000, 1, WRITE, 0)])
    mem[0x2000:0x2000 + 48] = ind.tobytes()
    descs = table([(0x2000, 48, INDIRECT, 0), (0, 0, 0, 0)])
    el = walk_element(BytesSpace({0: mem}), LE, descs, 0)
    assert el.members == (0, 1, 2) and el.end == END_DONE
    assert (el.indirect_gpa, el.indirect_len) == (0x2000, 48)
    assert el.descs["addr"].tolist() == [0xA000, 0xB000, 0xC000]
    assert el.problems == ("nested_indirect", "zero_len")
    bad = walk_element(BytesSpace({0: mem}), LE, table([(0x2000, 0, INDIRECT | NEXT, 1)]), 0)
    assert bad.problems == ("indirect_with_next", "indirect_len_zero")
    assert walk_element(BytesSpace({}), LE, descs, 7).problems == ("head_out_of_range",)


@settings(max_examples=100, deadline=None)
@given(descs=desc_tables(max_n=24), data=st.data())
def test_walk_elements_equals_walk_element_per_head(descs, data):
    """Indirect heads point into one table at 0x10000 (same arbitrary rows as the main table)."""
    descs = descs.copy()
    indirect = descs["flags"] & INDIRECT != 0
    descs["addr"][indirect] = 0x10000
    descs["len"][indirect] = data.draw(st.sampled_from([0, 8, 16, 40, 16 * len(descs)]))
    # the table's bytes, padded so every drawn length (40 included) lies inside memory
    space = BytesSpace({0x10000: descs.tobytes().ljust(max(48, 16 * len(descs)), b"\0")})
    heads = data.draw(st.lists(st.integers(0, len(descs) + 1), max_size=10))
    many = walk_elements(space, LE, descs, heads)
    for head, got in zip(heads, many):
        one = walk_element(space, LE, descs, head)
        assert (got.head, got.members, got.end, got.indirect_gpa, got.indirect_len, got.problems) == \
            (one.head, one.members, one.end, one.indirect_gpa, one.indirect_len, one.problems)
        assert got.descs.tobytes() == one.descs.tobytes()


# --- QEMU 7.2's x-query-virtio-queue-element loop -------------------------------------------------------

def qmp(descs, head, mem=None, runs=None):
    return walk_chain_qemu_qmp(BytesSpace(runs if runs is not None else {0: mem or bytearray(16)}), LE,
                               descs, head)


def test_qmp_walk_plain_chain_and_bad_next():
    descs = table([(0x10, 1, NEXT, 2), (0, 0, 0, 0), (0x20, 2, NEXT | WRITE, 7), (0, 0, 0, 0)])
    w = qmp(descs, 0)
    # the descriptor carrying the bad next is listed; "Desc next is 7" fires; still a reply
    assert (w.outcome, w.indirect, w.max) == (QMP_OK, False, 4)
    assert w.descs == ((0x10, 1, NEXT), (0x20, 2, NEXT | WRITE)) and w.desc_next_error == 7


def test_qmp_walk_loop_lists_exactly_max_and_no_error():
    descs = table([(0x10, 1, NEXT, 1), (0x20, 2, NEXT, 0), (0, 0, 0, 0)])
    w = qmp(descs, 0)
    assert [d[0] for d in w.descs] == [0x10, 0x20, 0x10] and w.desc_next_error is None


def test_qmp_walk_bad_next_at_the_max_guard_still_fires():
    # the guard is tested before listing, the next link is read after: max=2, 0 -> 1 -> 5
    descs = table([(0x10, 1, NEXT, 1), (0x20, 2, NEXT, 5)])
    w = qmp(descs, 0)
    assert len(w.descs) == 2 and w.desc_next_error == 5


def test_qmp_walk_head_out_of_range_aborts():
    assert qmp(table([(0, 0, 0, 0)]), 1).outcome == QMP_ABORT_HEAD_OUT_OF_RANGE


def test_qmp_walk_indirect():
    mem = bytearray(0x2000)
    ind = table([(0xA0, 5, NEXT, 1), (0xB0, 6, WRITE | NEXT, 2), (0xC0, 7, 0, 0)])
    mem[0x1000:0x1000 + 48] = ind.tobytes()
    # len 40: max = 40 / 16 = 2, so next 2 is out of range inside the table
    w = qmp(table([(0x1000, 40, INDIRECT, 0)]), 0, mem)
    assert (w.outcome, w.indirect, w.max) == (QMP_OK, True, 2)
    assert w.descs == ((0xA0, 5, NEXT), (0xB0, 6, WRITE | NEXT)) and w.desc_next_error == 2
    assert qmp(table([(0x1000, 0, INDIRECT, 0)]), 0, mem).outcome == QMP_ABORT_INDIRECT_LEN_ZERO
    assert qmp(table([(0x1000, 8, INDIRECT, 0)]), 0, mem).outcome == QMP_ABORT_INDIRECT_SHORT
    assert qmp(table([(0x1FF0, 32, INDIRECT, 0)]), 0, mem).outcome == QMP_CANNOT_MAP_INDIRECT
    with pytest.raises(MissingData) as err:
        qmp(table([(0x9000, 32, INDIRECT, 0)]), 0, mem)
    assert str(err.value) == "test-memory: indirect table of head 0 at guest-physical 0x9000 is not in guest RAM"


def test_qmp_walk_on_a_synthetic_ring():
    mem = bytearray(0x4000)
    at = put_ring(mem, 0, 4, [(0x3000, 12, NEXT, 3), (0, 0, 0, 0), (0, 0, 0, 0), (0x3100, 1, WRITE, 0)],
                  [0], layouts=LE)
    space = BytesSpace({0: mem})
    ring = read_split_ring(space, at.desc, at.avail, at.used, 4, LE, event_idx=False)
    w = walk_chain_qemu_qmp(space, LE, ring.descs, int(ring.avail.ring[0]))
    assert w.descs == ((0x3000, 12, NEXT), (0x3100, 1, WRITE))


# --- the real captures ----------------------------------------------------------------------------------

def element_cases(truth):
    """Each successful x-query-virtio-queue-element with the queue-status reply that gives its ring."""
    rings = {}
    for req, reply in truth:
        args = req.get("arguments", {})
        if req["execute"] == "x-query-virtio-queue-status" and "return" in reply:
            rings[(args["path"], args["queue"])] = reply["return"]
    for req, reply in truth:
        if req["execute"] == "x-query-virtio-queue-element" and "return" in reply:
            args = req["arguments"]
            yield args, reply["return"], rings[(args["path"], args["queue"])]


def ring_byte_orders(truth) -> dict[str, object]:
    """Each device's ring layouts, as QEMU's ``virtio_access_is_big_endian`` decides: little once
    VIRTIO_F_VERSION_1 is negotiated, else the device's endianness (a legacy device of a
    big-endian guest, s390x's ``max_revision=0`` ccw devices, has big-endian rings)."""
    out = {}
    for req, reply in truth:
        if req["execute"] == "x-query-virtio-status" and "return" in reply:
            r = reply["return"]
            modern = any(t.startswith("VIRTIO_F_VERSION_1:")
                         for t in r["guest-features"].get("transports", []))
            out[req["arguments"]["path"]] = vring_layouts(modern or r["device-endian"] != "big")
    return out


def check_elements(space, truth, flag_rows) -> tuple[int, set[str]]:
    """Reproduce every queue-element reply from ``space``; return the count and the paths whose walk
    fired QEMU's "Desc next is %u" (virtio_error: the device turns broken)."""
    checked, broken = 0, set()
    orders = ring_byte_orders(truth)
    for args, reply, qs in element_cases(truth):
        num = qs["vring-num"]
        lay = orders[args["path"]]
        # EVENT_IDX unknown here, so no event words
        ring = read_split_ring(space, qs["vring-desc"], qs["vring-avail"], qs["vring-used"], num,
                               lay, event_idx=False, queue=f"{args['path']} queue {args['queue']}")
        slot = args.get("index", qs["last-avail-idx"]) % num
        head = int(ring.avail.ring[slot])
        assert head == reply["index"] == reply["avail"]["ring"]
        assert (ring.avail.flags, ring.avail.idx) == (reply["avail"]["flags"], reply["avail"]["idx"])
        assert (ring.used.flags, ring.used.idx) == (reply["used"]["flags"], reply["used"]["idx"])
        w = walk_chain_qemu_qmp(space, lay, ring.descs, head)
        assert w.outcome == QMP_OK
        got = [{"addr": a, "len": n, "flags": decode_desc_flags(f, flag_rows)}
               for a, n, f in reversed(w.descs)]                     # QEMU prepends each desc
        assert got == [{k: d[k] for k in ("addr", "len", "flags")} for d in reply["descs"]], args
        if w.desc_next_error is not None:
            broken.add(args["path"])
        checked += 1
    return checked, broken


def test_real_captures_queue_elements_are_reproduced(capture):
    from vdecode.space.open import open_dump

    flag_rows = load_profile("7.2").table("features")["vring_desc_flags"]
    final_broken = {req["arguments"]["path"]: reply["return"]["broken"] for req, reply in capture.truth
                    if req["execute"] == "x-query-virtio-status" and "return" in reply}
    for kind in capture.manifest["dumps"]:              # ELF, kdump, QEMU process core: same rings
        with open_dump(capture.dump(kind)) as dump:
            checked, broken = check_elements(dump.space, capture.truth, flag_rows)
        assert checked, kind
        # the walks that fired "Desc next is %u" are exactly the devices QEMU then reported broken
        assert broken == {path for path, b in final_broken.items() if b}, kind
