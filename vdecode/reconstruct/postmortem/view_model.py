"""The post-mortem view as plain values: what ``vdecode DUMP`` shows, before any rendering.

:func:`build_view` turns the virtio model (QEMU's devices and queues at the dump instant, the
guest's rings) and the findings into one JSON-able ``dict`` whose shape is documented in
``docs/view-json.md`` (``schema_version`` 1). ``render/text.py`` draws it for people and
``render/view_json.py`` writes it as is.

Every QEMU value keeps how it was known (``provenance``): ``"core"`` (QEMU's memory), ``"dump"``
(guest memory), ``"log"`` (an earlier QMP reply, as of that reply), ``"inferred"`` (a rule applied
to the log and the rings, see :mod:`vdecode.reconstruct.state.instant`).
"""

from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from vdecode.errors import MissingData, NotInInput
from vdecode.profiles import Profile
from vdecode.reconstruct.postmortem.findings import Finding
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

__all__ = ("SCHEMA_VERSION", "build_view", "select_devices", "select_queue", "LEGEND",
           "short_feature", "device_view", "queue_view")

SCHEMA_VERSION = 1
USED_LIMIT = 8              # last used entries shown without --all
LEGEND = {
    "core": "read from QEMU's memory (process core)",
    "dump": "read from guest memory",
    "log": "from an earlier QMP reply (as of that reply)",
    "inferred": "inferred from the log and the rings",
    "carved": "found by carving guest RAM (the logged address held no ring)",
}
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


def _status(profile: Profile, dev: VirtIODeviceState) -> dict[str, Any]:
    if dev.status is None:
        return {"value": None, "flags": []}
    rows = sorted(profile.table("features")["status"], key=lambda r: r["mask"])
    names, rest = decode_status(dev.status, rows)
    flags = [n.split(":", 1)[0].removeprefix("VIRTIO_CONFIG_S_") for n in reversed(names)]
    if rest:
        flags.append(f"{rest:#x}")
    return {"value": dev.status, "flags": flags}


def _features(profile: Profile, dev: VirtIODeviceState) -> list[str] | None:
    if dev.guest_features is None:
        return None
    feats = profile.table("features")
    rows = list(feats["transport"]) + list(device_rows(feats, dev.device_id or 0) or [])
    names, rest = convert_features(dev.guest_features, rows)
    out = [short_feature(n) for n in reversed(names)]
    if rest:
        out.append(f"{rest:#x}")
    return out


def _notify(ring: SplitRing, event_idx: bool) -> dict[str, Any]:
    if event_idx:
        kick = ring.used.avail_event == ring.avail.idx
        irq = ring.avail.used_event == ring.used.idx
    else:
        kick = not ring.used.flags & VRING_USED_F_NO_NOTIFY
        irq = not ring.avail.flags & VRING_AVAIL_F_NO_INTERRUPT
    text = ",".join(n for n, on in (("kick", kick), ("irq", irq)) if on) or "none"
    return {"event_idx": event_idx, "next_kick": bool(kick), "next_interrupt": bool(irq),
            "text": text}


def _notify_packed(ring: PackedRing) -> dict[str, Any]:
    """Event suppression (virtio 1.2 2.8): DISABLE stops notifications; ENABLE and DESC allow
    them (DESC: at the event's index)."""
    kick = ring.device_event[1] != VRING_PACKED_EVENT_FLAG_DISABLE
    irq = ring.driver_event[1] != VRING_PACKED_EVENT_FLAG_DISABLE
    text = ",".join(n for n, on in (("kick", kick), ("irq", irq)) if on) or "none"
    return {"event_idx": ring.device_event[1] == VRING_PACKED_EVENT_FLAG_DESC,
            "next_kick": kick, "next_interrupt": irq, "text": text}


