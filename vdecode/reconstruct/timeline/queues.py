"""Each virtqueue's story in a QEMU trace: taken, returned, held, and what was held at the pause.

The events (:mod:`vdecode.sources.trace`) are replayed in file order, QEMU's order of writing
them (threads' timestamps can step back by a microsecond; the file cannot):

- ``virtqueue_pop`` takes an element: it is *in flight* until ``virtqueue_fill`` returns it
  (QEMU v7.2.0 ``virtqueue_push`` = fill + flush; ``inuse`` drops at the flush, by its count);
- ``virtio_set_status … val 0`` resets the device (``virtio_reset`` calls it): QEMU's
  ``virtio_queue_reset`` zeroes ``inuse``; the elements it held are dropped;
- ``virtqueue_alloc_element`` of an address still in flight: the element there was freed without
  a fill (``virtqueue_detach_element``, ``virtqueue_unpop``: no event of their own), so it left;
- ``vm_state_notify running 0`` is the pause (``do_vm_stop``: before ``bdrv_drain_all``, which
  then completes the requests a throttled disk still held): the in-flight set is kept as it was.

Which ``vq`` is which queue: ``virtio_queue_notify vdev n vq`` names one; a device's queues are
one ``VirtQueue[VIRTIO_QUEUE_MAX]`` array, so two notifies of different ``n`` give the stride and
one places the whole array (``vq[k] = vq[n] + (k - n) * stride``). A QEMU core gives each
device's array and ``sizeof(VirtQueue)`` outright, and its QOM path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from vdecode.frozen import record
from vdecode.sources.trace import (ALLOC, DEVICE, FILL, FLUSH, IRQ, KICK, POP, RUNSTATE, STATUS,
                                   VMSTATE, QemuTrace)

__all__ = ("Element", "Moment", "QueueTimeline", "Timeline", "build_timeline", "SERIES_POP",
           "SERIES_FILL", "SERIES_RESET")

SERIES_POP, SERIES_FILL, SERIES_RESET = 1, 2, 3


@record
class Moment:
    """Where in the trace: its line, and its time (Unix seconds; ``None`` without timestamps)."""

    line: int
    t: float | None


@record
class Element:
    """An element QEMU popped and had not returned: its address, when it was taken, its shape,
    and the last device event that named it (``virtio_blk_handle_write … sector 8 nsectors 8``)."""

    elem: int
    popped: Moment
    in_num: int
    out_num: int
    request: str | None = None
    #: pops of its queue before it in the trace: with the dump's ``last_avail_idx`` at the
    #: trace's end, its avail index is ``last_avail_idx - (popped - ordinal)``
    ordinal: int | None = None
    #: its fill, when it was returned after the pause (an element of ``in_flight_at_pause``)
    returned: Moment | None = None
    #: the flushes of its queue before its fill plus the fill's ``idx``: with the dump's
    #: ``used_idx``, its used index is ``used_idx - (flushed - used_ordinal)``
    used_ordinal: int | None = None
    len: int | None = None


@record
class QueueTimeline:
    """One virtqueue over the trace. Counts are ``None`` where the trace lacks their events."""

    vq: int
    vdev: int | None
    queue: int | None
    path: str | None
    popped: int | None
    returned: int | None              # virtqueue_fill
    flushed: int | None               # sum of virtqueue_flush counts
    in_flight: tuple[Element, ...] | None
    inuse: int | None                 # QEMU's count: popped - flushed since the last reset
    in_flight_at_pause: tuple[Element, ...] | None
    completed_after_pause: int | None  # of in_flight_at_pause, returned after it
    resets: int
    dropped_by_reset: int
    last_reset: Moment | None
    #: pops and flushed entries since the device's last reset: QEMU's ``last_avail_idx`` and
    #: ``used_idx`` at the trace's end, when the trace saw that reset (``resets`` > 0)
    popped_since_reset: int | None
    flushed_since_reset: int | None
    left_unreturned: int              # freed without a fill (detached or rewound)
    returned_unseen: int              # fills of elements the trace never saw popped
    last_kick: Moment | None          # guest -> QEMU (virtio_queue_notify)
    last_interrupt: Moment | None     # QEMU -> guest (virtio_notify, virtio_notify_irqfd)
    first: Moment | None
    last: Moment | None
    #: every pop, fill and reset of the queue, in trace order: ``(place, kind, in flight after
    #: it)``, place the time (the line without timestamps), kind ``SERIES_POP``,
    #: ``SERIES_FILL`` or ``SERIES_RESET``: what the report draws
    series: tuple[tuple[float, int, int], ...] = ()


@record
class Timeline:
    """The trace's queues, ordered by device (path or address) and queue number."""

    source: str
    queues: tuple[QueueTimeline, ...]
    pause: Moment | None
    pause_reason: str | None
    pauses: int
    start: Moment | None
    end: Moment | None
    lines: int
    events: int
    ignored: Mapping[str, int]
    timestamps: bool
    notes: tuple[str, ...]
    named_by: str                     # "trace" or "core"
    clock: str | None = "unix"        # the trace's: "unix", "monotonic" (simpletrace) or None
    backend: str = "log"              # "log" or "simpletrace" (places are then record numbers)


