"""What is wrong with the virtio devices at the dump instant, as :class:`Finding` values.

Rules over the virtio model (a :class:`~vdecode.virtio.device.VirtioMachine` plus, optionally, the
state an earlier QMP log recorded):

* device state: ``vdev->broken``, ``NEEDS_RESET``, ``FAILED``, a driver that never reached
  ``DRIVER_OK`` (virtio 1.2 spec 2.1, 3.1.1);
* stalled queues: requests available but not taken (``avail->idx - last_avail_idx``), taken but
  never completed (``inuse``), with the time of the log reply they have not moved since;
* notifications that explain a hang: ``VRING_USED_F_NO_NOTIFY``/``VRING_AVAIL_F_NO_INTERRUPT``
  (spec 2.7.7), ``avail_event``/``used_event`` that suppress the next kick or interrupt (2.7.10);
* corrupt rings, each with the ``virtio_error()`` text QEMU 7.2's ``virtqueue_split_pop`` would
  print (texts in ``formats/qemu-*/view.json``): heads and ``next`` out of range, loops, zero
  lengths, buffers outside guest RAM, bad indirect tables, descriptors out of order, indices that
  ran ahead of the ring size or went backwards;
* what moved between the log and the dump: rings relocated, indices advanced (a wrap past 65535
  told from a step back or a reset by evidence, :mod:`.index_motion`).

The ring walk is vectorised (:func:`vdecode.virtio.ring_walk.walk_queue`): every descriptor of a
table at once, all members of all outstanding chains checked with array operations.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np

from vdecode.errors import MissingData, RingError
from vdecode.profiles import Profile
from vdecode.sources.qemu_state import QemuVirtioState, VirtIODeviceState, VirtQueueState
from vdecode.virtio.buffers import is_held_element_queue, is_posted_buffer_queue
from vdecode.virtio.device import (VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
                                   VIRTIO_F_RING_PACKED, VIRTIO_RING_F_EVENT_IDX, VirtioMachine,
                                   has_feature, is_big_endian)
from vdecode.virtio.layouts import (VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC_F_INDIRECT,
                                    VRING_USED_F_NO_NOTIFY, ring_areas, vring_layouts)
from vdecode.virtio.packed_ring import (VRING_PACKED_EVENT_FLAG_DISABLE, PackedRing, PackedWalk,
                                        read_packed_ring, walk_packed_pending)
from vdecode.space.ram_map import RamMap
from vdecode.virtio.ring_walk import QueueWalk, walk_queue
from vdecode.reconstruct.postmortem.index_motion import Pace, judge_motion
from vdecode.reconstruct.postmortem.records import Finding
from vdecode.virtio.split_ring import SplitRing, read_split_ring, validate_num

__all__ = ("Finding", "QueueWalk", "walk_queue", "read_queue", "find_findings", "SEVERITIES",
           "utc_text")

VIRTIO_CONFIG_S_FAILED = 0x80
SEVERITIES = ("error", "warning", "info", "unknown")


def read_queue(machine: VirtioMachine, dev: VirtIODeviceState, q: VirtQueueState) -> SplitRing:
    """The split ring of a queue as the guest left it.

    :raises MissingData: part of the ring is not in the dump (or there is no guest memory).
    :raises RingError: the queue's size is out of range.
    """
    if machine.space is None:
        raise MissingData("(no guest memory)", f"queue {q.queue_index} of {dev.canonical_path}: "
                                               f"the input holds no guest RAM")
    layouts = vring_layouts(not is_big_endian(dev))
    return read_split_ring(machine.space, q.desc, q.avail, q.used, q.vring_num, layouts,
                           event_idx=has_feature(dev, VIRTIO_RING_F_EVENT_IDX),
                           queue=f"queue {q.queue_index} of {dev.canonical_path}")


def utc_text(t: float | None) -> str | None:
    """A unix time as UTC ISO 8601 with milliseconds (``None`` stays ``None``)."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


