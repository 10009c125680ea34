"""Move logged QEMU state to the dump instant, using what the guest's rings say.

Rules (reference qemu72-virtio-qmp.md §3.3.1 and §4, checked on the shared captures and on the
recordings described in ``docs/new-captures.md``):

* ``used_idx`` is ``used->idx`` in guest memory (``vring_used_idx_set`` writes both at once).
* ``inuse`` keeps the logged value: at a stop QEMU has drained block I/O (``vm_stop`` →
  ``bdrv_drain_all``) and devices that hold elements (the balloon stats queue) keep holding them.
* ``last_avail_idx = used_idx + inuse`` (``virtqueue_split_pop``/``flush`` keep that identity).
* ``shadow_avail_idx``: a queue that moved was drained by QEMU, which re-read ``avail->idx`` to see
  it empty, so it equals ``avail->idx``; a queue that did not move keeps the logged value. Queues
  whose device pops only what it needs (``formats/.../queues.json``) re-read it only when a pop
  finds ``last_avail_idx == shadow_avail_idx``: with the guest keeping the ring full, each re-read
  saw ``last + num``. A ring full at the dump of a queue QEMU reads only to pop (virtio-net's,
  ``reads_only_to_pop``) was filled after QEMU's last read: the logged shadow stays when it
  covers every pop since.
* ``signalled_used``/``-valid``: split rings without ``VIRTIO_RING_F_EVENT_IDX`` never touch them
  (``virtio_split_should_notify`` returns first): ``0``/``false``. Otherwise a queue that moved
  was notified after its last push: ``used_idx``/``true`` (``virtio_packed_should_notify`` sets
  them on every call, EVENT_IDX or not).
* ``isr`` bit 0 is set by every queue interrupt and cleared only when the guest reads the ISR:
  never with MSI-X nor on virtio-ccw (no ISR there), so a device with a queue that moved has it
  set, and 0x3 if the queue is one a driver moves only after a config change
  (``virtio_notify_config``: the balloon's inflate and deflate queues, ``queues.json``
  ``config_driven_queues``). Where the guest's handler reads it (INTx proxies, virtio-mmio, or a
  device the log shows clearing it), an interrupt is still pending only if QEMU pushed past the
  ``used_event`` the guest last armed.
* ``dump-guest-memory`` stops the VM (``dump_init``: ``vm_stop``): ``vm_running`` false, vhost
  stopped. The stop syncs a vhost device's queues (``vhost_virtqueue_stop``:
  ``virtio_queue_set_last_avail_idx`` with the backend's base, which sets ``last_avail_idx`` and
  ``shadow_avail_idx``; ``virtio_queue_update_used_idx``; ``virtio_queue_invalidate_signalled_used``
  leaves ``signalled_used`` and clears ``-valid``); a stopped backend has drained its queue, so
  its base is ``used_idx + inuse``. Its interrupts went through irqfds: ``isr`` is untouched.
* A ring the carver found in place of the logged one was set up after a device reset
  (``virtio_reset`` zeroes every counter and the ISR): its counters start from zero.
* Packed rings: QEMU writes ``shadow_avail_idx | wrap << 15`` to the device event area when it
  re-enables notifications with EVENT_IDX; after a drain that is also ``last_avail_idx``. Without
  that, the used elements' descriptor flags show where ``used_idx`` stands.

Every value set here is marked ``"dump"`` (read from guest memory) or ``"inferred"`` (a rule) in
``provenance``, so the human output can say how sure it is. Nothing is changed in place: the
stage returns a new machine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from vdecode.errors import MissingData
from vdecode.frozen import record
from vdecode.profiles import Profile
from vdecode.space.base import Gpa
from vdecode.space.firmware import machine_version_of
from vdecode.sources.qemu_state import (CARVED, DUMP, INFERRED, LOG, PARTIAL, VirtIODeviceState,
                                        VirtQueueState, marks)
from vdecode.virtio.device import (VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_F_RING_PACKED,
                                   VIRTIO_RING_F_EVENT_IDX, RingHeader, VirtioMachine,
                                   has_feature, is_big_endian)
from vdecode.virtio.packed_ring import (VRING_PACKED_EVENT_FLAG_DESC, find_used_boundary,
                                        read_packed_ring)
from vdecode.virtio.transport import guest_reads_isr
from vdecode.virtio.layouts import ring_areas

_U16 = 0x10000


@record
class QueueMove:
    """What a queue did between the log and the dump."""

    moved: bool
    irq_pending: bool = False   # EVENT_IDX: QEMU pushed past the used_event the guest last armed


class _Stopped(Exception):
    """Guest memory ran out part way through a queue: the values worked out so far stand."""

    def __init__(self, queue: VirtQueueState, err: MissingData) -> None:
        super().__init__(str(err))
        self.queue, self.err = queue, err


def _advance_split(m: VirtioMachine, dev: VirtIODeviceState, q: VirtQueueState,
                   profile: Profile, notes: list[str]) -> tuple[VirtQueueState, QueueMove]:
    h = m.header(dev, q)
    num = q.vring_num or 0
    if num and (h.avail_idx - h.used_idx) % _U16 > num:
        notes.append(f"{dev.canonical_path} queue {q.queue_index}: avail idx {h.avail_idx} is "
                     f"more than {num} ahead of used idx {h.used_idx}: the ring at the logged "
                     f"addresses may have moved (driver reset) or be corrupt")
    logged_used, logged_last, logged_shadow = q.used_idx, q.last_avail_idx, q.shadow_avail_idx
    moved = logged_used is None or h.used_idx != logged_used
    changes: dict = {"used_idx": h.used_idx}
    mark = {"used_idx": DUMP}
    inuse = q.inuse
    if inuse is None:
        inuse = changes["inuse"] = 0
        mark["inuse"] = INFERRED
    last = changes["last_avail_idx"] = (h.used_idx + inuse) % _U16
    mark["last_avail_idx"] = INFERRED
    shadow = logged_shadow
    if logged_shadow is None:
        shadow = h.avail_idx
    elif moved and listed(q.queue_index, profile.table("queues")["pop_only"].get(dev.name, ())):
        shadow = _pop_only_shadow(logged_last, logged_shadow, last, num, h.avail_idx)
    elif moved and listed(q.queue_index, profile.table("queues").get("reads_only_to_pop", {})
                          .get(dev.name, ())) and _full_since_last_read(h, num, last, logged_shadow):
        shadow = logged_shadow
    elif moved:
        shadow = h.avail_idx
    if 0 < (last - shadow) % _U16 < _U16 // 2:
        # last_avail_idx <= shadow_avail_idx always: a pop that reached the shadow re-read avail
        shadow = h.avail_idx
    if shadow != logged_shadow or q.provenance.get("shadow_avail_idx") != LOG:
        changes["shadow_avail_idx"] = shadow
        mark["shadow_avail_idx"] = INFERRED
    q = q.evolve(mark, **changes)
    pending = False
    if moved and logged_used is not None and num and has_feature(dev, VIRTIO_RING_F_EVENT_IDX):
        try:
            used_event = m.avail_ring(dev, q, num)       # vring_get_used_event: avail->ring[num]
        except MissingData as err:
            raise _Stopped(q, err) from err
        pending = (used_event - logged_used) % _U16 < (h.used_idx - logged_used) % _U16
    return q, QueueMove(moved, pending)


def _full_since_last_read(h: RingHeader, num: int, last: int, logged_shadow: int | None) -> bool:
    """A ring the guest filled after QEMU last read ``avail->idx``, whose logged shadow QEMU may
    still hold; for a queue whose device reads it only to pop (``queues.json``
    ``reads_only_to_pop``: virtio-net's ``virtio_net_has_buffers`` then ``virtqueue_pop``).

    The guest never offers more than ``num`` buffers beyond those it got back, and a read that
    finds buffers is followed by a pop. So a ring full at the dump (``avail->idx == used->idx +
    num``, nothing in use) was not full when QEMU last read it: the guest's last buffers (a
    receive queue refilled after the last packet) came after, and ``shadow_avail_idx`` is below
    ``avail->idx``. The reads since the log (one before each pop) are not in the dump; the logged
    shadow, when it still covers every pop since (``last_avail_idx <= shadow < avail->idx``), is
    the one value they are known to have seen."""
    if not num or logged_shadow is None or (h.avail_idx - h.used_idx) % _U16 != num:
        return False
    return (h.used_idx - last) % _U16 == 0 and (logged_shadow - last) % _U16 < num


def listed(queue: int, rows) -> bool:
    """Whether ``queue`` is in a ``queues.json`` row: queue numbers, or ``[first, last, step]``
    runs (virtio-serial's even queues, up to 1022)."""
    for row in rows:
        if isinstance(row, int) and row == queue:
            return True
        if isinstance(row, list):
            first, last, step = row
            if first <= queue <= last and (queue - first) % step == 0:
                return True
    return False


def _pop_only_shadow(last0: int | None, shadow0: int, last1: int, num: int, avail: int) -> int:
    """``shadow_avail_idx`` of a queue QEMU re-reads only when it runs out of known buffers."""
    last0 = last0 if last0 is not None else shadow0
    if (last1 - last0) % _U16 <= (shadow0 - last0) % _U16 or not num:
        return shadow0
    ahead = (last1 - shadow0) % _U16
    shadow = (shadow0 + num * math.ceil(ahead / num)) % _U16
    if (shadow - last1) % _U16 <= (avail - last1) % _U16:
        return shadow
    # The guest had offered fewer than num buffers when QEMU re-read avail->idx (at the pop that
    # found last_avail_idx == shadow0). These queues' Linux drivers (virtio-input's eventq,
    # virtio-serial's receive and control queues) give a buffer back for each one used, so what
    # was offered then is avail->idx now less the buffers used since: one re-read, when that
    # still covers every pop since.
    once = (avail - ahead) % _U16
    if 0 <= (once - last1) % _U16 <= (avail - last1) % _U16 and ahead <= num:
        return once
    return avail          # never past what the guest had offered


def _advance_packed(m: VirtioMachine, dev: VirtIODeviceState, q: VirtQueueState
                    ) -> tuple[VirtQueueState, QueueMove]:
    num = q.vring_num or 0
    ring = read_packed_ring(m.space, q.desc, q.avail, q.used, num,
                            little_endian=not is_big_endian(dev), queue=f"queue {q.queue_index}")
    inuse = q.inuse or 0
    off_wrap, flags = ring.device_event
    if has_feature(dev, VIRTIO_RING_F_EVENT_IDX) and flags == VRING_PACKED_EVENT_FLAG_DESC:
        last = off_wrap & 0x7FFF
        used = (last - inuse) % num
    else:
        # the device area is only written when notifications are toggled with EVENT_IDX
        used = find_used_boundary(ring)
        last = (used + inuse) % num
    moved = q.used_idx is None or used != q.used_idx
    q = q.evolve(marks(INFERRED, "shadow_avail_idx", "last_avail_idx", "used_idx"),
                 shadow_avail_idx=last, last_avail_idx=last, used_idx=used)
    return q, QueueMove(moved)


def _config_changed(dev: VirtIODeviceState, queues: dict[int, VirtQueueState],
                    profile: Profile) -> bool:
    """Whether a queue the driver moves only after a config change (``queues.json``
    ``config_driven_queues``: the balloon's inflate and deflate queues) moved since the log.

    An inference: the driver may also have acted on a change made before the log, at a config
    interrupt it had not yet served; then the logged ``isr`` (never cleared under MSI-X) has the
    0x2 bit already and nothing changes. A driver not yet ready at the log (no DRIVER_OK) reads
    the target when it starts, without an interrupt (``virtio_notify_config`` does nothing
    before DRIVER_OK): no inference then."""
    if not (dev.status or 0) & VIRTIO_CONFIG_S_DRIVER_OK:
        return False
    rows = profile.table("queues").get("config_driven_queues", {}).get(dev.name, {})
    for qn, unless_bit in rows.items():
        logged, now = dev.queues.get(int(qn)), queues.get(int(qn))
        if logged is None or now is None or now.used_idx == logged.used_idx:
            continue
        if unless_bit is None or not (dev.guest_features or 0) >> unless_bit & 1:
            return True
    return False


def _set_up_anew(q: VirtQueueState) -> bool:
    """A logged queue whose ring the carver found elsewhere: the driver reset the device."""
    return q.provenance.get("vring_desc") == CARVED and q.provenance.get("queue") != "unlogged"


def _reset_counters(q: VirtQueueState) -> VirtQueueState:
    """``virtio_reset``'s zeros for a queue whose ring the driver set up anew.

    ``signalled_used_valid`` comes back at once on queues whose device notifies while the driver
    sets up, before any push (virtio-serial's output queues): the log shows those as valid with
    ``used_idx`` 0, and the re-initialised device does the same again.
    Elements a device holds in steady state (``inuse``: the balloon's stats buffer) are held again
    once the driver has re-posted them, so ``inuse`` stays the log's.
    """
    valid_at_init = bool(q.signalled_used_valid) and not q.used_idx
    return q.evolve(marks(INFERRED, "used_idx", "last_avail_idx", "shadow_avail_idx",
                          "signalled_used", "signalled_used_valid"),
                    used_idx=0, last_avail_idx=0, shadow_avail_idx=0, signalled_used=0,
                    signalled_used_valid=valid_at_init)


def advance_to_dump(machine: VirtioMachine, profile: Profile, *,
                    platform: Callable[[], tuple[int, int] | None] | None = None,
                    guest_arch: str | None = None) -> tuple[VirtioMachine, list[str]]:
    """The machine with its log-derived state moved to the dump instant.

    :param guest_arch: the guest dump's ``info["machine"]`` (an s390x guest's devices are on
        virtio-ccw: :func:`~vdecode.virtio.transport.transport_of`).

    :return: the new machine, and notes for stderr (rings that look moved, values that stay the
        log's).
    """
    notes: list[str] = []
    platform = platform or machine_version_of(machine.space)
    devices = tuple(_advance_device(machine, dev, profile, notes, platform, guest_arch)
                    for dev in machine.state.devices)
    return machine.with_state(replace(machine.state, devices=devices)), notes


def _ring_absent(space, q: VirtQueueState, packed: bool) -> bool:
    """Whether the queue's ring lies in bytes the dump lacks (``space.absent``)."""
    absent = getattr(space, "absent", None)
    return absent is not None and any(a and absent.covers(a, z) and not space.is_present(a, z)
                                      for _, a, z in ring_areas(q, packed))


def _features_from_rings(machine: VirtioMachine, dev: VirtIODeviceState) -> VirtIODeviceState:
    """The negotiated feature bits a device's rings show, when its log holds no status reply
    (QEMU 11.1.x aborts on x-query-virtio-status, so a log of it has none): marked
    ``inferred-partial``, so no reply prints them as the whole word.

    - ``VIRTIO_F_RING_PACKED``: a logged ring that is a packed ring (flags, ids, event areas:
      :func:`~vdecode.virtio.ring_checks.check_packed_ring`) and not a split one;
    - ``VIRTIO_RING_F_EVENT_IDX``: a logged queue with ``signalled-used-valid`` true on a split
      ring (``virtio_split_should_notify`` sets it only with EVENT_IDX)."""
    from vdecode.virtio.ring_checks import check_packed_ring, check_ring

    bits, packed = 0, False
    for q in dev.queues.values():
        num = q.vring_num or 0
        if not (q.desc and num):
            continue
        if check_packed_ring(machine.space, num, q.desc, q.avail, q.used) is not None and \
                check_ring(machine.space, num, q.desc, q.avail, q.used) is None:
            packed = True
    if packed:
        bits |= 1 << VIRTIO_F_RING_PACKED
    elif any(q.signalled_used_valid for q in dev.queues.values()) or \
            any(_event_fields_written(machine, q) for q in dev.queues.values()):
        bits |= 1 << VIRTIO_RING_F_EVENT_IDX
    return dev.evolve({"guest_features": PARTIAL}, guest_features=bits)


def _event_fields_written(machine: VirtioMachine, q: VirtQueueState) -> bool:
    """Whether a split ring's event fields were written: the driver's ``used_event``
    (``avail->ring[num]``) or QEMU's ``avail_event`` (``used->ring[num]``, written by
    ``vring_set_avail_event``). Only a ring with EVENT_IDX negotiated has them (without it QEMU
    and the driver use the rings' flags instead)."""
    num = q.vring_num or 0
    if not (q.avail and q.used and num):
        return False
    try:
        used_event = bytes(machine.space.read(Gpa(q.avail + 4 + 2 * num), 2))
        avail_event = bytes(machine.space.read(Gpa(q.used + 4 + 8 * num), 2))
    except MissingData:
        return False
    return used_event != b"\0\0" or avail_event != b"\0\0"


def _advance_device(machine: VirtioMachine, dev: VirtIODeviceState, profile: Profile,
                    notes: list[str], platform: Callable[[], tuple[int, int] | None],
                    guest_arch: str | None = None) -> VirtIODeviceState:
    """One device at the dump instant (the rules in the module docstring)."""
    if dev.guest_features is None and machine.space is not None:
        dev = _features_from_rings(machine, dev)
    dev_marks = {"vm_running": INFERRED}
    changes: dict = {"vm_running": False}
    was_vhost = bool(dev.vhost_started)
    if was_vhost:
        changes.update(vhost_started=False, vhost_dev=None)
        dev_marks["vhost_started"] = INFERRED
    reads_isr = guest_reads_isr(dev, profile, dev.isr, [q.used_idx for q in dev.queues.values()],
                                platform, guest_arch)
    isr = dev.isr
    if any(_set_up_anew(q) for q in dev.queues.values()):
        isr = changes["isr"] = 0                          # its rings moved: it was reset
        dev_marks["isr"] = INFERRED
    packed = has_feature(dev, VIRTIO_F_RING_PACKED)
    any_moved = irq_pending = False
    queues: dict[int, VirtQueueState] = {}
    for qn, q in dev.queues.items():
        queues[qn] = q
        if was_vhost and not q.desc:
            # vhost_virtqueue_stop returns early for a queue never set up: reset values
            last = q.last_avail_idx or 0
            queues[qn] = q.evolve(last_avail_idx=last, shadow_avail_idx=last)
            continue
        if not q.desc or machine.space is None:
            continue
        if _set_up_anew(q):
            q = queues[qn] = _reset_counters(q)
        try:
            q, move = (_advance_packed(machine, dev, q) if packed
                       else _advance_split(machine, dev, q, profile, notes))
        except (MissingData, _Stopped) as err:
            if isinstance(err, _Stopped):
                queues[qn] = err.queue
            elif _ring_absent(machine.space, q, packed):
                continue            # the ring stage said so, once per device
            notes.append(f"{dev.canonical_path} queue {q.queue_index}: {err}; keeping the "
                         f"log's counters")
            continue
        if was_vhost:
            q = q.evolve(marks(INFERRED, "shadow_avail_idx", "signalled_used_valid"),
                         shadow_avail_idx=q.last_avail_idx, signalled_used_valid=False,
                         signalled_used=q.signalled_used or 0)
        elif not packed and not has_feature(dev, VIRTIO_RING_F_EVENT_IDX):
            q = q.evolve(signalled_used=0, signalled_used_valid=False)
        elif move.moved:
            q = q.evolve(marks(INFERRED, "signalled_used", "signalled_used_valid"),
                         signalled_used=q.used_idx, signalled_used_valid=True)
        queues[qn] = q
        if not was_vhost:
            any_moved |= move.moved
            irq_pending |= move.irq_pending
    changes["queues"] = queues
    if not (isr is None or was_vhost or not any_moved):
        if not reads_isr:
            # a queue interrupt sets bit 0; a config change (virtio_notify_config) sets 0x3
            changes["isr"] = isr | (3 if _config_changed(dev, queues, profile) else 1)
        elif has_feature(dev, VIRTIO_RING_F_EVENT_IDX) and not packed:
            changes["isr"] = (isr & ~1) | int(irq_pending)
        dev_marks["isr"] = INFERRED
    return dev.evolve(dev_marks, **changes)
