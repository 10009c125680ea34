"""RamMap: the one answer to "is this address (or buffer) in guest RAM?"."""

from __future__ import annotations

import numpy as np
import pytest

from vdecode.space.ram_map import RamMap, merge_spans

PAIRS = [(0x1000, 0x3000), (0x8000, 0x9000), (0x100000000, 0x140000000)]   # (start, end)


class _Space:
    name = "test"

    def __init__(self, pairs):
        self._ranges = [(s, e - s) for s, e in pairs]

    def ranges(self):
        return self._ranges


def _loop_holding(ranges, gpa):
    """The hand-written check RamMap.holding replaced (chains.py's ``_range_holding``)."""
    for start, size in ranges:
        if start <= gpa < start + size:
            return start, size
    return None


PROBES = [-1, 0, 0xFFF, 0x1000, 0x1001, 0x2FFF, 0x3000, 0x7FFF, 0x8000, 0x8FFF, 0x9000,
          0xFFFFFFFF, 0x100000000, 0x13FFFFFFF, 0x140000000, 2**64 - 1, 2**64, 2**70]


@pytest.mark.parametrize("gpa", PROBES)
def test_holding_is_the_loop_over_ranges(gpa):
    space = _Space(PAIRS)
    assert RamMap.of(space).holding(gpa) == _loop_holding(space.ranges(), gpa)
    # and the evidence plan's "buffer in RAM" point check
    assert (RamMap.from_pairs(PAIRS).holding(gpa) is not None) == any(s <= gpa < e for s, e in PAIRS)


def test_holding_agrees_with_contains():
    ram = RamMap.from_pairs(PAIRS)
    probes = [p for p in PROBES if 0 <= p < 2**64]
    got = ram.contains(np.array(probes, dtype=np.uint64)).tolist()
    assert got == [ram.holding(p) is not None for p in probes]


def test_empty_map_holds_nothing():
    ram = RamMap.of(None)
    assert len(ram) == 0 and ram.holding(0) is None and ram.top == 0
    assert not ram.contains(np.array([0, 5], dtype=np.uint64)).any()


def test_holding_returns_python_ints():
    start, size = RamMap.from_pairs(PAIRS).holding(0x8010)
    assert type(start) is int and type(size) is int and (start, size) == (0x8000, 0x1000)


def test_merge_spans():
    assert merge_spans([(5, 8), (0, 2), (2, 3), (7, 9), (4, 4)]) == [(0, 3), (5, 9)]
    assert merge_spans([]) == []
    assert RamMap.from_pairs([(5, 8), (0, 2), (2, 3), (7, 9)]).pairs() == [(0, 3), (5, 9)]


def test_qmp_walk_takes_a_prebuilt_map():
    from tests.builders.rings import BytesSpace
    from vdecode.virtio.chains import QMP_CANNOT_MAP_INDIRECT, QMP_OK, walk_chain_qemu_qmp
    from vdecode.virtio.layouts import VRING_DESC_F_INDIRECT, vring_layouts

    lay = vring_layouts(True)
    mem = bytearray(0x2000)
    space = BytesSpace({0: mem})
    ram = RamMap.of(space)
    for gpa, n, want in ((0x1000, 32, QMP_OK), (0x1FF0, 32, QMP_CANNOT_MAP_INDIRECT)):
        descs = np.zeros(1, dtype=lay.desc_dtype)
        descs[0] = (gpa, n, VRING_DESC_F_INDIRECT, 0)
        got = walk_chain_qemu_qmp(space, lay, descs, 0, ram=ram)
        assert got == walk_chain_qemu_qmp(space, lay, descs, 0) and got.outcome == want
