"""What becomes of a logged queue whose ring went stale.

The carved ring matched to it takes the logged addresses' place (provenance ``carved``); a device
none of whose rings is left, while the guest's driver records are readable, is reset as QEMU 7.2
``virtio_reset`` (``hw/virtio/virtio.c``) leaves it when Linux's ``virtio_dev_remove``
(``drivers/virtio/virtio.c``) lets go of it.
"""

from __future__ import annotations

from vdecode.reconstruct.ring_candidates import RingMatch
from vdecode.sources.qemu_state import VirtIODeviceState
from vdecode.virtio.carved_ring import CarvedRing

__all__ = ("apply_matches", "driver_let_go", "reset_like_qemu")


def apply_matches(devices: list[VirtIODeviceState], matches: list[RingMatch],
                  claimed: dict[int, CarvedRing | None], why: dict[tuple[str, int], str],
                  stale_of: dict[str, set[int]], drivers_seen: bool) -> list[str]:
    """Put matched rings into the queues (provenance ``carved``), reset devices whose driver let
    go, and say what was done."""
    notes: list[str] = []
    released: set[str] = set()
    for m in matches:
        dev = next(d for d in devices if d.canonical_path == m.path)
        q = dev.queues[m.queue]
        if m.ring is None:
            if m.path in released:
                continue
            if drivers_seen and driver_let_go(dev, stale_of[m.path], claimed, matches):
                released.add(m.path)
                reset_like_qemu(dev)
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
        q.desc, q.avail, q.used = r.desc, r.avail, r.used
        claimed[r.desc] = r
        for k in ("vring_desc", "vring_avail", "vring_used"):
            q.provenance[k] = "carved"
    return notes


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


def reset_like_qemu(dev: VirtIODeviceState) -> None:
    """QEMU 7.2 ``virtio_reset`` (``hw/virtio/virtio.c``) as the driver's removal leaves the
    device: features, ISR, queue selector and every queue's addresses and counters zeroed,
    ``vring.num`` back to ``vring.num_default``, not started; then Linux's
    ``virtio_dev_remove`` writes ACKNOWLEDGE again. Values are marked ``"inferred"``."""
    dev.status = VIRTIO_CONFIG_S_ACKNOWLEDGE
    dev.guest_features = 0
    dev.isr = 0
    dev.queue_sel = 0
    dev.started = False
    dev.broken = False
    for k in ("status", "guest_features", "isr", "queue_sel", "started", "broken"):
        dev.provenance[k] = "inferred"
    for q in dev.queues.values():
        q.desc = q.avail = q.used = 0
        if q.vring_num_default is not None:
            q.vring_num = q.vring_num_default
        q.last_avail_idx = q.shadow_avail_idx = q.used_idx = q.inuse = q.signalled_used = 0
        q.signalled_used_valid = False
        for k in ("vring_desc", "vring_avail", "vring_used", "last_avail_idx", "shadow_avail_idx",
                  "used_idx", "inuse", "signalled_used", "signalled_used_valid"):
            q.provenance[k] = "inferred"
