"""A QEMU trace's timeline joined to the dump: which chain each traced element is, and when it
was taken.

The trace (:mod:`vdecode.reconstruct.timeline.queues`) knows elements by QEMU's pointer
(``virtqueue_pop vq … elem …``); the dump knows chains by avail index and head. What ties one to
the other, and how sure it is:

- **which device**: a QEMU core of the run names each ``VirtIODevice`` address (its QOM path);
  without one, a traced device is the dump's device whose every queue's ``last_avail_idx`` and
  ``used_idx`` equal the pops and flushed counts the trace saw since the device's last reset
  (only devices the trace saw reset, and only when one device fits: *inferred*);
- **which chain**: QEMU pops in avail order (``virtqueue_split_pop`` takes ``last_avail_idx++``),
  so an element's avail index is the dump's ``last_avail_idx`` minus the pops of its queue from
  it to the trace's end; its head is the avail ring's entry there (*inferred*: a
  ``virtqueue_unpop``/``virtqueue_rewind`` has no event and would shift it). A QEMU core says it
  outright for an element still in flight: ``VirtQueueElement.index`` at ``elem`` (QEMU v7.2.0
  ``include/hw/virtio/virtio.h``: ``index``, ``len``, ``ndescs``, ``out_num``, ``in_num`` lead
  the struct, 4 bytes each), read only where its ``out_num``/``in_num`` equal the pop's;
- **which used entry**: ``virtqueue_fill`` writes at ``used_idx + idx`` and ``virtqueue_flush``
  moves ``used_idx`` by its count, so a fill's used index is the dump's ``used_idx`` minus the
  flushes after it; its ``len`` and the entry's must agree.

All of this holds when the trace ends at the dump instant (the VM paused, nothing ran after):
the trace's in-flight count of every matched queue must equal the dump's ``inuse``; a queue
where it does not is said (a finding) and nothing of it is tied.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

from vdecode.errors import MissingData
from vdecode.frozen import record
from vdecode.reconstruct.postmortem.findings import Finding
from vdecode.reconstruct.timeline.durations import duration_text
from vdecode.reconstruct.postmortem.records import (QueueTrace, TracedElement, TracedQueue,
                                                    TraceMoment, ViewTrace)
from vdecode.reconstruct.timeline.queues import Element, Moment, QueueTimeline, Timeline
from vdecode.sources.qemu_state import QemuVirtioState
from vdecode.virtio.device import VIRTIO_F_RING_PACKED

__all__ = ("Taken", "QueueJoin", "TraceJoin", "join_trace", "trace_findings", "trace_view",
           "queue_marks", "traced_element")

_ELEM_HEAD = struct.Struct("<5I")        # VirtQueueElement: index, len, ndescs, out_num, in_num


@record
class Taken:
    """A traced element tied to the dump.

    :param avail_idx: the avail index it was taken at (``None``: not placed).
    :param head: its head descriptor (``None``: not known).
    :param tied_by: ``core`` (the core's ``VirtQueueElement.index``), ``pop order`` (the avail
        ring at ``avail_idx``) or ``None``.
    :param used_idx: where its fill put it in the used ring (returned after the pause only).
    :param used_agrees: the dump's used entry there has its head and ``len`` (``None``: unread).
    """

    element: Element
    avail_idx: int | None
    head: int | None
    tied_by: str | None
    used_idx: int | None = None
    used_agrees: bool | None = None


@record
class QueueJoin:
    """One queue of the dump with its trace: what was in flight at the trace's end and at the
    pause, tied to chains where the counts allow it."""

    path: str
    queue: int
    timeline: QueueTimeline
    in_flight: tuple[Taken, ...]
    at_pause: tuple[Taken, ...] | None
    dump_inuse: int | None
    agrees: bool | None          # the trace's in-flight count is the dump's inuse


@record
class TraceJoin:
    """The trace's timeline and the dump's queues it was tied to."""

    timeline: Timeline
    matched_by: str              # "core", "counts" or "none"
    queues: tuple[QueueJoin, ...]
    notes: tuple[str, ...]

    def queue(self, path: str, index: int) -> QueueJoin | None:
        for q in self.queues:
            if q.path == path and q.queue == index:
                return q
        return None


def join_trace(timeline: Timeline, state: QemuVirtioState, rings: Mapping[tuple[str, int], Any],
               *, host_read: Callable[[int, int], bytes] | None = None) -> TraceJoin:
    """Tie ``timeline`` to the dump's QEMU state.

    :param rings: ``(path, queue) -> SplitRing`` of the dump's readable split rings.
    :param host_read: reads QEMU's memory (a QEMU core of the dump's instant), for the
        ``VirtQueueElement`` of each element still in flight.
    """
    notes: list[str] = []
    devices = {d.canonical_path: d for d in state.devices}
    by_dev: dict[str, list[QueueTimeline]] = {}
    if timeline.named_by == "core":
        matched_by = "core"
        for q in timeline.queues:
            if q.path in devices and q.queue is not None:
                by_dev.setdefault(q.path, []).append(q)
    else:
        matched_by = "counts"
        by_dev = _match_by_counts(timeline, state, notes)
        if not by_dev:
            matched_by = "none"
    out = []
    packed_seen: set[str] = set()
    for path, tqs in by_dev.items():
        dev = devices[path]
        for tq in sorted(tqs, key=lambda q: q.queue):
            dq = dev.queues.get(tq.queue)
            if dq is None:
                continue
            ring = rings.get((path, tq.queue))
            n_flight = None if tq.in_flight is None else len(tq.in_flight)
            agrees = None if n_flight is None or dq.inuse is None else n_flight == dq.inuse
            # a packed ring's last_avail_idx is a slot with a wrap counter, not a count of pops
            packed = bool((dev.guest_features or 0) >> VIRTIO_F_RING_PACKED & 1)
            if packed and path not in packed_seen:
                packed_seen.add(path)
                notes.append(f"{path}: a packed ring: its elements are not tied to chains")
            tie = agrees is True and dq.last_avail_idx is not None and not packed
            flight = tuple(_taken(e, tq, dq, ring, tie, host_read) for e in tq.in_flight or ())
            at_pause = None if tq.in_flight_at_pause is None else tuple(
                _taken(e, tq, dq, ring, tie, None) for e in tq.in_flight_at_pause)
            out.append(QueueJoin(path, tq.queue, tq, flight, at_pause, dq.inuse, agrees))
    traced = {q.vdev for q in timeline.queues if q.vdev is not None}
    placed = {q.timeline.vdev for q in out}
    if traced - placed and matched_by != "none":
        notes.append(f"{len(traced - placed)} traced device(s) not tied to a device of the dump")
    if not timeline.timestamps:
        notes.append("the trace has no timestamps: when an element was taken is its line")
    return TraceJoin(timeline, matched_by, tuple(out), tuple(notes))


def _match_by_counts(timeline: Timeline, state: QemuVirtioState,
                     notes: list[str]) -> dict[str, list[QueueTimeline]]:
    """Traced devices to the dump's by the counts since the device's last reset (only devices the
    trace saw reset: before it, QEMU's indices started where the trace cannot see)."""
    by_vdev: dict[int, list[QueueTimeline]] = {}
    for q in timeline.queues:
        if q.vdev is not None and q.queue is not None:
            by_vdev.setdefault(q.vdev, []).append(q)
    out: dict[str, list[QueueTimeline]] = {}
    unsure = 0
    for vdev, tqs in by_vdev.items():
        if not any(q.resets for q in tqs) or any(q.popped is None or q.flushed is None for q in tqs):
            unsure += 1
            continue
        fits = []
        for dev in state.devices:
            ok = any(dev.queues.get(q.queue) is not None
                     and (dev.queues[q.queue].last_avail_idx or 0) for q in tqs)
            for q in tqs:
                dq = dev.queues.get(q.queue)
                if dq is None or dq.last_avail_idx is None or dq.used_idx is None:
                    ok = False
                    break
                taken, added = _since_reset(timeline, q)
                if taken % 0x10000 != dq.last_avail_idx or added % 0x10000 != dq.used_idx:
                    ok = False
                    break
            if ok:
                fits.append(dev.canonical_path)
        if len(fits) == 1 and fits[0] not in out:
            out[fits[0]] = tqs
        else:
            unsure += 1
    if out:
        notes.append(f"{len(out)} traced device(s) tied to the dump's by their counts since their "
                     f"last reset (no QEMU core of the run: inferred)")
    if unsure:
        notes.append(f"{unsure} traced device(s) could not be tied to one device of the dump by "
                     f"their counts (no reset in the trace, or several or no devices fit)")
    return out


def _since_reset(timeline: Timeline, q: QueueTimeline) -> tuple[int, int]:
    """Pops and flushed entries of ``q`` after its device's last reset: QEMU's
    ``last_avail_idx`` and ``used_idx`` at the trace's end (the reset zeroes both)."""
    return q.popped_since_reset, q.flushed_since_reset


def _taken(e: Element, tq: QueueTimeline, dq, ring, tie: bool,
           host_read: Callable[[int, int], bytes] | None) -> Taken:
    if not tie or e.ordinal is None or tq.popped is None:
        return Taken(e, None, None, None)
    if tq.last_reset is not None and e.popped.line < tq.last_reset.line:
        return Taken(e, None, None, None)       # popped before a reset: its index is gone
    avail_idx = (dq.last_avail_idx - (tq.popped - e.ordinal)) % 0x10000
    head, by = None, None
    if host_read is not None:
        try:
            index, _len, _nd, out_num, in_num = _ELEM_HEAD.unpack(bytes(host_read(e.elem, 20)))
        except (MissingData, struct.error):     # not in the core: fall back on pop order
            index = out_num = in_num = None
        if (out_num, in_num) == (e.out_num, e.in_num) and index is not None:
            head, by = index, "core"
    if head is None and ring is not None:
        # the avail ring still holds the head while fewer than num entries followed it
        if (ring.avail.idx - avail_idx) % 0x10000 <= ring.num and \
                (ring.avail.idx - avail_idx) % 0x10000 > 0:
            head, by = int(ring.avail.ring[avail_idx % ring.num]), "pop order"
    used_idx = agrees = None
    if e.used_ordinal is not None and tq.flushed is not None and dq.used_idx is not None:
        used_idx = (dq.used_idx - (tq.flushed - e.used_ordinal)) % 0x10000
        if ring is not None and (ring.used.idx - used_idx) % 0x10000 <= ring.num and \
                (ring.used.idx - used_idx) % 0x10000 > 0:
            ent = ring.used.ring[used_idx % ring.num]
            agrees = int(ent["len"]) == e.len and (head is None or int(ent["id"]) == head)
            if head is None:
                head = int(ent["id"])
                by = "used ring"
    return Taken(e, avail_idx, head, by, used_idx, agrees)


def _ago(e: Element, ref: Moment | None) -> float | None:
    if e.popped.t is None or ref is None or ref.t is None:
        return None
    return round(ref.t - e.popped.t, 6)


def traced_element(t: Taken, ref: Moment | None) -> TracedElement:
    """A traced element as the view holds it (``ref``: the pause, else the trace's end)."""
    e = t.element
    return TracedElement(e.elem, e.popped.t, e.popped.line, _ago(e, ref), e.in_num, e.out_num,
                         e.request, t.avail_idx, t.head, t.tied_by,
                         None if e.returned is None else e.returned.t,
                         None if e.returned is None else e.returned.line, t.used_idx, e.len,
                         t.used_agrees)


def _element_json(t: Taken, ref: Moment | None) -> dict[str, Any]:
    """A traced element as a finding's evidence has it (plain values)."""
    return traced_element(t, ref).to_json_obj()


def trace_findings(join: TraceJoin) -> list[Finding]:
    """What the trace adds to the findings: requests the pause completed, requests still in
    flight with when they were taken, queues where the trace and the dump disagree."""
    tl = join.timeline
    why = tl.pause_reason or "paused"
    out: list[Finding] = []
    src = tl.source
    for q in join.queues:
        if q.agrees is False:
            out.append(Finding(
                "warning", "trace-disagrees", q.path, q.queue,
                f"the trace ends with {len(q.timeline.in_flight)} in flight, QEMU's inuse is "
                f"{q.dump_inuse}: the trace does not end at the dump instant (or is another run's)",
                {"trace": src, "trace_in_flight": len(q.timeline.in_flight),
                 "inuse": q.dump_inuse, "vq": f"{q.timeline.vq:#x}"},
                "QEMU's inuse counts virtqueue_pop minus virtqueue_flush since the last reset",
                "nothing: the trace is only tied where the counts agree"))
            continue
        done = [t for t in q.at_pause or () if t.element.returned is not None]
        if done and tl.pause is not None:
            n = len(done)
            verb = "was" if n == 1 else "were"
            out.append(Finding(
                "info", "trace-completed-by-pause", q.path, q.queue,
                f"{n} request{'s' if n > 1 else ''} {verb} in flight when the VM paused ({why}); "
                f"the pause completed {'it' if n == 1 else 'them'}",
                {"trace": src, "paused_at": tl.pause.t, "pause_line": tl.pause.line,
                 "elements": [_element_json(t, tl.pause) for t in done]},
                "vm_state_notify running 0 is traced before do_vm_stop's bdrv_drain_all",
                "the drain completes requests a throttled or slow backend held: at stop inuse "
                "is 0 and the dump shows them in the used ring"))
        if q.in_flight:
            n = len(q.in_flight)
            oldest = q.in_flight[0].element
            ref = tl.pause or tl.end
            ago = _ago(oldest, ref)
            first = "taken" if n == 1 else "the oldest taken"
            when = (f"{first} {duration_text(ago)} before the "
                    f"{'pause' if tl.pause else 'trace ended'}") if ago is not None \
                else f"{first} at trace line {oldest.popped.line}"
            out.append(Finding(
                "info", "trace-in-flight", q.path, q.queue,
                f"{n} request{'s' if n > 1 else ''} in flight at the dump, {when}",
                {"trace": src, "elements": [_element_json(t, ref) for t in q.in_flight]},
                "virtqueue_pop without virtqueue_fill since the device's last reset",
                "QEMU holds the element until the device returns it"))
    return out



def _moment(m: Moment | None) -> TraceMoment | None:
    return None if m is None else TraceMoment(m.line, m.t)


def trace_view(join: TraceJoin, paths: set[str], queue: int | None) -> ViewTrace:
    """The view's ``trace`` member: the trace's facts and each joined queue of the selection."""
    tl = join.timeline
    return ViewTrace(
        tl.source, tl.backend, tl.clock, tl.timestamps, _moment(tl.start), _moment(tl.end),
        _moment(tl.pause), None if tl.pause is None else tl.pause_reason, join.matched_by,
        tuple(TracedQueue(q.path, q.queue, q.timeline.vq, q.timeline.popped, q.timeline.returned,
                          None if q.timeline.in_flight is None else len(q.in_flight),
                          None if q.at_pause is None else len(q.at_pause),
                          q.timeline.completed_after_pause, q.timeline.resets, q.dump_inuse,
                          q.agrees, _moment(q.timeline.last_kick),
                          _moment(q.timeline.last_interrupt))
              for q in join.queues if q.path in paths and (queue is None or q.queue == queue)),
        (*tl.notes, *join.notes))


def queue_marks(join: TraceJoin, path: str, index: int) -> tuple[
        dict[int, TracedElement], dict[int, TracedElement], QueueTrace | None]:
    """The trace on one queue of the view: the in-flight chains' ``taken`` by avail index (the
    element, when it was popped), the used entries' ``returned`` by used index (an element the
    pause completed), and the queue's ``trace`` counts (``None``: the trace was not tied to it)."""
    q = join.queue(path, index)
    if q is None:
        return {}, {}, None
    ref = join.timeline.pause or join.timeline.end
    flight = {t.avail_idx: traced_element(t, ref) for t in q.in_flight if t.avail_idx is not None}
    done = {t.used_idx: traced_element(t, ref) for t in q.at_pause or ()
            if t.used_idx is not None and t.element.returned is not None}
    return flight, done, QueueTrace(
        len(q.in_flight), q.agrees, None if q.at_pause is None else len(q.at_pause),
        q.timeline.completed_after_pause, _moment(q.timeline.last_kick),
        _moment(q.timeline.last_interrupt))