_CHAIN_RULES = {
    # code: (severity, title, spec/QEMU rule, qemu_errors key or a sentence)
    "head_out_of_range": ("error", "avail ring names head {head} >= queue size {num}",
                          "virtio 1.2 2.7.6; QEMU virtqueue_get_head", "head_out_of_range"),
    "next_out_of_range": ("error", "descriptor {desc} links to next {next} >= {num}",
                          "virtio 1.2 2.7.5; QEMU virtqueue_split_read_next_desc", "next_out_of_range"),
    "loop": ("error", "chain from head {head} loops back at descriptor {desc}",
             "virtio 1.2 2.7.5.2; QEMU virtqueue_split_pop", "loop"),
    "zero_len": ("error", "zero-length buffer in descriptor {desc}",
                 "virtio 1.2 2.7.5; QEMU virtqueue_map_desc", "zero_len"),
    "bad_addr": ("error", "descriptor {desc} points outside guest RAM",
                 "QEMU virtqueue_map_desc (dma_memory_map fails)", "bad_addr"),
    "indirect_len": ("error", "indirect table of head {head} has a bad length",
                     "virtio 1.2 2.7.5.3.1; QEMU virtqueue_split_pop", "indirect_len"),
    "indirect_map": ("error", "indirect table of head {head} is outside guest RAM",
                     "QEMU virtqueue_split_pop address_space_cache_init", "indirect_map"),
    "indirect_too_large": ("error", "indirect table of head {head} exceeds 32768 entries",
                           "virtio 1.2 2.7.5.3.1", "indirect_len"),
    "nested_indirect": ("warning", "indirect table of head {head} holds an INDIRECT descriptor",
                        "virtio 1.2 2.7.5.3.1 (driver MUST NOT nest)",
                        "QEMU 7.2 does not check: the inner table is mapped as a data buffer"),
    "indirect_with_next": ("warning", "head {head} has both INDIRECT and NEXT",
                           "virtio 1.2 2.7.5.3.1 (driver MUST NOT set both)",
                           "QEMU 7.2 follows the indirect table and ignores next"),
    "order": ("error", "chain from head {head} has a readable buffer after a writable one",
              "virtio 1.2 2.7.4.2; QEMU virtqueue_split_pop", "order"),
    "indirect_unreadable": ("info", "indirect table of head {head} is not in the dump",
                            "dump coverage", "nothing known"),
}


def _qemu_text(names: dict, key: str, *args: int) -> str:
    msg = names["qemu_errors"].get(key)
    if msg is None:
        return key
    try:
        msg = msg % args if args else msg
    except TypeError:
        pass
    return f'virtio_error("{msg}"): device broken until reset'


class _Collector:
    def __init__(self, names: dict) -> None:
        self.names = names
        self.items: list[Finding] = []

    def add(self, severity: str, code: str, dev: VirtIODeviceState, queue: int | None, title: str,
            rule: str, qemu: str, **evidence: Any) -> None:
        self.items.append(Finding(severity, code, dev.canonical_path, queue, title, evidence, rule, qemu))


def _device_findings(c: _Collector, dev: VirtIODeviceState) -> None:
    st = dev.status
    if dev.broken:
        c.add("error", "device-broken", dev, None, "QEMU marked the device broken",
              "QEMU virtio_error(): vdev->broken",
              "ignores every notification (virtio_queue_notify) until the driver resets it",
              status=st)
    if st is not None and st & VIRTIO_CONFIG_S_NEEDS_RESET:
        c.add("error", "needs-reset", dev, None, "device status has NEEDS_RESET",
              "virtio 1.2 2.1.1", "set by virtio_error() on VERSION_1 devices; waits for a reset",
              status=st)
    if st is not None and st & VIRTIO_CONFIG_S_FAILED:
        c.add("error", "driver-failed", dev, None, "the driver gave up on the device (FAILED)",
              "virtio 1.2 2.1", "nothing: the device stays as the driver left it", status=st)
    if st is not None and st and not st & VIRTIO_CONFIG_S_DRIVER_OK and not st & VIRTIO_CONFIG_S_FAILED:
        c.add("warning", "no-driver-ok", dev, None, "the driver never reached DRIVER_OK",
              "virtio 1.2 3.1.1", "queues are not processed until DRIVER_OK", status=st)


