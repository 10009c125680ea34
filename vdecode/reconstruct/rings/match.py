"""Tie carved split rings to QEMU's devices and queues, and say how.

:func:`~vdecode.virtio.carve.carve_rings` finds rings from structure alone; this module decides
whose they are, from whatever is known: the buffers the rings carry and the guest driver's
bookkeeping (:mod:`vdecode.reconstruct.rings.kinds`), a log's (possibly stale) device list, queue
sizes and features, or a QEMU core's state (:mod:`vdecode.reconstruct.rings.candidates`).

:func:`group_by_device` is the no-log view (rings grouped by likely device type);
:func:`replace_stale_rings` is what ``vdecode qmp`` calls when a logged ring address no longer
holds a ring (the driver reset its device and allocated new rings); what then becomes of each
queue is in :mod:`vdecode.reconstruct.rings.stale`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from vdecode.profiles import Profile
from vdecode.sources.qemu_state import VirtIODeviceState, VirtQueueState
from vdecode.space.base import AddressSpace
from vdecode.space.firmware import machine_version_of
from vdecode.virtio.carved_ring import CarvedRing
from vdecode.virtio.device import (VIRTIO_F_RING_PACKED, VirtioMachine, guest_is_big_endian,
                                   has_feature, is_big_endian)
from vdecode.space.ram_map import RamMap
from vdecode.virtio.ring_checks import check_packed_ring, check_ring

__all__ = ("replace_stale_rings", "group_by_device")


def group_by_device(*args, **kwargs):
    """:func:`vdecode.reconstruct.rings.kinds.group_by_device` (imported when called)."""
    from vdecode.reconstruct.rings.kinds import group_by_device as group
    return group(*args, **kwargs)


def _logged_ring_ok(space: AddressSpace, dev: VirtIODeviceState, q: VirtQueueState,
                    ram) -> CarvedRing | None:
    if not (q.desc and q.vring_num):
        return None
    if has_feature(dev, VIRTIO_F_RING_PACKED):
        return check_packed_ring(space, q.vring_num, q.desc, q.avail or 0, q.used or 0,
                                 little_endian=not is_big_endian(dev), ram=ram)
    return check_ring(space, q.vring_num, q.desc, q.avail or 0, q.used or 0,
                      little_endian=not is_big_endian(dev), ram=ram)


def _runs_text(ns: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    runs: list[list[int]] = []
    for n in ns:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def _absent_areas(space: AddressSpace, absent, dev: VirtIODeviceState, q: VirtQueueState) -> str:
    """The logged ring's areas that lie in bytes the dump lacks (``""`` if none or no absence)."""
    if absent is None:
        return ""
    from vdecode.virtio.layouts import ring_areas
    gone = [f"{n} {a:#x}" for n, a, z in ring_areas(q, has_feature(dev, VIRTIO_F_RING_PACKED))
            if a and absent.covers(a, z) and not space.is_present(a, z)]
    return ", ".join(gone)


