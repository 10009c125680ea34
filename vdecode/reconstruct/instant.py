"""Move logged QEMU state to the dump instant, using what the guest's rings say.

Rules (reference qemu72-virtio-qmp.md §3.3.1 and §4, checked on the shared captures):

* ``used_idx`` is ``used->idx`` in guest memory (``vring_used_idx_set`` writes both at once).
* ``inuse`` keeps the logged value: at a stop QEMU has drained block I/O (``vm_stop`` →
  ``bdrv_drain_all``) and devices that hold elements (the balloon stats queue) keep holding them.
* ``last_avail_idx = used_idx + inuse`` (``virtqueue_split_pop``/``flush`` keep that identity).
* ``shadow_avail_idx``: a queue that moved was drained by QEMU, which re-read ``avail->idx`` to see
  it empty, so it equals ``avail->idx``; a queue that did not move keeps the logged value.
* ``signalled_used``/``-valid``: ``0``/``false`` without ``VIRTIO_RING_F_EVENT_IDX`` (exact); a
  queue that moved was notified after its last push: ``used_idx``/``true``.
* ``isr`` bit 0 is set by every queue interrupt and only cleared when the guest reads the ISR:
  never with MSI-X, so a device with a queue that moved has it set; on every interrupt with INTx
  (proxies without MSI-X vectors, ``formats/.../transport.json``) or virtio-mmio, so there the
  logged value stands.
* ``dump-guest-memory`` stops the VM (``dump_init``: ``vm_stop``): ``vm_running`` false, vhost
  stopped.
* vhost devices: the stop syncs QEMU's copy (``vhost_virtqueue_stop``:
  ``virtio_queue_set_last_avail_idx`` with the backend's base, which sets ``last_avail_idx`` and
  ``shadow_avail_idx``; ``virtio_queue_update_used_idx``; ``virtio_queue_invalidate_signalled_used``
  leaves ``signalled_used`` and clears ``-valid``). A stopped backend has drained its queue, so its
  base is ``used_idx + inuse``. Their interrupts went through irqfds, so ``isr`` is untouched.
* Packed rings: QEMU writes ``shadow_avail_idx | wrap << 15`` to the device event area when it
  re-enables notifications with EVENT_IDX; after a drain that is also ``last_avail_idx``.

Every value set here is marked ``"dump"`` (read from guest memory) or ``"inferred"`` (a rule) in
``provenance``, so the human output can say how sure it is.
"""

from __future__ import annotations

from vdecode.errors import MissingData
from vdecode.profiles import Profile
from vdecode.sources.qemu_state import QemuVirtioState, VirtIODeviceState, VirtQueueState
from vdecode.virtio.device import (VIRTIO_F_RING_PACKED, VIRTIO_RING_F_EVENT_IDX, VirtioMachine,
                                   has_feature)

VRING_PACKED_EVENT_FLAG_DESC = 0x2


def _moved_split(m: VirtioMachine, dev: VirtIODeviceState, q: VirtQueueState,
                 notes: list[str]) -> bool:
    h = m.header(dev, q)
    num = q.vring_num or 0
    if num and (h.avail_idx - h.used_idx) % 0x10000 > num:
        notes.append(f"{dev.canonical_path} queue {q.queue_index}: avail idx {h.avail_idx} is "
                     f"more than {num} ahead of used idx {h.used_idx}: the ring at the logged "
                     f"addresses may have moved (driver reset) or be corrupt")
    moved = q.used_idx is None or h.used_idx != q.used_idx
    q.used_idx = h.used_idx
    q.provenance["used_idx"] = "dump"
    if q.inuse is None:
        q.inuse = 0
        q.provenance["inuse"] = "inferred"
    q.last_avail_idx = (h.used_idx + q.inuse) % 0x10000
    q.provenance["last_avail_idx"] = "inferred"
    if moved or q.shadow_avail_idx is None:
        q.shadow_avail_idx = h.avail_idx
        q.provenance["shadow_avail_idx"] = "inferred"
    return moved


def _moved_packed(m: VirtioMachine, dev: VirtIODeviceState, q: VirtQueueState,
                  notes: list[str]) -> bool:
    off_wrap = m.read_u16(dev, q.used, f"device event off_wrap (queue {q.queue_index})")
    flags = m.read_u16(dev, q.used + 2, f"device event flags (queue {q.queue_index})")
    if not (has_feature(dev, VIRTIO_RING_F_EVENT_IDX) and flags == VRING_PACKED_EVENT_FLAG_DESC):
        notes.append(f"{dev.canonical_path} queue {q.queue_index}: packed ring with notifications "
                     f"off: its counters are the log's, not the dump's")
        return False
    idx = off_wrap & 0x7FFF
    num = q.vring_num or 1
    inuse = q.inuse or 0
    used = (idx - inuse) % num
    moved = q.used_idx is None or used != q.used_idx
    q.shadow_avail_idx = q.last_avail_idx = idx
    q.used_idx = used
    for k in ("shadow_avail_idx", "last_avail_idx", "used_idx"):
        q.provenance[k] = "inferred"
    return moved


def guest_reads_isr(dev: VirtIODeviceState, profile: Profile) -> bool:
    """Whether the guest's interrupt handler reads (and so clears) ``vdev->isr``."""
    if dev.canonical_path.endswith("/virtio-backend"):      # a PCI (or CCW) proxy's backend
        return dev.name in profile.table("transport")["pci_no_msix_by_default"]
    return True                                              # virtio-mmio: vm_interrupt() reads it


def advance_to_dump(machine: VirtioMachine, profile: Profile) -> list[str]:
    """Update the machine's log-derived state to the dump instant, in place.

    :return: notes for stderr (rings that look moved, values that stay the log's).
    """
    notes: list[str] = []
    state: QemuVirtioState = machine.state
    for dev in state.devices:
        dev.vm_running = False
        dev.provenance["vm_running"] = "inferred"
        was_vhost = bool(dev.vhost_started)
        if was_vhost:
            dev.vhost_started = False
            dev.vhost_dev = None
            dev.provenance["vhost_started"] = "inferred"
        any_moved = False
        for q in dev.queues.values():
            if not q.desc or machine.space is None:
                continue
            try:
                if has_feature(dev, VIRTIO_F_RING_PACKED):
                    moved = _moved_packed(machine, dev, q, notes)
                else:
                    moved = _moved_split(machine, dev, q, notes)
            except MissingData as err:
                notes.append(f"{dev.canonical_path} queue {q.queue_index}: {err}; keeping the "
                             f"log's counters")
                continue
            if was_vhost:
                q.shadow_avail_idx = q.last_avail_idx
                q.provenance["shadow_avail_idx"] = "inferred"
                q.signalled_used_valid = False
                q.signalled_used = q.signalled_used or 0
                continue
            if not has_feature(dev, VIRTIO_RING_F_EVENT_IDX):
                q.signalled_used, q.signalled_used_valid = 0, False
            elif moved:
                q.signalled_used, q.signalled_used_valid = q.used_idx, True
                q.provenance["signalled_used"] = "inferred"
            any_moved |= moved
        if any_moved and dev.isr is not None and not dev.isr & 1 \
                and not guest_reads_isr(dev, profile):
            dev.isr |= 1
            dev.provenance["isr"] = "inferred"
    return notes
