"""The post-mortem view's values: what :mod:`.view_model` builds and the renderers format.

Frozen records (:func:`vdecode.frozen.record`) for the view of ``vdecode DUMP``: :class:`View`
holds :class:`Device` records, each with its :class:`Queue` records; a queue whose rings were
read in detail holds its :class:`Chain` and :class:`UsedEntry` records (``detailed``). The
findings are :class:`Finding` records (made by :mod:`.findings`). The public API
(``vdecode.Device``, ``vdecode.Queue``...) hands out these same values.

Every QEMU value says where it came from (``provenance``: ``core``, ``dump``, ``log``,
``inferred``, ``carved``; see :data:`LEGEND`).

``to_json_obj()`` gives a record as the plain values of ``docs/view-json.md``, members in the
documented order: :meth:`View.to_json` is what ``vdecode DUMP --json`` writes, and the key order
is part of that output, so it is spelled out here, field by field, rather than derived.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import field
from typing import Any

from vdecode.errors import UnsupportedInput
from vdecode.frozen import FrozenDict, freeze_deep, record
from vdecode.virtio.layouts import VRING_AVAIL_F_NO_INTERRUPT, VRING_USED_F_NO_NOTIFY

__all__ = ("SCHEMA_VERSION", "LEGEND", "Descriptor", "Preview", "Chain", "UsedEntry", "Rings",
           "Indices", "Notification", "PackedEvents", "Queue", "Device", "CarvedPacked",
           "CarvedQueue", "CarvedGroup", "ViewInput", "Selection", "View", "Finding",
           "TraceMoment", "TracedElement", "QueueTrace", "TracedQueue", "ViewTrace")

SCHEMA_VERSION = 1
LEGEND = FrozenDict({
    "core": "read from QEMU's memory (process core)",
    "dump": "read from guest memory",
    "log": "from an earlier QMP reply (as of that reply)",
    "inferred": "inferred from the log and the rings",
    "carved": "found by carving guest RAM (the logged address held no ring)",
})


@record
class Descriptor:
    """One ``struct vring_desc`` of a chain (inside the indirect table for an indirect head).

    :param index: its number in the descriptor table (or the indirect table).
    :param addr: ``addr``, a guest-physical address.
    :param flags_names: ``("next", "write")``: ``VRING_DESC_F_*`` without the prefix.
    """

    index: int
    addr: int
    len: int
    flags: int
    flags_names: tuple[str, ...]

    @property
    def write(self) -> bool:
        """Device-writable (``VRING_DESC_F_WRITE``)."""
        return "write" in self.flags_names

    def to_json_obj(self) -> dict[str, Any]:
        return {"index": self.index, "addr": self.addr, "len": self.len, "flags": self.flags,
                "flags_names": list(self.flags_names)}


@record
class Preview:
    """A chain's buffers decoded by device type: ``kind`` (``blk``, ``net``, ``scsi``, ``console``,
    ``balloon``, ``rng``, ``net-ctrl``), a one-line ``summary`` and the decoded ``fields``
    (a read-only mapping of plain values)."""

    kind: str
    summary: str
    fields: Mapping[str, Any]

    def to_json_obj(self) -> dict[str, Any]:
        return {"kind": self.kind, "summary": self.summary, "fields": self.fields}


def _json(value: Any) -> Any:
    return None if value is None else value.to_json_obj()


@record
class TraceMoment:
    """Where in a QEMU trace: its line (a simpletrace file's record number) and its time
    (``None`` without timestamps; Unix seconds, or the host's monotonic clock for simpletrace)."""

    line: int
    t: float | None

    def to_json_obj(self) -> dict[str, Any]:
        return {"line": self.line, "t": self.t}


@record
class TracedElement:
    """An element a QEMU trace saw popped, tied to the dump (``vdecode DUMP --trace``;
    ``docs/trace.md``): a chain's ``taken``, a used entry's ``returned``, a trace finding's
    ``elements``.

    :param elem: QEMU's ``VirtQueueElement`` pointer.
    :param popped_at: the time of its ``virtqueue_pop`` (``None``: no timestamps); ``line`` its
        trace line.
    :param before_pause_s: how long before the pause (else the trace's end) it was taken.
    :param request: the device's last event naming it (``virtio_blk_handle_write ...``).
    :param avail_idx: the avail index it was taken at (``None``: not tied); ``head`` its head.
    :param tied_by: ``core``, ``pop order``, ``used ring`` or ``None``.
    :param returned_at: its ``virtqueue_fill`` after the pause (``returned_line`` its line), and
        where that put it: ``used_idx``, ``len``; ``used_agrees`` whether the dump's used entry
        there has its head and ``len`` (``None``: unread).
    """

    elem: int
    popped_at: float | None
    line: int
    before_pause_s: float | None
    in_num: int
    out_num: int
    request: str | None
    avail_idx: int | None
    head: int | None
    tied_by: str | None
    returned_at: float | None
    returned_line: int | None
    used_idx: int | None
    len: int | None
    used_agrees: bool | None

    def to_json_obj(self) -> dict[str, Any]:
        return {"elem": f"{self.elem:#x}", "popped_at": self.popped_at, "line": self.line,
                "before_pause_s": self.before_pause_s, "in_num": self.in_num,
                "out_num": self.out_num, "request": self.request, "avail_idx": self.avail_idx,
                "head": self.head, "tied_by": self.tied_by, "returned_at": self.returned_at,
                "returned_line": self.returned_line, "used_idx": self.used_idx, "len": self.len,
                "used_agrees": self.used_agrees}

    @classmethod
    def from_json_obj(cls, obj: Mapping[str, Any]) -> TracedElement:
        """The record of a trace finding's evidence ``elements[]`` (plain values, as JSON)."""
        return cls(int(obj["elem"], 16), obj["popped_at"], obj["line"], obj["before_pause_s"],
                   obj["in_num"], obj["out_num"], obj["request"], obj["avail_idx"], obj["head"],
                   obj["tied_by"], obj["returned_at"], obj["returned_line"], obj["used_idx"],
                   obj["len"], obj["used_agrees"])


def _moment_json(m: TraceMoment | None) -> dict[str, Any] | None:
    return None if m is None else m.to_json_obj()


@record
class QueueTrace:
    """What the trace says of one queue read in detail (its ``trace`` member).

    :param in_flight: elements popped and not returned at the trace's end.
    :param agrees: that count is QEMU's ``inuse`` (``False``: nothing of the queue is tied).
    :param in_flight_at_pause: those in flight when the VM paused (``None``: no pause).
    :param completed_after_pause: of those, returned after the pause.
    :param last_notify_from_guest: the last kick; ``last_notify_to_guest`` the last interrupt.
    """

    in_flight: int
    agrees: bool | None
    in_flight_at_pause: int | None
    completed_after_pause: int | None
    last_notify_from_guest: TraceMoment | None
    last_notify_to_guest: TraceMoment | None

    def to_json_obj(self) -> dict[str, Any]:
        return {"in_flight": self.in_flight, "agrees": self.agrees,
                "in_flight_at_pause": self.in_flight_at_pause,
                "completed_after_pause": self.completed_after_pause,
                "last_notify_from_guest": _moment_json(self.last_notify_from_guest),
                "last_notify_to_guest": _moment_json(self.last_notify_to_guest)}


@record
class TracedQueue:
    """A queue of the selection the trace was tied to (the view's ``trace.queues[]``): QEMU's
    ``VirtQueue`` pointer ``vq``, the trace's counts and the dump's ``inuse``."""

    device: str
    index: int
    vq: int
    popped: int | None
    returned: int | None
    in_flight: int | None
    in_flight_at_pause: int | None
    completed_after_pause: int | None
    resets: int
    inuse: int | None
    agrees: bool | None
    last_notify_from_guest: TraceMoment | None
    last_notify_to_guest: TraceMoment | None

    def to_json_obj(self) -> dict[str, Any]:
        return {"device": self.device, "index": self.index, "vq": f"{self.vq:#x}",
                "popped": self.popped, "returned": self.returned, "in_flight": self.in_flight,
                "in_flight_at_pause": self.in_flight_at_pause,
                "completed_after_pause": self.completed_after_pause, "resets": self.resets,
                "inuse": self.inuse, "agrees": self.agrees,
                "last_notify_from_guest": _moment_json(self.last_notify_from_guest),
                "last_notify_to_guest": _moment_json(self.last_notify_to_guest)}


@record
class ViewTrace:
    """The view's ``trace`` member (``vdecode DUMP --trace TRACE``): the trace's file, backend
    (``log``, ``simpletrace``) and clock, where it starts, ends and paused (``pause_reason``),
    how its devices were tied to the dump's (``matched_by``: ``core``, ``counts``, ``none``), the
    selection's queues it was tied to and what the join could not do (``notes``)."""

    file: str
    backend: str
    clock: str | None
    timestamps: bool
    start: TraceMoment | None
    end: TraceMoment | None
    pause: TraceMoment | None
    pause_reason: str | None
    matched_by: str
    queues: tuple[TracedQueue, ...]
    notes: tuple[str, ...]

    def to_json_obj(self) -> dict[str, Any]:
        return {"file": self.file, "backend": self.backend, "clock": self.clock,
                "timestamps": self.timestamps, "start": _moment_json(self.start),
                "end": _moment_json(self.end),
                "pause": None if self.pause is None else {**self.pause.to_json_obj(),
                                                          "reason": self.pause_reason},
                "matched_by": self.matched_by, "queues": [q.to_json_obj() for q in self.queues],
                "notes": list(self.notes)}


@record
class Chain:
    """A pending (available, not taken) or in-flight (taken, not completed) descriptor chain.

    :param avail_idx: the free-running avail index it was published at (``None``: packed ring).
    :param slot: ``avail_idx % size`` (packed: the first descriptor's slot).
    :param head: the head descriptor (packed: the buffer id).
    :param indirect: ``(addr, len)`` of the indirect table, or ``None``.
    :param problems: what the spec forbids or QEMU rejects (``"loop"``, ``"zero_len"``...).
    :param taken: an in-flight chain a QEMU trace tied to its element (``--trace``), else ``None``.
    """

    state: str
    avail_idx: int | None
    slot: int | None
    head: int
    indirect: tuple[int, int] | None
    descriptors: tuple[Descriptor, ...]
    bytes_out: int
    bytes_in: int
    problems: tuple[str, ...]
    preview: Preview | None
    taken: TracedElement | None = None

    @property
    def length(self) -> int:
        """How many descriptors are listed."""
        return len(self.descriptors)

    def to_json_obj(self, *, traced: bool = False) -> dict[str, Any]:
        """:param traced: the view has a trace: ``taken`` is a member (``null``: not tied)."""
        ind = self.indirect
        out = {"state": self.state, "avail_idx": self.avail_idx, "slot": self.slot,
               "head": self.head,
               "indirect": None if ind is None else {"addr": ind[0], "len": ind[1]},
               "descs": [d.to_json_obj() for d in self.descriptors], "length": self.length,
               "bytes_out": self.bytes_out, "bytes_in": self.bytes_in,
               "problems": list(self.problems), "preview": _json(self.preview)}
        if traced or self.taken is not None:
            out["taken"] = _json(self.taken)
        return out


@record
class UsedEntry:
    """One of the last ``vring_used_elem``: ``id`` (a head) and ``len`` (bytes written); the
    ``preview`` is of the chain at ``id`` now (the driver may have reused its descriptors);
    ``returned`` the element a QEMU trace saw returned there after the pause (``--trace``), else
    ``None``."""

    used_idx: int
    slot: int
    id: int
    len: int
    preview: Preview | None
    returned: TracedElement | None = None

    def to_json_obj(self, *, traced: bool = False) -> dict[str, Any]:
        """:param traced: the view has a trace: ``returned`` is a member (``null``: none)."""
        out = {"used_idx": self.used_idx, "slot": self.slot, "id": self.id, "len": self.len,
               "preview": _json(self.preview)}
        if traced or self.returned is not None:
            out["returned"] = _json(self.returned)
        return out


@record
class Rings:
    """Guest-physical addresses of the three ring areas (packed: ``avail`` is the driver event
    area, ``used`` the device event area)."""

    desc: int | None
    avail: int | None
    used: int | None

    def to_json_obj(self) -> dict[str, Any]:
        return {"desc": self.desc, "avail": self.avail, "used": self.used}


AVAIL_FLAG_NAMES = {VRING_AVAIL_F_NO_INTERRUPT: "NO_INTERRUPT"}
USED_FLAG_NAMES = {VRING_USED_F_NO_NOTIFY: "NO_NOTIFY"}


def _flag_names(flags: int | None, names: dict[int, str]) -> tuple[str, ...]:
    return tuple(name for bit, name in names.items() if (flags or 0) & bit)


@record
class Indices:
    """The ring's indices: the guest's (``avail->idx``, ``used->idx``, flags, event words; ``None``
    for a packed ring or an unread one) and QEMU's (``VirtQueue``'s counters)."""

    avail_idx: int | None
    avail_flags: int | None
    used_event: int | None
    guest_used_idx: int | None
    used_flags: int | None
    avail_event: int | None
    last_avail_idx: int | None
    shadow_avail_idx: int | None
    used_idx: int | None
    inuse: int | None
    signalled_used: int | None
    signalled_used_valid: bool | None

    @property
    def avail_flags_names(self) -> tuple[str, ...]:
        """``avail->flags`` by name (``NO_INTERRUPT``)."""
        return _flag_names(self.avail_flags, AVAIL_FLAG_NAMES)

    @property
    def used_flags_names(self) -> tuple[str, ...]:
        """``used->flags`` by name (``NO_NOTIFY``)."""
        return _flag_names(self.used_flags, USED_FLAG_NAMES)

    def qemu_json(self) -> dict[str, Any]:
        """The queue detail's ``qemu`` member."""
        return {"last_avail_idx": self.last_avail_idx, "shadow_avail_idx": self.shadow_avail_idx,
                "used_idx": self.used_idx, "inuse": self.inuse,
                "signalled_used": self.signalled_used,
                "signalled_used_valid": self.signalled_used_valid}


@record
class Notification:
    """Whether the next kick (driver to device) and the next interrupt (device to driver) are due,
    as the ring's flags or event words say (virtio 1.2 2.7.7, 2.7.10, 2.8.10); ``text`` is
    ``kick,irq``, ``kick``, ``irq`` or ``none``."""

    event_idx: bool
    next_kick: bool
    next_interrupt: bool
    text: str

    def to_json_obj(self) -> dict[str, Any]:
        return {"event_idx": self.event_idx, "next_kick": self.next_kick,
                "next_interrupt": self.next_interrupt, "text": self.text}


@record
class PackedEvents:
    """A packed ring's event suppression areas, each ``(off_wrap, flags)`` (flags 0 ENABLE,
    1 DISABLE, 2 DESC), and how many descriptors of the pending elements could not be read."""

    driver_event: tuple[int, int]
    device_event: tuple[int, int]
    incomplete_descs: int

    def to_json_obj(self) -> dict[str, Any]:
        return {"driver_event": {"off_wrap": self.driver_event[0], "flags": self.driver_event[1]},
                "device_event": {"off_wrap": self.device_event[0], "flags": self.device_event[1]},
                "incomplete_descs": self.incomplete_descs}


@record
class Finding:
    """One thing wrong (or worth knowing) at the dump instant.

    :param severity: ``"error"`` (QEMU would stop the device or abort), ``"warning"`` (a hang or a
        spec violation QEMU tolerates), ``"info"`` (what changed), ``"unknown"`` (the bytes the
        rules need are absent from the input: nothing can be said either way).
    :param code: a stable identifier (``"stalled-available"``, ``"loop"``, ...).
    :param evidence: indices, addresses and descriptor numbers (JSON-able plain values).
    :param rule: the virtio spec section or the QEMU check the finding rests on.
    :param qemu: what QEMU 7.2 does with it (the ``virtio_error`` message, an abort, or nothing).
    """

    severity: str
    code: str
    device: str
    queue: int | None
    title: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    rule: str = ""
    qemu: str = ""

    def __post_init__(self) -> None:
        # the evidence is handed to every renderer and to scripts: read-only all the way down
        object.__setattr__(self, "evidence", freeze_deep(self.evidence))


# the queue row's provenance members (docs/view-json.md), and the queue detail's
_ROW_PROVENANCE = ("size", "avail_idx", "used_idx", "last_avail_idx", "inflight")
_DETAIL_PROVENANCE = ("last_avail_idx", "shadow_avail_idx", "used_idx", "inuse", "signalled_used",
                      "rings")


@record
class Queue:
    """One virtqueue at the dump instant.

    :param pending: avail entries not taken yet (``avail_idx - last_avail_idx``).
    :param inflight: QEMU's ``inuse``.
    :param health: ``ok``, or the worst finding's short word (``stalled``, ``corrupt``...).
    :param chains: every pending and in-flight chain, in avail order (when ``detailed``).
    :param used_entries: the last used entries (when ``detailed``).
    :param ring_error: why the ring could not be read, or ``None``.
    :param provenance: where each QEMU value came from: ``core``, ``log``, ``inferred``, ...
        (keys ``size``, ``avail_idx``, ``used_idx``, ``last_avail_idx``, ``inflight``,
        ``shadow_avail_idx``, ``inuse``, ``signalled_used``, ``rings``).
    :param notification: the next kick and interrupt, or ``None`` for an unread ring.
    :param worst: the code of the queue's worst error or warning finding, or ``None``.
    :param idle: never used (no index moved, nothing wrong): left out of a view without ``--all``.
    :param detailed: whether the chains and used entries were read (every queue of
        ``Machine.devices``; in a view, the queues of its ``queue_detail``).
    :param event_idx: ``VIRTIO_RING_F_EVENT_IDX`` for a split ring that was read, else ``None``.
    :param packed_events: a packed ring's event areas, when it was read.
    :param trace: what a QEMU trace says of the queue (``--trace``), else ``None``.
    """

    device: str
    index: int
    size: int | None
    packed: bool
    rings: Rings
    indices: Indices
    pending: int | None
    inflight: int | None
    health: str
    chains: tuple[Chain, ...]
    used_entries: tuple[UsedEntry, ...]
    ring_error: str | None
    provenance: Mapping[str, str]
    notification: Notification | None
    worst: str | None
    idle: bool
    detailed: bool
    event_idx: bool | None
    packed_events: PackedEvents | None
    trace: QueueTrace | None = None

    @property
    def shown_used_idx(self) -> int | None:
        """The used index a queue row shows: QEMU's, else the guest's ``used->idx``."""
        i = self.indices
        return i.used_idx if i.used_idx is not None else i.guest_used_idx

    def row_json(self) -> dict[str, Any]:
        """The queue row of ``docs/view-json.md`` (a device's ``queues[]``)."""
        i, p = self.indices, self.provenance
        return {"index": self.index, "size": self.size, "avail_idx": i.avail_idx,
                "used_idx": self.shown_used_idx, "last_avail_idx": i.last_avail_idx,
                "inflight": self.inflight, "pending": self.pending,
                "notification": _json(self.notification), "packed": self.packed,
                "ring_error": self.ring_error,
                "provenance": {k: p[k] for k in _ROW_PROVENANCE},
                "worst": self.worst, "health": self.health, "idle": self.idle}

    def detail_json(self, *, traced: bool = False) -> dict[str, Any]:
        """The queue detail of ``docs/view-json.md`` (the view's ``queue_detail[]``).

        :param traced: the view has a trace: the chains' ``taken``, the used entries'
            ``returned`` and the queue's ``trace`` are members (``null`` where the trace says
            nothing)."""
        i, p = self.indices, self.provenance
        split = self.event_idx is not None
        out: dict[str, Any] = {
            "device": self.device, "index": self.index, "size": self.size,
            "rings": self.rings.to_json_obj(), "qemu": i.qemu_json(),
            "provenance": {k: p[k] for k in _DETAIL_PROVENANCE},
            "avail": None if not split else {
                "flags": i.avail_flags, "flags_names": list(i.avail_flags_names),
                "idx": i.avail_idx, "used_event": i.used_event},
            "used": None if not split else {
                "flags": i.used_flags, "flags_names": list(i.used_flags_names),
                "idx": i.guest_used_idx, "avail_event": i.avail_event},
            "chains": [c.to_json_obj(traced=traced) for c in self.chains], "chains_hidden": 0,
            "used_entries": [e.to_json_obj(traced=traced) for e in self.used_entries],
            "ring_error": self.ring_error,
        }
        if split:
            out["event_idx"] = self.event_idx
        if self.packed_events is not None:
            out["packed"] = self.packed_events.to_json_obj()
        if traced or self.trace is not None:
            out["trace"] = _json(self.trace)
        return out


@record
class Device:
    """A virtio device as QEMU held it.

    :param path: QOM canonical path (``.../virtio-backend``), what QMP's ``path`` takes.
    :param name: QEMU's name (``virtio-net``).
    :param status: the status byte, ``status_flags`` its names (``DRIVER_OK``...).
    :param features: the negotiated features, short names (``EVENT_IDX``), unknown bits as hex.
    :param queues: every queue QEMU set up, by index (in a view: the queues it lists).
    :param provenance: where ``status`` and ``features`` came from.
    :param idle_queues_hidden: in a view without ``--all``, the idle queues left out.
    """

    path: str
    name: str | None
    device_id: int | None
    status: int | None
    status_flags: tuple[str, ...]
    features: tuple[str, ...] | None
    guest_features: int | None
    vhost: bool | None
    broken: bool | None
    queues: tuple[Queue, ...]
    provenance: Mapping[str, str]
    idle_queues_hidden: int = 0

    def queue(self, index: int) -> Queue:
        """The queue numbered ``index``.

        :raises UnsupportedInput: the device has no such queue.
        """
        for q in self.queues:
            if q.index == index:
                return q
        raise UnsupportedInput(self.path, f"no queue {index} (queues: "
                                          f"{', '.join(str(q.index) for q in self.queues) or 'none'})")

    def to_json_obj(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "device_id": self.device_id,
                "status": {"value": self.status, "flags": list(self.status_flags)},
                "features": None if self.features is None else list(self.features),
                "guest_features": self.guest_features, "vhost": self.vhost,
                "broken": self.broken, "provenance": dict(self.provenance),
                "queues": [q.row_json() for q in self.queues],
                "idle_queues_hidden": self.idle_queues_hidden}


@record
class CarvedPacked:
    """A carved packed ring's event areas decoded (virtio 1.2 2.8.10): the wrap counters of the
    device's and the driver's positions, and the raw areas, each ``(off_wrap, flags)``."""

    avail_wrap: int
    used_wrap: int
    driver_event: tuple[int, int]
    device_event: tuple[int, int]

    def to_json_obj(self) -> dict[str, Any]:
        return {"avail_wrap": self.avail_wrap, "used_wrap": self.used_wrap,
                "driver_event": {"off_wrap": self.driver_event[0], "flags": self.driver_event[1]},
                "device_event": {"off_wrap": self.device_event[0], "flags": self.device_event[1]}}


@record
class CarvedQueue:
    """A queue's ring found by carving guest RAM (a
    :class:`vdecode.virtio.carved_ring.CarvedRing` as the view shows it): nothing here is QEMU's
    state, only what the guest's memory shows. A split ring's ``avail_idx``/``used_idx`` are its
    16-bit indices and ``outstanding`` their difference; a packed ring's are its event areas'
    descriptor offsets, ``outstanding`` the descriptors between them counted over laps,
    ``packed`` the areas.

    :param index: the queue's number, when the driver's records name it.
    :param name: the driver's name for the queue (``req.0``), or ``None``.
    :param confidence: 0..1, how sure the carver is (rounded to 3 places).
    :param layout: ``split`` or ``packed``.
    :param evidence: what the carver checked.
    """

    index: int | None
    name: str | None
    size: int
    desc: int
    avail: int
    used: int
    avail_flags: int
    avail_idx: int
    used_flags: int
    used_idx: int
    outstanding: int
    packed: CarvedPacked | None
    confidence: float
    layout: str
    evidence: tuple[str, ...]

    def to_json_obj(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "size": self.size, "desc": self.desc,
                "avail": self.avail, "used": self.used, "avail_flags": self.avail_flags,
                "avail_idx": self.avail_idx, "used_flags": self.used_flags,
                "used_idx": self.used_idx, "outstanding": self.outstanding,
                "packed": _json(self.packed), "confidence": self.confidence,
                "layout": self.layout, "evidence": list(self.evidence)}


@record
class CarvedGroup:
    """Carved rings grouped by the driver's device: ``kind`` (likely device name or ``None``),
    ``driver_device`` (the driver's ``struct virtio_device *``, or ``None``), ``reasons`` (why
    they are grouped), ``firmware`` (``None``, or the evidence that these are rings the boot
    firmware set up and abandoned, not a device's), ``rings``."""

    kind: str | None
    driver_device: int | None
    reasons: tuple[str, ...]
    firmware: tuple[str, ...] | None
    rings: tuple[CarvedQueue, ...]

    def to_json_obj(self) -> dict[str, Any]:
        return {"kind": self.kind, "driver_device": self.driver_device,
                "reasons": list(self.reasons),
                "firmware": None if self.firmware is None else list(self.firmware),
                "rings": [r.to_json_obj() for r in self.rings]}


@record
class ViewInput:
    """What the view was made from: the dump's file name and ``format``, the log's file name,
    where QEMU's state came from (``core``, ``log``, ``core+log``, ``none``), QEMU's release
    (``"7.2.22"``) and the time of the log's last record (UTC ISO 8601)."""

    dump: str
    format: str
    log: str | None
    qemu_state: str
    qemu_version: str | None
    log_end: str | None

    def to_json_obj(self) -> dict[str, Any]:
        return {"dump": self.dump, "format": self.format, "log": self.log,
                "qemu_state": self.qemu_state, "qemu_version": self.qemu_version,
                "log_end": self.log_end}


@record
class Selection:
    """``--device`` and ``--queue`` resolved once against the machine's devices: the devices'
    QOM paths (every device when ``device`` is ``None``) and the queue index, checked to exist.

    :param device: the text the user gave (kept for the view's ``selection`` member).
    """

    device: str | None
    queue: int | None
    paths: tuple[str, ...]


@record
class View:
    """The post-mortem view of ``vdecode DUMP [--device D] [--queue N] [--all]``.

    :param devices: the selected devices, each with the queues the view lists.
    :param queue_detail: the queues read in detail (``--queue N``: queue N of each selected
        device; the report's view: every listed queue with a ring), the same records as in
        ``devices``.
    :param findings: the findings about the selection, errors first.
    :param notes: how the state was derived, what could not be read.
    :param carved: without log or core, the rings carved from guest RAM, grouped by device,
        else ``None``.
    :param absent: what the input lacks (:class:`vdecode.space.absence.Absent`), or ``None``.
    :param selection: the selection, when ``--queue`` was given.
    :param trace: a QEMU trace joined to the dump (``--trace``), else ``None``.
    """

    input: ViewInput
    devices: tuple[Device, ...]
    queue_detail: tuple[Queue, ...]
    findings: tuple[Finding, ...]
    notes: tuple[str, ...]
    carved: tuple[CarvedGroup, ...] | None
    absent: Any = None
    selection: Selection | None = None
    trace: ViewTrace | None = None

    @property
    def legend(self) -> Mapping[str, str]:
        """Provenance words and what they mean."""
        return LEGEND

    def to_json_obj(self) -> dict[str, Any]:
        """The view as the plain values of ``docs/view-json.md``, members in its order."""
        traced = self.trace is not None     # without --trace: not one member more
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "input": self.input.to_json_obj()}
        if self.absent is not None:        # right after "input": every member below rests on it
            out["absent"] = {**self.absent.to_json(), "lines": self.absent.lines()}
        out.update({
            "legend": LEGEND,
            "devices": [d.to_json_obj() for d in self.devices],
            "queue_detail": [q.detail_json(traced=traced) for q in self.queue_detail],
            "findings": [finding_json(f) for f in self.findings],
            "notes": list(self.notes),
            "carved": None if self.carved is None else [g.to_json_obj() for g in self.carved],
        })
        if self.selection is not None:
            out["selection"] = {"device": self.selection.device, "queue": self.selection.queue}
        if traced:
            out["trace"] = self.trace.to_json_obj()
        return out

    def to_json(self) -> str:
        """What ``vdecode DUMP --json`` writes for the same selection, byte for byte: one JSON
        document, two-space indentation, newline-terminated."""
        return json.dumps(self.to_json_obj(), indent=2, ensure_ascii=False) + "\n"


def finding_json(f: Finding) -> dict[str, Any]:
    """A finding as the view's JSON has it."""
    return {"severity": f.severity, "code": f.code, "device": f.device, "queue": f.queue,
            "title": f.title, "evidence": f.evidence, "rule": f.rule, "qemu": f.qemu}
