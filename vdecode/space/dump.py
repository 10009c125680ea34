"""An opened dump: its guest-physical address space, what the file said about itself, and (for a
QEMU process core or a bundle) QEMU's own virtio state.

Every reader's ``open_*`` returns a :class:`Dump`; ``vdecode.space.open.open_dump`` picks the
reader from the file's content.
"""

from __future__ import annotations

from dataclasses import field
from typing import TYPE_CHECKING, Any

from vdecode.frozen import record
from vdecode.sources.files import FileView
from vdecode.sources.qemu_state import VIRTIO_DEVICE_ENDIAN_BIG, QemuVirtioState
from vdecode.space.absence import Absent, absent_of, merge_ranges
from vdecode.space.base import AddressSpace

if TYPE_CHECKING:                        # the log readers load only when a log is read
    from vdecode.sources.qmp_log.model import QmpLog


@record
class Dump:
    """One opened input.

    :param path: the file as the user named it (for messages).
    :param format: ``"elf"``, ``"elf-paging"``, ``"vmcore"``, ``"kdump"``, ``"kdump-flattened"``,
        ``"qemu-core"`` or ``"bundle"``.
    :param space: guest-physical memory (``None`` for a QEMU core without guest RAM).
    :param info: format facts for ``vdecode info`` (JSON-able values only).
    :param qemu: QEMU's virtio state when the input holds it (process core, bundle).
    :param files: the mapped files, closed by :meth:`close`.
    :param qmp_log: a QMP log the input carries (a bundle's embedded log), used when the user
        gives no ``--log``.
    :param queue_arrays: where a QEMU core's devices and queue arrays are (QEMU's addresses).
    :param absent: what the input lacks (:mod:`vdecode.space.absence`), counted when it was
        opened; ``None`` for a whole input. The space carries the same value (``space.absent``).
    """

    path: str
    format: str
    space: AddressSpace | None
    info: dict[str, Any] = field(default_factory=dict)
    qemu: QemuVirtioState | None = None
    files: list[FileView] = field(default_factory=list)
    qmp_log: QmpLog | None = None
    absent: Absent | None = None
    #: a QEMU core's ``(QOM path, VirtIODevice address, VirtQueue array address,
    #: sizeof(VirtQueue))`` per device, to name a trace's pointers (``vdecode trace --core``)
    queue_arrays: tuple[tuple[str, int, int, int], ...] = ()
    #: a QEMU core's host-virtual memory (``read(addr, n)``): QEMU's own objects, such as the
    #: ``VirtQueueElement`` a trace names
    host: AddressSpace | None = None

    def __post_init__(self) -> None:
        # the address space answers reads: it carries the same value, so every stage that only
        # sees the space (ring checks, findings) can tell "absent from a cut dump" from "no ring"
        if self.space is not None:
            try:
                self.space.absent = self.absent
            except AttributeError:
                pass

    @property
    def incomplete(self) -> bool:
        """Bytes are missing that should have been there (pages excluded by design are not)."""
        return self.absent is not None and self.absent.incomplete

    @property
    def guest_little_endian(self) -> bool:
        """The guest's byte order (its drivers' records, its legacy rings): big when QEMU's
        state has a big-endian device or a guest dump says so (ELF ``EI_DATA``, the kdump
        header); little otherwise. A QEMU core's own byte order is the host's, not the guest's."""
        if self.qemu is not None and self.qemu.devices:
            return not any(d.device_endian == VIRTIO_DEVICE_ENDIAN_BIG for d in self.qemu.devices)
        return self.format == "qemu-core" or self.info.get("endianness") != "big"

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> "Dump":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- a QEMU core and a guest dump of the same instant ---------------------------------------

_HOLE_SLACK = 1 << 20      # the legacy VGA window and option ROMs below 1 MiB are not RAM in a dump
_RAM_REGIONS = ("ram-below-4g", "ram-above-4g", "pc.ram")
VIRTIO_F_RING_PACKED = 34


def _covered(ranges: list[tuple[int, int]], start: int, end: int) -> int:
    """Bytes of ``[start, end)`` inside the sorted ``(start, size)`` ranges."""
    return sum(max(0, min(end, s + n) - max(start, s)) for s, n in ranges)


