"""``x-query-virtio-queue-element``: QEMU 7.2 ``qmp_x_query_virtio_queue_element`` step by step.

Reference §3.5 and §8.3. The steps, and what vdecode does where QEMU would not reply:

1. device lookup (its own wording: "is not a VirtIO device"), queue range, packed ring;
2. ``head = avail->ring[(index or last_avail_idx) % num]``: ``index`` picks an avail *slot*;
3. no region caches (``vring.desc == 0``) → error; ``head >= num`` → QEMU asserts in
   ``address_space_read_cached``: we answer an error that says QEMU would abort;
4. an indirect head: the table is mapped (``Cannot map indirect buffer`` when the dump has not
   all of it), ``len == 0`` or ``< 16`` → QEMU asserts; the head itself is not listed;
5. ``avail.idx`` is read through ``vring_avail_idx()``, which stores it in ``shadow_avail_idx``
   (the side effect later status replies show);
6. the descriptor loop: at most ``max`` entries, stop without ``NEXT``, and a ``next >= max``
   calls ``virtio_error("Desc next is %u")``: the device is marked broken (NEEDS_RESET and a
   config interrupt with VERSION_1), and the reply is still a success;
7. ``descs`` is prepended, so the chain prints last descriptor first.
"""

from __future__ import annotations

import struct
from typing import Any

from vdecode.errors import MissingData
from vdecode.profiles import Profile
from vdecode.reconstruct.qapi import shape
from vdecode.reconstruct.qmp_errors import QmpError, qemu_would_abort, qmp_error
from vdecode.reconstruct.queue_status import find_queue
from vdecode.reconstruct.status import find_device
from vdecode.sources.qemu_state import VirtIODeviceState
from vdecode.virtio.bits import decode_desc_flags
from vdecode.virtio.device import (VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
                                   VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VirtioMachine,
                                   has_feature, is_big_endian)

COMMAND = "x-query-virtio-queue-element"
VRING_DESC_F_NEXT = 1
VRING_DESC_F_INDIRECT = 4
DESC_SIZE = 16


def virtio_error(dev: VirtIODeviceState) -> None:
    """QEMU 7.2 ``virtio_error``: broken, and with VERSION_1 NEEDS_RESET plus a config notify."""
    if has_feature(dev, VIRTIO_F_VERSION_1):
        dev.status = (dev.status or 0) | VIRTIO_CONFIG_S_NEEDS_RESET
        # virtio_notify_config: only once DRIVER_OK; sets isr |= 0x3
        if dev.status & VIRTIO_CONFIG_S_DRIVER_OK:
            dev.isr = (dev.isr or 0) | 0x3
    dev.broken = True


def _missing(err: MissingData) -> QmpError:
    return QmpError(f"vdecode: the dump does not hold what QEMU would read here: {err}")


def x_query_virtio_queue_element(machine: VirtioMachine, profile: Profile,
                                 args: dict[str, Any]) -> dict[str, Any]:
    dev = machine.find_device(args["path"])
    if dev is None:
        raise qmp_error(profile, "device_not_found", args["path"], command=COMMAND)
    q = find_queue(profile, dev, args["queue"])
    if has_feature(dev, VIRTIO_F_RING_PACKED):
        raise qmp_error(profile, "packed", command=COMMAND)
    num = q.vring_num
    if "index" in args:
        slot = args["index"] % num
    else:
        if q.last_avail_idx is None:
            raise QmpError(f"vdecode: cannot answer from these inputs: last_avail_idx of queue "
                           f"{q.queue_index} (give an index, a log, or a QEMU core)")
        slot = q.last_avail_idx % num
    if not q.desc:
        raise qmp_error(profile, "region_caches", command=COMMAND)
    order = "big" if is_big_endian(dev) else "little"
    fmt = (">" if order == "big" else "<") + "QIHH"
    try:
        head = machine.avail_ring(dev, q, slot)
        if head >= num:
            raise qemu_would_abort(f"avail ring slot {slot} holds head {head} >= queue size {num} "
                                   f"(address_space_read_cached asserts)")
        table, maxn = q.desc, num
        addr, length, flags, nxt = struct.unpack(fmt, machine.read(table + DESC_SIZE * head,
                                                                   DESC_SIZE, f"descriptor {head}"))
        if flags & VRING_DESC_F_INDIRECT:
            if length == 0:
                raise qemu_would_abort(f"descriptor {head} is indirect with length 0 "
                                       f"(address_space_cache_init asserts len > 0)")
            if machine.space is None or not machine.space.is_present(addr, length):
                raise qmp_error(profile, "cannot_map_indirect", command=COMMAND)
            if length < DESC_SIZE:
                raise qemu_would_abort(f"descriptor {head} is indirect with length {length} < 16 "
                                       f"(the read of entry 0 asserts)")
            table, maxn = addr, length // DESC_SIZE
            addr, length, flags, nxt = struct.unpack(
                fmt, machine.read(table, DESC_SIZE, "indirect descriptor 0"))
        h = machine.header(dev, q)
        q.shadow_avail_idx = h.avail_idx          # vring_avail_idx() side effect
        q.provenance["shadow_avail_idx"] = "replayed"
        descs: list[dict[str, Any]] = []
        while len(descs) < maxn:                  # "A buggy driver may produce an infinite loop"
            descs.insert(0, shape(profile, "VirtioRingDesc", {
                "addr": addr, "len": length, "flags": decode_desc_flags(flags, profile.table("features")["vring_desc_flags"])}))
            if not flags & VRING_DESC_F_NEXT:
                break
            if nxt >= maxn:
                # virtqueue_split_read_next_desc: virtio_error(), the reply still goes out
                machine.notes.append(f"{dev.canonical_path}: QEMU would print: "
                                     + profile.table("errors")["desc_next"] % nxt)
                virtio_error(dev)
                break
            addr, length, flags, nxt = struct.unpack(
                fmt, machine.read(table + DESC_SIZE * nxt, DESC_SIZE, f"descriptor {nxt}"))
    except MissingData as err:
        raise _missing(err) from err
    return shape(profile, "VirtioQueueElement", {
        "name": dev.name, "index": head,
        "descs": descs,
        "avail": shape(profile, "VirtioRingAvail", {"flags": h.avail_flags, "idx": h.avail_idx,
                                                     "ring": head}),
        "used": shape(profile, "VirtioRingUsed", {"flags": h.used_flags, "idx": h.used_idx})})
