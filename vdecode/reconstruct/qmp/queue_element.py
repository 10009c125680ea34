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

from typing import Any

from vdecode.errors import MissingData
from vdecode.profiles import Profile
from vdecode.reconstruct.qmp.qapi import shape
from vdecode.reconstruct.qmp.error_replies import QmpError, not_known, qemu_would_abort, qmp_error
from vdecode.reconstruct.qmp.status import find_device
from vdecode.reconstruct.qmp.queue_status import find_queue
from vdecode.reconstruct.qmp.monitor import Effect
from vdecode.sources.qemu_state import REPLAYED, VirtIODeviceState, marks
from vdecode.virtio.bits import decode_desc_flags
from vdecode.virtio.chains import (QMP_ABORT_HEAD_OUT_OF_RANGE, QMP_ABORT_INDIRECT_LEN_ZERO,
                                   QMP_ABORT_INDIRECT_SHORT, QMP_CANNOT_MAP_INDIRECT,
                                   walk_chain_qemu_qmp)
from vdecode.virtio.layouts import vring_layouts
from vdecode.virtio.split_ring import read_desc_table
from vdecode.virtio.device import (VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
                                   VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VirtioMachine,
                                   has_feature, is_big_endian)

COMMAND = "x-query-virtio-queue-element"
_ABORTS = {
    QMP_ABORT_HEAD_OUT_OF_RANGE: "avail ring slot {slot} holds head {head} >= queue size {num} "
                                 "(address_space_read_cached asserts)",
    QMP_ABORT_INDIRECT_LEN_ZERO: "descriptor {head} is indirect with length 0 "
                                 "(address_space_cache_init asserts len > 0)",
    QMP_ABORT_INDIRECT_SHORT: "descriptor {head} is indirect with a length below 16 "
                              "(reading entry 0 asserts)",
}


def virtio_error(dev: VirtIODeviceState) -> VirtIODeviceState:
    """The device as QEMU 7.2 ``virtio_error`` leaves it: broken, and with VERSION_1 NEEDS_RESET
    plus a config notify."""
    status, isr = dev.status, dev.isr
    if has_feature(dev, VIRTIO_F_VERSION_1):
        status = (status or 0) | VIRTIO_CONFIG_S_NEEDS_RESET
        # virtio_notify_config: only once DRIVER_OK; sets isr |= 0x3
        if status & VIRTIO_CONFIG_S_DRIVER_OK:
            isr = (isr or 0) | 0x3
    return dev.evolve(marks(REPLAYED, "status", "isr", "broken"), status=status, isr=isr,
                      broken=True)


def _missing(err: MissingData) -> QmpError:
    return QmpError(f"vdecode: the dump does not hold what QEMU would read here: {err}")


def x_query_virtio_queue_element(machine: VirtioMachine, profile: Profile,
                                 args: dict[str, Any]) -> dict[str, Any]:
    # QEMU 8.2+ resolves the path as QOM does here too (qmp_find_virtio_device), 7.2 exactly
    dev = find_device(machine, profile, args["path"], COMMAND)
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
    if machine.space is None:
        if machine.state.source == "core":        # a core without guest RAM (dump-guest-core=off)
            raise not_known("guest RAM is not in this QEMU core (dump-guest-core=off); give a "
                            "guest dump of the same instant too: vdecode qmp CORE GUEST_DUMP")
        raise not_known("guest memory (the input holds no guest RAM)")
    layouts = vring_layouts(not is_big_endian(dev))
    try:
        head = machine.avail_ring(dev, q, slot)
        descs = read_desc_table(machine.space, q.desc, num, layouts,
                                f"descriptor table of queue {q.queue_index}")
        walk = walk_chain_qemu_qmp(machine.space, layouts, descs, head)
        if walk.outcome in _ABORTS:
            raise qemu_would_abort(_ABORTS[walk.outcome].format(head=head, num=num, slot=slot))
        if walk.outcome == QMP_CANNOT_MAP_INDIRECT:
            raise qmp_error(profile, "cannot_map_indirect", command=COMMAND)
        h = machine.header(dev, q)
    except MissingData as err:
        raise _missing(err) from err
    # vring_avail_idx() stores what it read: the side effect later queue-status replies show
    changed = dev.with_queue(q.evolve(marks(REPLAYED, "shadow_avail_idx"),
                                      shadow_avail_idx=h.avail_idx))
    notes: tuple[str, ...] = ()
    if walk.desc_next_error is not None:
        # virtqueue_split_read_next_desc: virtio_error(), and the reply still goes out
        notes = (f"{dev.canonical_path}: QEMU would print: "
                 + profile.table("errors")["desc_next"] % walk.desc_next_error,)
        changed = virtio_error(changed)
    flag_rows = profile.table("features")["vring_desc_flags"]
    descs_out = [shape(profile, "VirtioRingDesc", {"addr": a, "len": n,
                                                   "flags": decode_desc_flags(f, flag_rows)})
                 for a, n, f in reversed(walk.descs)]      # QEMU prepends each descriptor
    return Effect(shape(profile, "VirtioQueueElement", {
        "name": dev.name, "index": head,
        "descs": descs_out,
        "avail": shape(profile, "VirtioRingAvail", {"flags": h.avail_flags, "idx": h.avail_idx,
                                                     "ring": head}),
        "used": shape(profile, "VirtioRingUsed", {"flags": h.used_flags, "idx": h.used_idx})}),
        machine.state.with_device(changed), notes)