def check_belong_together(core: Dump, guest: Dump) -> list[str]:
    """Whether QEMU's core and a guest dump are one VM at one instant.

    RAM layout: each guest-RAM run of QEMU's map (``ram-below-4g``, ``ram-above-4g``) must be in
    the dump but for the sub-1 MiB holes a guest dump leaves, and the dump must hold no RAM above
    the RAM regions QEMU maps (memory devices included). Then every started split ring's ``used->idx`` in the dump must equal QEMU's
    ``VirtQueue.used_idx`` (QEMU writes one into the other in ``vring_used_idx_set``), and its
    ring areas must lie in the dump's RAM.

    :raises InputError: the RAM layouts differ (another VM, or another size).
    :return: warnings: rings outside RAM, ``used->idx`` that moved (another instant).
    """
    from vdecode.errors import InputError, MissingData

    ranges = sorted((int(s), int(n)) for s, n in guest.space.ranges())
    if guest.absent is not None:    # a guest dump cut short still had that RAM: it is not another VM
        ranges = merge_ranges([*ranges, *(r for p in guest.absent.parts for r in p.ranges)])
    runs = [r for r in core.info.get("ram_ranges", [])
            if r.get("region") in _RAM_REGIONS or r.get("block") == "pc.ram"]
    ram_txt = ", ".join(f"[{s:#x}, {s + n:#x})" for s, n in ranges[:6])
    for r in runs:
        missing = r["size"] - _covered(ranges, r["start"], r["end"])
        if missing > _HOLE_SLACK:
            raise InputError(guest.path, f"does not belong with {core.path}: QEMU's guest RAM "
                                         f"[{r['start']:#x}, {r['end']:#x}) ({r.get('region') or r['block']}) "
                                         f"is {missing} bytes short in this dump (its RAM: {ram_txt})")
    if runs and ranges:
        # above QEMU's guest RAM: any RAM region it maps, memory devices too (virtio-mem and DIMMs
        # sit above 4 GiB, and a dump holds their plugged parts; they need not be all there)
        top_q = max(r["end"] for r in core.info.get("ram_ranges", []))
        top_d = max(s + n for s, n in ranges)
        if top_d > max(top_q, 1 << 32):
            raise InputError(guest.path, f"does not belong with {core.path}: the dump has RAM up "
                                         f"to {top_d:#x}, QEMU's ends at {top_q:#x}")
    warnings, moved, outside, compared = [], [], [], 0
    for dev in core.qemu.devices if core.qemu else []:
        packed = (dev.guest_features or 0) >> VIRTIO_F_RING_PACKED & 1
        for qi, q in sorted(dev.queues.items()):
            if not q.desc or not q.vring_num:
                continue
            areas = (("desc", q.desc, 16 * q.vring_num), ("avail", q.avail, 4 + 2 * q.vring_num),
                     ("used", q.used, 4 + 8 * q.vring_num))
            bad = [n for n, a, z in areas if a and _covered(ranges, a, a + z) < z]
            if bad:
                outside.append(f"{dev.canonical_path} queue {qi} ({', '.join(bad)})")
                continue
            if packed or dev.vhost_started or q.used_idx is None:
                continue
            try:
                raw = bytes(guest.space.read(q.used + 2, 2))
            except MissingData:
                continue
            big = getattr(dev, "device_endian", 1) == 2
            idx = int.from_bytes(raw, "big" if big else "little")
            compared += 1
            if idx != q.used_idx & 0xFFFF:
                moved.append(f"{dev.canonical_path} queue {qi}: used->idx {idx}, QEMU's used_idx "
                             f"{q.used_idx}")
    if outside:
        warnings.append(f"{guest.path}: ring areas outside its RAM for {len(outside)} queue(s): "
                        + "; ".join(outside[:4]))
    if moved:
        warnings.append(f"{guest.path} may not be of {core.path}'s instant: {len(moved)} of "
                        f"{compared} rings differ from QEMU's state: " + "; ".join(moved[:4]))
    return warnings


def combine(core: Dump, guest: Dump) -> Dump:
    """QEMU's state from ``core``, guest RAM from ``guest`` (a dump of the same instant).

    :raises InputError: they do not belong together (:func:`check_belong_together`).
    """
    warnings = check_belong_together(core, guest)
    info = dict(core.info)
    info["guest_dump"] = {"file": guest.path, "format": guest.format,
                          "ram_bytes": sum(int(n) for _, n in guest.space.ranges())}
    info["guest_ram"] = (f"from {guest.path} ({guest.format})"
                         + ("; the core's own is not used" if core.space is not None else ""))
    info["warnings"] = [w for w in core.info.get("warnings", []) if not w.startswith("guest RAM is not")]
    info["warnings"] += warnings
    # the core's own guest RAM is not used: what it lacked of it does not count
    core_parts = [p for p in (core.absent.parts if core.absent else ()) if p.kind != "not-dumped"]
    absent = absent_of([*core_parts, *(guest.absent.parts if guest.absent else ())])
    return Dump(path=core.path, format=f"{core.format}+{guest.format}", space=guest.space, info=info,
                qemu=core.qemu, files=core.files + guest.files, qmp_log=core.qmp_log,
                absent=absent, queue_arrays=core.queue_arrays, host=core.host)
