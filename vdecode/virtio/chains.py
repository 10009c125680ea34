"""
Descriptor chains
-----------------
Follows ``VRING_DESC_F_NEXT`` links in a split ring's descriptor table (virtio 1.2 spec 2.7.5-2.7.7;
QEMU v7.2.0 ``hw/virtio/virtio.c``). Three walkers, all pure over arrays read by
:mod:`vdecode.virtio.split_ring` except where an indirect table must be read:

* :func:`walk_chain` is the scalar reference: one chain, Python over its links, stops at the first
  repeated descriptor (a loop), at a ``next`` outside the table, or at a descriptor without NEXT;
* :func:`walk_all_chains` gives the same answer for *every* descriptor taken as a head at once,
  by pointer jumping on the ``next`` array (``O(n log n)`` numpy work, no per-descriptor loop);
* :func:`walk_element` expands one avail head: the direct chain, or the indirect table it points
  to (read, walked, nested ``INDIRECT`` and zero lengths reported); :func:`walk_elements` does the
  same for many heads, the direct chains from one :func:`walk_all_chains`;
* :func:`walk_chain_qemu_qmp` reproduces exactly the descriptor loop of QEMU 7.2's
  ``qmp_x_query_virtio_queue_element`` (its ``max`` guard, ``virtqueue_split_read_next_desc``'s
  "Desc next is %u" side effect, the indirect switch and the cases where QEMU aborts).

Chain members are descriptor indices; everything returned is plain values (no QMP names).
"""

from __future__ import annotations


import numpy as np

from vdecode.errors import MissingData, RingError
from vdecode.frozen import record
from vdecode.space.base import AddressSpace
from vdecode.space.ram_map import RamMap
from vdecode.virtio.layouts import (VIRTQUEUE_MAX_SIZE, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT,
                                    VRING_DESC_SIZE, VringLayouts)
from vdecode.virtio.split_ring import read_desc_table

__all__ = ("END_DONE", "END_BAD_NEXT", "END_LOOP", "ChainWalk", "ChainTable", "walk_chain",
           "walk_all_chains", "walk_all_chains_reference", "chain_members", "ElementChain",
           "walk_element", "walk_elements", "QmpDescWalk", "walk_chain_qemu_qmp", "QMP_OK", "QMP_CANNOT_MAP_INDIRECT",
           "QMP_ABORT_HEAD_OUT_OF_RANGE", "QMP_ABORT_INDIRECT_LEN_ZERO", "QMP_ABORT_INDIRECT_SHORT")

END_DONE = 0        # the last member has no NEXT flag
END_BAD_NEXT = 1    # the last member has NEXT with next >= table size
END_LOOP = 2        # the last member's next is a member already visited


@record
class ChainWalk:
    """One chain: ``members`` in link order, how it ``end``\\ ed (``END_*``)."""

    members: tuple[int, ...]
    end: int


def walk_chain(flags, nexts, head: int) -> ChainWalk:
    """Scalar reference walk of one chain from ``head``.

    :param flags: ``vring_desc.flags`` of the table (any int sequence or array).
    :param nexts: ``vring_desc.next`` of the table.
    :param head: a descriptor index ``< len(flags)``.
    :return: the members up to the first repeat (loop), a ``next`` out of range, or no NEXT.

    >>> walk_chain([1, 1, 0], [1, 2, 0], 0)
    ChainWalk(members=(0, 1, 2), end=0)
    >>> walk_chain([1, 1], [1, 0], 1)
    ChainWalk(members=(1, 0), end=2)
    """
    n = len(flags)
    seen: set[int] = set()
    members: list[int] = []
    i = int(head)
    while True:
        members.append(i)
        seen.add(i)
        if not int(flags[i]) & VRING_DESC_F_NEXT:
            return ChainWalk(tuple(members), END_DONE)
        nxt = int(nexts[i])
        if nxt >= n:
            return ChainWalk(tuple(members), END_BAD_NEXT)
        if nxt in seen:
            return ChainWalk(tuple(members), END_LOOP)
        i = nxt


@record
class ChainTable:
    """For every descriptor ``i`` taken as a head: ``length[i]`` members, ``end[i]`` (``END_*``) and
    ``last[i]``, the member where the walk stopped (the one without NEXT, with the bad ``next``, or
    whose ``next`` closes the loop)."""

    length: np.ndarray
    end: np.ndarray
    last: np.ndarray


