"""Findings: each rule fires on a ring built to be broken that way, and no warning or error fires on
the real captures (whose queues are healthy)."""

from __future__ import annotations

import struct

import pytest

from tests.builders.rings import BytesSpace, put_ring
from vdecode.profiles import load_profile
from vdecode.reconstruct.postmortem.findings import find_findings
from vdecode.reconstruct.state.log_state import state_from_log
from vdecode.reconstruct.state.session import build_machine, profile_for
from vdecode.sources.qemu_state import QemuVirtioState, VirtIODeviceState, VirtQueueState
from vdecode.sources.qmp_log import LogKnowledge, read_qmp_log
from vdecode.space.open import open_dump
from vdecode.virtio.device import VirtioMachine
from vdecode.virtio.layouts import vring_layouts

PROFILE = load_profile("7.2")
NEXT, WRITE, INDIRECT = 1, 2, 4
VERSION_1 = 1 << 32
EVENT_IDX = 1 << 29
PATH = "/machine/test/virtio-backend"
HDR = 0x8000          # a blk request header
DATA = 0x9000
STATUS = 0xA000


def blk_chain(first: int) -> list[tuple[int, int, int, int]]:
    """A 3-descriptor virtio-blk read: header, data (device-writable), status."""
    return [(HDR, 16, NEXT, first + 1), (DATA, 512, NEXT | WRITE, first + 2), (STATUS, 1, WRITE, 0)]


def machine(descs, heads, *, num=8, last_avail=0, inuse=0, used_idx=0, features=VERSION_1,
            status=0x0F, broken=False, extra=None, used=(), **ring) -> VirtioMachine:
    lay = vring_layouts(True)
    mem = bytearray(0x10000)
    mem[HDR:HDR + 16] = struct.pack("<IIQ", 0, 0, 2048)
    at = put_ring(mem, 0x1000, num, descs, heads, layouts=lay, used=used, used_idx=used_idx, **ring)
    for gpa, data in (extra or {}).items():
        mem[gpa:gpa + len(data)] = data
    q = VirtQueueState(0, vring_num=num, desc=at.desc, avail=at.avail, used=at.used,
                       last_avail_idx=last_avail, shadow_avail_idx=last_avail, used_idx=used_idx,
                       inuse=inuse, provenance={"used_idx": "core", "last_avail_idx": "core"})
    dev = VirtIODeviceState(PATH, name="virtio-blk", device_id=2, guest_features=features,
                            status=status, broken=broken, num_vqs=1, queues={0: q})
    return VirtioMachine(QemuVirtioState([dev], source="core"), BytesSpace({0: mem}))


def codes(m: VirtioMachine, logged=None) -> dict[str, object]:
    found, _ = find_findings(m, PROFILE, logged)
    return {f.code: f for f in found}


def test_healthy_ring_has_no_findings():
    m = machine(blk_chain(0), [0], last_avail=1, used_idx=1, used=[(0, 513)])
    assert codes(m) == {}


def test_available_but_not_taken():
    f = codes(machine(blk_chain(0) + blk_chain(3), [0, 3], last_avail=0))["stalled-available"]
    assert f.severity == "warning"
    assert f.evidence["heads"] == [0, 3] and f.evidence["slots"] == [0, 1]
    assert f.title == "2 request(s) available but not taken"


def test_taken_but_never_completed():
    f = codes(machine(blk_chain(0), [0], last_avail=1, inuse=1))["stalled-inflight"]
    assert f.evidence["heads"] == [0] and f.evidence["inuse"] == 1


def test_stall_says_since_when_the_log_saw_the_same_indices():
    m = machine(blk_chain(0), [0], last_avail=0)
    logged = QemuVirtioState([VirtIODeviceState(PATH, queues={0: VirtQueueState(
        0, desc=m.state.devices[0].queues[0].desc, used_idx=0, shadow_avail_idx=1,
        as_of=1_700_000_000.0)})])
    f = codes(m, logged)["stalled-available"]
    assert f.title == "1 request(s) available but not taken (no progress since the log at " \
                      "2023-11-14T22:13:20.000Z)"


