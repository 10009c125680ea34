"""
Buffer previews by device type
------------------------------
Decodes the start of the buffer a descriptor chain describes, for the post-mortem view: what a
virtio-blk request asks (virtio 1.2 spec 5.2.6 ``struct virtio_blk_req``: type, sector, status
byte), a ``struct virtio_net_hdr`` (5.1.6) and the Ethernet header after it, a virtio-scsi
``struct virtio_scsi_req_cmd`` (5.6.6: LUN, tag, CDB with the SCSI command named), console bytes,
balloon page frame numbers (5.5.6) and entropy request lengths (5.4).

Names (request types, SCSI operation codes, ...) come from ``formats/qemu-*/view.json`` through the
profile; nothing here knows a table. Every function is pure over the bytes it is handed, except
:func:`read_segments`, which reads a chain's buffers from guest memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import field
from typing import Any

import numpy as np

from vdecode.errors import MissingData
from vdecode.frozen import record
from vdecode.virtio.layouts import vring_layouts

__all__ = ("BufferSegment", "Preview", "read_segments", "preview_buffer", "is_posted_buffer_queue",
           "BLK_OUTHDR_SIZE", "blk_outhdr", "eth_header", "balloon_pfns",
           "is_held_element_queue", "VIRTIO_ID_NET", "VIRTIO_ID_BLOCK", "VIRTIO_ID_CONSOLE",
           "VIRTIO_ID_RNG", "VIRTIO_ID_BALLOON", "VIRTIO_ID_SCSI")

VIRTIO_ID_NET = 1
VIRTIO_ID_BLOCK = 2
VIRTIO_ID_CONSOLE = 3
VIRTIO_ID_RNG = 4
VIRTIO_ID_BALLOON = 5
VIRTIO_ID_SCSI = 8

PREVIEW_BYTES = 64                  # read at most this much of each buffer for a preview
VIRTIO_NET_F_MRG_RXBUF = 15
VIRTIO_F_VERSION_1 = 32


@record
class BufferSegment:
    """One descriptor of a chain as the device sees it: ``write`` = device-writable (``in``)."""

    addr: int
    len: int
    write: bool


@record
class Preview:
    """A decoded buffer: ``kind`` names the decoder, ``summary`` is one line for people,
    ``fields`` the decoded values (JSON-able)."""

    kind: str
    summary: str
    fields: dict[str, Any] = field(default_factory=dict)


def read_segments(read: Callable[[int, int], bytes], segments: Sequence[BufferSegment], *,
                  write: bool, limit: int = PREVIEW_BYTES) -> bytes | None:
    """The first ``limit`` bytes of the driver-written (``write=False``) or device-written
    (``write=True``) part of a chain, across descriptors; ``None`` if a byte is not in the dump."""
    out = bytearray()
    try:
        for s in segments:
            if s.write != write or not s.len:
                continue
            out += read(s.addr, min(s.len, limit - len(out)))
            if len(out) >= limit:
                break
    except MissingData:
        return None
    return bytes(out)


def _name(rows: Sequence[dict], value: int) -> str:
    for r in rows:
        if r["value"] == value:
            return r["name"]
    return f"{value:#x}"


def _flags(rows: Sequence[dict], value: int) -> str:
    names = [r["name"] for r in rows if value & r["mask"]]
    rest = value & ~sum(r["mask"] for r in rows)
    if rest:
        names.append(f"{rest:#x}")
    return "|".join(names) or "0"


def _queue_rule(table: dict, device_id: int, queue: int, num_queues: int) -> bool:
    rule = table.get(str(device_id))
    if not rule:
        return False
    if rule.get("all"):
        return True
    if rule.get("even"):
        return queue % 2 == 0
    if rule.get("even_below_last"):
        return queue % 2 == 0 and queue != num_queues - 1
    return queue in rule.get("queues", ())


def is_posted_buffer_queue(names: dict, device_id: int, queue: int, num_queues: int) -> bool:
    """A receive-type queue: the driver posts buffers ahead and they wait for data (net rx,
    console rx, rng, balloon stats, scsi events, input events), so "available" is normal there.

    >>> t = {"posted_buffer_queues": {"1": {"even_below_last": True}}}
    >>> [is_posted_buffer_queue(t, 1, q, 3) for q in range(3)]
    [True, False, False]
    """
    return _queue_rule(names["posted_buffer_queues"], device_id, queue, num_queues)


def is_held_element_queue(names: dict, device_id: int, queue: int, num_queues: int) -> bool:
    """A queue where the device keeps one popped element by design (the balloon stats queue)."""
    return _queue_rule(names["held_element_queues"], device_id, queue, num_queues)


def _u(data: bytes, off: int, n: int, big: bool) -> int:
    return int.from_bytes(data[off:off + n], "big" if big else "little")


# The device headers, decoded once for the preview here and for the carver's guess at a ring's
# device type (vdecode.reconstruct.rings.kinds). Byte order: the device's (``big`` for a legacy
# big-endian guest); the Ethernet type is network order whatever the device.
BLK_OUTHDR_SIZE = vring_layouts(True).blk_outhdr_dtype.itemsize     # 16


def blk_outhdr(data: bytes, big: bool) -> tuple[int, int, int] | None:
    """``(type, ioprio, sector)`` of a ``struct virtio_blk_outhdr`` (declared in
    :mod:`vdecode.virtio.layouts`), or None when ``data`` is shorter than its 16 bytes.

    >>> blk_outhdr(bytes([1, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0]), False)
    (1, 0, 8)
    """
    if len(data) < BLK_OUTHDR_SIZE:
        return None
    h = np.frombuffer(data, vring_layouts(not big).blk_outhdr_dtype, count=1)[0]
    return int(h["type"]), int(h["ioprio"]), int(h["sector"])


def eth_header(data: bytes, hdr_len: int) -> tuple[bytes, bytes, int] | None:
    """``(destination, source, ethertype)`` of the Ethernet frame after a ``hdr_len``-byte
    ``struct virtio_net_hdr``, or None when ``data`` ends before the 14-byte Ethernet header."""
    eth = data[hdr_len:hdr_len + 14]
    if len(eth) != 14:
        return None
    return eth[0:6], eth[6:12], int.from_bytes(eth[12:14], "big")


def balloon_pfns(data: bytes, big: bool) -> list[int]:
    """The ``__virtio32`` page frame numbers of a balloon inflate/deflate buffer (a trailing
    partial one is dropped)."""
    n = len(data) // 4
    return np.frombuffer(data, vring_layouts(not big).u32_dtype, count=n).tolist()


def _printable(data: bytes) -> str:
    text = "".join(chr(b) if 32 <= b < 127 else "." for b in data)
    return text


def preview_blk(out: bytes, inb: bytes | None, status: int | None, names: dict, big: bool) -> Preview:
    """``struct virtio_blk_outhdr`` {le32 type; le32 ioprio; le64 sector} and the status byte the
    device writes last (``VIRTIO_BLK_S_*``; only meaningful once the request is used)."""
    hdr = blk_outhdr(out, big)
    if hdr is None:
        return Preview("blk", f"short request header ({len(out)} bytes)", {"header_len": len(out)})
    typ, ioprio, sector = hdr
    tname = _name(names["blk_types"], typ)
    fields: dict[str, Any] = {"type": typ, "type_name": tname, "ioprio": ioprio, "sector": sector}
    summary = f"{tname} sector {sector}"
    if status is not None:
        fields["status"] = status
        fields["status_name"] = _name(names["blk_status"], status)
        summary += f" status {status} ({fields['status_name']})"
    return Preview("blk", summary, fields)


def preview_net(data: bytes, hdr_len: int, names: dict, big: bool, *, tx: bool) -> Preview:
    """``struct virtio_net_hdr`` (10 bytes, 12 with ``num_buffers``) and, on transmit, the
    Ethernet destination, source and type that follow."""
    if len(data) < 10:
        return Preview("net", f"short header ({len(data)} bytes)", {"header_len": len(data)})
    flags, gso = data[0], data[1]
    fields: dict[str, Any] = {"flags": flags, "flags_names": _flags(names["net_hdr_flags"], flags),
                              "gso_type": gso, "gso_name": _name(names["net_gso_types"], gso & 0x7F),
                              "hdr_len": _u(data, 2, 2, big), "gso_size": _u(data, 4, 2, big),
                              "csum_start": _u(data, 6, 2, big), "csum_offset": _u(data, 8, 2, big)}
    if hdr_len >= 12 and len(data) >= 12:
        fields["num_buffers"] = _u(data, 10, 2, big)
    summary = f"hdr {fields['flags_names']} gso {fields['gso_name']}"
    eth = eth_header(data, hdr_len) if tx else None
    if eth is not None:
        mac = lambda b: ":".join(f"{x:02x}" for x in b)  # noqa: E731
        fields.update(dst=mac(eth[0]), src=mac(eth[1]), ethertype=eth[2])
        summary += f" {fields['src']} > {fields['dst']} type {fields['ethertype']:#06x}"
    return Preview("net", summary, fields)


def decode_scsi_lun(lun: bytes) -> str:
    """virtio-scsi's 8-byte LUN: ``01 target (lun>>8 | 0x40) lun&0xff ...`` → ``"t:lun"``.

    >>> decode_scsi_lun(bytes([1, 0, 0x40, 0, 0, 0, 0, 0]))
    '0:0'
    """
    if len(lun) < 4 or lun[0] != 1:
        return lun.hex()
    return f"{lun[1]}:{((lun[2] & 0x3F) << 8) | lun[3]}"


def preview_scsi(out: bytes, names: dict, big: bool) -> Preview:
    """``struct virtio_scsi_cmd_req`` {u8 lun[8]; le64 tag; u8 task_attr, prio, crn; u8 cdb[]}."""
    if len(out) < 20:
        return Preview("scsi", f"short request ({len(out)} bytes)", {"header_len": len(out)})
    cdb = out[19:]
    op = cdb[0]
    opname = _name(names["scsi_opcodes"], op)
    fields: dict[str, Any] = {"lun": decode_scsi_lun(out[0:8]), "tag": _u(out, 8, 8, big),
                              "task_attr": out[16], "opcode": op, "command": opname}
    summary = f"lun {fields['lun']} {opname}"
    for row in names["scsi_cdb_lba"]:
        if row["value"] == op:
            (lo, ln), (co, cn) = row["lba"], row["count"]
            if len(cdb) >= max(lo + ln, co + cn):
                lba = int.from_bytes(cdb[lo:lo + ln], "big") & ((row.get("mask0", 0xFF) << 8 * (ln - 1))
                                                                 | ((1 << 8 * (ln - 1)) - 1))
                count = int.from_bytes(cdb[co:co + cn], "big")
                fields.update(lba=lba, blocks=count)
                summary += f" lba {lba} blocks {count}"
            break
    fields["cdb"] = cdb[:16].hex()
    return Preview("scsi", summary, fields)


def preview_buffer(device_id: int, queue: int, num_queues: int, segments: Sequence[BufferSegment],
                   read: Callable[[int, int], bytes], names: dict, *, big_endian: bool,
                   guest_features: int, used: bool) -> Preview | None:
    """Decode what one chain carries, by device type.

    :param segments: the chain's descriptors in order (indirect tables already expanded).
    :param read: ``read(gpa, n) -> bytes``; may raise :class:`MissingData`.
    :param names: the profile's ``view`` table.
    :param used: the chain was completed (device-written bytes are meaningful).
    :return: ``None`` for device types without a decoder.
    """
    big = big_endian
    out_bytes = sum(s.len for s in segments if not s.write)
    in_bytes = sum(s.len for s in segments if s.write)
    if device_id == VIRTIO_ID_BLOCK and queue < num_queues:
        out = read_segments(read, segments, write=False, limit=BLK_OUTHDR_SIZE)
        if out is None:
            return Preview("blk", "request header not in the dump")
        status = None
        last = segments[-1] if segments else None
        if used and last is not None and last.write and last.len:
            try:
                status = read(last.addr + last.len - 1, 1)[0]
            except MissingData:
                status = None
        p = preview_blk(out, None, status, names, big)
        p.fields["data_bytes"] = max(0, out_bytes - BLK_OUTHDR_SIZE) + max(0, in_bytes - 1)
        return p
    if device_id == VIRTIO_ID_NET:
        ctrl = num_queues % 2 == 1 and queue == num_queues - 1
        if ctrl:
            out = read_segments(read, segments, write=False, limit=2)
            if out is None or len(out) < 2:
                return Preview("net-ctrl", "control header not in the dump")
            return Preview("net-ctrl", f"class {out[0]} command {out[1]}",
                           {"class": out[0], "command": out[1]})
        hdr_len = 12 if (guest_features >> VIRTIO_F_VERSION_1 & 1 or
                         guest_features >> VIRTIO_NET_F_MRG_RXBUF & 1) else 10
        tx = queue % 2 == 1
        if tx:
            data = read_segments(read, segments, write=False, limit=hdr_len + 14)
        elif used:
            data = read_segments(read, segments, write=True, limit=hdr_len + 14)
        else:
            return Preview("net", f"receive buffer {in_bytes} bytes", {"bytes": in_bytes})
        if data is None:
            return Preview("net", "header not in the dump")
        return preview_net(data, hdr_len, names, big, tx=tx)
    if device_id == VIRTIO_ID_SCSI:
        if queue < 2:
            return Preview("scsi", f"{'control' if queue == 0 else 'event'} buffer "
                                   f"{out_bytes + in_bytes} bytes", {"bytes": out_bytes + in_bytes})
        out = read_segments(read, segments, write=False, limit=19 + 32)
        if out is None:
            return Preview("scsi", "request not in the dump")
        return preview_scsi(out, names, big)
    if device_id == VIRTIO_ID_CONSOLE:
        write = queue % 2 == 0          # even queues receive (device writes), odd ones transmit
        if write and not used:
            return Preview("console", f"receive buffer {in_bytes} bytes", {"bytes": in_bytes})
        data = read_segments(read, segments, write=write, limit=32)
        if data is None:
            return Preview("console", "bytes not in the dump")
        return Preview("console", repr(_printable(data)), {"bytes": out_bytes or in_bytes,
                                                          "head": data.hex()})
    if device_id == VIRTIO_ID_BALLOON:
        if queue == 2:
            return Preview("balloon", f"stats buffer {out_bytes} bytes", {"bytes": out_bytes})
        data = read_segments(read, segments, write=False, limit=32)
        if data is None:
            return Preview("balloon", "PFNs not in the dump")
        pfns = balloon_pfns(data, big)
        more = " ..." if out_bytes > len(data) else ""
        return Preview("balloon", f"{out_bytes // 4} PFNs: " + " ".join(f"{p:#x}" for p in pfns[:4])
                       + more, {"count": out_bytes // 4, "pfns": pfns})
    if device_id == VIRTIO_ID_RNG:
        return Preview("rng", f"entropy request {in_bytes} bytes", {"bytes": in_bytes})
    return None
