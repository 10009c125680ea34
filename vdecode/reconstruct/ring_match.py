"""Tie carved split rings to QEMU's devices and queues, and say how.

:func:`~vdecode.virtio.carve.carve_rings` finds rings from structure alone; this module decides
whose they are, from whatever is known:

* the buffers the rings carry (:func:`classify_ring`): a virtio-blk request is a 16-byte
  read-only ``struct virtio_blk_outhdr`` (type, sector) and a 1-byte writable status (virtio 1.2
  5.2.6); a virtio-net packet starts with a 12-byte ``virtio_net_hdr_v1`` (10 bytes for legacy
  devices without MRG_RXBUF), receive buffers are writable; a virtio-scsi request is a 51-byte
  ``virtio_scsi_cmd_req`` (CDB 32) and a 108-byte response; virtio-input events are 8 bytes;
* the guest driver's bookkeeping the carver read (queue index, ``struct virtio_device *``, name);
* a log's (possibly stale) device list, queue sizes and features, or a QEMU core's state.

:func:`group_by_device` is the no-log view (rings grouped by likely device type);
:func:`replace_stale_rings` is what ``vdecode qmp`` calls when a logged ring address no longer
holds a ring (the driver reset its device and allocated new rings).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from vdecode.errors import MissingData
from vdecode.sources.qemu_state import VirtIODeviceState, VirtQueueState
from vdecode.space.base import AddressSpace, Gpa
from vdecode.virtio.carve import (CONFIDENCE_THRESHOLD, CarvedRing, carve_rings,
                                  check_packed_ring, check_ring, ram_bounds)
from vdecode.virtio.chains import walk_chain
from vdecode.virtio.device import (VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1, VirtioMachine,
                                   has_feature, is_big_endian)
from vdecode.virtio.layouts import (VRING_DESC_F_INDIRECT, VRING_DESC_F_WRITE, vring_layouts)

__all__ = ("RingKind", "classify_ring", "DeviceGroup", "group_by_device", "RingMatch",
           "match_rings", "replace_stale_rings", "reset_like_qemu", "MAX_PROBED_CHAINS")

MAX_PROBED_CHAINS = 32
BLK_TYPES = {0: "IN", 1: "OUT", 4: "FLUSH", 8: "GET_ID", 11: "DISCARD", 13: "WRITE_ZEROES",
             16: "SECURE_ERASE"}
# Linux driver queue names (drivers/block/virtio_blk.c "req.%d", drivers/net/virtio_net.c
# "input.%d"/"output.%d"/"control"); only names the kernel keeps in its direct map are seen.
NAME_KINDS = (("req.", "virtio-blk"), ("input.", "virtio-net"), ("output.", "virtio-net"))


@dataclass(frozen=True)
class RingKind:
    """What a ring's buffers look like: ``kind`` (QEMU's device name) or ``None``, and why."""

    kind: str | None
    reason: str


def _chains(space: AddressSpace, ring: CarvedRing, little_endian: bool) -> list[list[tuple[int, int, bool]]]:
    """Up to :data:`MAX_PROBED_CHAINS` chains as ``[(addr, len, writable)]``, indirect expanded:
    recent used ids, outstanding heads, else descriptors with a buffer."""
    lay = vring_layouts(little_endian)
    try:
        descs = np.frombuffer(bytes(space.read(Gpa(ring.desc), 16 * ring.num)), lay.desc_dtype)
        heads = np.frombuffer(bytes(space.read(Gpa(ring.avail + 4), 2 * ring.num)), lay.u16_dtype)
        ids = np.frombuffer(bytes(space.read(Gpa(ring.used + 4), 8 * ring.num)),
                            lay.used_elem_dtype)["id"]
    except MissingData:
        return []
    num, u = ring.num, ring.used_idx
    probe = [int(ids[(u - 1 - k) % num]) for k in range(min(num, u, MAX_PROBED_CHAINS))]
    probe += [int(heads[(u + k) % num]) for k in range(min(ring.in_flight, MAX_PROBED_CHAINS))]
    if not any(descs["addr"][h] for h in probe if h < num):
        probe = np.flatnonzero(descs["addr"])[:MAX_PROBED_CHAINS].tolist()
    flags, nexts = descs["flags"], descs["next"]
    out = []
    for h in dict.fromkeys(probe):
        if h >= num:
            continue
        members = walk_chain(flags, nexts, h).members
        chain = []
        for m in members:
            d = descs[m]
            if int(d["flags"]) & VRING_DESC_F_INDIRECT and 16 <= int(d["len"]) <= 16 * 1024:
                try:
                    table = np.frombuffer(bytes(space.read(Gpa(int(d["addr"])), int(d["len"]) // 16 * 16)),
                                          lay.desc_dtype)
                except MissingData:
                    continue
                for k in walk_chain(table["flags"], table["next"], 0).members:
                    t = table[k]
                    chain.append((int(t["addr"]), int(t["len"]), bool(int(t["flags"]) & VRING_DESC_F_WRITE)))
            else:
                chain.append((int(d["addr"]), int(d["len"]), bool(int(d["flags"]) & VRING_DESC_F_WRITE)))
        if chain and any(a for a, _, _ in chain):
            out.append(chain)
        if len(out) >= MAX_PROBED_CHAINS:
            break
    return out


def classify_ring(space: AddressSpace, ring: CarvedRing, *, little_endian: bool = True) -> RingKind:
    """Guess the device type of a ring from its buffers (and the driver's queue name).

    :return: a :class:`RingKind`; ``kind`` is ``None`` when nothing recognisable is there
        (an empty ring, or buffers of a kind several devices use).
    """
    for prefix, kind in NAME_KINDS:
        if ring.name and ring.name.startswith(prefix):
            return RingKind(kind, f"driver queue name {ring.name!r}")
    if ring.layout == "packed":
        return RingKind(None, "packed ring (buffers not read)")
    votes: Counter[str] = Counter()
    detail: dict[str, str] = {}
    for chain in _chains(space, ring, little_endian):
        first, last = chain[0], chain[-1]
        if len(chain) >= 2 and first[1] == 16 and not first[2] and last[1] == 1 and last[2]:
            try:
                hdr = bytes(space.read(Gpa(first[0]), 16))
            except MissingData:
                continue
            typ = int.from_bytes(hdr[:4], "little" if little_endian else "big")
            sector = int.from_bytes(hdr[8:16], "little" if little_endian else "big")
            if typ in BLK_TYPES:
                votes["virtio-blk"] += 1
                detail.setdefault("virtio-blk", f"request header type {BLK_TYPES[typ]} sector "
                                                f"{sector}, 1-byte status")
        elif len(chain) >= 2 and first[1] == 51 and not first[2] and chain[1][2]:
            votes["virtio-scsi"] += 1
            detail.setdefault("virtio-scsi", "51-byte command request, writable response")
        elif first[1] in (10, 12) and len(chain) >= 2:
            votes["virtio-net"] += 1
            detail.setdefault("virtio-net", f"{first[1]}-byte virtio_net_hdr then the packet")
        elif first[1] >= 26 and _ethertype(space, first[0]) is not None:
            votes["virtio-net"] += 1
            detail.setdefault("virtio-net", f"virtio_net_hdr then an Ethernet frame (ethertype "
                                            f"{_ethertype(space, first[0]):#06x})")
        elif len(chain) == 1 and first[2] and first[1] in (1526, 1518, 65562, 65550):
            votes["virtio-net"] += 1
            detail.setdefault("virtio-net", f"writable {first[1]}-byte receive buffers")
        elif len(chain) == 1 and first[2] and first[1] == 8:
            votes["virtio-input"] += 1
            detail.setdefault("virtio-input", "writable 8-byte event buffers")
        elif len(chain) == 1 and first[2] and first[1] == 16:
            votes["virtio-scsi"] += 1
            detail.setdefault("virtio-scsi", "writable 16-byte event buffers")
        elif len(chain) == 1 and not first[2] and _pfn_array(space, first, little_endian):
            votes["virtio-balloon"] += 1
            detail.setdefault("virtio-balloon", "read-only arrays of guest page frame numbers")
        elif len(chain) == 1 and first[2] and first[1] == 4096:
            votes["virtio-serial"] += 1
            detail.setdefault("virtio-serial", "writable page-sized port buffers")
    lens = _used_lens(space, ring, little_endian)
    if len(lens) >= 2 and all(n % 512 == 1 for n in lens) and max(lens) > 1:
        # virtio-blk returns the data read plus its 1-byte status (5.2.6): sectors + 1
        votes["virtio-blk"] += len(lens)
        detail.setdefault("virtio-blk", "used lengths are 512-byte sectors plus a status byte")
    if not votes:
        return RingKind(None, "empty ring" if ring.empty else "no recognisable buffers")
    kind, n = votes.most_common(1)[0]
    return RingKind(kind, f"{detail[kind]} ({n} of {sum(votes.values())} chains)")


ETHERTYPES = (0x0800, 0x0806, 0x86DD, 0x8100)


def _ethertype(space: AddressSpace, addr: int) -> int | None:
    """The ethertype after a 12-byte ``virtio_net_hdr_v1`` (or a 10-byte legacy one), if the
    header's flags and GSO type are valid and the type is a common one."""
    try:
        raw = bytes(space.read(Gpa(addr), 26))
    except MissingData:
        return None
    if raw[0] > 7 or raw[1] & 0x7F not in (0, 1, 3, 4, 5):
        return None
    for hdr in (12, 10):
        et = int.from_bytes(raw[hdr + 12:hdr + 14], "big")
        if et in ETHERTYPES:
            return et
    return None


def _pfn_array(space: AddressSpace, buf: tuple[int, int, bool], little_endian: bool) -> bool:
    """A virtio-balloon inflate/deflate buffer: up to 256 ``__virtio32`` PFNs of guest RAM."""
    addr, length, _ = buf
    if not 4 <= length <= 1024 or length % 4:
        return False
    try:
        pfns = np.frombuffer(bytes(space.read(Gpa(addr), length)), ("<" if little_endian else ">") + "u4")
    except MissingData:
        return False
    return bool(pfns.all()) and all(space.is_present(Gpa(int(p) << 12), 1) for p in pfns[:8])


def _used_lens(space: AddressSpace, ring: CarvedRing, little_endian: bool) -> list[int]:
    """``used->ring[].len`` of the last ``min(num, used.idx, 32)`` completions."""
    n = min(ring.num, ring.used_idx, MAX_PROBED_CHAINS)
    if not n:
        return []
    try:
        elems = np.frombuffer(bytes(space.read(Gpa(ring.used + 4), 8 * ring.num)),
                              vring_layouts(little_endian).used_elem_dtype)
    except MissingData:
        return []
    slots = (ring.used_idx - 1 - np.arange(n)) % ring.num
    return elems["len"][slots].tolist()


@dataclass
class DeviceGroup:
    """Rings that belong together: one driver's ``struct virtio_device`` (``device_va``) when the
    carver saw it, else one ring alone. ``kind`` is the most common kind of its rings."""

    kind: str | None
    device_va: int | None
    rings: list[CarvedRing] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


def group_by_device(space: AddressSpace, rings: list[CarvedRing], *, little_endian: bool = True,
                    threshold: float = CONFIDENCE_THRESHOLD) -> list[DeviceGroup]:
    """The post-mortem view without a log: carved rings above ``threshold`` grouped by device.

    :param rings: from :func:`~vdecode.virtio.carve.carve_rings`.
    :return: groups, those with a known device first, each with rings in queue-index order.
    """
    groups: dict[object, DeviceGroup] = {}
    for r in rings:
        if r.confidence < threshold:
            continue
        key = r.device_va if r.device_va is not None else ("ring", r.desc)
        g = groups.setdefault(key, DeviceGroup(None, r.device_va))
        g.rings.append(r)
    for g in groups.values():
        g.rings.sort(key=lambda r: (r.index if r.index is not None else 1 << 20, r.desc))
        kinds = [classify_ring(space, r, little_endian=little_endian) for r in g.rings]
        counted = Counter(k.kind for k in kinds if k.kind)
        g.kind = counted.most_common(1)[0][0] if counted else None
        g.reasons = [f"queue {r.index if r.index is not None else '?'} at {r.desc:#x}: {k.reason}"
                     for r, k in zip(g.rings, kinds)]
    return sorted(groups.values(), key=lambda g: (g.kind is None, g.kind or "",
                                                  min(r.desc for r in g.rings)))


@dataclass(frozen=True)
class RingMatch:
    """A queue of a known device tied to a carved ring (``ring`` ``None``: no candidate)."""

    path: str
    queue: int
    ring: CarvedRing | None
    how: str
    ambiguous: int = 0


def _logged_ring_ok(space: AddressSpace, dev: VirtIODeviceState, q: VirtQueueState,
                    ram) -> CarvedRing | None:
    if not (q.desc and q.vring_num):
        return None
    if has_feature(dev, VIRTIO_F_RING_PACKED):
        return check_packed_ring(space, q.vring_num, q.desc, q.avail or 0, q.used or 0,
                                 little_endian=not is_big_endian(dev), ram=ram)
    return check_ring(space, q.vring_num, q.desc, q.avail or 0, q.used or 0,
                      little_endian=not is_big_endian(dev), ram=ram)


def match_rings(space: AddressSpace, devices: list[VirtIODeviceState], wanted: list[tuple[int, int]],
                rings: list[CarvedRing], claimed: dict[int, CarvedRing | None]) -> list[RingMatch]:
    """Tie the queues ``wanted`` (``(device number, queue)`` into ``devices``) to carved rings.

    Candidates have the logged ``vring_num``, are not a ring another queue holds (``claimed``:
    ``desc`` -> the ring checked at a logged address), and fit the device's features (a legacy
    device's rings use the page-aligned legacy layout). They are ranked by: the driver's queue
    index equal to the queue number; the same ``struct virtio_device`` as the device's other
    queues (or the only driver device whose queues have this device's indices and sizes);
    buffers of the device's type (other types count against); confidence.
    """
    by_dev_va: dict[int, set[int]] = {}
    for (di, qi), r in ((k, v) for k, v in _sibling_rings(devices, claimed).items()):
        if r is not None and r.device_va is not None:
            by_dev_va.setdefault(di, set()).add(r.device_va)
    taken: set[int] = set(claimed)
    kinds: dict[int, RingKind] = {}
    out: list[RingMatch] = []
    # Whole devices first: a driver's queues (one struct virtio_device) whose indices and sizes
    # are exactly the device's logged queues; a shape only one device has settles its queues.
    shapes: dict[int, dict[int, int]] = {}
    for r in rings:
        if r.device_va is not None and r.index is not None:
            shapes.setdefault(r.device_va, {})[r.index] = r.num
    holds: dict[int, set[int]] = {}
    for r in rings:
        if r.device_va is not None:
            holds.setdefault(r.device_va, set()).add(r.desc)
    fits: dict[int, list[int]] = {}
    for di in dict.fromkeys(d for d, _ in wanted):
        want = {qn: q.vring_num for qn, q in devices[di].queues.items() if q.desc}
        # a driver device that holds a ring the log named for a queue now stale is the old
        # (freed) driver's, not the one that moved the queue
        old = {devices[di].queues[qn].desc for d, qn in wanted if d == di}
        fits[di] = [va for va, shape in shapes.items() if shape == want and not holds[va] & old]
    owners = Counter(va for vas in fits.values() for va in vas)
    for di, qn in wanted:
        dev = devices[di]
        q = dev.queues[qn]
        little = not is_big_endian(dev)
        legacy = not has_feature(dev, VIRTIO_F_VERSION_1)
        packed = has_feature(dev, VIRTIO_F_RING_PACKED)
        only = [va for va in fits.get(di, ()) if owners[va] == 1]
        group = by_dev_va.get(di) or (set(only) if len(only) == 1 else None)
        scored = []
        for r in rings:
            if r.num != q.vring_num or r.desc in taken or r.confidence < CONFIDENCE_THRESHOLD \
                    or r.desc == q.desc:     # the logged ring itself was judged stale
                continue
            if group is not None and r.device_va not in group:
                continue
            if legacy and r.layout != "legacy" or packed != (r.layout == "packed"):
                continue
            how = [f"size {r.num}"]
            score = r.confidence
            if r.index is not None:
                if r.index != qn:
                    continue
                score += 2.0
                how.append(f"driver queue index {qn}")
            if group is not None:
                score += 1.0
                how.append("the driver device whose queues have this device's sizes"
                           if di not in by_dev_va else "same driver device as its other queues")
            if r.desc not in kinds:
                kinds[r.desc] = classify_ring(space, r, little_endian=little)
            k = kinds[r.desc]
            if k.kind is not None and dev.name is not None:
                if k.kind == dev.name:
                    score += 0.5
                    how.append(k.reason)
                else:                       # a guess from buffers never overrules the driver
                    score -= 0.5
            how.append(f"confidence {r.confidence:.2f} ({', '.join(r.evidence)})")
            scored.append((score, r, how))
        if not scored:
            out.append(RingMatch(dev.canonical_path, qn, None, "no carved ring fits"))
            continue
        scored.sort(key=lambda t: (-t[0], t[1].desc))
        best, ring, how = scored[0]
        ties = sum(1 for s, _, _ in scored[1:] if s == best)
        taken.add(ring.desc)
        out.append(RingMatch(dev.canonical_path, qn, ring, "; ".join(how), ties))
    return out


def _sibling_rings(devices: list[VirtIODeviceState], claimed: dict[int, CarvedRing | None]
                   ) -> dict[tuple[int, int], CarvedRing | None]:
    out = {}
    for di, dev in enumerate(devices):
        for qn, q in dev.queues.items():
            if q.desc in claimed:
                out[(di, qn)] = claimed[q.desc]
    return out


def replace_stale_rings(machine: VirtioMachine, *,
                        progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Where a logged ring's addresses no longer hold a ring, use a carved one.

    Checks every logged queue with :func:`~vdecode.virtio.carve.check_ring` (packed ones with
    :func:`~vdecode.virtio.carve.check_packed_ring`; cheap: only the ring's bytes). Only if one
    fails is guest RAM carved; the matched ring's addresses replace the logged ones. Then the
    device's other queues whose logged rings the new driver's records do not name are matched
    too (a re-probe moves every queue). A device none of whose rings is left, while the guest's
    driver records are readable, is reset as QEMU does when its driver goes away. The logged
    counters stay: :func:`~vdecode.reconstruct.instant.advance_to_dump` compares them with the
    new ring's (indices that restarted read as moved).

    :return: notes for stderr, one per queue looked at: what replaced it and why, or why not.
    """
    space = machine.space
    if space is None:
        return []
    ram = ram_bounds(space)
    devices = machine.state.devices
    claimed: dict[int, CarvedRing | None] = {}
    stale: list[tuple[int, int]] = []
    why: dict[tuple[str, int], str] = {}
    for di, dev in enumerate(devices):
        for qn, q in dev.queues.items():
            if not (q.desc and q.vring_num):
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
    if not stale:
        return []
    stale_of: dict[str, set[int]] = {}
    for di, qn in stale:
        stale_of.setdefault(devices[di].canonical_path, set()).add(qn)
    big = any(is_big_endian(devices[di]) for di, _ in stale)
    rings = carve_rings(space, progress=progress, little_endian=not big)
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
    notes: list[str] = []
    matches = match_rings(space, devices, stale, rings, claimed)
    notes += _apply_matches(devices, matches, claimed, why, stale_of, drivers_seen)
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
            notes += _apply_matches(devices, matches2, claimed, why, stale_of, False)
    return notes


def _apply_matches(devices: list[VirtIODeviceState], matches: list[RingMatch],
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
            if drivers_seen and _driver_let_go(dev, stale_of[m.path], claimed, matches):
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


def _driver_let_go(dev: VirtIODeviceState, stale: set[int], claimed: dict[int, CarvedRing | None],
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