def test_no_notify_explains_the_stall():
    f = codes(machine(blk_chain(0), [0], used_flags=1))["kick-suppressed"]
    assert f.title == "VRING_USED_F_NO_NOTIFY is set: the driver will not kick for them"


def test_avail_event_outside_the_pending_window_suppresses_the_kick():
    m = machine(blk_chain(0), [0], features=VERSION_1 | EVENT_IDX, avail_event=5)
    assert codes(m)["kick-suppressed"].evidence == {"avail_event": 5, "last_avail_idx": 0, "avail_idx": 1}
    m = machine(blk_chain(0), [0], features=VERSION_1 | EVENT_IDX, avail_event=0)
    assert "kick-suppressed" not in codes(m)


def test_no_interrupt_with_requests_in_flight():
    f = codes(machine(blk_chain(0), [0], last_avail=1, inuse=1, avail_flags=1))["interrupt-suppressed"]
    assert f.evidence == {"avail_flags": 1, "outstanding": 1}


def test_used_event_out_of_reach_suppresses_the_interrupt():
    m = machine(blk_chain(0), [0], last_avail=1, inuse=1, features=VERSION_1 | EVENT_IDX,
                used_event=9, avail_event=1)
    f = codes(m)["interrupt-suppressed"]
    assert f.title == "used_event 9 is 9 past used idx 0: the 1 outstanding request(s) cannot reach it"


@pytest.mark.parametrize("descs, heads, code, qemu", [
    (blk_chain(0), [9], "head_out_of_range", 'virtio_error("Guest says index 9 is available")'),
    ([(HDR, 16, NEXT, 12)], [0], "next_out_of_range", 'virtio_error("Desc next is 12")'),
    ([(HDR, 16, NEXT, 1), (DATA, 512, NEXT, 0)], [0], "loop", 'virtio_error("Looped descriptor")'),
    ([(HDR, 16, NEXT, 1), (DATA, 0, WRITE, 0)], [0], "zero_len",
     'virtio_error("virtio: zero sized buffers are not allowed")'),
    ([(HDR, 16, NEXT, 1), (0x4000_0000, 512, WRITE, 0)], [0], "bad_addr",
     'virtio_error("virtio: bogus descriptor or out of resources")'),
    ([(DATA, 512, NEXT | WRITE, 1), (HDR, 16, 0, 0)], [0], "order",
     'virtio_error("Incorrect order for descriptors")'),
    ([(0xB000, 24, INDIRECT, 0)], [0], "indirect_len",
     'virtio_error("Invalid size for indirect buffer table")'),
    ([(0x4000_0000, 32, INDIRECT, 0)], [0], "indirect_map",
     'virtio_error("Cannot map indirect buffer")'),
])
def test_corrupt_chains(descs, heads, code, qemu):
    f = codes(machine(descs, heads))[code]
    assert f.severity == "error"
    assert f.qemu == qemu + ": device broken until reset"
    assert f.evidence["heads"] == heads


def test_nested_indirect():
    table = struct.pack("<QIHH", 0xC000, 32, INDIRECT, 0)
    f = codes(machine([(0xB000, 16, INDIRECT, 0)], [0], extra={0xB000: table}))["nested_indirect"]
    assert f.severity == "warning" and f.evidence["heads"] == [0]


def test_indirect_table_walked_clean():
    table = b"".join(struct.pack("<QIHH", *d) for d in blk_chain(0))
    assert codes(machine([(0xB000, 48, INDIRECT, 0)], [0], last_avail=1, used_idx=1,
                         used=[(0, 513)], extra={0xB000: table})) == {}


def test_index_ran_ahead_of_the_ring_size():
    f = codes(machine(blk_chain(0), [0], avail_idx=20))["idx-ran-ahead"]
    assert f.qemu == 'virtio_error("Guest moved used index from 0 to 20"): device broken until reset'


def test_used_idx_overwritten_by_the_guest():
    f = codes(machine(blk_chain(0), [0], last_avail=1, used_idx=1, used=[(0, 1)],
                      used_flags=0))
    assert f == {}
    m = machine(blk_chain(0), [0], last_avail=1, used_idx=1, used=[(0, 1)])
    dev = m.state.devices[0]
    m = m.with_state(m.state.with_device(dev.with_queue(
        dev.queues[0].evolve(used_idx=3, last_avail_idx=3))))
    assert codes(m)["used-idx-mismatch"].evidence == {"used_idx_guest": 1, "used_idx_qemu": 3}


