"""VringLayouts: construct parse/build/sizeof and the numpy dtypes agree, in both byte orders."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vdecode.virtio.layouts import VringLayouts, vring_layouts

U16, U32, U64 = (st.integers(0, 2**b - 1) for b in (16, 32, 64))


def common(layout, dtype, obj: dict) -> None:
    """construct's ``common()``: build, parse back, sizeof, and the dtype reads the same bytes."""
    data = layout.build(obj)
    assert len(data) == layout.sizeof() == dtype.itemsize
    parsed = layout.parse(data)
    assert {k: parsed[k] for k in obj} == obj
    rec = np.frombuffer(data, dtype=dtype)[0]
    assert {k: int(rec[k]) for k in obj} == obj
    assert np.array([tuple(obj[k] for k in dtype.names)], dtype=dtype).tobytes() == data


@pytest.mark.parametrize("little", [True, False])
@given(addr=U64, length=U32, flags=U16, nxt=U16, idx=U16, id_=U32)
def test_layouts_round_trip(little, addr, length, flags, nxt, idx, id_):
    lay = VringLayouts(little)
    common(lay.desc, lay.desc_dtype, dict(addr=addr, len=length, flags=flags, next=nxt))
    common(lay.avail_header, lay.avail_header_dtype, dict(flags=flags, idx=idx))
    common(lay.used_header, lay.used_header_dtype, dict(flags=flags, idx=idx))
    common(lay.used_elem, lay.used_elem_dtype, dict(id=id_, len=length))


def test_byte_order_is_chosen_once():
    le, be = vring_layouts(True), vring_layouts(False)
    assert vring_layouts(True) is le
    raw = bytes(range(16))
    assert le.desc.parse(raw).addr == int.from_bytes(raw[:8], "little")
    assert be.desc.parse(raw).addr == int.from_bytes(raw[:8], "big")
    assert int(np.frombuffer(raw, be.desc_dtype)[0]["next"]) == 0x0E0F


def test_area_sizes_follow_qemu():
    # virtio_queue_get_avail_size / _used_size: +2 with EVENT_IDX
    assert VringLayouts.desc_size(256) == 4096
    assert VringLayouts.avail_size(256, False) == 516 and VringLayouts.avail_size(256, True) == 518
    assert VringLayouts.used_size(256, False) == 2052 and VringLayouts.used_size(256, True) == 2054
