"""Which carved rings the boot firmware left behind, and the evidence that says so.

SeaBIOS and OVMF drive virtio-blk, virtio-scsi (and OVMF virtio-net) to boot: each sets up split
rings of its own, polls them (both set ``VRING_AVAIL_F_NO_INTERRUPT``: SeaBIOS ``vring_init``,
OVMF ``VirtioRingInit``) and abandons them when the kernel takes over. The kernel's driver then
resets the device and allocates new rings, so the firmware's stay in RAM, intact, looking like
more devices. They are told apart by evidence, never by a guess:

* ``no driver record``: the kernel's drivers keep a record of every ring they own (the carver reads
  them, :mod:`vdecode.virtio.driver_records`); a ring without one is not a live kernel driver's,
  *when the records of this kernel can be read at all* (some other ring has one);
* ``firmware area``: below 1 MiB (real-mode firmware memory), or in the last MiB of RAM below
  4 GiB, where SeaBIOS keeps its high zone (reserved in the e820 map, so the kernel never reuses
  it) and OVMF its boot-services pages;
* ``polled``: ``VRING_AVAIL_F_NO_INTERRUPT`` set, as both firmwares leave it;
* ``kernel drives the kind``: the kernel's own driver owns rings of a device of the same kind.

A group is the firmware's when it has no driver record and lies in a firmware area, or when it
has no driver record, this kernel's records were read, and it is polled.
"""

from __future__ import annotations

from vdecode.space.base import AddressSpace
from vdecode.virtio.carved_ring import CarvedRing

__all__ = ("firmware_evidence", "LOW_FIRMWARE", "HIGH_ZONE")

LOW_FIRMWARE = 1 << 20         # real-mode memory: the BIOS data areas, option ROMs, SeaBIOS's low zone
HIGH_ZONE = 1 << 20            # the top of RAM below 4 GiB that SeaBIOS/OVMF keep for themselves
BELOW_4G_HOLE = 0xE000_0000    # low RAM ends below the PCI hole (q35/i440fx: 2-3.5 GiB)
VRING_AVAIL_F_NO_INTERRUPT = 1


def _low_ram_top(space: AddressSpace) -> int | None:
    tops = [start + size for start, size in space.ranges() if start + size <= BELOW_4G_HOLE]
    return max(tops) if tops else None


def firmware_evidence(space: AddressSpace, rings: list[CarvedRing], *, records_seen: bool,
                      kernel_kinds: set[str], kind: str | None) -> list[str] | None:
    """Why ``rings`` (one carved group) are the boot firmware's, or ``None`` when the evidence
    does not say so.

    :param records_seen: some carved ring of this dump has a kernel driver record.
    :param kernel_kinds: device kinds whose rings a kernel driver record owns.
    """
    if any(r.device_va is not None or r.driver_gpa is not None for r in rings):
        return None
    top = _low_ram_top(space)
    low = all(r.desc < LOW_FIRMWARE for r in rings)
    high = top is not None and all(top - HIGH_ZONE <= r.desc < top for r in rings)
    polled = all(r.avail_flags & VRING_AVAIL_F_NO_INTERRUPT for r in rings
                 if r.layout != "packed")
    if not (low or high or (records_seen and polled)):
        return None
    why = ["no driver record" + (" (the kernel's records name its rings)" if records_seen else "")]
    if low:
        why.append("below 1 MiB")
    if high:
        why.append(f"in the last MiB of low RAM (below {top:#x}), the firmware's high zone")
    if polled:
        why.append("polled (VRING_AVAIL_F_NO_INTERRUPT)")
    if kind is not None and kind in kernel_kinds:
        why.append("the kernel's own driver of that kind owns other rings")
    return why
