"""Queues a log never asked about, found by carving: the rings of a device whose
``x-query-virtio-status`` was logged but whose ``x-query-virtio-queue-status`` was not.

That is the common case for vhost-user devices, where asking a running device's queue status
stops its ring (QEMU 7.2 ``qmp_x_query_virtio_queue_status`` → ``vhost_get_vring_base`` →
``VHOST_USER_GET_VRING_BASE``), and for logs where only the status was asked. The guest driver's
records tie carved rings to one device and give each ring its queue index; a driver device whose
rings no logged queue claims, and whose buffers look like this device's, is taken as its own when
it is the only such candidate.

Values set here are QEMU's after the dump's stop: ``vring.num`` the driver's size, queues the
driver never set up at ``num_default`` (taken as the set-up queues' size: Linux uses the device's
maximum), counters at ``used->idx`` (a stopped queue is drained), ``vring.align`` 4096 (every
7.2 transport but legacy virtio-mmio). They are marked ``"carved"``/``"inferred"``.
"""

from __future__ import annotations

from collections.abc import Callable

from vdecode.profiles import Profile
from vdecode.sources.qemu_state import (CARVED, DUMP, INFERRED, VirtIODeviceState, VirtQueueState,
                                        marks)
from vdecode.virtio.device import VirtioMachine, guest_is_big_endian

__all__ = ("fill_unlogged_queues",)


def _missing(dev: VirtIODeviceState) -> list[int]:
    if dev.num_vqs is None:
        return []
    return [q for q in range(dev.num_vqs) if q not in dev.queues and q not in dev.absent_queues]


def fill_unlogged_queues(machine: VirtioMachine, profile: Profile, *,
                         progress: Callable[[int, int], None] | None = None
                         ) -> tuple[VirtioMachine, list[str]]:
    """Give devices with unlogged queues the rings the carver ties to them.

    :return: the machine with those queues, and notes for stderr: what was filled from which
        driver device, or why not.
    """
    wanting = [d for d in machine.state.devices if _missing(d)]
    if not wanting or machine.space is None:
        return machine, []
    from vdecode.reconstruct.rings.kinds import group_by_device   # the carver: only when needed
    from vdecode.virtio.carve import carve_guest_rings
    align = profile.table("devices")["vring_align_default"]
    claimed = {q.desc for d in machine.state.devices for q in d.queues.values() if q.desc}
    rings = carve_guest_rings(machine.space, progress=progress,
                              guest_little_endian=not guest_is_big_endian(machine.state.devices))
    groups = [g for g in group_by_device(machine.space, rings)
              if g.device_va is not None and not any(r.desc in claimed for r in g.rings)
              and all(r.index is not None for r in g.rings)]
    notes: list[str] = []
    state = machine.state
    for dev in wanting:
        missing = _missing(dev)
        fits = [g for g in groups if g.kind == dev.name
                and max(r.index for r in g.rings) < (dev.num_vqs or 0)]
        if len(fits) != 1:
            notes.append(f"{dev.canonical_path}: queues {missing} were never asked in the log and "
                         f"{len(fits)} unclaimed {dev.name} driver devices were carved: not "
                         f"answered")
            continue
        group = fits[0]
        groups.remove(group)
        by_index = {r.index: r for r in group.rings}
        size = max(r.num for r in group.rings)
        for qn in missing:
            r = by_index.get(qn)
            provenance = {"queue": "unlogged", **marks(INFERRED, *_INFERRED_FIELDS)}
            if r is not None:
                provenance.update(marks(CARVED, "vring_desc", "vring_avail", "vring_used"),
                                  used_idx=DUMP)
            # counters follow from the ring in advance_to_dump; a queue never set up stays at 0
            counter = None if r else 0
            dev = dev.with_queue(VirtQueueState(
                queue_index=qn, vring_num=r.num if r else size, vring_num_default=size,
                vring_align=align, desc=r.desc if r else 0, avail=r.avail if r else 0,
                used=r.used if r else 0, inuse=0, signalled_used=0, signalled_used_valid=False,
                used_idx=counter, last_avail_idx=counter, shadow_avail_idx=counter,
                provenance=provenance))
        state = state.with_device(dev)
        notes.append(f"{dev.canonical_path}: queues {missing} were never asked in the log; taken "
                     f"from the one unclaimed {dev.name} driver device carved from guest RAM "
                     f"(driver records at {group.device_va:#x}, {len(group.rings)} rings)")
    return machine.with_state(state), notes


_INFERRED_FIELDS = ("vring_num", "vring_num_default", "vring_align", "inuse", "used_idx",
                    "last_avail_idx", "shadow_avail_idx", "signalled_used", "signalled_used_valid")
