"""The vectorised queue walk equals a per-chain scalar walk (walk_chain plus the same checks one
descriptor at a time) on arbitrary tables: loops, bad ``next``, heads out of range included."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders.rings import BytesSpace
from vdecode.virtio.chains import walk_chain
from vdecode.virtio.layouts import vring_layouts
from vdecode.space.ram_map import RamMap
from vdecode.virtio.ring_walk import walk_queue
from vdecode.virtio.split_ring import AvailRing, SplitRing, UsedRing

NEXT, WRITE = 1, 2

RAM_END = 0x10000


def scalar_problems(descs, heads, num):
    """walk_chain per head, then the view's checks one descriptor at a time."""
    out = []
    flags, nexts = descs["flags"].tolist(), descs["next"].tolist()
    for h in heads:
        if h >= num:
            out.append(["head_out_of_range"])
            continue
        w = walk_chain(flags, nexts, h)
        probs = {1: ["next_out_of_range"], 2: ["loop"]}.get(w.end, [])
        seen_write, zero, bad, order = False, False, False, False
        for d in w.members:
            addr, ln, fl = int(descs["addr"][d]), int(descs["len"][d]), flags[d]
            zero |= ln == 0
            bad |= ln != 0 and not addr + ln <= RAM_END
            order |= seen_write and not fl & WRITE
            seen_write |= bool(fl & WRITE)
        probs += ["zero_len"] * zero + ["bad_addr"] * bad + ["order"] * order
        out.append(probs)
    return out


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_walk_queue_equals_scalar_walk(data):
    num = data.draw(st.sampled_from([1, 2, 4, 8, 16]))
    lay = vring_layouts(True)
    descs = np.zeros(num, dtype=lay.desc_dtype)
    for i in range(num):
        descs[i] = (data.draw(st.sampled_from([0x100, 0x8000, 0xFF00, 0x2_0000])),
                    data.draw(st.sampled_from([0, 1, 16, 512])),
                    data.draw(st.sampled_from([0, NEXT, WRITE, NEXT | WRITE])),
                    data.draw(st.integers(0, num + 1)))
    heads = data.draw(st.lists(st.integers(0, num + 2), min_size=1, max_size=num))
    ring_heads = np.zeros(num, dtype=lay.u16_dtype)
    ring_heads[:len(heads)] = heads
    ring = SplitRing(num, descs, AvailRing(0, len(heads), ring_heads, None),
                     UsedRing(0, 0, np.zeros(num, dtype=lay.used_elem_dtype), None), lay)
    ram = RamMap.of(BytesSpace({0: bytes(RAM_END)}))
    walk = walk_queue(None, ring, np.arange(len(heads)), ram)
    assert [sorted(p) for p in walk.problems] == [sorted(p) for p in scalar_problems(descs, heads, num)]
