"""
QEMU's trace events (``log`` backend) for a queue timeline
----------------------------------------------------------
QEMU v7.2.0 ``hw/virtio/trace-events`` and ``softmmu/trace-events`` with ``-trace enable=…``
and the ``log`` backend (``-D FILE``) write one line an event::

    [TID@SECONDS.MICROS:]event args                  (-msg timestamp=on: the prefix)

``args`` is the event's format string filled in (``vq %p elem %p in_num %u out_num %u``).
Later QEMUs may prefix an ISO-8601 UTC time instead (``2026-12-07T21:53:28.123456Z event …``).

This module turns the lines into events, in file order, and nothing more: which ``vq`` is
which queue, what is in flight, is :mod:`vdecode.reconstruct.timeline`'s. Events it does not use
are counted by name and dropped; lines that are not trace lines (QEMU's own messages on the same
``-D`` file) are counted too. The file may be ``.zst`` or ``.gz`` (read by magic) and is read in
blocks, a compiled pattern a line, so a trace of millions of events costs one block of text and
one small tuple an event used.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone

import zstandard

from vdecode.errors import InputError
from vdecode.frozen import FrozenDict, record
from vdecode.sources.qmp_log.lines import open_decompressed
from vdecode.sources.simpletrace import is_simpletrace, simpletrace_records

__all__ = ("KINDS", "QemuTrace", "read_trace")

# what each event used here carries (QEMU v7.2.0 trace-events formats); the kind is the index
# in KINDS, the fields follow it in the event tuple
KINDS = ("pop", "fill", "flush", "alloc", "kick", "irq", "status", "runstate", "vmstate", "device")
POP, FILL, FLUSH, ALLOC, KICK, IRQ, STATUS, RUNSTATE, VMSTATE, DEVICE = range(len(KINDS))

_P = r"(0x[0-9a-fA-F]+|\(nil\))"
_ARGS = {
    # virtqueue_pop(void *vq, void *elem, unsigned int in_num, unsigned int out_num)
    "virtqueue_pop": (POP, re.compile(rf"vq {_P} elem {_P} in_num (\d+) out_num (\d+)")),
    # virtqueue_fill(void *vq, const void *elem, unsigned int len, unsigned int idx)
    "virtqueue_fill": (FILL, re.compile(rf"vq {_P} elem {_P} len (\d+) idx (\d+)")),
    # virtqueue_flush(void *vq, unsigned int count)
    "virtqueue_flush": (FLUSH, re.compile(rf"vq {_P} count (\d+)")),
    # virtqueue_alloc_element(void *elem, size_t sz, unsigned in_num, unsigned out_num)
    "virtqueue_alloc_element": (ALLOC, re.compile(rf"elem {_P} size (\d+) in_num (\d+) out_num (\d+)")),
    # virtio_queue_notify(void *vdev, int n, void *vq): the guest's kick
    "virtio_queue_notify": (KICK, re.compile(rf"vdev {_P} n (\d+) vq {_P}")),
    # virtio_notify(void *vdev, void *vq), virtio_notify_irqfd(...): QEMU's interrupt
    "virtio_notify": (IRQ, re.compile(rf"vdev {_P} vq {_P}")),
    "virtio_notify_irqfd": (IRQ, re.compile(rf"vdev {_P} vq {_P}")),
    # QEMU 10.x: the irqfd notify deferred to a bottom half
    "virtio_notify_irqfd_deferred_fn": (IRQ, re.compile(rf"vdev {_P} vq {_P}")),
    # virtio_set_status(void *vdev, uint8_t val): val 0 is a reset (virtio_reset calls it)
    "virtio_set_status": (STATUS, re.compile(rf"vdev {_P} val (\d+)")),
    # runstate_set(int current_state, const char *current_state_str, int new_state, const char *)
    "runstate_set": (RUNSTATE, re.compile(r"current_run_state (\d+) \(([^)]*)\) new_state (\d+) \(([^)]*)\)")),
    # vm_state_notify(int running, int reason, const char *reason_str)
    "vm_state_notify": (VMSTATE, re.compile(r"running (\d+) reason (\d+) \(([^)]*)\)")),
}
# device events naming a request (virtio_blk_handle_write vdev %p req %p sector …): a
# VirtIOBlockReq, VirtIOSCSIReq … starts with its VirtQueueElement, so ``req`` is the element
_DEVICE = re.compile(r"(virtio_(?:blk|scsi|net)_[a-z_0-9]+)$")
_REQ = re.compile(rf"\breq {_P}(.*)$")

_LINE = re.compile(r"(?:(\d+)@(\d+\.\d+):|(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z? )?"
                   r"([a-z][a-z0-9]*_[a-z_0-9]*) (.*)")         # every QEMU event has a '_'
BLOCK = 4 << 20


@record
class QemuTrace:
    """A trace's events, in file order.

    ``events``: ``(line, time, kind, *fields)`` tuples (``time`` in Unix seconds, ``None`` in a
    trace without timestamps); the fields by kind (pointers as ints, ``(nil)`` as 0):

    - ``pop``: vq, elem, in_num, out_num;  ``fill``: vq, elem, len, idx;  ``flush``: vq, count
    - ``alloc``: elem, size, in_num, out_num;  ``kick``: vdev, n, vq;  ``irq``: vdev, vq
    - ``status``: vdev, val;  ``runstate``: from, from name, to, to name
    - ``vmstate``: running, reason, reason name;  ``device``: event name, req, the rest

    ``counts`` every event name seen (used or not); ``ignored`` those not used; ``other_lines``
    lines that are no trace event; ``timestamps`` whether the lines carry times.
    """

    path: str
    events: tuple[tuple, ...]
    counts: FrozenDict
    ignored: FrozenDict
    lines: int
    other_lines: int
    timestamps: bool
    #: what the times count: ``unix`` (the log backend's ``-msg timestamp=on``), ``monotonic``
    #: (simpletrace: QEMU's ``get_clock()``, CLOCK_MONOTONIC, seconds since the host booted),
    #: ``None`` without times
    clock: str | None = "unix"
    backend: str = "log"              # "log" or "simpletrace": ``lines`` are then records
    #: why the trace is incomplete (a compressed file cut short or damaged), else ``None``: its
    #: counts then stop there, and the timeline says so first
    cut: str | None = None

    def enabled(self, name: str) -> bool:
        """Whether the trace shows event ``name`` (seen at least once: the log backend does not
        say which events were enabled)."""
        return self.counts.get(name, 0) > 0


def read_trace(path: str | os.PathLike, *, name: str | None = None) -> QemuTrace:
    """Read a QEMU trace: the ``log`` backend's text or the ``simple`` backend's binary file
    (:mod:`vdecode.sources.simpletrace`, told by its header), plain, ``.zst`` or ``.gz``.

    :raises InputError: the file cannot be read or decompressed, or holds no trace event;
        ``CorruptInput`` (with the offset) for a simpletrace file cut short or damaged.
    """
    name = name or str(path)
    f = open_decompressed(path, name, "a trace file")
    with f:
        try:
            head = f.peek(16)[:16] if hasattr(f, "peek") else b""
        except (EOFError, zlib.error, zstandard.ZstdError, gzip.BadGzipFile) as err:
            raise InputError(name, f"cannot decompress: {err}", line=1) from err
        if is_simpletrace(head):
            return _collect(name, simpletrace_records(f, name), clock="monotonic",
                            what="simpletrace")
        return _collect(name, _log_lines(f, name), clock="unix", what="log")


def _log_lines(f, name: str) -> Iterator[tuple[int, float | None, str, str] | int]:
    """The log backend's lines: ``(line, time, event, args)`` for a trace line, the line number
    alone for any other line (QEMU's own messages on the same ``-D`` file)."""
    match = _LINE.fullmatch
    n = 0
    rest = b""
    while True:
        try:
            block = f.read1(BLOCK)     # one piece: a cut gzip loses no whole block with it
        except (EOFError, zlib.error, zstandard.ZstdError, gzip.BadGzipFile) as err:
            if n == 0:
                raise InputError(name, f"cannot decompress: {err}", line=1) from err
            # a cut compressed trace keeps the lines before the damage, and says where it is
            last = n + rest.count(b"\n") + (1 if rest and not rest.endswith(b"\n") else 0)
            yield f"the compressed trace ends after line {last}: {err}"
            block = b""
        except OSError as err:
            raise InputError(name, f"cannot read: {err.strerror or err}", line=n + 1) from err
        if not block:
            text, rest = rest, b""
            if not text:
                break
        else:
            cut = block.rfind(b"\n")
            if cut < 0:
                rest += block
                continue
            text, rest = rest + block[:cut], block[cut + 1:]
        for line in text.decode("utf-8", "replace").split("\n"):
            n += 1
            m = match(line.rstrip("\r"))
            if m is None:
                yield n
                continue
            _tid, secs, iso, event, rest_args = m.groups()
            yield n, float(secs) if secs else _iso(iso) if iso else None, event, rest_args
        if not block:
            break


def _collect(name: str, records: Iterator, *, clock: str, what: str) -> QemuTrace:
    """The events used, from ``(place, time, event, args text)`` records (``args`` ``None``: an
    event whose arguments are unknown, counted only; a bare int: a line that is no event)."""
    events: list[tuple] = []
    counts: Counter[str] = Counter()
    attached: Counter[str] = Counter()          # device events that named a request
    other = 0
    n = 0
    stamped = 0
    args = _ARGS
    device = _DEVICE.match
    fields = _FIELDS
    cut = None
    for rec in records:
        if rec.__class__ is str:                # where a compressed trace is cut short
            cut = rec
            continue
        if rec.__class__ is int:
            n = rec
            other += 1
            continue
        n, t, event, rest_args = rec
        counts[event] += 1
        if t is not None:
            stamped += 1
        if rest_args is None:
            continue
        spec = args.get(event)
        if spec is not None:
            kind, pat = spec
            a = pat.match(rest_args)
            if a is None:
                counts[event] -= 1
                other += 1
                continue
            events.append((n, t, kind, *fields[kind](a.groups())))
        elif device(event):
            r = _REQ.search(rest_args)
            if r is not None:
                attached[event] += 1
                events.append((n, t, DEVICE, event, _h(r.group(1)),
                               rest_args[:r.start()].strip() + r.group(2)))
    if not events:
        seen = f" (only {', '.join(sorted(counts)[:3])}{'...' if len(counts) > 3 else ''})" \
            if counts else ""
        place = "record(s)" if what == "simpletrace" else "line(s)"
        raise InputError(name, f"no virtio or run-state QEMU trace event in {n} {place}{seen}: "
                               f"not a trace of -trace enable=virtqueue_* ...")
    used = set(args)
    ignored = {k: v - attached[k] for k, v in counts.items()
               if k not in used and v > attached[k]}
    return QemuTrace(path=name, events=tuple(events), counts=FrozenDict(counts),
                     ignored=FrozenDict(ignored), lines=n, other_lines=other,
                     timestamps=stamped > 0, clock=clock if stamped else None, backend=what,
                     cut=cut)


def _h(x: str) -> int:
    return int(x, 16) if x[1] == "x" else 0        # "(nil)": NULL


# each kind's fields from its pattern's groups: one call a line, no per-field dispatch
_FIELDS = {
    POP: lambda g: (_h(g[0]), _h(g[1]), int(g[2]), int(g[3])),
    FILL: lambda g: (_h(g[0]), _h(g[1]), int(g[2]), int(g[3])),
    FLUSH: lambda g: (_h(g[0]), int(g[1])),
    ALLOC: lambda g: (_h(g[0]), int(g[1]), int(g[2]), int(g[3])),
    KICK: lambda g: (_h(g[0]), int(g[1]), _h(g[2])),
    IRQ: lambda g: (_h(g[0]), _h(g[1])),
    STATUS: lambda g: (_h(g[0]), int(g[1])),
    RUNSTATE: lambda g: (int(g[0]), g[1], int(g[2]), g[3]),
    VMSTATE: lambda g: (int(g[0]), int(g[1]), g[2]),
}


def _iso(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()
