"""Packed rings: pending elements from last_avail_idx, wrap counters, checks; the findings and the
view on a packed queue built to be stalled."""

from __future__ import annotations

import struct

from tests.builders.rings import BytesSpace
from vdecode.profiles import load_profile
from vdecode.reconstruct.postmortem.findings import find_findings
from vdecode.reconstruct.postmortem.view_model import build_view
from vdecode.render.text import render_view_text
from vdecode.sources.qemu_state import QemuVirtioState, VirtIODeviceState, VirtQueueState
from vdecode.virtio.device import VirtioMachine
from vdecode.virtio.packed_ring import read_packed_ring, walk_packed_pending
from vdecode.space.ram_map import RamMap

NEXT, WRITE = 1, 2
AVAIL, USED = 1 << 7, 1 << 15
DESC, DRIVER, DEVICE = 0x1000, 0x2000, 0x2100


def avail_flags(wrap: int) -> int:
    return AVAIL if wrap else USED           # driver: AVAIL = wrap, USED = !wrap


def used_flags(wrap: int) -> int:
    return (AVAIL | USED) if wrap else 0


def memory(descs, *, driver_flags=0, device_flags=0) -> bytearray:
    mem = bytearray(0x10000)
    for i, (addr, ln, id_, fl) in enumerate(descs):
        mem[DESC + 16 * i:DESC + 16 * i + 16] = struct.pack("<QIHH", addr, ln, id_, fl)
    mem[DRIVER:DRIVER + 4] = struct.pack("<HH", 0, driver_flags)
    mem[DEVICE:DEVICE + 4] = struct.pack("<HH", 0, device_flags)
    mem[0x8000:0x8010] = struct.pack("<IIQ", 1, 0, 8)          # blk OUT sector 8
    return mem


def walk(descs, last, num=8):
    space = BytesSpace({0: memory(descs)})
    ring = read_packed_ring(space, DESC, DRIVER, DEVICE, num)
    return walk_packed_pending(ring, last, RamMap.of(space))


def test_pending_elements_stop_at_the_first_used_or_stale_descriptor():
    # wrap 1: slots 0-1 used; 2-4 a pending 3-desc chain (id 7); 5 pending (id 8); 6-7 never
    # written (flags 0: not available).
    descs = [(0x8000, 16, 0, used_flags(1))] * 2 + [
        (0x8000, 16, 5, NEXT | avail_flags(1)), (0x9000, 512, 6, NEXT | avail_flags(1)),
        (0xA000, 1, 7, WRITE | avail_flags(1)), (0x8000, 16, 8, avail_flags(1))] + [(0, 0, 0, 0)] * 2
    w = walk(descs, 2)
    assert w.first.tolist() == [2, 5] and w.ids.tolist() == [7, 8]
    assert [s.tolist() for s in w.slots] == [[2, 3, 4], [5]] and w.problems == [[], []]


def test_wrap_counter_keeps_the_previous_lap_out():
    # wrap 0: pending at slots 6-7, then slot 0 with wrap 1 (the counter flips past the end);
    # slot 1 has AVAIL != USED but AVAIL 0, a stale descriptor of the lap before: not pending.
    descs = [(0x8000, 16, 3, avail_flags(1))] + [(0x8000, 16, 4, avail_flags(0))] + \
        [(0x8000, 16, 0, used_flags(0))] * 4 + [(0x8000, 16, 1, avail_flags(0)), (0x8000, 16, 2, avail_flags(0))]
    w = walk(descs, 6)
    assert w.first.tolist() == [6, 7, 0] and w.ids.tolist() == [1, 2, 3]


def test_zero_length_and_outside_ram():
    descs = [(0x8000, 0, 1, avail_flags(1)), (0x4000_0000, 16, 2, avail_flags(1))]
    w = walk(descs + [(0, 0, 0, 0)] * 6, 0)
    assert w.problems == [["zero_len"], ["bad_addr"]]


def test_stalled_packed_queue_findings_and_view():
    descs = [(0x8000, 16, 5, NEXT | avail_flags(1)), (0xA000, 1, 5, WRITE | avail_flags(1))] + \
        [(0, 0, 0, 0)] * 6
    mem = memory(descs, device_flags=1)
    q = VirtQueueState(0, vring_num=8, desc=DESC, avail=DRIVER, used=DEVICE, last_avail_idx=0,
                       used_idx=0, inuse=0)
    dev = VirtIODeviceState("/machine/packed/virtio-backend", name="virtio-blk", device_id=2,
                            guest_features=(1 << 32) | (1 << 34), status=0x0F, num_vqs=1, queues={0: q})
    m = VirtioMachine(QemuVirtioState([dev], source="core"), BytesSpace({0: mem}))
    profile = load_profile("7.2")
    found, walks = find_findings(m, profile)
    assert [f.code for f in found] == ["stalled-available", "kick-suppressed"]
    assert found[0].evidence == {"last_avail_idx": 0, "slots": [0], "ids": [5]}
    view = build_view(m, profile, found, walks, dump_path="x.elf", dump_format="elf", log_path=None,
                      queue=0)
    text = render_view_text(view, width=80)
    assert "  device event  off_wrap 0x0000 (idx 0 wrap 0)  flags DISABLE\n" in text
    assert "  pending id 5  slot 0  2 desc, out 16 in 1 bytes\n" in text
    assert "    blk: OUT sector 8\n" in text
    assert view.queue_detail[0].chains[0].descriptors[0].flags_names == ("next", "avail")