def _successors(flags: np.ndarray, nexts: np.ndarray) -> np.ndarray:
    """``next`` where a link exists and is in range, else the sentinel ``n``; ``succ[n] = n``."""
    n = len(flags)
    nxt = nexts.astype(np.int64)
    linked = ((flags & VRING_DESC_F_NEXT) != 0) & (nxt < n)
    succ = np.empty(n + 1, dtype=np.int64)
    succ[:n] = np.where(linked, nxt, n)
    succ[n] = n
    return succ


def walk_all_chains(descs: np.ndarray) -> ChainTable:
    """:func:`walk_chain` for every descriptor as a head at once, by pointer jumping.

    The ``next`` links form a functional graph. ``ceil(log2 n)`` squarings of the successor map
    reach, from every head, either the chain's last descriptor (made a fixed point) or a node on a
    cycle. A second doubling pass, with cycle nodes made absorbing, counts the tail before the
    cycle; a min-doubling pass labels each cycle to count its length.

    :param descs: a descriptor table (``VringLayouts.desc_dtype``) or any array with ``flags`` and
        ``next`` fields.
    """
    flags = np.asarray(descs["flags"])
    n = len(flags)
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return ChainTable(empty, empty.copy(), empty.copy())
    idx = np.arange(n + 1, dtype=np.int64)
    succ = _successors(flags, np.asarray(descs["next"]))
    rounds = max(1, int(n).bit_length())

    # Pass 1: the chain's last descriptor is a fixed point; 2**rounds >= n steps reach it, or a cycle.
    jump = np.where(succ == n, idx, succ)
    for _ in range(rounds):
        nxt = jump[jump]
        if np.array_equal(nxt, jump):          # every walk already at its end: short chains stop early
            break
        jump = nxt
    terminating = succ[jump[:n]] == n
    on_cycle = np.zeros(n + 1, dtype=bool)
    on_cycle[jump[:n][~terminating]] = True

    # Pass 2: cycle nodes and the sentinel absorb; count the tail and find where it enters a cycle.
    absorbing = on_cycle.copy()
    absorbing[n] = True
    step = np.where(absorbing, idx, succ)
    tail = (~absorbing).astype(np.int64)
    for _ in range(rounds):
        if absorbing[step].all():              # every walk has reached its absorbing node
            break
        tail = tail + tail[step]
        step = step[step]
    entry = step[:n]

    cycle_nodes = np.flatnonzero(on_cycle[:n])
    cycle_len = np.zeros(n + 1, dtype=np.int64)
    if len(cycle_nodes):
        # Cycle lengths: label each cycle by its smallest index (min over >= n successors).
        label = idx.copy()
        hop = succ.copy()
        for _ in range(rounds):
            label = np.minimum(label, label[hop])
            hop = hop[hop]
        counts = np.bincount(label[cycle_nodes], minlength=n + 1)
        cycle_len[cycle_nodes] = counts[label[cycle_nodes]]
    pred = np.full(n + 1, n, dtype=np.int64)
    pred[succ[cycle_nodes]] = cycle_nodes

    length = np.where(terminating, tail[:n], tail[:n] + cycle_len[entry])
    last = np.where(terminating, jump[:n], pred[entry])
    bad_next = (flags[last] & VRING_DESC_F_NEXT) != 0
    end = np.where(terminating, np.where(bad_next, END_BAD_NEXT, END_DONE), END_LOOP)
    return ChainTable(length, end.astype(np.int64), last)


def walk_all_chains_reference(descs: np.ndarray) -> ChainTable:
    """:func:`walk_chain` from every descriptor, in plain Python (the baseline the tests and the
    benchmark compare :func:`walk_all_chains` with)."""
    flags = np.asarray(descs["flags"]).tolist()
    nexts = np.asarray(descs["next"]).tolist()
    n = len(flags)
    length, end, last = (np.zeros(n, dtype=np.int64) for _ in range(3))
    for head in range(n):
        w = walk_chain(flags, nexts, head)
        length[head], end[head], last[head] = len(w.members), w.end, w.members[-1]
    return ChainTable(length, end, last)


def chain_members(descs: np.ndarray, heads, table: ChainTable | None = None) -> list[np.ndarray]:
    """The members of the chains starting at ``heads``, one index array per head, in link order.

    Vectorised across heads: one numpy step per link position, not per descriptor.

    :param table: :func:`walk_all_chains` of ``descs`` if already computed.
    """
    table = table or walk_all_chains(descs)
    heads = np.asarray(heads, dtype=np.int64)
    n = len(descs)
    if len(heads) and (heads.min() < 0 or heads.max() >= n):
        raise ValueError("chain_members: a head is outside the table")
    succ = _successors(np.asarray(descs["flags"]), np.asarray(descs["next"]))
    lengths = table.length[heads]
    out = np.full((len(heads), int(lengths.max()) if len(heads) else 0), -1, dtype=np.int64)
    cur = heads.copy()
    active = np.arange(len(heads))
    for k in range(out.shape[1]):
        active = active[lengths[active] > k]
        out[active, k] = cur[active]
        cur[active] = succ[cur[active]]
    return [out[i, :lengths[i]] for i in range(len(heads))]