def _chain_findings(c: _Collector, dev: VirtIODeviceState, q: VirtQueueState, ring: SplitRing,
                    walk: QueueWalk) -> None:
    num = ring.num
    by_code: dict[str, list[int]] = {}
    for k, probs in sorted(walk.found.items()):
        for p in probs:
            by_code.setdefault(p, []).append(k)
    for code, ks in by_code.items():
        sev, title, rule, qkey = _CHAIN_RULES[code]
        k = ks[0]
        head = int(walk.heads[k])
        desc = walk.bad[k][0] if walk.bad.get(k) else head
        nxt = int(ring.descs["next"][desc]) if 0 <= desc < num else 0
        args = {"head_out_of_range": (head,), "next_out_of_range": (nxt,)}.get(code, ())
        qemu = _qemu_text(c.names, qkey, *args) if qkey in c.names["qemu_errors"] else qkey
        evidence: dict[str, Any] = {
            "avail_idx": [int(walk.idxs[i]) for i in ks[:16]],
            "heads": [int(walk.heads[i]) for i in ks[:16]],
            "descs": sorted({d for i in ks[:16] for d in walk.bad.get(i, [])})[:16],
            "count": len(ks)}
        if code in ("bad_addr", "zero_len", "next_out_of_range", "loop") and 0 <= desc < num \
                and not int(ring.descs["flags"][head if head < num else 0]) & VRING_DESC_F_INDIRECT:
            evidence["addr"] = int(ring.descs["addr"][desc])
            evidence["len"] = int(ring.descs["len"][desc])
        c.add(sev, code, dev, q.queue_index,
              title.format(head=head, desc=desc, next=nxt, num=num)
              + (f" (+{len(ks) - 1} more chains)" if len(ks) > 1 else ""), rule, qemu, **evidence)


def _since(logged: VirtQueueState | None, log_end: float | None) -> dict[str, Any]:
    if logged is None or logged.as_of is None:
        return {}
    out: dict[str, Any] = {"log_time": utc_text(logged.as_of)}
    if log_end is not None and log_end >= logged.as_of:
        out["log_end"] = utc_text(log_end)
    return out


def _motion_findings(c: _Collector, dev: VirtIODeviceState, q: VirtQueueState, ring: SplitRing,
                     logged: VirtQueueState, log_end: float | None, last: int,
                     pace: Pace | None) -> None:
    """What moved between the log and the dump on rings that stayed put: one finding, whose
    direction (a wrap past 65535 or a step back) the evidence decides (:mod:`.index_motion`)."""
    qi = q.queue_index
    avail_idx, used_idx = ring.avail.idx, ring.used.idx
    m = judge_motion(log_avail=logged.shadow_avail_idx, log_used=logged.used_idx, avail=avail_idx,
                     used=used_idx, num=ring.num, used_ring=ring.used.ring, pace=pace,
                     log_time=logged.as_of)
    since = _since(logged, log_end)
    if m is None:
        if logged.used_idx != used_idx:
            moved = (used_idx - logged.used_idx) % 0x10000
            c.add("info", "idx-advanced", dev, qi,
                  f"{moved} completion(s) since the log (used idx {logged.used_idx} -> {used_idx})",
                  "log replies vs guest memory", "nothing: normal progress",
                  log_used_idx=logged.used_idx, used_idx=used_idx, **since)
        return
    idxs = {"log_avail_idx": logged.shadow_avail_idx, "avail_idx": avail_idx,
            "log_used_idx": logged.used_idx, "used_idx": used_idx}
    if m.verdict == "forward":
        c.add("info", "idx-advanced", dev, qi,
              f"{m.forward} completion(s) since the log (used idx {logged.used_idx} -> {used_idx}"
              + (", wrapped)" if m.wrapped(logged.used_idx) else ")"),
              "log replies vs guest memory; virtio 1.2 2.7.8 (used idx wraps at 65536)",
              "nothing: normal progress", **idxs, **m.evidence(), **since)
    elif m.verdict == "back":
        c.add("warning", "idx-backwards", dev, qi,
              f"avail idx went back from {logged.shadow_avail_idx} (log) to {avail_idx}",
              "virtio 1.2 2.7.6 (idx only increases)",
              "nothing until the next pop, which sees the difference as "
              + _qemu_text(c.names, "num_heads", last, avail_idx).split(":")[0],
              **idxs, **m.evidence(), **since)
    elif m.verdict == "reset":
        c.add("info", "idx-reset", dev, qi,
              f"indices restarted since the log (used idx {logged.used_idx} -> {used_idx}): "
              f"a device reset",
              "QEMU virtio_reset (zeroes the indices); virtio 1.2 3.1.1 (queue setup)",
              "nothing: counts from 0 again", **idxs, **m.evidence(), **since)
    else:
        name = "used" if m.index == "used" else "avail"
        was, now = (logged.used_idx, used_idx) if m.index == "used" else (logged.shadow_avail_idx,
                                                                          avail_idx)
        c.add("info", "idx-ambiguous", dev, qi,
              f"{name} idx {was} (log) -> {now}: {m.forward} forward (wrapped) or {m.back} back "
              f"(reset); the evidence disagrees",
              "virtio 1.2 2.7.6, 2.7.8 (16-bit indices)", "nothing either way",
              **idxs, **m.evidence(), **since)