def replace_stale_rings(machine: VirtioMachine, *, profile: Profile,
                        platform: Callable[[], tuple[int, int] | None] | None = None,
                        progress: Callable[[int, int], None] | None = None,
                        guest_arch: str | None = None) -> tuple[VirtioMachine, list[str]]:
    """Where a logged ring's addresses no longer hold a ring, use a carved one.

    Checks every logged queue with :func:`~vdecode.virtio.ring_checks.check_ring` (packed ones with
    :func:`~vdecode.virtio.ring_checks.check_packed_ring`; cheap: only the ring's bytes). Only if one
    fails is guest RAM carved; the matched ring's addresses replace the logged ones. Then the
    device's other queues whose logged rings the new driver's records do not name are matched
    too (a re-probe moves every queue). A device none of whose rings is left, while the guest's
    driver records are readable, is reset as QEMU does when its driver goes away. The logged
    counters stay: :func:`~vdecode.reconstruct.state.instant.advance_to_dump` compares them with the
    new ring's (indices that restarted read as moved).

    :return: the machine with the carved rings in place, and notes for stderr, one per queue
        looked at: what replaced it and why, or why not.
    """
    space = machine.space
    if space is None:
        return machine, []
    ram = RamMap.of(space)
    devices = machine.state.devices
    claimed: dict[int, CarvedRing | None] = {}
    stale: list[tuple[int, int]] = []
    why: dict[tuple[str, int], str] = {}
    absent = getattr(space, "absent", None)
    notes: list[str] = []
    for di, dev in enumerate(devices):
        gone_q: list[tuple[int, str]] = []
        for qn, q in dev.queues.items():
            if not (q.desc and q.vring_num):
                continue
            gone = _absent_areas(space, absent, dev, q)
            if gone:
                # not a stale ring: the pages are simply not in this dump; carving cannot help
                gone_q.append((qn, gone))
                continue
            ring = _logged_ring_ok(space, dev, q, ram)
            # indices only go back through a device reset: a ring the log saw used that is now
            # all zeros was freed (or re-initialised) since
            emptied = ring is not None and ring.empty and bool(q.used_idx or q.last_avail_idx)
            if ring is None and has_feature(dev, VIRTIO_F_RING_PACKED) \
                    and not (q.used_idx or q.last_avail_idx):
                continue        # an untouched packed ring cannot be told from free memory
            if ring is None or emptied:
                stale.append((di, qn))
                why[(dev.canonical_path, qn)] = (
                    f"the ring at the logged vring-desc {q.desc:#x} is all zeros although the log "
                    f"saw it used" if emptied else f"no ring at the logged vring-desc {q.desc:#x}")
            else:
                claimed[q.desc] = ring
        if gone_q:
            where = "cut " if absent.incomplete else ""
            if len(gone_q) == 1:
                qn, gone = gone_q[0]
                notes.append(f"{dev.canonical_path} queue {qn}: the ring's pages ({gone}) are "
                             f"absent from the {where}dump; keeping the log's addresses and "
                             f"counters")
            else:
                qs = _runs_text(sorted(qn for qn, _ in gone_q))
                notes.append(f"{dev.canonical_path} queues {qs}: the rings' pages are absent "
                             f"from the {where}dump; keeping the log's addresses and counters")
    if not stale:
        return machine, notes
    # the carver and the matcher load only when a ring went stale (start-up of every answer)
    from vdecode.reconstruct.rings.candidates import match_rings
    from vdecode.reconstruct.rings.stale import apply_matches
    from vdecode.virtio.carve import carve_guest_rings
    stale_of: dict[str, set[int]] = {}
    for di, qn in stale:
        stale_of.setdefault(devices[di].canonical_path, set()).add(qn)
    # a big-endian guest's rings are of both orders (virtio 1.x little, legacy its own)
    rings = carve_guest_rings(space, guest_little_endian=not guest_is_big_endian(devices),
                              progress=progress)
    # the carver's reading of a logged ring (driver index, device) is better than check_ring's
    carved = {r.desc: r for r in rings}
    claimed = {d: carved.get(d, r) for d, r in claimed.items()}
    drivers_seen = any("driver" in r.evidence for r in rings)
    for di, dev in enumerate(devices):
        for qn, q in dev.queues.items():
            ring = claimed.get(q.desc) if q.desc else None
            if ring is not None and ring.index is not None and ring.index != qn:
                # the pages were reused: the driver's records make it another queue's ring
                stale.append((di, qn))
                claimed.pop(q.desc)
                stale_of.setdefault(dev.canonical_path, set()).add(qn)
                why[(dev.canonical_path, qn)] = (f"the ring at the logged vring-desc {q.desc:#x} is "
                                                 f"now the driver's queue {ring.index}")
    platform = platform or machine_version_of(space)        # the machine type, for MSI-X
    matches = match_rings(space, devices, stale, rings, claimed)
    devices, applied = apply_matches(devices, matches, claimed, why, stale_of, drivers_seen,
                                     profile, platform, guest_arch)
    notes += applied
    if drivers_seen:
        # A driver that set up new rings for some queues did so for all of the device's queues
        # (probe after a reset or a reboot): its other logged rings that this driver device's
        # records do not name are stale too, even when they still read as (untouched) rings.
        more: list[tuple[int, int]] = []
        for di, dev in enumerate(devices):
            vas = {m.ring.device_va for m in matches if m.path == dev.canonical_path
                   and m.ring is not None and m.ring.device_va is not None}
            if len(vas) != 1:
                continue
            (va,) = vas
            for qn, q in dev.queues.items():
                ring = claimed.get(q.desc) if q.desc else None
                if (di, qn) in stale or not (q.desc and q.vring_num) or \
                        (ring is not None and ring.device_va == va and ring.index in (None, qn)):
                    continue
                more.append((di, qn))
                claimed.pop(q.desc, None)
                stale_of.setdefault(dev.canonical_path, set()).add(qn)
                why[(dev.canonical_path, qn)] = (
                    f"the new driver's records do not name the ring at the logged vring-desc "
                    f"{q.desc:#x}, while other queues of the device moved")
        if more:
            matches2 = match_rings(space, devices, more, rings, claimed)
            devices, applied = apply_matches(devices, matches2, claimed, why, stale_of, False,
                                             profile, platform, guest_arch)
            notes += applied
    notes += _unowned_drivers(space, devices, rings, claimed)
    return machine.with_state(replace(machine.state, devices=devices)), notes


def _unowned_drivers(space: AddressSpace, devices: tuple[VirtIODeviceState, ...],
                     rings: list[CarvedRing], claimed: dict[int, CarvedRing | None]) -> list[str]:
    """Notes for a live guest driver whose rings no logged device owns: a device plugged after
    the log. Its QOM path and QEMU's state for it are in no dump, so it is named, not answered.
    Devices with queues the log never asked about are left to ``fill_unlogged_queues``, which
    runs next and may tie the rings to them."""
    from vdecode.reconstruct.rings.kinds import group_by_device
    owned = set(claimed) | {q.desc for d in devices for q in d.queues.values() if q.desc}
    unlogged_kinds = {d.name for d in devices if d.num_vqs is not None
                      and any(q not in d.queues and q not in d.absent_queues
                              for q in range(d.num_vqs))}
    notes = []
    for g in group_by_device(space, [r for r in rings if r.device_va is not None]):
        if any(r.desc in owned for r in g.rings) or g.kind in unlogged_kinds \
                or not any(r.used_idx or r.avail_idx for r in g.rings):
            continue
        queues = ", ".join(f"{r.name or r.index} (desc {r.desc:#x}, size {r.num}, avail idx "
                           f"{r.avail_idx}, used idx {r.used_idx})" for r in g.rings)
        notes.append(f"guest RAM holds the rings of a live {g.kind or 'virtio'} driver (its "
                     f"struct virtio_device at {g.device_va:#x}) that no logged device owns: "
                     f"{queues}; a device plugged after the log? QEMU's path and state for it "
                     f"are not in these inputs")
    return notes
