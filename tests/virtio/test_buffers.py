"""Buffer previews by device type, on bytes built per the virtio spec's structs."""

from __future__ import annotations

import struct

from vdecode.profiles import load_profile
from vdecode.virtio.buffers import BufferSegment, decode_scsi_lun, is_posted_buffer_queue, preview_buffer

NAMES = load_profile("7.2").table("view")


def reader(mem: dict[int, bytes]):
    def read(gpa: int, n: int) -> bytes:
        for base, data in mem.items():
            if base <= gpa and gpa + n <= base + len(data):
                return data[gpa - base:gpa - base + n]
        from vdecode.errors import MissingData
        raise MissingData("test", f"{gpa:#x}+{n}")
    return read


def test_blk_request_and_status():
    mem = {0x1000: struct.pack("<IIQ", 1, 0, 4096), 0x3000: b"\x00"}
    segs = [BufferSegment(0x1000, 16, False), BufferSegment(0x2000, 512, False), BufferSegment(0x3000, 1, True)]
    p = preview_buffer(2, 0, 1, segs, reader(mem), NAMES, big_endian=False, guest_features=0, used=True)
    assert p.summary == "OUT sector 4096 status 0 (OK)"
    assert p.fields["data_bytes"] == 512


def test_scsi_read10_named_with_lba():
    cdb = bytes([0x28, 0, 0, 0, 8, 0, 0, 0, 8, 0]) + bytes(22)
    req = bytes([1, 0, 0x40, 0, 0, 0, 0, 0]) + struct.pack("<Q", 7) + bytes(3) + cdb
    p = preview_buffer(8, 2, 4, [BufferSegment(0x1000, len(req), False), BufferSegment(0x2000, 108, True)],
                       reader({0x1000: req}), NAMES, big_endian=False, guest_features=0, used=False)
    assert p.summary == "lun 0:0 READ(10) lba 2048 blocks 8"
    assert decode_scsi_lun(bytes([1, 2, 0x40, 5, 0, 0, 0, 0])) == "2:5"


def test_net_tx_header_and_ethernet():
    hdr = bytes([1, 0]) + struct.pack("<HHHHH", 0, 0, 34, 16, 1)
    eth = bytes.fromhex("ffffffffffff525400123456") + b"\x08\x06"
    p = preview_buffer(1, 1, 3, [BufferSegment(0x1000, 12 + 14, False)], reader({0x1000: hdr + eth}),
                       NAMES, big_endian=False, guest_features=1 << 32, used=False)
    assert p.summary == "hdr NEEDS_CSUM gso NONE 52:54:00:12:34:56 > ff:ff:ff:ff:ff:ff type 0x0806"


def test_console_balloon_rng_and_missing_memory():
    read = reader({0x1000: b"hello\n", 0x2000: struct.pack("<III", 0x100, 0x101, 0x102)})
    kw = dict(big_endian=False, guest_features=0, used=False)
    assert preview_buffer(3, 1, 4, [BufferSegment(0x1000, 6, False)], read, NAMES, **kw).summary == "'hello.'"
    assert preview_buffer(5, 0, 3, [BufferSegment(0x2000, 12, False)], read, NAMES, **kw).summary == \
        "3 PFNs: 0x100 0x101 0x102"
    assert preview_buffer(4, 0, 1, [BufferSegment(0x5000, 64, True)], read, NAMES, **kw).summary == \
        "entropy request 64 bytes"
    assert preview_buffer(2, 0, 1, [BufferSegment(0x9000, 16, False)], read, NAMES, **kw).summary == \
        "request header not in the dump"


def test_receive_queues_are_posted_buffers():
    assert [is_posted_buffer_queue(NAMES, 1, q, 5) for q in range(5)] == [True, False, True, False, False]
    assert is_posted_buffer_queue(NAMES, 8, 1, 4) and not is_posted_buffer_queue(NAMES, 8, 2, 4)
