"""What guest memory the answers rest on: the pages a bug-report bundle keeps.

A bundle (``docs/bundle.md``) must let ``vdecode qmp`` give the same replies as the dump it was
made from, for *any* request, while keeping only a few pages. Two sources of "what is needed":

- explicitly, from the virtio model: every ring area (descriptor table, the whole avail and used
  rings with their event fields), every indirect table any descriptor-table entry points to
  (bounded), and the first bytes of each pending or in-flight buffer
  (``used.idx .. avail.idx``, walked like QEMU's ``qmp_x_query_virtio_queue_element``);
- by observation: every request a QMP client could make about the machine (each device's status,
  each queue's status, the element at *every* avail slot) is run once on a throwaway copy over a
  :class:`RecordingSpace`, and whatever guest memory those answers read is kept too.

Everything is plain ranges ``(start, end)`` of guest-physical addresses; reading the bytes and
writing the file is :mod:`vdecode.render.bundle_writer`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vdecode.errors import MissingData, RingError, VdecodeError
from vdecode.profiles import Profile
from vdecode.reconstruct.qmp.monitor import Effect
from vdecode.reconstruct.qmp.error_replies import QmpError
from vdecode.reconstruct.qmp.commands import COMMANDS
from vdecode.sources.qemu_state import VirtIODeviceState, VirtQueueState
from vdecode.space.base import AddressSpace, Gpa
from vdecode.space.ram_map import RamMap, merge_spans
from vdecode.virtio.chains import QMP_OK, walk_chain_qemu_qmp
from vdecode.virtio.device import (VIRTIO_F_RING_PACKED, VirtioMachine, has_feature,
                                   is_big_endian)
from vdecode.virtio.layouts import (VIRTQUEUE_MAX_SIZE, VRING_DESC_F_INDIRECT, VringLayouts,
                                    vring_layouts)
from vdecode.virtio.split_ring import read_desc_table

__all__ = ("RecordingSpace", "KeepPlan", "QueueFacts", "plan_kept_memory", "sweep_queries",
           "HEADER_BYTES", "REDACT_HEADER_BYTES", "MAX_INDIRECT_BYTES", "MAX_BUFFER_BYTES",
           "MAX_BUFFER_TOTAL", "PAGE")

PAGE = 4096
HEADER_BYTES = 64                    # kept of each pending/in-flight buffer by default
MAX_INDIRECT_BYTES = 1 << 20         # one indirect table (65,536 descriptors; Linux uses <= 4 KiB)
MAX_INDIRECT_TOTAL = 16 << 20
MAX_BUFFER_BYTES = 1 << 20           # one buffer with --full-buffers
MAX_BUFFER_TOTAL = 64 << 20          # all buffers with --full-buffers
MAX_SWEEP_ELEMENTS = 1 << 16         # element queries asked while recording (the basic capture: ~10,000)
# --redact keeps only the device's request header at the start of a chain's first buffer:
# virtio-net's struct virtio_net_hdr_v1 (12), virtio-blk's struct virtio_blk_outhdr (16),
# virtio-scsi's struct virtio_scsi_cmd_req (51). Other devices' buffers are all payload.
REDACT_HEADER_BYTES = {1: 12, 2: 16, 8: 51}


SCAN_READ = 8 << 20     # a read this big is the ring carver scanning RAM, not an answer's need


class RecordingSpace:
    """An :class:`~vdecode.space.base.AddressSpace` that remembers every range read from it.

    Bulk scans (reads of :data:`SCAN_READ` bytes or more: the ring carver) are not recorded, or a
    bundle would keep all of RAM; ``scanned`` says one happened, and :func:`carved_evidence`
    names what the carver's answers rest on.

    :param inner: the space read.
    """

    def __init__(self, inner: AddressSpace) -> None:
        self.inner = inner
        self.name = inner.name
        self.reads: list[tuple[int, int]] = []
        self.scanned = False

    def read(self, gpa: Gpa, n: int):
        data = self.inner.read(gpa, n)
        if n >= SCAN_READ:
            self.scanned = True
        elif n > 0:
            self.reads.append((int(gpa), int(gpa) + int(n)))
        return data

    def ranges(self) -> list[tuple[Gpa, int]]:
        return self.inner.ranges()

    def is_present(self, gpa: Gpa, n: int) -> bool:
        return self.inner.is_present(gpa, n)


def carved_evidence(space: AddressSpace, guest_little_endian: bool = True) -> list[tuple[int, int]]:
    """What carving the bundle again must find: every carved ring's three areas and the page of
    its driver's ``struct vring`` record (with the 96 bytes before it: the carver reads the
    driver's queue index and device pointer there); a big-endian guest's rings of both orders."""
    from vdecode.virtio.carve import CONFIDENCE_THRESHOLD, carve_guest_rings

    out: list[tuple[int, int]] = []
    for r in carve_guest_rings(space, guest_little_endian=guest_little_endian,
                               threshold=CONFIDENCE_THRESHOLD):
        out += [(r.desc, r.desc + VringLayouts.desc_size(r.num)),
                (r.avail, r.avail + VringLayouts.avail_size(r.num, True)),
                (r.used, r.used + VringLayouts.used_size(r.num, True))]
        if r.driver_gpa is not None:
            out.append(((r.driver_gpa - 96) & ~0xFFF, ((r.driver_gpa + 32) | 0xFFF) + 1))
    return out


@dataclass
class QueueFacts:
    """One queue as the bundle saw it, for the summary."""

    path: str
    queue: int
    num: int
    avail_idx: int | None = None
    used_idx: int | None = None
    last_avail_idx: int | None = None
    buffers: int = 0


@dataclass
class KeepPlan:
    """Guest-physical ranges to keep, as ``(start, end)``.

    :param needed: kept byte for byte (rings, indirect tables, what the answers read).
    :param buffers: buffer bytes kept (headers, or whole buffers with ``full_buffers``).
    :param redact: spans within ``buffers`` written as zeros (``--redact``), unless also needed.
    :param limits: what was left out because of a bound, one sentence each.
    """

    needed: list[tuple[int, int]] = field(default_factory=list)
    buffers: list[tuple[int, int]] = field(default_factory=list)
    redact: list[tuple[int, int]] = field(default_factory=list)
    limits: list[str] = field(default_factory=list)
    queues: list[QueueFacts] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: {
        "ring_areas": 0, "indirect_tables": 0, "buffers": 0, "recorded_reads": 0})


def sweep_queries(machine: VirtioMachine, profile: Profile, *,
                  max_elements: int = MAX_SWEEP_ELEMENTS) -> int:
    """Ask every question a client could ask about ``machine`` once; the number asked.

    Replies are dropped: the point is what they read (run it over a :class:`RecordingSpace`).
    Side effects carry from one question to the next as they would live (``shadow_avail_idx``,
    broken devices), on new states; ``machine`` itself stays as it was.
    Element queries stop after ``max_elements`` (1024 queues of 1024 would be a million); what
    they read beyond that is kept anyway by :func:`plan_kept_memory` (avail ring, descriptor
    table, indirect tables).
    """
    asked = 0
    elements = 0

    def ask(command: str, args: dict[str, Any]) -> None:
        nonlocal asked, machine
        asked += 1
        try:
            result = COMMANDS[command](machine, profile, args)
        except (QmpError, VdecodeError):
            return
        if isinstance(result, Effect):
            machine = machine.with_state(result.state)

    ask("x-query-virtio", {})
    for dev in list(machine.state.devices):
        path = dev.canonical_path
        ask("x-query-virtio-status", {"path": path})
        for qn in sorted(dev.queues):
            q = dev.queues[qn]
            ask("x-query-virtio-queue-status", {"path": path, "queue": qn})
            ask("x-query-virtio-vhost-queue-status", {"path": path, "queue": qn})
            ask("x-query-virtio-queue-element", {"path": path, "queue": qn})
            num = q.vring_num or 0
            if q.desc and 0 < num <= VIRTQUEUE_MAX_SIZE:
                for slot in range(min(num, max(0, max_elements - elements))):
                    ask("x-query-virtio-queue-element", {"path": path, "queue": qn, "index": slot})
                elements += num
    return asked


def plan_kept_memory(machine: VirtioMachine, space: AddressSpace, *, header_bytes: int = HEADER_BYTES,
                     full_buffers: bool = False, redact: bool = False,
                     recorded: list[tuple[int, int]] = ()) -> KeepPlan:
    """The ranges a bundle keeps for ``machine`` (its state at the dump instant) in ``space``.

    :param space: the origin dump's guest memory (not a recording one).
    :param header_bytes: bytes kept at the start of each buffer (without ``full_buffers``).
    :param redact: keep ring areas exactly (not rounded to pages) and mark buffer payloads for
        zeroing.
    :param recorded: ranges the answers read (from :func:`sweep_queries`), kept as needed.
    :return: ranges clipped to ``space``'s RAM.
    """
    plan = KeepPlan()
    ram_map = RamMap.of(space)     # built once: the clip, every buffer check and indirect walk
    ram = ram_map.pairs()
    budget = {"indirect": MAX_INDIRECT_TOTAL, "buffers": MAX_BUFFER_TOTAL}
    for dev in machine.state.devices:
        for qn in sorted(dev.queues):
            q = dev.queues[qn]
            num = q.vring_num or 0
            if not q.desc or not 0 < num <= VIRTQUEUE_MAX_SIZE:
                continue
            _keep_queue(plan, dev, q, num, space, ram_map, budget, header_bytes=header_bytes,
                        full_buffers=full_buffers, redact=redact)
    plan.needed.extend(recorded)
    plan.counts["recorded_reads"] = len(recorded)
    plan.needed = clip(merge_spans(plan.needed), ram)
    plan.buffers = clip(merge_spans(plan.buffers), ram)
    plan.redact = clip(merge_spans(plan.redact), ram)
    return plan


def _keep_queue(plan: KeepPlan, dev: VirtIODeviceState, q: VirtQueueState, num: int,
                space: AddressSpace, ram_map: RamMap, budget: dict[str, int], *,
                header_bytes: int, full_buffers: bool, redact: bool) -> None:
    where = f"{dev.canonical_path} queue {q.queue_index}"
    packed = has_feature(dev, VIRTIO_F_RING_PACKED)
    areas = [(q.desc, VringLayouts.desc_size(num))]
    if packed:                       # driver and device event suppression areas: 4 bytes each
        areas += [(q.avail or 0, 4), (q.used or 0, 4)]
    else:                            # whole rings with used_event / avail_event, EVENT_IDX or not
        areas += [(q.avail or 0, VringLayouts.avail_size(num, True)),
                  (q.used or 0, VringLayouts.used_size(num, True))]
    for gpa, size in areas:
        if gpa:
            lo, hi = gpa, gpa + size
            if not redact:
                lo, hi = lo // PAGE * PAGE, -(-hi // PAGE) * PAGE
            plan.needed.append((lo, hi))
            plan.counts["ring_areas"] += 1
    facts = QueueFacts(dev.canonical_path, q.queue_index, num, last_avail_idx=q.last_avail_idx)
    plan.queues.append(facts)
    if packed:
        return
    layouts = vring_layouts(not is_big_endian(dev))
    try:
        descs = read_desc_table(space, q.desc, num, layouts)
        avail = np.frombuffer(bytes(space.read(Gpa(q.avail), 4 + 2 * num)), layouts.u16_dtype)
        used_idx = int(np.frombuffer(bytes(space.read(Gpa(q.used + 2), 2)), layouts.u16_dtype)[0])
    except MissingData as err:
        absent = getattr(space, "absent", None)
        if absent is None or not any(a and absent.covers(a, z) for a, z in areas):
            plan.limits.append(f"{where}: {err.reason}")
        # else: the ring is in what the dump lacks, said once for the whole input
        return
    facts.avail_idx, facts.used_idx = int(avail[1]), used_idx

    # Every indirect table the descriptor table points to, stale entries included.
    flags = descs["flags"]
    for i in np.flatnonzero((flags & VRING_DESC_F_INDIRECT) != 0).tolist():
        gpa, size = int(descs["addr"][i]), int(descs["len"][i])
        if size == 0:
            continue
        if size > MAX_INDIRECT_BYTES or size > budget["indirect"]:
            plan.limits.append(f"{where}: indirect table of descriptor {i} at {gpa:#x} "
                               f"({size} bytes) is over the bundle's bound and was not kept")
            continue
        budget["indirect"] -= size
        plan.needed.append((gpa, gpa + size))
        plan.counts["indirect_tables"] += 1

    # Pending and in-flight chains: avail slots used.idx .. avail.idx.
    count = (facts.avail_idx - used_idx) & 0xFFFF
    start = used_idx if count <= num else facts.avail_idx - num
    ring_heads = avail[2 + (start + np.arange(min(count, num), dtype=np.int64)) % num]
    _, first = np.unique(ring_heads, return_index=True)     # each head once, in ring order
    heads = ring_heads[np.sort(first)].astype(np.int64).tolist()
    keep_head = REDACT_HEADER_BYTES.get(dev.device_id or 0, 0)
    for head in heads:
        try:
            walk = walk_chain_qemu_qmp(space, layouts, descs, head, ram=ram_map)
        except (MissingData, RingError):
            continue
        if walk.outcome != QMP_OK:
            continue
        for k, (addr, length, _) in enumerate(walk.descs):
            want = min(length, MAX_BUFFER_BYTES) if full_buffers else min(length, header_bytes)
            if full_buffers and want > budget["buffers"]:
                plan.limits.append(f"{where}: buffers beyond {MAX_BUFFER_TOTAL} bytes were not kept")
                return
            if want <= 0 or ram_map.holding(addr) is None:
                continue
            budget["buffers"] -= want
            plan.buffers.append((addr, addr + want))
            plan.counts["buffers"] += 1
            facts.buffers += 1
            if redact:
                protect = min(keep_head, want) if k == 0 else 0
                if protect:                  # the request header stays, byte for byte
                    plan.needed.append((addr, addr + protect))
                if want > protect:
                    plan.redact.append((addr + protect, addr + want))


def clip(ranges: list[tuple[int, int]], ram: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``ranges`` (sorted, disjoint) intersected with ``ram`` (sorted, disjoint).

    >>> clip([(0, 10), (20, 30)], [(5, 25)])
    [(5, 10), (20, 25)]
    """
    out, j = [], 0
    for s, e in ranges:
        while j < len(ram) and ram[j][1] <= s:
            j += 1
        k = j
        while k < len(ram) and ram[k][0] < e:
            lo, hi = max(s, ram[k][0]), min(e, ram[k][1])
            if hi > lo:
                out.append((lo, hi))
            k += 1
    return out