def _queue_row(dev: VirtIODeviceState, q: VirtQueueState, walked: Any,
               qfindings: list[Finding], base: str) -> dict[str, Any]:
    ring = walked[0] if isinstance(walked, tuple) else None
    packed = isinstance(ring, PackedRing)
    split = ring if not packed else None
    used_idx = q.used_idx if q.used_idx is not None else (split.used.idx if split else None)
    last = q.last_avail_idx
    if packed:
        pending, notify = len(walked[1].first), _notify_packed(ring)
    else:
        pending = (split.avail.idx - last) % 0x10000 if split and last is not None else None
        notify = _notify(split, has_feature(dev, VIRTIO_RING_F_EVENT_IDX)) if split else None
    row: dict[str, Any] = {
        "index": q.queue_index, "size": q.vring_num,
        "avail_idx": split.avail.idx if split else None,
        "used_idx": used_idx, "last_avail_idx": last, "inflight": q.inuse,
        "pending": pending, "notification": notify, "packed": packed,
        "ring_error": walked if isinstance(walked, str) else None,
        "provenance": {"size": _prov(q, "vring_num", base), "avail_idx": "dump",
                       "used_idx": _prov(q, "used_idx", base),
                       "last_avail_idx": _prov(q, "last_avail_idx", base),
                       "inflight": _prov(q, "inuse", base)},
    }
    worst = [f for f in qfindings if f.severity in ("error", "warning")]
    row["worst"] = worst[0].code if worst else None
    if worst:
        f = worst[0]
        row["health"] = HEALTH.get(f.code, "corrupt" if f.severity == "error" else f.code)
    elif walked is None and q.desc:
        row["health"] = "?"
    elif isinstance(walked, str):
        row["health"] = "absent" if any(f.code == "absent" for f in qfindings) else "unread"
    else:
        row["health"] = "ok"
    row["idle"] = not worst and not row["avail_idx"] and not used_idx and not last
    return row


def _flag_names(flags: int, desc_flag_rows: list) -> list[str]:
    """``["next", "write"]`` for a descriptor's flags."""
    return [n.removeprefix("VRING_DESC_F_").lower()
            for n in reversed(decode_desc_flags(flags, desc_flag_rows))]


def _element_views(machine: VirtioMachine, dev: VirtIODeviceState, q: VirtQueueState, els: list,
                   names, desc_flag_rows, *, states: list[str], idxs: list[int | None],
                   used: bool) -> list[dict[str, Any]]:
    """The views of many chains of one queue at once: their descriptors gathered into one table,
    each distinct flags value named once, bytes in and out summed per chain with numpy; only the
    buffer previews read guest memory chain by chain."""
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
    descs = [{"index": int(i), "addr": a, "len": n, "flags": fl, "flags_names": list(named[fl])}
             for i, a, n, fl in zip(members, addrs, lens, flags)]
    out = []
    for k, el in enumerate(els):
        a, b = int(starts[k]), int(stops[k])
        listed = descs[a:a + min(len(el.members), b - a)]
        idx = idxs[k]
        out.append({"state": states[k], "avail_idx": idx,
                    "slot": None if idx is None else idx % (q.vring_num or 1),
                    "head": el.head,
                    "indirect": None if el.indirect_gpa is None else
                    {"addr": el.indirect_gpa, "len": el.indirect_len},
                    "descs": listed, "length": len(listed),
                    "bytes_out": bytes_out[k], "bytes_in": bytes_in[k],
                    "problems": list(el.problems),
                    "preview": _preview(machine, dev, q, el, names, used,
                                        [BufferSegment(addrs[j], lens[j], writes[j])
                                         for j in range(a, b)])})
    return out


def _preview(machine: VirtioMachine, dev: VirtIODeviceState, q: VirtQueueState, el, names,
             used: bool, segs: list[BufferSegment] | None = None) -> dict[str, Any] | None:
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
    return None if p is None else {"kind": p.kind, "summary": p.summary, "fields": p.fields}


