"""What becomes of a logged queue whose ring went stale.

The carved ring matched to it takes the logged addresses' place (provenance ``carved``); a device
none of whose rings is left, while the guest's driver records are readable, is reset as QEMU 7.2
``virtio_reset`` (``hw/virtio/virtio.c``) leaves it when Linux's ``virtio_dev_remove``
(``drivers/virtio/virtio.c``) lets go of it.
"""

from __future__ import annotations

from collections.abc import Callable

from vdecode.profiles import Profile
from vdecode.reconstruct.rings.candidates import RingMatch
from vdecode.sources.qemu_state import CARVED, INFERRED, VirtIODeviceState, marks
from vdecode.virtio.carved_ring import CarvedRing
from vdecode.virtio.transport import guest_reads_isr, queue_sel_after_removal

__all__ = ("apply_matches", "driver_let_go", "reset_like_qemu")


def apply_matches(devices: tuple[VirtIODeviceState, ...], matches: list[RingMatch],
                  claimed: dict[int, CarvedRing | None], why: dict[tuple[str, int], str],
                  stale_of: dict[str, set[int]], drivers_seen: bool, profile: Profile,
                  platform: Callable[[], tuple[int, int] | None] | None = None,
                  guest_arch: str | None = None
                  ) -> tuple[tuple[VirtIODeviceState, ...], list[str]]:
    """The devices with matched rings in their queues (provenance ``carved``) and devices whose
    driver let go reset, and notes saying what was done. ``claimed`` (the caller's bookkeeping
    of which ring each address holds) learns the rings taken."""
    notes: list[str] = []
    released: set[str] = set()
    by_path = {d.canonical_path: d for d in devices}
    for m in matches:
        dev = by_path[m.path]
        if m.ring is None:
            if m.path in released:
                continue
            if drivers_seen and driver_let_go(dev, stale_of[m.path], claimed, matches):
                released.add(m.path)
                reads_isr = guest_reads_isr(dev, profile, dev.isr,
                                            [q.used_idx for q in dev.queues.values()], platform,
                                            guest_arch)
                by_path[m.path] = reset_like_qemu(dev, queue_sel_after_removal(dev, reads_isr,
                                                                               guest_arch))
                notes.append(f"{m.path}: {why[(m.path, m.queue)]}, no other queue of the device "
                             f"holds a used ring and the guest's driver records (found for other "
                             f"devices) name no ring of its sizes: the driver let go of it; "
                             f"answering as QEMU's reset leaves a device still plugged (vring "
                             f"addresses 0, features 0, status ACKNOWLEDGE as Linux's "
                             f"virtio_dev_remove leaves it); if it was unplugged, QEMU no longer "
                             f"has it")
                continue
            notes.append(f"{m.path} queue {m.queue}: {why[(m.path, m.queue)]} and {m.how}; "
                         f"keeping the log's addresses")
            continue
        r = m.ring
        notes.append(f"{m.path} queue {m.queue}: {why[(m.path, m.queue)]} (driver reset?); "
                     f"using the carved ring desc {r.desc:#x} avail {r.avail:#x} "
                     f"used {r.used:#x}: {m.how}"
                     + (f"; {m.ambiguous} other candidates scored the same" if m.ambiguous else ""))
        q = dev.queues[m.queue].evolve(marks(CARVED, "vring_desc", "vring_avail", "vring_used"),
                                       desc=r.desc, avail=r.avail, used=r.used)
        by_path[m.path] = dev.with_queue(q)
        claimed[r.desc] = r
    return tuple(by_path[d.canonical_path] for d in devices), notes


VIRTIO_CONFIG_S_ACKNOWLEDGE = 1


def driver_let_go(dev: VirtIODeviceState, stale: set[int], claimed: dict[int, CarvedRing | None],
                  matches: list[RingMatch]) -> bool:
    """Every stale queue of ``dev`` found no ring, and its other queues hold only untouched
    (all-zero) rings: nothing in guest memory is the device's any more."""
    if any(m.path == dev.canonical_path and m.ring is not None for m in matches):
        return False
    for qn, q in dev.queues.items():
        if not q.desc or qn in stale:
            continue
        ring = claimed.get(q.desc)
        if ring is None or not ring.empty:
            return False
    return True


_RESET_QUEUE_FIELDS = ("vring_desc", "vring_avail", "vring_used", "last_avail_idx",
                       "shadow_avail_idx", "used_idx", "inuse", "signalled_used",
                       "signalled_used_valid")


def reset_like_qemu(dev: VirtIODeviceState, queue_sel: int = 0) -> VirtIODeviceState:
    """The device as QEMU 7.2 ``virtio_reset`` (``hw/virtio/virtio.c``) and then the driver's
    removal leave it: features, ISR and every queue's addresses and counters zeroed, ``vring.num``
    back to ``vring.num_default``, not started; the queue selector where deleting the queues
    left it (:func:`~vdecode.virtio.transport.queue_sel_after_removal`); then Linux's
    ``virtio_dev_remove`` writes ACKNOWLEDGE again. Values are marked ``"inferred"``."""
    queues = {qn: q.evolve(marks(INFERRED, *_RESET_QUEUE_FIELDS), desc=0, avail=0, used=0,
                           vring_num=(q.vring_num_default if q.vring_num_default is not None
                                      else q.vring_num),
                           last_avail_idx=0, shadow_avail_idx=0, used_idx=0, inuse=0,
                           signalled_used=0, signalled_used_valid=False)
              for qn, q in dev.queues.items()}
    return dev.evolve(marks(INFERRED, "status", "guest_features", "isr", "queue_sel", "started",
                            "broken"),
                      status=VIRTIO_CONFIG_S_ACKNOWLEDGE, guest_features=0, isr=0,
                      queue_sel=queue_sel, started=False, broken=False, queues=queues)