def queue_findings(c: _Collector, machine: VirtioMachine, dev: VirtIODeviceState,
                   q: VirtQueueState, ring: SplitRing, ram: np.ndarray,
                   logged: VirtQueueState | None, log_end: float | None,
                   pace: Pace | None = None) -> QueueWalk:
    """The findings of one readable split queue; returns the walk of its outstanding chains."""
    num = ring.num
    avail_idx, used_idx_mem = ring.avail.idx, ring.used.idx
    last = q.last_avail_idx if q.last_avail_idx is not None else used_idx_mem
    inuse = q.inuse or 0
    pending = (avail_idx - last) % 0x10000
    qi = q.queue_index
    nq = dev.num_vqs or len(dev.queues)
    posted = is_posted_buffer_queue(c.names, dev.device_id or 0, qi, nq)
    held = is_held_element_queue(c.names, dev.device_id or 0, qi, nq)
    ran_ahead = pending > num
    if ran_ahead:
        c.add("error", "idx-ran-ahead", dev, qi,
              f"avail idx {avail_idx} is {pending} ahead of last_avail_idx {last} (ring size {num})",
              "virtio 1.2 2.7.6; QEMU virtqueue_num_heads",
              _qemu_text(c.names, "num_heads", last, avail_idx),
              avail_idx=avail_idx, last_avail_idx=last, num=num)
    if q.provenance.get("used_idx") == "core" and q.used_idx is not None and q.used_idx != used_idx_mem:
        c.add("error", "used-idx-mismatch", dev, qi,
              f"used idx in guest memory is {used_idx_mem}, QEMU's is {q.used_idx}",
              "virtio 1.2 2.7.8 (the driver MUST NOT write the used ring)",
              "keeps its own vq->used_idx and overwrites used->idx at the next push",
              used_idx_guest=used_idx_mem, used_idx_qemu=q.used_idx)
    n_pend = 0 if ran_ahead else pending
    n_infl = min(inuse, num)
    idxs = np.concatenate([(last + np.arange(n_pend)) % 0x10000,
                           (last - n_infl + np.arange(n_infl)) % 0x10000]).astype(np.int64)
    walk = walk_queue(machine.space, ring, idxs, ram)
    _chain_findings(c, dev, q, ring, walk)

    event_idx = has_feature(dev, VIRTIO_RING_F_EVENT_IDX)
    unchanged = (logged is not None and logged.used_idx is not None and logged.desc == q.desc
                 and logged.used_idx == used_idx_mem)
    since = _since(logged, log_end) if unchanged else {}
    if n_pend and not posted:
        heads = [int(h) for h in walk.heads[:min(n_pend, 16)]]
        when = f" (no progress since the log at {since['log_time']})" if since else ""
        c.add("warning", "stalled-available", dev, qi,
              f"{n_pend} request(s) available but not taken{when}",
              "virtio 1.2 2.7.13 (device consumes avail entries in order)",
              "takes them at the next notification (virtio_queue_notify -> handle_output)",
              avail_idx=avail_idx, last_avail_idx=last, heads=heads,
              slots=[int(i % num) for i in idxs[:min(n_pend, 16)]], **since)
        if not event_idx and ring.used.flags & VRING_USED_F_NO_NOTIFY:
            c.add("warning", "kick-suppressed", dev, qi,
                  "VRING_USED_F_NO_NOTIFY is set: the driver will not kick for them",
                  "virtio 1.2 2.7.7", "set while QEMU polls the queue (virtio_queue_set_notification "
                  "off); a stopped poll leaves the requests unseen", used_flags=ring.used.flags)
        elif event_idx and ring.used.avail_event is not None:
            ev = ring.used.avail_event
            if (avail_idx - ev - 1) % 0x10000 >= pending:
                c.add("warning", "kick-suppressed", dev, qi,
                      f"avail_event {ev} is outside [{last}, {avail_idx}): no kick was due",
                      "virtio 1.2 2.7.10 (vring_need_event)",
                      "sees the requests only when another kick or a poll comes",
                      avail_event=ev, last_avail_idx=last, avail_idx=avail_idx)
    if n_infl and not held:
        infl = [int(h) for h in walk.heads[n_pend:n_pend + min(n_infl, 16)]]
        when = f" (no completion since the log at {since['log_time']})" if since else ""
        c.add("warning", "stalled-inflight", dev, qi,
              f"{n_infl} request(s) taken but never completed{when}",
              "QEMU vq->inuse (virtqueue_pop without virtqueue_push)",
              "waits for the backend; a stop drains block I/O, so requests still here are stuck "
              "in the backend", inuse=inuse, heads=infl, **since)
    outstanding = n_infl + (0 if posted else n_pend)
    if outstanding:
        if not event_idx and ring.avail.flags & VRING_AVAIL_F_NO_INTERRUPT:
            c.add("warning", "interrupt-suppressed", dev, qi,
                  "VRING_AVAIL_F_NO_INTERRUPT is set: completions raise no interrupt",
                  "virtio 1.2 2.7.7", "skips the interrupt (virtio_should_notify is false)",
                  avail_flags=ring.avail.flags, outstanding=outstanding)
        elif event_idx and ring.avail.used_event is not None:
            ahead = (ring.avail.used_event - used_idx_mem) % 0x10000
            if outstanding <= ahead < 0x8000:
                c.add("warning", "interrupt-suppressed", dev, qi,
                      f"used_event {ring.avail.used_event} is {ahead} past used idx "
                      f"{used_idx_mem}: the {outstanding} outstanding request(s) cannot reach it",
                      "virtio 1.2 2.7.10 (vring_need_event)",
                      "completes them without an interrupt (virtio_should_notify is false)",
                      used_event=ring.avail.used_event, used_idx=used_idx_mem,
                      outstanding=outstanding)
    if logged is not None:
        if logged.desc and q.desc and (logged.desc, logged.avail, logged.used) != (q.desc, q.avail, q.used):
            c.add("info", "rings-relocated", dev, qi, "rings moved since the log (driver re-initialised the queue)",
                  "virtio 1.2 3.1.1 (queue setup)", "uses the new addresses",
                  log_desc=logged.desc, desc=q.desc, log_avail=logged.avail, avail=q.avail,
                  log_used=logged.used, used=q.used, **_since(logged, log_end))
        elif logged.used_idx is not None:
            _motion_findings(c, dev, q, ring, logged, log_end, last, pace)
    return walk