def _queue_detail(machine: VirtioMachine, profile: Profile, dev: VirtIODeviceState, q: VirtQueueState,
                  walked: Any, show_all: bool, base: str) -> dict[str, Any]:
    names = profile.table("view")
    flag_rows = profile.table("features")["vring_desc_flags"]
    event_idx = has_feature(dev, VIRTIO_RING_F_EVENT_IDX)
    detail: dict[str, Any] = {
        "device": dev.canonical_path, "index": q.queue_index, "size": q.vring_num,
        "rings": {"desc": q.desc, "avail": q.avail, "used": q.used},
        "qemu": {k: getattr(q, k) for k in ("last_avail_idx", "shadow_avail_idx", "used_idx", "inuse",
                                            "signalled_used", "signalled_used_valid")},
        "provenance": {k: _prov(q, k, base) for k in ("desc", "last_avail_idx", "shadow_avail_idx",
                                                      "used_idx", "inuse", "signalled_used")},
        "avail": None, "used": None, "chains": [], "chains_hidden": 0, "used_entries": [],
        "ring_error": walked if isinstance(walked, str) else None,
    }
    detail["provenance"]["rings"] = detail["provenance"].pop("desc")
    if not isinstance(walked, tuple):
        return detail
    ring, walk = walked
    if isinstance(ring, PackedRing):
        _packed_detail(machine, dev, q, ring, walk, detail, names, flag_rows, show_all)
        return detail
    detail["avail"] = {"flags": ring.avail.flags,
                       "flags_names": ["NO_INTERRUPT"] if ring.avail.flags & VRING_AVAIL_F_NO_INTERRUPT else [],
                       "idx": ring.avail.idx, "used_event": ring.avail.used_event}
    detail["used"] = {"flags": ring.used.flags,
                      "flags_names": ["NO_NOTIFY"] if ring.used.flags & VRING_USED_F_NO_NOTIFY else [],
                      "idx": ring.used.idx, "avail_event": ring.used.avail_event}
    detail["event_idx"] = event_idx
    last = q.last_avail_idx if q.last_avail_idx is not None else ring.used.idx
    pending = (ring.avail.idx - last) % 0x10000
    # every outstanding chain (the walk findings made); the text view folds or limits them
    idxs = np.asarray(walk.idxs, dtype=np.int64)
    is_pending = ((idxs - last) % 0x10000) < pending
    space = machine.space
    if len(idxs):
        kept = [(i, pend, el) for i, pend, el in zip(idxs.tolist(), is_pending.tolist(),
                                                     walk_elements_safe(space, ring, walk.heads))
                if el is not None]
        detail["chains"] = _element_views(
            machine, dev, q, [el for _, _, el in kept], names, flag_rows,
            states=["pending" if pend else "in-flight" for _, pend, _ in kept],
            idxs=[i for i, _, _ in kept], used=False)
    n_used = min(ring.used.idx if ring.used.idx < ring.num else ring.num, ring.num)
    n_show = n_used if show_all else min(n_used, USED_LIMIT)
    uidx = (ring.used.idx - n_show + np.arange(n_show, dtype=np.int64)) % 0x10000
    elems = ring.used.ring[uidx % ring.num]
    ids, ulens = elems["id"].astype(np.int64).tolist(), elems["len"].astype(np.int64).tolist()
    els = walk_elements_safe(space, ring, ids) if ids else []
    for i, head, n, el in zip(uidx.tolist(), ids, ulens, els):
        entry: dict[str, Any] = {"used_idx": i, "slot": i % ring.num, "id": head, "len": n,
                                 "preview": None}
        if el is not None and head < ring.num:
            entry["preview"] = _preview(machine, dev, q, el, names, used=True)
        detail["used_entries"].append(entry)
    return detail


def _packed_detail(machine: VirtioMachine, dev: VirtIODeviceState, q: VirtQueueState,
                   ring: PackedRing, walk: PackedWalk, detail: dict[str, Any], names: dict,
                   flag_rows: list, show_all: bool) -> None:
    """A packed queue's detail: event areas and the pending elements (indirect tables shown,
    not expanded)."""
    detail["packed"] = {
        "driver_event": {"off_wrap": ring.driver_event[0], "flags": ring.driver_event[1]},
        "device_event": {"off_wrap": ring.device_event[0], "flags": ring.device_event[1]},
        "incomplete_descs": walk.incomplete}
    for k in range(len(walk.slots)):
        rows = ring.descs[walk.slots[k]]
        indirect = bool(int(rows[0]["flags"]) & VRING_DESC_F_INDIRECT) and len(rows) == 1
        el = ElementChain(int(walk.ids[k]), tuple(int(i) for i in walk.slots[k]),
                          rows if not indirect else rows[:0], 0,
                          int(rows[0]["addr"]) if indirect else None,
                          int(rows[0]["len"]) if indirect else None, tuple(walk.problems[k]))
        (view,) = _element_views(machine, dev, q, [el], names, flag_rows, states=["pending"],
                                 idxs=[None], used=False)
        view["slot"] = int(walk.first[k])
        detail["chains"].append(view)


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


