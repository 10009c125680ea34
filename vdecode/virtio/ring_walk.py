"""
Outstanding chains of a queue, walked at once
---------------------------------------------
The chains a device has still to take (pending: ``avail->ring[last_avail_idx .. avail->idx)``) or
has taken but not completed (in flight), walked and checked the way QEMU 7.2's
``virtqueue_split_pop`` would (``hw/virtio/virtio.c``: ``virtqueue_get_head``,
``virtqueue_split_read_next_desc``, ``virtqueue_map_desc``), for every chain of a queue at once:
one :func:`~vdecode.virtio.chains.walk_all_chains` over the table, then one numpy step per link
position for all chains; only indirect heads read a table each. Pure over arrays except the
indirect-table reads.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from vdecode.frozen import record
from vdecode.space.ram_map import RamMap
from vdecode.errors import MissingData
from vdecode.space.base import AddressSpace
from vdecode.virtio.chains import END_BAD_NEXT, END_LOOP, walk_all_chains, walk_element
from vdecode.virtio.layouts import VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE
from vdecode.virtio.split_ring import SplitRing

__all__ = ("QueueWalk", "walk_queue")


@record
class QueueWalk:
    """The outstanding chains of one split queue, walked at once.

    ``heads`` are the avail ring entries at free-running indices ``idxs`` (pending ones first
    taken, then in flight). Only chains with something wrong have entries in ``found`` (chain
    position → codes: chains.py's names plus ``"bad_addr"`` and ``"order"``) and ``bad``
    (→ descriptor numbers at fault), so a healthy 32k-entry queue costs no per-chain Python.
    """

    idxs: np.ndarray
    heads: np.ndarray
    length: np.ndarray
    found: dict[int, list[str]]
    bad: dict[int, list[int]]

    @property
    def problems(self) -> list[list[str]]:
        """``found`` as one list per chain (empty for healthy ones)."""
        return [self.found.get(k, []) for k in range(len(self.heads))]

    @property
    def bad_descs(self) -> list[list[int]]:
        return [self.bad.get(k, []) for k in range(len(self.heads))]


def walk_queue(space: AddressSpace | None, ring: SplitRing, idxs: np.ndarray,
               ram: RamMap) -> QueueWalk:
    """Walk the chains at avail indices ``idxs`` of ``ring``: every direct chain by array
    operations (one :func:`walk_all_chains`, then one numpy step per link position for all heads),
    indirect heads one table read each.

    :param idxs: free-running avail indices (``slot = idx % num``).
    :param ram: guest RAM (:class:`~vdecode.space.ram_map.RamMap`) (descriptor addresses are checked against it).
    """
    num, descs = ring.num, ring.descs
    idxs = np.asarray(idxs, dtype=np.int64)
    heads = ring.avail.ring[idxs % num].astype(np.int64) if len(idxs) else np.zeros(0, np.int64)
    count = len(heads)
    problems: defaultdict[int, list[str]] = defaultdict(list)
    bad: defaultdict[int, list[int]] = defaultdict(list)
    length = np.zeros(count, dtype=np.int64)
    if count == 0:
        return QueueWalk(idxs, heads, length, dict(problems), dict(bad))
    in_range = heads < num
    for k in np.flatnonzero(~in_range):
        problems[k].append("head_out_of_range")
    flags = descs["flags"].astype(np.int64)
    safe = np.where(in_range, heads, 0)
    indirect = in_range & ((flags[safe] & VRING_DESC_F_INDIRECT) != 0)
    direct = np.flatnonzero(in_range & ~indirect)

    if len(direct):
        table = walk_all_chains(descs)
        h = heads[direct]
        length[direct] = table.length[h]
        for code, end in (("next_out_of_range", END_BAD_NEXT), ("loop", END_LOOP)):
            for k in direct[table.end[h] == end]:
                problems[k].append(code)
                bad[k].append(int(table.last[heads[k]]))
        # Gather every member of every chain: one numpy step per link position.
        nexts = descs["next"].astype(np.int64)
        cur = h.copy()
        pos = np.arange(len(direct))
        seen_write = np.zeros(len(direct), dtype=bool)
        rows_k, rows_d, order_bad = [], [], np.zeros(len(direct), dtype=bool)
        lens = length[direct]
        step = 0
        while len(pos):
            pos = pos[lens[pos] > step]
            if not len(pos):
                break
            d = cur[pos]
            rows_k.append(pos)
            rows_d.append(d)
            w = (flags[d] & VRING_DESC_F_WRITE) != 0
            order_bad[pos[~w & seen_write[pos]]] = True
            seen_write[pos] |= w
            nxt = np.where((flags[d] & VRING_DESC_F_NEXT) != 0, nexts[d], d)
            cur[pos] = np.minimum(nxt, num - 1)
            step += 1
        k_all = np.concatenate(rows_k)
        d_all = np.concatenate(rows_d)
        zero = descs["len"][d_all] == 0
        outside = ram.outside(descs["addr"][d_all], descs["len"][d_all]) & ~zero
        for mask, code in ((zero, "zero_len"), (outside, "bad_addr")):
            if mask.any():
                for k, d in zip(direct[k_all[mask]], d_all[mask]):
                    if code not in problems[k]:
                        problems[k].append(code)
                    bad[k].append(int(d))
        for k in direct[order_bad]:
            problems[k].append("order")

    for k in np.flatnonzero(indirect):
        head = int(heads[k])
        first = descs[head]
        gpa, size = int(first["addr"]), int(first["len"])
        if len(ram) and size and ram.outside(np.array([gpa]), np.array([size]))[0]:
            problems[k].append("indirect_map")
            bad[k].append(head)
            continue
        try:
            el = walk_element(space, ring.layouts, descs, head) if space is not None else None
        except MissingData:
            el = None
        if el is None:
            problems[k].append("indirect_unreadable")
            continue
        length[k] = len(el.members)
        for p in el.problems:
            problems[k].append("indirect_len" if p in ("indirect_len_zero", "indirect_len_not_multiple")
                               else p)
        if len(el.descs):
            w = (el.descs["flags"] & VRING_DESC_F_WRITE) != 0
            if np.any(~w[1:] & np.maximum.accumulate(w)[:-1]):
                problems[k].append("order")
            out = ram.outside(el.descs["addr"], el.descs["len"]) & (el.descs["len"] != 0)
            if out.any():
                problems[k].append("bad_addr")
                bad[k].extend(int(el.members[i]) for i in np.flatnonzero(out))
        if "indirect_len" in problems.get(k, ()):
            bad[k].append(head)
    return QueueWalk(idxs, heads, length, dict(problems), dict(bad))