def read_packed_queue(machine: VirtioMachine, dev: VirtIODeviceState, q: VirtQueueState) -> PackedRing:
    """The packed ring of a queue (``vring.avail``/``vring.used`` are the event areas).

    :raises MissingData: part of it is not in the dump (or there is no guest memory).
    :raises RingError: the queue's size is out of range.
    """
    if machine.space is None:
        raise MissingData("(no guest memory)", f"queue {q.queue_index} of {dev.canonical_path}: "
                                               f"the input holds no guest RAM")
    validate_num(machine.space.name, q.vring_num)
    return read_packed_ring(machine.space, q.desc, q.avail, q.used, q.vring_num,
                            little_endian=not is_big_endian(dev),
                            queue=f"queue {q.queue_index} of {dev.canonical_path}")


def packed_queue_findings(c: _Collector, dev: VirtIODeviceState, q: VirtQueueState,
                          ring: PackedRing, ram: np.ndarray) -> PackedWalk:
    """The findings of one readable packed queue (virtio 1.2 2.8); returns its pending elements."""
    qi = q.queue_index
    walk = walk_packed_pending(ring, q.last_avail_idx or 0, ram)
    nq = dev.num_vqs or len(dev.queues)
    by_code: dict[str, list[int]] = {}
    for k, probs in enumerate(walk.problems):
        for p in probs:
            by_code.setdefault(p, []).append(k)
    for code, ks in by_code.items():
        sev, title, rule, qkey = _CHAIN_RULES[code]
        head = int(walk.first[ks[0]])
        desc = walk.bad_descs[ks[0]][0] if walk.bad_descs[ks[0]] else head
        c.add(sev, code, dev, qi, title.format(head=head, desc=desc, next=0, num=ring.num)
              + (f" (+{len(ks) - 1} more elements)" if len(ks) > 1 else ""),
              "virtio 1.2 2.8 (packed descriptors); QEMU virtqueue_packed_pop",
              _qemu_text(c.names, qkey) if qkey in c.names["qemu_errors"] else qkey,
              slots=[int(walk.first[i]) for i in ks[:16]], ids=[int(walk.ids[i]) for i in ks[:16]],
              descs=sorted({d for i in ks[:16] for d in walk.bad_descs[i]})[:16], count=len(ks))
    n_pend, inuse = len(walk.first), q.inuse or 0
    posted = is_posted_buffer_queue(c.names, dev.device_id or 0, qi, nq)
    if n_pend and not posted:
        c.add("warning", "stalled-available", dev, qi, f"{n_pend} request(s) available but not taken",
              "virtio 1.2 2.8 (device consumes available descriptors in ring order)",
              "takes them at the next notification (virtio_queue_notify -> handle_output)",
              last_avail_idx=q.last_avail_idx, slots=walk.first[:16].tolist(), ids=walk.ids[:16].tolist())
        if ring.device_event[1] == VRING_PACKED_EVENT_FLAG_DISABLE:
            c.add("warning", "kick-suppressed", dev, qi,
                  "device event flags DISABLE: the driver will not notify for them",
                  "virtio 1.2 2.8 (event suppression)", "polls or waits for another notification",
                  device_event_flags=ring.device_event[1])
    if inuse and not is_held_element_queue(c.names, dev.device_id or 0, qi, nq):
        c.add("warning", "stalled-inflight", dev, qi, f"{inuse} request(s) taken but never completed",
              "QEMU vq->inuse (virtqueue_pop without virtqueue_push)",
              "waits for the backend; a stop drains block I/O, so requests still here are stuck "
              "in the backend", inuse=inuse)
    if (inuse or (n_pend and not posted)) and ring.driver_event[1] == VRING_PACKED_EVENT_FLAG_DISABLE:
        c.add("warning", "interrupt-suppressed", dev, qi,
              "driver event flags DISABLE: completions raise no interrupt",
              "virtio 1.2 2.8 (event suppression)",
              "skips the interrupt (virtio_packed_should_notify is false)",
              driver_event_flags=ring.driver_event[1])
    return walk


