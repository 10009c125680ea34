"""The post-mortem view as values: what ``vdecode DUMP`` shows, before any rendering.

:func:`build_view` turns the virtio model (QEMU's devices and queues at the dump instant, the
guest's rings) and the findings into one :class:`~.records.View` record (its JSON form is
documented in ``docs/view-json.md``, ``schema_version`` 1); :func:`device_records` gives the
devices with every queue read in detail, as the public API hands them out. ``render/`` formats
these records (text, report, ring pictures).

Every QEMU value keeps how it was known (``provenance``): ``"core"`` (QEMU's memory), ``"dump"``
(guest memory), ``"log"`` (an earlier QMP reply, as of that reply), ``"inferred"`` (a rule applied
to the log and the rings, see :mod:`vdecode.reconstruct.state.instant`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import numpy as np

from vdecode.errors import MissingData, NotInInput
from vdecode.frozen import FrozenDict, freeze_deep
from vdecode.profiles import Profile
from vdecode.reconstruct.postmortem.findings import Finding
from vdecode.reconstruct.postmortem.records import (LEGEND, SCHEMA_VERSION, CarvedGroup,
                                                    CarvedPacked, CarvedQueue, Chain, Descriptor,
                                                    Device, Indices, Notification, PackedEvents,
                                                    Preview, Queue, Rings, Selection, UsedEntry,
                                                    View, ViewInput)
from vdecode.sources.qemu_state import VirtIODeviceState, VirtQueueState
from vdecode.virtio.bits import convert_features, decode_desc_flags, decode_status, device_rows
from vdecode.virtio.buffers import BufferSegment, preview_buffer
from vdecode.virtio.chains import ElementChain, walk_elements
from vdecode.virtio.device import (VIRTIO_RING_F_EVENT_IDX, VirtioMachine, has_feature,
                                   is_big_endian)
from vdecode.virtio.layouts import (VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT,
                                    VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY)
from vdecode.virtio.packed_ring import (VRING_PACKED_EVENT_FLAG_DESC,
                                        VRING_PACKED_EVENT_FLAG_DISABLE, PackedRing, PackedWalk)
from vdecode.virtio.split_ring import SplitRing

if TYPE_CHECKING:
    from vdecode.reconstruct.postmortem.trace_join import TraceJoin

__all__ = ("SCHEMA_VERSION", "build_view", "device_records", "select_devices", "select_queue",
           "LEGEND", "short_feature", "carved_view")

USED_LIMIT = 8              # last used entries shown without --all
HEALTH = {"stalled-available": "stalled", "stalled-inflight": "stuck", "kick-suppressed": "no-kick",
          "interrupt-suppressed": "no-irq", "idx-backwards": "backwards"}
_FEATURE_PREFIX = re.compile(r"^VIRTIO_(?:[A-Z0-9]+_)?F_")


def short_feature(desc: str) -> str:
    """``"VIRTIO_NET_F_CSUM: Device handling ..."`` → ``"CSUM"``.

    >>> short_feature("VIRTIO_RING_F_EVENT_IDX: Used & avail. event fields enabled")
    'EVENT_IDX'
    >>> short_feature("VHOST_USER_F_PROTOCOL_FEATURES: Vhost-user protocol features negotiation supported")
    'VHOST_USER_F_PROTOCOL_FEATURES'
    """
    name = desc.split(":", 1)[0].strip()
    return _FEATURE_PREFIX.sub("", name)


def _prov(q: VirtQueueState | VirtIODeviceState, name: str, default: str) -> str:
    p = q.provenance
    return p.get(name) or p.get(f"vring_{name}") or default


def select_devices(devices: list[VirtIODeviceState], which: str | None) -> list[VirtIODeviceState]:
    """The devices ``--device`` names: a QOM path (or its prefix up to ``/virtio-backend``), a
    device name (``virtio-blk``), a device id (``2``) or a path component (``scsi0``).

    :raises NotInInput: nothing matches, or several do (the message lists them).
    """
    if which is None:
        return devices

    def matches(d: VirtIODeviceState) -> bool:
        parts = d.canonical_path.split("/")
        return which in (d.canonical_path, d.canonical_path.removesuffix("/virtio-backend"),
                         d.name, str(d.device_id)) or which in parts
    found = [d for d in devices if matches(d)]
    if len(found) == 1:
        return found
    listing = "; ".join(f"{d.canonical_path} ({d.name}, id {d.device_id})" for d in (found or devices))
    if not found:
        raise NotInInput("--device", f"no device matches {which!r}; devices: {listing or 'none'}")
    raise NotInInput("--device", f"{which!r} is ambiguous: {listing}")


def select_queue(devices: list[VirtIODeviceState], queue: int | None) -> None:
    """Check that ``--queue`` is a set-up queue (``vring_num`` not 0) of one of ``devices``.

    :raises NotInInput: none has it; the message lists each device's path, name and queues
        (ranges folded: ``0-63``), so the user can pick one without another run.
    """
    if queue is None or any(q.vring_num for d in devices for qi, q in d.queues.items()
                            if qi == queue):
        return
    listing = "; ".join(f"{d.canonical_path.removesuffix('/virtio-backend')} ({d.name}) "
                        + (_ranges(sorted(qi for qi, q in d.queues.items() if q.vring_num))
                           or "none")
                        for d in devices)
    raise NotInInput("--queue", f"no {'device' if len(devices) != 1 else 'selected device'} has "
                                f"queue {queue}; queues: {listing or 'no devices'}")


def _ranges(numbers: list[int]) -> str:
    """``0, 2-5, 9`` for [0, 2, 3, 4, 5, 9]."""
    out: list[str] = []
    for n in numbers:
        if out and n == prev + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
        prev = n
    return ", ".join(out)


def _status(profile: Profile, dev: VirtIODeviceState) -> tuple[int | None, tuple[str, ...]]:
    if dev.status is None:
        return None, ()
    rows = sorted(profile.table("features")["status"], key=lambda r: r["mask"])
    names, rest = decode_status(dev.status, rows)
    flags = [n.split(":", 1)[0].removeprefix("VIRTIO_CONFIG_S_") for n in reversed(names)]
    if rest:
        flags.append(f"{rest:#x}")
    return dev.status, tuple(flags)


def _features(profile: Profile, dev: VirtIODeviceState) -> tuple[str, ...] | None:
    if dev.guest_features is None:
        return None
    feats = profile.table("features")
    rows = list(feats["transport"]) + list(device_rows(feats, dev.device_id or 0) or [])
    names, rest = convert_features(dev.guest_features, rows)
    out = [short_feature(n) for n in reversed(names)]
    if rest:
        out.append(f"{rest:#x}")
    return tuple(out)


def _notify(ring: SplitRing, event_idx: bool) -> Notification:
    if event_idx:
        kick = ring.used.avail_event == ring.avail.idx
        irq = ring.avail.used_event == ring.used.idx
    else:
        kick = not ring.used.flags & VRING_USED_F_NO_NOTIFY
        irq = not ring.avail.flags & VRING_AVAIL_F_NO_INTERRUPT
    text = ",".join(n for n, on in (("kick", kick), ("irq", irq)) if on) or "none"
    return Notification(event_idx, bool(kick), bool(irq), text)


def _notify_packed(ring: PackedRing) -> Notification:
    """Event suppression (virtio 1.2 2.8): DISABLE stops notifications; ENABLE and DESC allow
    them (DESC: at the event's index)."""
    kick = ring.device_event[1] != VRING_PACKED_EVENT_FLAG_DISABLE
    irq = ring.driver_event[1] != VRING_PACKED_EVENT_FLAG_DISABLE
    text = ",".join(n for n, on in (("kick", kick), ("irq", irq)) if on) or "none"
    return Notification(ring.device_event[1] == VRING_PACKED_EVENT_FLAG_DESC, kick, irq, text)


def _provenance(q: VirtQueueState, base: str) -> FrozenDict:
    """Where each of the queue's values came from (the row's members, then the detail's)."""
    return FrozenDict({"size": _prov(q, "vring_num", base), "avail_idx": "dump",
                       "used_idx": _prov(q, "used_idx", base),
                       "last_avail_idx": _prov(q, "last_avail_idx", base),
                       "inflight": _prov(q, "inuse", base),
                       "shadow_avail_idx": _prov(q, "shadow_avail_idx", base),
                       "inuse": _prov(q, "inuse", base),
                       "signalled_used": _prov(q, "signalled_used", base),
                       "rings": _prov(q, "desc", base)})


def _health(q: VirtQueueState, walked: Any, qfindings: list[Finding]) -> tuple[str, str | None]:
    """The queue's health word and its worst error or warning finding's code."""
    worst = next((f for f in qfindings if f.severity in ("error", "warning")), None)
    if worst is not None:
        return HEALTH.get(worst.code, "corrupt" if worst.severity == "error" else worst.code), \
            worst.code
    if walked is None and q.desc:
        return "?", None
    if isinstance(walked, str):
        return ("absent" if any(f.code == "absent" for f in qfindings) else "unread"), None
    return "ok", None


def _queue(machine: VirtioMachine, profile: Profile, dev: VirtIODeviceState, q: VirtQueueState,
           walked: Any, qfindings: list[Finding], base: str, *, detailed: bool,
           show_all: bool, trace: TraceJoin | None = None) -> Queue:
    """One queue from the walk :func:`find_findings` made; its chains and used entries read
    when ``detailed`` (and it has a size), the elements of ``trace`` tied to them marked."""
    ring = walked[0] if isinstance(walked, tuple) else None
    packed = isinstance(ring, PackedRing)
    split = ring if not packed else None
    last = q.last_avail_idx
    event_idx = has_feature(dev, VIRTIO_RING_F_EVENT_IDX) if split else None
    if packed:
        pending, notify = len(walked[1].first), _notify_packed(ring)
    else:
        pending = (split.avail.idx - last) % 0x10000 if split and last is not None else None
        notify = _notify(split, event_idx) if split else None
    health, worst = _health(q, walked, qfindings)
    indices = Indices(*((split.avail.idx, split.avail.flags, split.avail.used_event,
                         split.used.idx, split.used.flags, split.used.avail_event)
                        if split else (None,) * 6),
                      last, q.shadow_avail_idx, q.used_idx, q.inuse, q.signalled_used,
                      q.signalled_used_valid)
    shown_used = q.used_idx if q.used_idx is not None else indices.guest_used_idx
    detailed = detailed and bool(q.vring_num)
    chains: tuple[Chain, ...] = ()
    used: tuple[UsedEntry, ...] = ()
    packed_events = None
    if detailed and split is not None:
        chains, used = _split_detail(machine, profile, dev, q, split, walked[1], show_all)
    elif detailed and packed:
        chains = _packed_chains(machine, profile, dev, q, ring, walked[1])
    if packed:
        packed_events = PackedEvents(tuple(ring.driver_event[:2]), tuple(ring.device_event[:2]),
                                     walked[1].incomplete)
    traced = None
    if trace is not None:
        from vdecode.reconstruct.postmortem.trace_join import queue_marks
        taken, returned, traced = queue_marks(trace, dev.canonical_path, q.queue_index)
        chains = tuple(dataclasses.replace(c, taken=taken.get(c.avail_idx))
                       if c.state == "in-flight" and c.avail_idx in taken else c for c in chains)
        used = tuple(dataclasses.replace(u, returned=returned[u.used_idx])
                     if u.used_idx in returned else u for u in used)
    return Queue(dev.canonical_path, q.queue_index, q.vring_num, packed,
                 Rings(q.desc, q.avail, q.used), indices, pending, q.inuse, health, chains, used,
                 walked if isinstance(walked, str) else None, _provenance(q, base), notify,
                 worst, not worst and not indices.avail_idx and not shown_used and not last,
                 detailed, event_idx, packed_events, traced)


def _flag_names(flags: int, desc_flag_rows: list) -> tuple[str, ...]:
    """``("next", "write")`` for a descriptor's flags."""
    return tuple(n.removeprefix("VRING_DESC_F_").lower()
                 for n in reversed(decode_desc_flags(flags, desc_flag_rows)))


def _chains(machine: VirtioMachine, dev: VirtIODeviceState, q: VirtQueueState, els: list,
            names, desc_flag_rows, *, states: list[str], idxs: list[int | None],
            slots: list[int | None], used: bool) -> list[Chain]:
    """The records of many chains of one queue at once: their descriptors gathered into one
    table, each distinct flags value named once, bytes in and out summed per chain with numpy;
    only the buffer previews read guest memory chain by chain."""
    if not els:
        return []
    sizes = np.fromiter((len(el.descs) for el in els), dtype=np.int64, count=len(els))
    rows = np.concatenate([el.descs for el in els])
    stops = np.cumsum(sizes)
    starts = stops - sizes
    lens_ = rows["len"].astype(np.int64)
    write_ = (rows["flags"] & VRING_DESC_F_WRITE) != 0
    in_sum = np.concatenate([[0], np.cumsum(np.where(write_, lens_, 0))])
    out_sum = np.concatenate([[0], np.cumsum(np.where(write_, 0, lens_))])
    bytes_in = (in_sum[stops] - in_sum[starts]).tolist()
    bytes_out = (out_sum[stops] - out_sum[starts]).tolist()
    addrs, lens, flags, writes = (rows["addr"].tolist(), lens_.tolist(), rows["flags"].tolist(),
                                  write_.tolist())
    # a chain lists as many descriptors as it has both members and rows (a packed indirect
    # head has its slot but no rows); its bytes count every row
    members: list[int] = []
    for el in els:
        m = list(el.members[:len(el.descs)])
        members += m + [0] * (len(el.descs) - len(m))
    named = {fl: _flag_names(fl, desc_flag_rows) for fl in set(flags)}
    descs = [Descriptor(int(i), a, n, fl, named[fl])
             for i, a, n, fl in zip(members, addrs, lens, flags)]
    out = []
    for k, el in enumerate(els):
        a, b = int(starts[k]), int(stops[k])
        out.append(Chain(states[k], idxs[k], slots[k], el.head,
                         None if el.indirect_gpa is None else (el.indirect_gpa, el.indirect_len),
                         tuple(descs[a:a + min(len(el.members), b - a)]),
                         bytes_out[k], bytes_in[k], tuple(el.problems),
                         _preview(machine, dev, q, el, names, used,
                                  [BufferSegment(addrs[j], lens[j], writes[j])
                                   for j in range(a, b)])))
    return out


def _preview(machine: VirtioMachine, dev: VirtIODeviceState, q: VirtQueueState, el, names,
             used: bool, segs: list[BufferSegment] | None = None) -> Preview | None:
    """What one chain's buffers hold (``preview_buffer``), when the dump has them."""
    if machine.space is None or el.problems:
        return None
    if segs is None:
        rows = el.descs
        segs = [BufferSegment(a, n, bool(fl & VRING_DESC_F_WRITE))
                for a, n, fl in zip(rows["addr"].tolist(), rows["len"].tolist(),
                                    rows["flags"].tolist())]

    def read(gpa: int, n: int) -> bytes:
        return machine.read(gpa, n, "buffer")
    p = preview_buffer(dev.device_id or 0, q.queue_index, dev.num_vqs or len(dev.queues), segs,
                       read, names, big_endian=is_big_endian(dev),
                       guest_features=dev.guest_features or 0, used=used)
    return None if p is None else Preview(p.kind, p.summary, freeze_deep(p.fields))


def _split_detail(machine: VirtioMachine, profile: Profile, dev: VirtIODeviceState,
                  q: VirtQueueState, ring: SplitRing, walk: Any, show_all: bool
                  ) -> tuple[tuple[Chain, ...], tuple[UsedEntry, ...]]:
    """A split queue's outstanding chains (every one the walk findings made; the text view folds
    or limits them) and its last used entries (:data:`USED_LIMIT` without ``show_all``)."""
    names = profile.table("view")
    flag_rows = profile.table("features")["vring_desc_flags"]
    last = q.last_avail_idx if q.last_avail_idx is not None else ring.used.idx
    pending = (ring.avail.idx - last) % 0x10000
    idxs = np.asarray(walk.idxs, dtype=np.int64)
    is_pending = ((idxs - last) % 0x10000) < pending
    space = machine.space
    chains: list[Chain] = []
    if len(idxs):
        kept = [(i, pend, el) for i, pend, el in zip(idxs.tolist(), is_pending.tolist(),
                                                     walk_elements_safe(space, ring, walk.heads))
                if el is not None]
        chains = _chains(machine, dev, q, [el for _, _, el in kept], names, flag_rows,
                         states=["pending" if pend else "in-flight" for _, pend, _ in kept],
                         idxs=[i for i, _, _ in kept],
                         slots=[i % (q.vring_num or 1) for i, _, _ in kept], used=False)
    n_used = min(ring.used.idx if ring.used.idx < ring.num else ring.num, ring.num)
    n_show = n_used if show_all else min(n_used, USED_LIMIT)
    uidx = (ring.used.idx - n_show + np.arange(n_show, dtype=np.int64)) % 0x10000
    elems = ring.used.ring[uidx % ring.num]
    ids, ulens = elems["id"].astype(np.int64).tolist(), elems["len"].astype(np.int64).tolist()
    els = walk_elements_safe(space, ring, ids) if ids else []
    used = tuple(UsedEntry(i, i % ring.num, head, n,
                           _preview(machine, dev, q, el, names, used=True)
                           if el is not None and head < ring.num else None)
                 for i, head, n, el in zip(uidx.tolist(), ids, ulens, els))
    return tuple(chains), used


def _packed_chains(machine: VirtioMachine, profile: Profile, dev: VirtIODeviceState,
                   q: VirtQueueState, ring: PackedRing, walk: PackedWalk) -> tuple[Chain, ...]:
    """A packed queue's pending elements (indirect tables shown, not expanded)."""
    names = profile.table("view")
    flag_rows = profile.table("features")["vring_desc_flags"]
    out = []
    for k in range(len(walk.slots)):
        rows = ring.descs[walk.slots[k]]
        indirect = bool(int(rows[0]["flags"]) & VRING_DESC_F_INDIRECT) and len(rows) == 1
        el = ElementChain(int(walk.ids[k]), tuple(int(i) for i in walk.slots[k]),
                          rows if not indirect else rows[:0], 0,
                          int(rows[0]["addr"]) if indirect else None,
                          int(rows[0]["len"]) if indirect else None, tuple(walk.problems[k]))
        out += _chains(machine, dev, q, [el], names, flag_rows, states=["pending"], idxs=[None],
                       slots=[int(walk.first[k])], used=False)
    return tuple(out)


def walk_elements_safe(space, ring: SplitRing, heads: list[int]) -> list:
    """:func:`walk_elements`, with ``None`` for a head whose indirect table is not in the dump."""
    heads = [int(h) for h in heads]
    try:
        return walk_elements(space, ring.layouts, ring.descs, heads)
    except MissingData:
        out = []
        for h in heads:
            try:
                out.extend(walk_elements(space, ring.layouts, ring.descs, [h]))
            except MissingData:
                out.append(None)
        return out


def carved_view(groups: list) -> tuple[CarvedGroup, ...]:
    """Rings carved from guest RAM without a log or core (``rings.kinds.DeviceGroup`` list), as
    records: nothing here is QEMU's state, only what the guest's memory shows."""
    return tuple(CarvedGroup(g.kind, g.device_va, tuple(g.reasons),
                             None if g.firmware is None else tuple(g.firmware),
                             tuple(_carved_ring(r) for r in g.rings)) for g in groups)


def _carved_ring(r) -> CarvedQueue:
    """One carved ring. A packed ring has no indices: its event suppression areas decoded
    (virtio 1.2 2.8.10: ``off_wrap`` is a descriptor offset and a wrap counter; the device's area
    holds where QEMU next expects an available descriptor, the driver's where the driver next
    expects a used one) give ``avail_idx``/``used_idx`` those offsets and ``outstanding`` the
    descriptors between them, counted over laps by the wrap counters."""
    from vdecode.virtio.carved_ring import packed_outstanding, packed_position
    avail_idx, used_idx = r.avail_idx, r.used_idx
    outstanding, packed = (r.avail_idx - r.used_idx) % 0x10000, None
    if r.layout == "packed":
        # the carver keeps the driver area's (flags, off_wrap) in avail_*, the device's in used_*
        (avail_idx, dw), (used_idx, uw) = packed_position(r.used_idx), packed_position(r.avail_idx)
        outstanding = packed_outstanding(r.used_idx, r.avail_idx, r.num)
        packed = CarvedPacked(dw, uw, (r.avail_idx, r.avail_flags), (r.used_idx, r.used_flags))
    return CarvedQueue(r.index, r.name, r.num, r.desc, r.avail, r.used, r.avail_flags, avail_idx,
                      r.used_flags, used_idx, outstanding, packed, round(r.confidence, 3),
                      r.layout, tuple(r.evidence))


def _base(state) -> str:
    """The provenance of QEMU values not marked otherwise: the core's, else the log's."""
    return {"core": "core", "core+log": "core"}.get(state.source, "log")


def _device(profile: Profile, state, dev: VirtIODeviceState, queues: tuple[Queue, ...],
            hidden: int = 0) -> Device:
    base = _base(state)
    value, flags = _status(profile, dev)
    return Device(dev.canonical_path, dev.name, dev.device_id, value, flags,
                  _features(profile, dev), dev.guest_features, dev.vhost_started, dev.broken,
                  queues, FrozenDict({"status": _prov(dev, "status", base),
                                      "features": _prov(dev, "guest_features", base)}), hidden)


def _queue_findings(findings: list[Finding], dev: VirtIODeviceState, qi: int) -> list[Finding]:
    return [f for f in findings if f.device == dev.canonical_path and f.queue == qi]


def device_records(machine: VirtioMachine, profile: Profile, findings: list[Finding],
                   walks: dict[tuple[str, int], Any], paths: Collection[str] | None = None,
                   queue: int | None = None,
                   trace: TraceJoin | None = None) -> tuple[Device, ...]:
    """The devices ``paths`` (every one for ``None``), each with every queue (only ``queue``
    when given) read in detail, every used entry listed: what the public API hands out.
    ``findings`` and ``walks`` are :func:`find_findings`' for the same devices and queue;
    ``trace`` marks the traced elements as in the view."""
    state = machine.state
    base = _base(state)
    out = []
    for dev in state.devices:
        if paths is not None and dev.canonical_path not in paths:
            continue
        queues = tuple(_queue(machine, profile, dev, q, walks.get((dev.canonical_path, qi)),
                              _queue_findings(findings, dev, qi), base, detailed=True,
                              show_all=True, trace=trace)
                       for qi, q in sorted(dev.queues.items()) if queue is None or qi == queue)
        out.append(_device(profile, state, dev, queues))
    return tuple(out)


def build_view(machine: VirtioMachine, profile: Profile, findings: list[Finding],
               walks: dict[tuple[str, int], Any], *, dump_path: str, dump_format: str,
               log_path: str | None, device: str | None = None, queue: int | None = None,
               show_all: bool = False, notes: list[str] = (),
               carved: list | None = None, log_end: str | None = None,
               absent: Any = None, details: bool = False, trace: TraceJoin | None = None) -> View:
    """The whole view (``docs/view-json.md``).

    :param device: ``--device`` (see :func:`select_devices`).
    :param queue: ``--queue``: read that queue of every selected device in detail (and list only
        that queue in each device's rows; only its walk in ``walks`` is needed).
    :param show_all: ``--all``: idle queues in the rows, every used entry in the details (every
        pending and in-flight chain is in the details either way).
    :param log_end: the time of the log's last record (UTC ISO 8601), when a log was given.
    :param absent: what the input lacks (:class:`vdecode.space.absence.Absent`); the view then
        has an ``absent`` member (absent from the view of a whole input).
    :param details: read every listed queue with a size in detail (the report's), not only
        ``queue``.
    :param trace: a QEMU trace joined to the dump: the view's ``trace``, each queue's, and the
        traced elements on the chains and used entries of the queues read in detail.
    :raises NotInInput: ``--device`` matches nothing or several devices, or no selected device
        has ``queue``.
    """
    state = machine.state
    base = _base(state)
    devices = select_devices(state.devices, device)
    select_queue(devices, queue)
    paths = {d.canonical_path for d in devices}
    version = ".".join(map(str, state.qemu_version)) if state.qemu_version else None
    out, detailed = [], []
    for dev in devices:
        rows = []
        hidden = 0
        for qi, q in sorted(dev.queues.items()):
            if queue is not None and qi != queue:      # --queue: only that queue is read
                continue
            row = _queue(machine, profile, dev, q, walks.get((dev.canonical_path, qi)),
                         _queue_findings(findings, dev, qi), base,
                         detailed=details or queue is not None, show_all=show_all, trace=trace)
            if row.idle and not show_all and queue is None:
                hidden += 1
                continue
            rows.append(row)
            if row.detailed:
                detailed.append(row)
        out.append(_device(profile, state, dev, tuple(rows), hidden))
    traced = None
    if trace is not None:
        from vdecode.reconstruct.postmortem.trace_join import trace_view
        traced = trace_view(trace, paths, queue)
    return View(
        ViewInput(os.path.basename(dump_path), dump_format,
                  os.path.basename(log_path) if log_path else None, state.source or "none",
                  version, log_end),
        tuple(out), tuple(detailed),
        tuple(f for f in findings
              if f.device in paths and (queue is None or f.queue is None or f.queue == queue)),
        tuple(notes), None if carved is None else carved_view(carved),
        absent, None if queue is None else Selection(device, queue,
                                                     tuple(d.canonical_path for d in devices)),
        traced)
