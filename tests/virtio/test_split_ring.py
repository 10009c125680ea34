"""split_ring: the three areas read from an AddressSpace, only the bytes they cover."""

from __future__ import annotations

import pytest

from tests.builders.rings import BytesSpace, put_ring
from vdecode.errors import MissingData, RingError
from vdecode.virtio.layouts import VRING_DESC_F_NEXT, vring_layouts
from vdecode.virtio.split_ring import read_split_ring


@pytest.mark.parametrize("little", [True, False])
def test_reads_every_field(little):
    lay = vring_layouts(little)
    mem = bytearray(0x3000)
    at = put_ring(mem, 0, 8, [(0x1000, 64, VRING_DESC_F_NEXT, 1), (0x2000, 16, 2, 0)], [0, 5, 7],
                  layouts=lay, avail_flags=1, used=[(0, 80)], used_idx=1, used_flags=1,
                  used_event=3, avail_event=9)
    ring = read_split_ring(BytesSpace({0: mem}), at.desc, at.avail, at.used, 8, lay, event_idx=True)
    assert ring.descs.dtype == lay.desc_dtype and len(ring.descs) == 8
    assert ring.descs[0].tolist() == (0x1000, 64, 1, 1) and ring.descs[1].tolist() == (0x2000, 16, 2, 0)
    assert (ring.avail.flags, ring.avail.idx, ring.avail.used_event) == (1, 3, 3)
    assert ring.avail.ring[:3].tolist() == [0, 5, 7]
    assert (ring.used.flags, ring.used.idx, ring.used.avail_event) == (1, 1, 9)
    assert ring.used.ring[0].tolist() == (0, 80)
    plain = read_split_ring(BytesSpace({0: mem}), at.desc, at.avail, at.used, 8, lay, event_idx=False)
    assert plain.avail.used_event is None and plain.used.avail_event is None


def test_reads_only_the_ring_bytes():
    lay = vring_layouts(True)
    mem = bytearray(0x2000)
    at = put_ring(mem, 0, 4, [], [], layouts=lay)
    # memory that ends right after used->ring[num] (no event word): fine without EVENT_IDX
    space = BytesSpace({0: mem[:at.used + 4 + 8 * 4]})
    read_split_ring(space, at.desc, at.avail, at.used, 4, lay, event_idx=False)
    with pytest.raises(MissingData) as err:
        read_split_ring(space, at.desc, at.avail, at.used, 4, lay, event_idx=True, queue="queue 1")
    assert str(err.value) == ("test-memory: queue 1 used ring at guest-physical 0x1000: "
                              "guest-physical 0x1000+38 is not in the dump")


def test_queue_size_is_bounded_before_reading():
    with pytest.raises(RingError) as err:
        read_split_ring(BytesSpace({}), 0, 0, 0, 65536, vring_layouts(True), event_idx=False)
    assert str(err.value) == "test-memory: queue size 65536 is outside 1..32768"
    with pytest.raises(RingError):
        read_split_ring(BytesSpace({}), 0, 0, 0, 0, vring_layouts(True), event_idx=False)