def _absent_finding(c: _Collector, absent: Any, dev: VirtIODeviceState, q: VirtQueueState,
                    packed: bool, err: MissingData) -> None:
    """A queue whose ring lies in bytes the input lacks (a dump cut short, pages excluded): its
    findings are unknown, said as one finding instead of silence."""
    if absent is None:
        return
    gone = [(n, a, z) for n, a, z in ring_areas(q, packed) if a and absent.covers(a, z)]
    if not gone:
        return
    part = next((p for p in absent.parts if any(absent_part_covers(p, a, z) for _, a, z in gone)),
                absent.parts[0])
    what = ", ".join(f"{n} {a:#x}+{z}" for n, a, z in gone)
    why = ("excluded from the dump by design" if part.by_design else
           "absent from the dump" + (" (cut short)" if part.kind == "cut-short" else ""))
    c.add("unknown", "absent", dev, q.queue_index,
          f"not read: the ring's pages are {why}: {what}",
          "dump coverage", "nothing known: the findings of this queue need those bytes",
          absent=[{"area": n, "address": a, "size": z} for n, a, z in gone],
          kind=part.kind, reason=part.reason, error=err.reason)


def absent_part_covers(part: Any, gpa: int, n: int) -> bool:
    return any(s < gpa + max(n, 1) and gpa < s + z for s, z in part.ranges)


