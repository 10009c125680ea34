"""The records :class:`vdecode.api.Machine` hands out (``docs/api.md``): a device, a queue, its
rings and indices, chains, descriptors, previews, used entries and findings, each a frozen
dataclass with ``__slots__``, and what makes them from the view's data.

Apart from :mod:`vdecode.api` because a command line answer never makes them: ``slots=True``
records are the costliest to declare (the dataclass machinery builds each class twice and
compiles three methods): about 4.5 ms of a ``--queue`` answer's start-up (issue 27).
``vdecode.api.Device`` and the rest still name them (PEP 562).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from vdecode.errors import UnsupportedInput
from vdecode.frozen import record

__all__ = ("Device", "Queue", "Rings", "Indices", "Chain", "Descriptor", "Preview", "UsedEntry",
           "Finding", "preview_record", "chain_record", "queue_record")


@record(slots=True)
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


@record(slots=True)
class Preview:
    """A chain's buffers decoded by device type: ``kind`` (``blk``, ``net``, ``scsi``, ``console``,
    ``balloon``, ``rng``, ``net-ctrl``), a one-line ``summary`` and the decoded ``fields``."""

    kind: str
    summary: str
    fields: Mapping[str, Any]


@record(slots=True)
class Chain:
    """A pending (available, not taken) or in-flight (taken, not completed) descriptor chain.

    :param avail_idx: the free-running avail index it was published at (``None``: packed ring).
    :param slot: ``avail_idx % size`` (packed: the first descriptor's slot).
    :param head: the head descriptor (packed: the buffer id).
    :param indirect: ``(addr, len)`` of the indirect table, or ``None``.
    :param problems: what the spec forbids or QEMU rejects (``"loop"``, ``"zero_len"``...).
    """

    state: str
    avail_idx: int | None
    slot: int
    head: int
    indirect: tuple[int, int] | None
    descriptors: tuple[Descriptor, ...]
    bytes_out: int
    bytes_in: int
    problems: tuple[str, ...]
    preview: Preview | None


@record(slots=True)
class UsedEntry:
    """One of the last ``vring_used_elem``: ``id`` (a head) and ``len`` (bytes written)."""

    used_idx: int
    slot: int
    id: int
    len: int
    preview: Preview | None


@record(slots=True)
class Rings:
    """Guest-physical addresses of the three ring areas (packed: ``avail`` is the driver event
    area, ``used`` the device event area)."""

    desc: int | None
    avail: int | None
    used: int | None


@record(slots=True)
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


@record(slots=True)
class Finding:
    """What is wrong (or worth knowing), as in ``docs/view.md``: ``severity`` (``error``,
    ``warning``, ``info``, or ``unknown`` when the bytes it needs are absent from the input),
    ``code``, ``device`` (path), ``queue`` (or ``None``), ``title``, ``evidence``, ``rule``,
    ``qemu``."""

    severity: str
    code: str
    device: str
    queue: int | None
    title: str
    evidence: Mapping[str, Any]
    rule: str
    qemu: str


@record(slots=True)
class Queue:
    """One virtqueue at the dump instant.

    :param pending: avail entries not taken yet (``avail_idx - last_avail_idx``).
    :param inflight: QEMU's ``inuse``.
    :param health: ``ok``, or the worst finding's short word (``stalled``, ``corrupt``...).
    :param chains: every pending and in-flight chain, in avail order.
    :param used_entries: the last used entries (up to the ring size).
    :param ring_error: why the ring could not be read, or ``None``.
    :param provenance: where each QEMU value came from: ``core``, ``log``, ``inferred``, ...
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


@record(slots=True)
class Device:
    """A virtio device as QEMU held it.

    :param path: QOM canonical path (``.../virtio-backend``), what QMP's ``path`` takes.
    :param name: QEMU's name (``virtio-net``).
    :param status: the status byte, ``status_flags`` its names (``DRIVER_OK``...).
    :param features: the negotiated features, short names (``EVENT_IDX``), unknown bits as hex.
    :param queues: every queue QEMU set up, by index.
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

    def queue(self, index: int) -> Queue:
        """The queue numbered ``index``.

        :raises UnsupportedInput: the device has no such queue.
        """
        for q in self.queues:
            if q.index == index:
                return q
        raise UnsupportedInput(self.path, f"no queue {index} (queues: "
                                          f"{', '.join(str(q.index) for q in self.queues) or 'none'})")


def preview_record(p: dict | None) -> Preview | None:
    return None if p is None else Preview(p["kind"], p["summary"], MappingProxyType(dict(p["fields"])))


def chain_record(c: dict) -> Chain:
    ind = c["indirect"]
    return Chain(c["state"], c["avail_idx"], c["slot"], c["head"],
                 None if ind is None else (ind["addr"], ind["len"]),
                 tuple(Descriptor(d["index"], d["addr"], d["len"], d["flags"], tuple(d["flags_names"]))
                       for d in c["descs"]),
                 c["bytes_out"], c["bytes_in"], tuple(c["problems"]), preview_record(c["preview"]))


def queue_record(path: str, row: dict, detail: dict | None) -> Queue:
    d = detail or {}
    avail, used, qemu = d.get("avail") or {}, d.get("used") or {}, d.get("qemu") or {}
    rings = d.get("rings") or {}
    return Queue(
        device=path, index=row["index"], size=row["size"], packed=row["packed"],
        rings=Rings(rings.get("desc"), rings.get("avail"), rings.get("used")),
        indices=Indices(avail.get("idx"), avail.get("flags"), avail.get("used_event"),
                        used.get("idx"), used.get("flags"), used.get("avail_event"),
                        qemu.get("last_avail_idx", row["last_avail_idx"]),
                        qemu.get("shadow_avail_idx"), qemu.get("used_idx", row["used_idx"]),
                        qemu.get("inuse", row["inflight"]), qemu.get("signalled_used"),
                        qemu.get("signalled_used_valid")),
        pending=row["pending"], inflight=row["inflight"], health=row["health"],
        chains=tuple(chain_record(c) for c in d.get("chains", ())),
        used_entries=tuple(UsedEntry(e["used_idx"], e["slot"], e["id"], e["len"],
                                     preview_record(e["preview"])) for e in d.get("used_entries", ())),
        ring_error=row["ring_error"], provenance=MappingProxyType(dict(row["provenance"])))