def finding_dict(f: Finding) -> dict[str, Any]:
    return {"severity": f.severity, "code": f.code, "device": f.device, "queue": f.queue,
            "title": f.title, "evidence": f.evidence, "rule": f.rule, "qemu": f.qemu}


def carved_view(groups: list) -> list[dict[str, Any]]:
    """Rings carved from guest RAM without a log or core (``rings.kinds.DeviceGroup`` list), as
    plain values: nothing here is QEMU's state, only what the guest's memory shows."""
    out = []
    for g in groups:
        out.append({"kind": g.kind, "driver_device": g.device_va, "reasons": list(g.reasons),
                    "firmware": None if g.firmware is None else list(g.firmware),
                    "rings": [_carved_ring(r) for r in g.rings]})
    return out


def _carved_ring(r) -> dict[str, Any]:
    """One carved ring as plain values. A split ring's ``avail_idx``/``used_idx`` are its 16-bit
    indices; a packed ring has none: ``packed`` gives its event suppression areas decoded (virtio
    1.2 2.8.10: ``off_wrap`` is a descriptor offset and a wrap counter; the device's area holds
    where QEMU next expects an available descriptor, the driver's where the driver next expects
    a used one), ``avail_idx``/``used_idx`` those offsets and ``outstanding`` the descriptors
    between them, counted over laps by the wrap counters."""
    from vdecode.virtio.carved_ring import packed_outstanding, packed_position
    row = {"index": r.index, "name": r.name, "size": r.num, "desc": r.desc, "avail": r.avail,
           "used": r.used, "avail_flags": r.avail_flags, "avail_idx": r.avail_idx,
           "used_flags": r.used_flags, "used_idx": r.used_idx,
           "outstanding": (r.avail_idx - r.used_idx) % 0x10000, "packed": None}
    if r.layout == "packed":
        # the carver keeps the driver area's (flags, off_wrap) in avail_*, the device's in used_*
        (di, dw), (ui, uw) = packed_position(r.used_idx), packed_position(r.avail_idx)
        row.update(avail_idx=di, used_idx=ui,
                   outstanding=packed_outstanding(r.used_idx, r.avail_idx, r.num),
                   packed={"avail_wrap": dw, "used_wrap": uw,
                           "driver_event": {"off_wrap": r.avail_idx, "flags": r.avail_flags},
                           "device_event": {"off_wrap": r.used_idx, "flags": r.used_flags}})
    row.update(confidence=round(r.confidence, 3), layout=r.layout, evidence=list(r.evidence))
    return row


def _base(state) -> str:
    """The provenance of QEMU values not marked otherwise: the core's, else the log's."""
    return {"core": "core", "core+log": "core"}.get(state.source, "log")


def device_view(profile: Profile, state, dev: VirtIODeviceState) -> dict[str, Any]:
    """A device's members of the view (``docs/view-json.md`` **Device**) without its queues."""
    base = _base(state)
    return {"name": dev.name, "path": dev.canonical_path, "device_id": dev.device_id,
            "status": _status(profile, dev), "features": _features(profile, dev),
            "guest_features": dev.guest_features, "vhost": dev.vhost_started, "broken": dev.broken,
            "provenance": {"status": _prov(dev, "status", base),
                           "features": _prov(dev, "guest_features", base)}}


