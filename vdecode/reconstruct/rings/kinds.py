"""What kind of device a carved ring serves, from its buffers and the driver's queue name.

* the buffers the rings carry (:func:`classify_ring`): a virtio-blk request is a 16-byte
  read-only ``struct virtio_blk_outhdr`` (type, sector) and a 1-byte writable status (virtio 1.2
  5.2.6); a virtio-net packet starts with a 12-byte ``virtio_net_hdr_v1`` (10 bytes for legacy
  devices without MRG_RXBUF), receive buffers are writable; a virtio-scsi request is a 51-byte
  ``virtio_scsi_cmd_req`` (CDB 32) and a 108-byte response; virtio-input events are 8 bytes;
* the guest driver's bookkeeping the carver read (queue index, ``struct virtio_device *``, name:
  Linux ``drivers/block/virtio_blk.c`` ``"req.%d"``, ``drivers/net/virtio_net.c``
  ``"input.%d"``/``"output.%d"``).

:func:`group_by_device` is the no-log view (rings grouped by likely device type).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import field

import numpy as np

from vdecode.errors import MissingData
from vdecode.frozen import record
from vdecode.space.base import AddressSpace, Gpa
from vdecode.virtio.buffers import BLK_OUTHDR_SIZE, balloon_pfns, blk_outhdr, eth_header
from vdecode.virtio.carved_ring import CONFIDENCE_THRESHOLD, CarvedRing
from vdecode.virtio.chains import walk_chain
from vdecode.virtio.layouts import VRING_DESC_F_INDIRECT, VRING_DESC_F_WRITE, vring_layouts

__all__ = ("RingKind", "classify_ring", "DeviceGroup", "group_by_device", "MAX_PROBED_CHAINS")

MAX_PROBED_CHAINS = 32
BLK_TYPES = {0: "IN", 1: "OUT", 4: "FLUSH", 8: "GET_ID", 11: "DISCARD", 13: "WRITE_ZEROES",
             16: "SECURE_ERASE"}
# Linux driver queue names (drivers/block/virtio_blk.c "req.%d", drivers/net/virtio_net.c
# "input.%d"/"output.%d"/"control"); only names the kernel keeps in its direct map are seen.
NAME_KINDS = (("req.", "virtio-blk"), ("input.", "virtio-net"), ("output.", "virtio-net"))


@record
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
        if len(chain) >= 2 and first[1] == BLK_OUTHDR_SIZE and not first[2] and last[1] == 1 \
                and last[2]:
            try:
                typ, _, sector = blk_outhdr(bytes(space.read(Gpa(first[0]), BLK_OUTHDR_SIZE)),
                                            not little_endian)
            except MissingData:
                continue
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
        elif first[1] >= 26 and (ethertype := _ethertype(space, first[0])) is not None:
            votes["virtio-net"] += 1
            detail.setdefault("virtio-net", f"virtio_net_hdr then an Ethernet frame (ethertype "
                                            f"{ethertype:#06x})")
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
        elif len(chain) == 1 and not first[2] and _balloon_stats(space, first, little_endian):
            votes["virtio-balloon"] += 1
            detail.setdefault("virtio-balloon", "a read-only array of memory statistics")
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
        _, _, et = eth_header(raw, hdr)
        if et in ETHERTYPES:
            return et
    return None


def _pfn_array(space: AddressSpace, buf: tuple[int, int, bool], little_endian: bool) -> bool:
    """A virtio-balloon inflate/deflate buffer: up to 256 ``__virtio32`` PFNs of guest RAM."""
    addr, length, _ = buf
    if not 4 <= length <= 1024 or length % 4:
        return False
    try:
        pfns = balloon_pfns(bytes(space.read(Gpa(addr), length)), not little_endian)
    except MissingData:
        return False
    return all(pfns) and all(space.is_present(Gpa(p << 12), 1) for p in pfns[:8])


BALLOON_STAT_SIZE = 10        # struct virtio_balloon_stat { __virtio16 tag; __virtio64 val; } packed
BALLOON_STAT_TAGS = 16        # tags below this (virtio 1.2 5.5.6.3: 0..15 defined or reserved)


def _balloon_stats(space: AddressSpace, buf: tuple[int, int, bool], little_endian: bool) -> bool:
    """A virtio-balloon stats buffer (the driver keeps one queued for the device to take):
    two or more ``virtio_balloon_stat`` entries whose tags are distinct known tags."""
    addr, length, _ = buf
    if not 2 * BALLOON_STAT_SIZE <= length <= BALLOON_STAT_TAGS * BALLOON_STAT_SIZE \
            or length % BALLOON_STAT_SIZE:
        return False
    try:
        raw = bytes(space.read(Gpa(addr), length))
    except MissingData:
        return False
    order = "little" if little_endian else "big"
    tags = [int.from_bytes(raw[i:i + 2], order) for i in range(0, length, BALLOON_STAT_SIZE)]
    return len(set(tags)) == len(tags) and max(tags) < BALLOON_STAT_TAGS


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


@record
class DeviceGroup:
    """Rings that belong together: one driver's ``struct virtio_device`` (``device_va``) when the
    carver saw it, else one ring alone. ``kind`` is the most common kind of its rings."""

    kind: str | None
    device_va: int | None
    rings: list[CarvedRing] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    #: why these are rings the boot firmware abandoned, not a device's (None: not the firmware's;
    #: :mod:`vdecode.reconstruct.rings.firmware_rings`)
    firmware: list[str] | None = None


def group_by_device(space: AddressSpace, rings: list[CarvedRing], *, little_endian: bool = True,
                    threshold: float = CONFIDENCE_THRESHOLD) -> list[DeviceGroup]:
    """The post-mortem view without a log: carved rings above ``threshold`` grouped by device.

    :param rings: from :func:`~vdecode.virtio.carve.carve_rings`.
    :return: groups, those with a known device first, each with rings in queue-index order.
    """
    members: dict[object, list[CarvedRing]] = {}
    for r in rings:
        if r.confidence < threshold:
            continue
        key = r.device_va if r.device_va is not None else ("ring", r.desc)
        members.setdefault(key, []).append(r)
    groups = []
    for grouped in members.values():
        grouped.sort(key=lambda r: (r.index if r.index is not None else 1 << 20, r.desc))
        # a ring carved in big-endian (a legacy ring of a big-endian guest) is read so
        kinds = [classify_ring(space, r, little_endian=little_endian and r.little_endian)
                 for r in grouped]
        counted = Counter(k.kind for k in kinds if k.kind)
        groups.append(DeviceGroup(
            counted.most_common(1)[0][0] if counted else None, grouped[0].device_va, grouped,
            [f"queue {r.index if r.index is not None else '?'} at {r.desc:#x}: {k.reason}"
             for r, k in zip(grouped, kinds)]))
    groups = _mark_firmware(space, groups)
    return sorted(groups, key=lambda g: (g.firmware is not None, g.kind is None, g.kind or "",
                                         min(r.desc for r in g.rings)))


def _mark_firmware(space: AddressSpace, groups: list[DeviceGroup]) -> list[DeviceGroup]:
    """The groups with the evidence that they are the boot firmware's rings, where it says so."""
    from dataclasses import replace

    from vdecode.reconstruct.rings.firmware_rings import firmware_evidence
    records_seen = any(g.device_va is not None for g in groups)
    kernel_kinds = {g.kind for g in groups if g.device_va is not None and g.kind}
    return [replace(g, firmware=firmware_evidence(space, g.rings, records_seen=records_seen,
                                                  kernel_kinds=kernel_kinds, kind=g.kind))
            for g in groups]