def find_findings(machine: VirtioMachine, profile: Profile, logged: QemuVirtioState | None = None,
                  log_end: float | None = None, *, devices: Collection[str] | None = None,
                  queue: int | None = None, pace: Mapping[tuple[str, int], Pace] | None = None
                  ) -> tuple[list[Finding], dict[tuple[str, int], Any]]:
    """The findings of the selected devices and queues, and per ``(path, queue)`` walked the ring
    and walk (or the reason the ring could not be read, as a string).

    Only the selected queues' rings are read and walked, so ``--queue 2`` costs one queue's pages
    whatever the size of the dump.

    :param logged: the state an earlier QMP log recorded (unadvanced), to say what moved.
    :param log_end: the time of the log's last record.
    :param devices: canonical paths of the devices to look at (default: every device); their
        device-level findings are always made.
    :param queue: only this queue of each selected device (default: every queue).
    :param pace: per ``(path, queue)``, how fast the log saw the used idx move
        (:func:`vdecode.reconstruct.postmortem.index_motion.log_pace`): evidence for telling a
        wrap from a step back.
    """
    c = _Collector(profile.table("view"))
    ram = RamMap.of(machine.space)
    absent = getattr(machine.space, "absent", None)
    walks: dict[tuple[str, int], Any] = {}
    logged_devs = {d.canonical_path: d for d in logged.devices} if logged else {}
    for dev in machine.state.devices:
        if devices is not None and dev.canonical_path not in devices:
            continue
        _device_findings(c, dev)
        ldev = logged_devs.get(dev.canonical_path)
        for qi, q in sorted(dev.queues.items()):
            if not q.vring_num or not q.desc or (queue is not None and qi != queue):
                continue
            lq = ldev.queues.get(qi) if ldev else None
            packed = has_feature(dev, VIRTIO_F_RING_PACKED)
            try:
                ring = read_packed_queue(machine, dev, q) if packed else read_queue(machine, dev, q)
            except (MissingData, RingError) as err:
                walks[(dev.canonical_path, qi)] = str(err)
                if isinstance(err, MissingData):
                    _absent_finding(c, absent, dev, q, packed, err)
                continue
            if packed:
                walks[(dev.canonical_path, qi)] = (ring, packed_queue_findings(c, dev, q, ring, ram))
            else:
                walks[(dev.canonical_path, qi)] = (ring, queue_findings(
                    c, machine, dev, q, ring, ram, lq, log_end,
                    (pace or {}).get((dev.canonical_path, qi))))
    order = {s: i for i, s in enumerate(SEVERITIES)}
    paths = [d.canonical_path for d in machine.state.devices]
    items = sorted(c.items, key=lambda f: (order[f.severity], paths.index(f.device),
                                           -1 if f.queue is None else f.queue))
    return items, walks