class _Q:
    """A queue's running state during the replay (mutable; never leaves this module)."""

    __slots__ = ("vq", "popped", "returned", "flushed", "held", "inuse", "at_pause",
                 "after_pause", "resets", "dropped", "left", "unseen", "kick", "irq", "first",
                 "last", "reset", "taken_r", "added_r", "series")

    def __init__(self, vq: int) -> None:
        self.vq = vq
        self.popped = self.returned = self.flushed = self.inuse = 0
        # elem -> [line, t, in_num, out_num, request, ordinal, fill line, fill t, used ordinal, len]
        self.held: dict[int, list] = {}
        self.at_pause: dict[int, list] | None = None
        self.after_pause = 0
        self.resets = self.dropped = self.left = self.unseen = 0
        self.kick = self.irq = self.first = self.last = self.reset = None
        self.taken_r = self.added_r = 0
        self.series: list[tuple] = []


def build_timeline(trace: QemuTrace, *, devices: Mapping[int, tuple[str, int]] | None = None,
                   vq_size: int | None = None) -> Timeline:
    """The per-queue timeline of ``trace``.

    :param devices: from a QEMU core of the same run: ``VirtIODevice`` address -> (QOM path,
        its ``VirtQueue`` array address); with ``vq_size`` (``sizeof(VirtQueue)``) it names
        every queue.
    """
    ev = trace.events
    notes: list[str] = []
    # -- which vq is which queue -------------------------------------------------------------
    vdev_of: dict[int, int] = {}
    n_of: dict[int, int] = {}
    kicks_by_dev: dict[int, dict[int, int]] = {}
    for e in ev:
        k = e[2]
        if k == KICK:
            vdev_of[e[5]] = e[3]
            n_of[e[5]] = e[4]
            kicks_by_dev.setdefault(e[3], {})[e[4]] = e[5]
        elif k == IRQ:
            vdev_of.setdefault(e[4], e[3])
    named_by = "trace"
    traced = set(vdev_of.values())
    if devices and vq_size and not traced & set(devices):
        notes.append(f"the core is not of this trace's run: none of its {len(devices)} "
                     f"device(s) is at an address the trace names; queues named by the trace")
        devices = None
    elif devices and vq_size and traced - set(devices):
        notes.append(f"{len(traced - set(devices))} device(s) of the trace are not in the core "
                     f"(unplugged before it was taken?): no path for them")
    if devices and vq_size:
        named_by = "core"
        for vdev, (_, arr) in devices.items():
            for vq in [v for v, d in vdev_of.items() if d == vdev]:
                if (vq - arr) % vq_size == 0:
                    n_of[vq] = (vq - arr) // vq_size
    else:
        stride = _stride(kicks_by_dev)
        if stride:
            for vq, vdev in vdev_of.items():
                if vq not in n_of and vdev in kicks_by_dev:
                    n0, vq0 = next(iter(kicks_by_dev[vdev].items()))
                    if (vq - vq0) % stride == 0:
                        n_of[vq] = n0 + (vq - vq0) // stride
    # -- replay ------------------------------------------------------------------------------
    qs: dict[int, _Q] = {}
    where: dict[int, int] = {}                  # in-flight elem -> its vq
    pause = None
    reason = None
    pauses = 0
    running_seen = False
    has_vmstate = trace.enabled("vm_state_notify")

    def q_of(vq: int) -> _Q:
        q = qs.get(vq)
        if q is None:
            q = qs[vq] = _Q(vq)
        return q

    for e in ev:
        line, t, k = e[0], e[1], e[2]
        if k == POP:
            q = q_of(e[3])
            elem = e[4]
            old = where.pop(elem, None)
            if old is not None:                 # still held: it left without a fill
                qs[old].held.pop(elem, None)
                qs[old].left += 1
            q.held[elem] = [line, t, e[5], e[6], None, q.popped, None, None, None, None]
            where[elem] = q.vq
            q.popped += 1
            q.taken_r += 1
            q.inuse += 1
            q.series.append((line if t is None else t, SERIES_POP, len(q.held)))
            q.first = q.first or (line, t)
            q.last = (line, t)
        elif k == FILL:
            q = q_of(e[3])
            elem = e[4]
            q.returned += 1
            gone = q.held.pop(elem, None)
            q.series.append((line if t is None else t, SERIES_FILL, len(q.held)))
            if gone is None:
                q.unseen += 1
            else:
                where.pop(elem, None)
                if q.at_pause is not None and elem in q.at_pause:
                    q.after_pause += 1
                    # where QEMU's fill put it: used_idx + idx, used_idx moved by the flushes
                    q.at_pause[elem][6:] = [line, t, q.flushed + e[6], e[5]]
            q.first = q.first or (line, t)
            q.last = (line, t)
        elif k == FLUSH:
            q = q_of(e[3])
            q.flushed += e[4]
            q.added_r += e[4]
            q.inuse -= e[4]
        elif k == ALLOC:
            old = where.pop(e[3], None)
            if old is not None:                 # its memory is reused: it was freed unreturned
                qs[old].held.pop(e[3], None)
                qs[old].left += 1
        elif k == KICK:
            q_of(e[5]).kick = (line, t)
        elif k == IRQ:
            q_of(e[4]).irq = (line, t)
        elif k == STATUS:
            if e[4] == 0:
                for vq, vdev in vdev_of.items():
                    if vdev == e[3]:
                        q = q_of(vq)
                        q.resets += 1
                        q.reset = (line, t)
                        q.dropped += len(q.held)
                        for elem in q.held:
                            where.pop(elem, None)
                        q.held.clear()
                        q.inuse = q.taken_r = q.added_r = 0
                        q.series.append((line if t is None else t, SERIES_RESET, 0))
        elif k == VMSTATE or (k == RUNSTATE and not has_vmstate
                              and "running" in (e[4], e[6])):
            if k == VMSTATE:
                running, why = e[3] == 1, e[5]
            else:                               # only a change into or out of "running"
                running, why = e[6] == "running", e[6]
            if running:
                running_seen = True
            elif pause is None or running_seen:
                # the last pause after the VM last ran is the one the end state follows from
                pause, reason, pauses = (line, t), why, pauses + 1
                running_seen = False
                for q in qs.values():
                    q.at_pause = {k2: list(v) for k2, v in q.held.items()}
                    q.after_pause = 0
        elif k == DEVICE:
            vq = where.get(e[4])
            if vq is not None:
                qs[vq].held[e[4]][4] = f"{e[3]} {e[5]}".strip()
    # -- what the trace cannot see -----------------------------------------------------------
    if trace.cut:       # first: every count below stops where the file does
        notes.append(f"INCOMPLETE TRACE: {trace.cut}; what happened after it is not in the trace, "
                     "and in_flight is as of that line, not of QEMU's end")
    have_pop = trace.enabled("virtqueue_pop")
    have_fill = trace.enabled("virtqueue_fill")
    have_flush = trace.enabled("virtqueue_flush")
    if not have_pop or not have_fill:
        missing = [n for n, ok in (("virtqueue_pop", have_pop), ("virtqueue_fill", have_fill)) if not ok]
        notes.append(f"no {' or '.join(missing)} event in the trace (not enabled?): what was taken "
                     f"and returned is unknown (null)")
    if not trace.timestamps:
        notes.append("the trace has no timestamps (QEMU ran without -msg timestamp=on): times are "
                     "null, places are line numbers; how long before the pause an element was "
                     "taken, and how soon the pause returned it, are unknown")
    if trace.clock == "monotonic":
        notes.append("a simpletrace file: times are QEMU's monotonic clock (seconds since the "
                     "host booted, not UTC); places are record numbers")
    if pause is None:
        notes.append("no pause in the trace (vm_state_notify or runstate_set not enabled, or the "
                     "VM never stopped): in_flight_at_pause is null")
    if not trace.enabled("virtio_set_status"):
        notes.append("no virtio_set_status event: device resets are not seen; elements a reset "
                     "dropped would stay in flight")
    if not trace.enabled("virtqueue_alloc_element"):
        notes.append("no virtqueue_alloc_element event: elements detached or rewound "
                     "(virtqueue_detach_element, virtqueue_unpop) stay in flight")
    left = sum(q.left for q in qs.values())
    if left:
        notes.append(f"{left} element(s) left QEMU without a fill (detached or rewound: the "
                     f"trace has no event for that; seen as their memory was reused)")
    unseen = sum(q.unseen for q in qs.values())
    if unseen:
        notes.append(f"{unseen} fill(s) of elements the trace never saw popped (taken before it "
                     f"began)")
    unplaced = [vq for vq in qs if vq not in n_of]
    if unplaced:
        notes.append(f"{len(unplaced)} vq(s) have no device or queue number (no "
                     f"virtio_queue_notify for their device{'' if named_by == 'core' else ', no core'})")
    # -- records -----------------------------------------------------------------------------
    path_of = {vdev: p for vdev, (p, _) in (devices or {}).items()}
    out = []
    for vq, q in qs.items():
        vdev = vdev_of.get(vq)
        at_pause = None
        if pause is not None and have_pop and have_fill:
            at_pause = _elements(q.at_pause or {})
        out.append(QueueTimeline(
            vq=vq, vdev=vdev, queue=n_of.get(vq), path=path_of.get(vdev),
            popped=q.popped if have_pop else None, returned=q.returned if have_fill else None,
            flushed=q.flushed if have_flush else None,
            in_flight=_elements(q.held) if have_pop and have_fill else None,
            inuse=q.inuse if have_pop and have_flush else None,
            in_flight_at_pause=at_pause,
            completed_after_pause=q.after_pause if at_pause is not None else None,
            resets=q.resets, dropped_by_reset=q.dropped, last_reset=_m(q.reset),
            popped_since_reset=q.taken_r if have_pop else None,
            flushed_since_reset=q.added_r if have_flush else None,
            left_unreturned=q.left,
            returned_unseen=q.unseen, last_kick=_m(q.kick), last_interrupt=_m(q.irq),
            first=_m(q.first), last=_m(q.last), series=tuple(q.series)))
    out.sort(key=lambda r: (r.path is None, r.path or "", r.vdev or 0,
                            r.queue if r.queue is not None else 1 << 20, r.vq))
    start = _m((ev[0][0], ev[0][1])) if ev else None
    end = _m((ev[-1][0], ev[-1][1])) if ev else None
    return Timeline(source=trace.path, queues=tuple(out), pause=_m(pause), pause_reason=reason,
                    pauses=pauses, start=start, end=end, lines=trace.lines, events=len(ev),
                    ignored=trace.ignored, timestamps=trace.timestamps, notes=tuple(notes),
                    named_by=named_by, clock=trace.clock, backend=trace.backend)


def _stride(kicks_by_dev: dict[int, dict[int, int]]) -> int | None:
    """``sizeof(VirtQueue)`` as two notifies of one device with different ``n`` show it (the
    most common answer over devices)."""
    seen: Counter[int] = Counter()
    for by_n in kicks_by_dev.values():
        items = sorted(by_n.items())
        for (n0, v0), (n1, v1) in zip(items, items[1:]):
            if (v1 - v0) % (n1 - n0) == 0 and v1 > v0:
                seen[(v1 - v0) // (n1 - n0)] += 1
    return seen.most_common(1)[0][0] if seen else None


def _m(pair: tuple[int, float | None] | None) -> Moment | None:
    return None if pair is None else Moment(pair[0], pair[1])


def _elements(held: dict[int, list]) -> tuple[Element, ...]:
    return tuple(Element(elem, Moment(v[0], v[1]), v[2], v[3], v[4], v[5],
                         None if v[6] is None else Moment(v[6], v[7]), v[8], v[9])
                 for elem, v in sorted(held.items(), key=lambda kv: kv[1][0]))