def queue_view(machine: VirtioMachine, profile: Profile, dev: VirtIODeviceState,
               q: VirtQueueState, findings: list[Finding], walks: dict[tuple[str, int], Any], *,
               show_all: bool = True) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One queue's row and detail (``docs/view-json.md`` **Queue row**, **Queue detail**; the
    detail ``None`` for a queue without a size), from the walk :func:`find_findings` made.

    :param show_all: every used entry (else the last :data:`USED_LIMIT`).
    """
    base = _base(machine.state)
    walked = walks.get((dev.canonical_path, q.queue_index))
    qf = [f for f in findings if f.device == dev.canonical_path and f.queue == q.queue_index]
    row = _queue_row(dev, q, walked, qf, base)
    detail = None if not q.vring_num else _queue_detail(machine, profile, dev, q, walked,
                                                        show_all, base)
    return row, detail


def build_view(machine: VirtioMachine, profile: Profile, findings: list[Finding],
               walks: dict[tuple[str, int], Any], *, dump_path: str, dump_format: str,
               log_path: str | None, device: str | None = None, queue: int | None = None,
               show_all: bool = False, notes: list[str] = (),
               carved: list | None = None, log_end: str | None = None,
               absent: Any = None, details: bool = False, trace: Any = None) -> dict[str, Any]:
    """The whole view as plain values (``docs/view-json.md``).

    :param device: ``--device`` (see :func:`select_devices`).
    :param queue: ``--queue``: add ``queue_detail`` for that queue of every selected device (and
        list only that queue in each device's rows; only its walk in ``walks`` is needed).
    :param show_all: ``--all``: idle queues in the rows, every used entry in the details (every
        pending and in-flight chain is in the details either way).
    :param log_end: the time of the log's last record (UTC ISO 8601), when a log was given.
    :param absent: what the input lacks (:class:`vdecode.space.absence.Absent`); the view then
        has an ``absent`` member (absent from the view of a whole input).
    :param details: a ``queue_detail`` for every listed queue with a size (the report's), not
        only for ``queue``.
    :param trace: a QEMU trace joined to the dump (``trace_join.TraceJoin``): a ``trace`` member,
        and each queue detail's traced elements on its chains and used entries.
    :raises NotInInput: ``--device`` matches nothing or several devices, or no selected device
        has ``queue``.
    """
    state = machine.state
    base = _base(state)
    devices = select_devices(state.devices, device)
    select_queue(devices, queue)
    paths = {d.canonical_path for d in devices}
    version = ".".join(map(str, state.qemu_version)) if state.qemu_version else None
    view: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "input": {"dump": os.path.basename(dump_path), "format": dump_format,
                  "log": os.path.basename(log_path) if log_path else None,
                  "qemu_state": state.source or "none", "qemu_version": version,
                  "log_end": log_end},
        "legend": LEGEND,
        "devices": [], "queue_detail": [],
        "findings": [finding_dict(f) for f in findings if f.device in paths
                     and (queue is None or f.queue is None or f.queue == queue)],
        "notes": list(notes),
        "carved": None if carved is None else carved_view(carved),
    }
    if absent is not None:      # right after "input": every member below is built on it
        view = {"schema_version": view.pop("schema_version"), "input": view.pop("input"),
                "absent": {**absent.to_json(), "lines": absent.lines()}, **view}
    if queue is not None:
        view["selection"] = {"device": device, "queue": queue}
    if trace is not None:
        from vdecode.reconstruct.postmortem.trace_join import trace_view
        view["trace"] = trace_view(trace, paths, queue)
    for dev in devices:
        qrows = []
        hidden = 0
        for qi, q in sorted(dev.queues.items()):
            if queue is not None and qi != queue:      # --queue: only that queue is read
                continue
            walked = walks.get((dev.canonical_path, qi))
            qf = [f for f in findings if f.device == dev.canonical_path and f.queue == qi]
            row = _queue_row(dev, q, walked, qf, base)
            if row["idle"] and not show_all and queue is None:
                hidden += 1
                continue
            qrows.append(row)
            if details and queue is None and q.vring_num:
                view["queue_detail"].append(_queue_detail(machine, profile, dev, q, walked,
                                                          show_all, base))
        view["devices"].append({**device_view(profile, state, dev), "queues": qrows,
                                "idle_queues_hidden": hidden})
        if queue is not None:
            q = dev.queues.get(queue)
            if q is None or not q.vring_num:
                continue
            view["queue_detail"].append(_queue_detail(machine, profile, dev, q,
                                                      walks.get((dev.canonical_path, queue)),
                                                      show_all, base))
    if trace is not None:
        from vdecode.reconstruct.postmortem.trace_join import mark_detail
        for d in view["queue_detail"]:
            mark_detail(trace, d)
    return view