# --- one element, indirect tables expanded ---------------------------------------------------------

@record
class ElementChain:
    """What an avail head leads to.

    ``descs`` are the descriptors of the buffer in link order: the direct chain, or for an indirect
    head the chain inside its table (``indirect_gpa``/``indirect_len`` then give the table).
    ``problems`` names what the spec forbids or QEMU's ``virtqueue_split_pop`` rejects:
    ``"head_out_of_range"``, ``"next_out_of_range"``, ``"loop"``, ``"zero_len"``,
    ``"indirect_len_zero"``, ``"indirect_len_not_multiple"``, ``"indirect_with_next"``,
    ``"nested_indirect"``, ``"indirect_too_large"``.
    """

    head: int
    members: tuple[int, ...]
    descs: np.ndarray
    end: int
    indirect_gpa: int | None = None
    indirect_len: int | None = None
    problems: tuple[str, ...] = ()


def walk_element(space: AddressSpace, layouts: VringLayouts, descs: np.ndarray, head: int) -> ElementChain:
    """Expand the chain of one avail head, reading its indirect table if it has one.

    :raises MissingData: the indirect table is not in the dump.
    """
    n = len(descs)
    if not 0 <= head < n:
        return ElementChain(head, (), descs[:0], END_DONE, problems=("head_out_of_range",))
    first = descs[head]
    problems: list[str] = []
    if int(first["flags"]) & VRING_DESC_F_INDIRECT:
        gpa, size = int(first["addr"]), int(first["len"])
        if int(first["flags"]) & VRING_DESC_F_NEXT:
            problems.append("indirect_with_next")
        if size == 0:
            return ElementChain(head, (), descs[:0], END_DONE, gpa, size, tuple(problems + ["indirect_len_zero"]))
        if size % VRING_DESC_SIZE:
            problems.append("indirect_len_not_multiple")
        if size // VRING_DESC_SIZE > VIRTQUEUE_MAX_SIZE:
            return ElementChain(head, (), descs[:0], END_DONE, gpa, size, tuple(problems + ["indirect_too_large"]))
        if size < VRING_DESC_SIZE:
            return ElementChain(head, (), descs[:0], END_DONE, gpa, size, tuple(problems))
        table = read_desc_table(space, gpa, size // VRING_DESC_SIZE, layouts,
                                f"indirect table of head {head}")
        walk = walk_chain(table["flags"], table["next"], 0)
        rows = table[list(walk.members)]
        if np.any(rows["flags"] & VRING_DESC_F_INDIRECT):
            problems.append("nested_indirect")
        result = (walk, rows, gpa, size)
    else:
        walk = walk_chain(descs["flags"], descs["next"], head)
        rows = descs[list(walk.members)]
        result = (walk, rows, None, None)
    walk, rows, gpa, size = result
    if walk.end == END_BAD_NEXT:
        problems.append("next_out_of_range")
    elif walk.end == END_LOOP:
        problems.append("loop")
    if np.any(rows["len"] == 0):
        problems.append("zero_len")
    return ElementChain(head, walk.members, rows, walk.end, gpa, size, tuple(problems))


SHORT_CHAIN_STEPS = 16     # walk_elements steps chains this long itself; longer ones use walk_all_chains