def test_avail_idx_went_backwards_since_the_log():
    m = machine(blk_chain(0), [0], last_avail=1, used_idx=1, used=[(0, 1)])
    q = m.state.devices[0].queues[0]
    logged = QemuVirtioState([VirtIODeviceState(PATH, queues={0: VirtQueueState(
        0, desc=q.desc, avail=q.avail, used=q.used, used_idx=1, shadow_avail_idx=5)})])
    f = codes(m, logged)["idx-backwards"]
    assert f.title == "avail idx went back from 5 (log) to 1"


def test_what_moved_between_log_and_dump():
    m = machine(blk_chain(0), [0], last_avail=1, used_idx=1, used=[(0, 1)])
    q = m.state.devices[0].queues[0]
    logged = QemuVirtioState([VirtIODeviceState(PATH, queues={0: VirtQueueState(
        0, desc=q.desc, avail=q.avail, used=q.used, used_idx=0, shadow_avail_idx=0)})])
    assert codes(m, logged)["idx-advanced"].title == "1 completion(s) since the log (used idx 0 -> 1)"
    ldev = logged.devices[0]
    logged = logged.with_device(ldev.with_queue(ldev.queues[0].evolve(desc=0x5000)))
    assert codes(m, logged)["rings-relocated"].evidence["log_desc"] == 0x5000


@pytest.mark.parametrize("status, broken, code", [
    (0x0F, True, "device-broken"), (0x4F, False, "needs-reset"), (0x83, False, "driver-failed"),
    (0x0B, False, "no-driver-ok")])
def test_device_state(status, broken, code):
    m = machine(blk_chain(0), [0], last_avail=1, used_idx=1, used=[(0, 1)], status=status,
                broken=broken)
    assert code in codes(m)


def test_a_32k_ring_full_of_chains_walks_in_one_go():
    num = 32768
    lay = vring_layouts(True)
    mem = bytearray(0x100000 + 16 * num + 4 + 2 * num + 8 + 4096 + 8 * num + 8)
    descs = [(HDR, 16, NEXT, i + 1) if i % 2 == 0 else (DATA, 512, WRITE, 0) for i in range(num)]
    at = put_ring(mem, 0x100000, num, descs, list(range(0, num, 2)), layouts=lay)
    q = VirtQueueState(0, vring_num=num, desc=at.desc, avail=at.avail, used=at.used,
                       last_avail_idx=0, used_idx=0, inuse=0)
    dev = VirtIODeviceState(PATH, name="virtio-blk", device_id=2, guest_features=VERSION_1,
                            status=0x0F, num_vqs=1, queues={0: q})
    m = VirtioMachine(QemuVirtioState([dev], source="core"), BytesSpace({0: mem}))
    found, walks = find_findings(m, PROFILE)
    assert [f.code for f in found] == ["stalled-available"]
    assert walks[(PATH, 0)][1].length.tolist() == [2] * (num // 2)


def _real(capture, kind, log):
    dump = open_dump(str(capture.dump(kind)))
    knowledge = LogKnowledge.from_log(read_qmp_log(str(capture.log(log)), None, None)) if log else None
    profile = profile_for(knowledge, dump.qemu)
    m, _ = build_machine(dump, knowledge, profile)
    if knowledge is None:
        return find_findings(m, profile)
    return find_findings(m, profile, state_from_log(knowledge, profile), knowledge.span[1])


@pytest.mark.parametrize("kind, log", [("elf", "early"), ("elf", "instant"), ("kdump-zlib", "early"),
                                       ("qemu-core", "early"), ("qemu-core", None)])
def test_no_warning_on_real_captures(capture, kind, log):
    if not capture.has_dump(kind):
        pytest.skip(f"{capture.name} has no {kind} dump")
    found, walks = _real(capture, kind, log)
    assert [(f.code, f.device, f.queue) for f in found if f.severity != "info"] == []
    assert {f.code for f in found} <= {"idx-advanced"}
    assert walks                      # the queues were read and walked