def _walk_heads_stepwise(descs: np.ndarray, heads: np.ndarray, steps: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`walk_chain` for distinct in-range ``heads`` at once, one numpy step per link position,
    for at most ``steps`` links.

    :return: ``(members, length, end, done)``: ``members[i, :length[i]]`` in link order; ``end``
        (``END_*``) and ``done`` (the walk finished within ``steps``) per head.
    """
    flags = np.asarray(descs["flags"])
    n = len(flags)
    succ = _successors(flags, np.asarray(descs["next"]))
    linked = (flags & VRING_DESC_F_NEXT) != 0
    count = len(heads)
    members = np.full((count, steps), -1, dtype=np.int64)
    length = np.zeros(count, dtype=np.int64)
    end = np.full(count, END_DONE, dtype=np.int64)
    done = np.zeros(count, dtype=bool)
    cur = heads.astype(np.int64)
    active = np.arange(count)
    for k in range(steps):
        if not len(active):
            break
        d = cur[active]
        members[active, k] = d
        length[active] = k + 1
        nxt = succ[d]
        stop_bad = (nxt == n) & linked[d]           # NEXT with next >= n
        stop_done = (nxt == n) & ~linked[d]         # no NEXT
        safe = np.where(nxt == n, -2, nxt)
        stop_loop = (members[active, :k + 1] == safe[:, None]).any(axis=1)
        stopped = stop_bad | stop_done | stop_loop
        end[active[stop_bad]] = END_BAD_NEXT
        end[active[stop_loop & ~stop_bad & ~stop_done]] = END_LOOP
        done[active[stopped]] = True
        cur[active] = np.where(stopped, d, nxt)
        active = active[~stopped]
    return members, length, end, done


def walk_elements(space: AddressSpace, layouts: VringLayouts, descs: np.ndarray, heads,
                  table: ChainTable | None = None) -> list[ElementChain]:
    """:func:`walk_element` for many heads: direct chains walked together, one numpy step per link
    position for all heads (chains longer than :data:`SHORT_CHAIN_STEPS`, and every chain when
    ``table`` is given, from :func:`walk_all_chains`); only indirect heads cost a read each.

    :param heads: avail ring entries (any ints; out-of-range ones are reported, not raised).
    :param table: :func:`walk_all_chains` of ``descs`` if already computed.
    :raises MissingData: an indirect table is not in the dump.
    """
    heads = [int(h) for h in heads]
    n = len(descs)
    hs = np.asarray(heads, dtype=np.int64)
    in_range = (hs >= 0) & (hs < n)
    flags = np.asarray(descs["flags"])
    direct_mask = in_range & ((flags[np.where(in_range, hs, 0)] & VRING_DESC_F_INDIRECT) == 0) \
        if len(hs) else np.zeros(0, dtype=bool)
    direct = _unique(hs[direct_mask])
    found: dict[int, ElementChain] = {}
    if len(direct):
        if table is None:
            members, sizes, end, done = _walk_heads_stepwise(descs, direct, SHORT_CHAIN_STEPS)
            long_ = np.flatnonzero(~done)
            if len(long_):                       # long chains or loops: pointer jumping, once
                table = walk_all_chains(descs)
                end[long_] = table.end[direct[long_]]
                long_members = dict(zip(long_.tolist(), chain_members(descs, direct[long_], table)))
                sizes[long_] = [len(m) for m in long_members.values()]
                flat = np.concatenate([long_members[i] if i in long_members
                                       else members[i, :sizes[i]] for i in range(len(direct))])
            else:                                # row-major: chain after chain, in link order
                flat = members[np.arange(members.shape[1]) < sizes[:, None]]
        else:
            rows_of = chain_members(descs, direct, table)
            end = table.end[direct]
            sizes = np.fromiter((len(m) for m in rows_of), dtype=np.int64, count=len(rows_of))
            flat = np.concatenate(rows_of)
        # every member of every chain in one gather; each chain a slice of it
        all_rows = descs[flat]
        stops = np.cumsum(sizes)
        starts = stops - sizes
        zeros = np.concatenate([[0], np.cumsum(all_rows["len"] == 0)])
        has_zero = (zeros[stops] - zeros[starts]) > 0
        flat_list = flat.tolist()
        for h, a, b, e, z in zip(direct.tolist(), starts.tolist(), stops.tolist(), end.tolist(),
                                 has_zero.tolist()):
            problems = {END_BAD_NEXT: ("next_out_of_range",), END_LOOP: ("loop",)}.get(e, ())
            if z:
                problems += ("zero_len",)
            found[h] = ElementChain(h, tuple(flat_list[a:b]), all_rows[a:b], e, problems=problems)
    return [found[h] if h in found else walk_element(space, layouts, descs, h) for h in heads]


# --- QEMU 7.2's x-query-virtio-queue-element loop ---------------------------------------------------

QMP_OK = "ok"                                           # a reply with the collected descs
QMP_CANNOT_MAP_INDIRECT = "cannot_map_indirect"         # error reply "Cannot map indirect buffer"
QMP_ABORT_HEAD_OUT_OF_RANGE = "abort_head_out_of_range"  # address_space_read_cached assert: no reply
QMP_ABORT_INDIRECT_LEN_ZERO = "abort_indirect_len_zero"  # address_space_cache_init assert(len > 0)
QMP_ABORT_INDIRECT_SHORT = "abort_indirect_short"        # 0 < len < 16: reading indirect[0] asserts


@record
class QmpDescWalk:
    """The outcome of QEMU 7.2's descriptor loop for one head.

    ``descs`` are ``(addr, len, flags)`` in walk order; QEMU *prepends* each node, so its reply lists
    them reversed. ``desc_next_error`` is the ``next`` value of the ``virtio_error(vdev, "Desc next
    is %u", next)`` the walk triggered (the device becomes broken; the reply is still a success), or
    ``None``. ``max`` is the loop guard in force (``vring.num``, or ``len / 16`` inside an indirect
    table).
    """

    outcome: str
    head: int
    indirect: bool
    max: int
    descs: tuple[tuple[int, int, int], ...] = ()
    desc_next_error: int | None = None


def walk_chain_qemu_qmp(space: AddressSpace, layouts: VringLayouts, descs: np.ndarray, head: int, *,
                        ram: RamMap | None = None) -> QmpDescWalk:
    """Reproduce ``qmp_x_query_virtio_queue_element``'s descriptor loop (QEMU v7.2.0 virtio.c).

    ::

        max = vq->vring.num; i = head;
        vring_split_desc_read(vdev, &desc, desc_cache, i);      /* no head < num check */
        if (desc.flags & VRING_DESC_F_INDIRECT) {
            len = address_space_cache_init(&indirect, dma_as, desc.addr, desc.len, false);
            if (len < desc.len) -> "Cannot map indirect buffer"
            max = desc.len / sizeof(VRingDesc); i = 0; vring_split_desc_read(.., i);
        }
        do { if (ndescs >= max) break; prepend desc; ndescs++;
             rc = virtqueue_split_read_next_desc(vdev, &desc, desc_cache, max, &i);
        } while (rc == VIRTQUEUE_READ_DESC_MORE);

    ``virtqueue_split_read_next_desc`` returns DONE without NEXT, and for ``next >= max`` calls
    ``virtio_error("Desc next is %u")`` and returns ERROR; either ends the loop.

    :param descs: the queue's descriptor table (``vring.num`` entries, ``layouts.desc_dtype``).
    :param head: ``avail->ring[slot]`` as QEMU read it.
    :param ram: ``space``'s RAM (:class:`~vdecode.space.ram_map.RamMap`); callers walking many heads
        pass it, built once (without it, it is built from ``space`` when an indirect table is met).
    :raises MissingData: the indirect table lies outside the dump's RAM or is not in the dump.
    """
    num = len(descs)
    if not 0 <= head < num:
        return QmpDescWalk(QMP_ABORT_HEAD_OUT_OF_RANGE, head, False, num)
    table, limit, i = descs, num, head
    desc = descs[head]
    indirect = bool(int(desc["flags"]) & VRING_DESC_F_INDIRECT)
    if indirect:
        gpa, size = int(desc["addr"]), int(desc["len"])
        if size == 0:
            return QmpDescWalk(QMP_ABORT_INDIRECT_LEN_ZERO, head, True, 0)
        held = (ram if ram is not None else RamMap.of(space)).holding(gpa)
        if held is None:
            raise MissingData(space.name, f"indirect table of head {head} at guest-physical {gpa:#x} "
                                          f"is not in guest RAM")
        if gpa + size > held[0] + held[1]:
            return QmpDescWalk(QMP_CANNOT_MAP_INDIRECT, head, True, 0)
        if size < VRING_DESC_SIZE:
            return QmpDescWalk(QMP_ABORT_INDIRECT_SHORT, head, True, 0)
        limit = size // VRING_DESC_SIZE
        if limit > VIRTQUEUE_MAX_SIZE * 64:
            raise RingError(space.name, f"indirect table of head {head} at guest-physical {gpa:#x}: "
                                        f"{size} bytes is beyond any real ring")
        table = read_desc_table(space, gpa, limit, layouts, f"indirect table of head {head}")
        i = 0
        desc = table[0]
    out: list[tuple[int, int, int]] = []
    error: int | None = None
    while len(out) < limit:                     # "A buggy driver may produce an infinite loop"
        flags = int(desc["flags"])
        out.append((int(desc["addr"]), int(desc["len"]), flags))
        if not flags & VRING_DESC_F_NEXT:
            break
        i = int(desc["next"])
        if i >= limit:
            error = i
            break
        desc = table[i]
    return QmpDescWalk(QMP_OK, head, indirect, limit, tuple(out), error)


def _unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` without its cost on the ``--queue`` path: numpy imports ``numpy.ma`` on the
    first call (~10 ms of a 250 ms answer)."""
    s = np.sort(a)
    return s[np.concatenate(([True], s[1:] != s[:-1]))] if len(s) else s
