"""What the guest's firmware left in its RAM: the SMBIOS system information.

QEMU hands SeaBIOS/OVMF its SMBIOS tables, and the firmware leaves the entry point in the
F-segment (``0xF0000``-``0xFFFFF``, on a 16-byte boundary; SMBIOS 3.9 spec 5.2). Type 1 (System
Information) carries QEMU's machine type as its version string (``hw/smbios/smbios.c``
``smbios_set_defaults`` with ``MachineClass.name``: ``"pc-q35-10.0"``, the alias ``q35``
resolved). The machine type decides compat properties a dump otherwise cannot show: on QEMU 10.0,
whether virtio-balloon-pci has MSI-X (``formats/.../transport.json``).

Every read is bounded: a table is at most 64 KiB (the 2.1 entry point's u16; a 3.0 entry
point's size is capped the same), strings at most 256 bytes; anything that does not check out is
"no SMBIOS", never an error: the firmware's tables are a hint, not the answer.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from vdecode.binary import Layout, LayoutError
from vdecode.errors import CorruptInput, MissingData
from vdecode.frozen import record
from vdecode.space.base import AddressSpace

__all__ = ("SmbiosSystem", "smbios_system", "machine_version", "machine_version_of")

F_SEGMENT, F_SEGMENT_SIZE, PAGE = 0xF0000, 0x10000, 0x1000
TABLE_LIMIT = 0x10000

# SMBIOS 2.1 (32-bit) and 3.0 (64-bit) entry points (SMBIOS 3.9 spec, tables 1 and 2)
ENTRY_21 = Layout(
    "<",
    ("anchor", b"_SM_"),
    ("checksum", "u8"),
    ("length", "u8", "0x1F"),
    ("major", "u8"),
    ("minor", "u8"),
    ("max_structure_size", "u16"),
    ("revision", "u8"),
    ("formatted_area", 5),
    ("intermediate_anchor", b"_DMI_"),
    ("intermediate_checksum", "u8"),
    ("table_length", "u16"),
    ("table_address", "u32"),
    ("structures", "u16"),
    ("bcd_revision", "u8"),
)
ENTRY_30 = Layout(
    "<",
    ("anchor", b"_SM3_"),
    ("checksum", "u8"),
    ("length", "u8", "0x18"),
    ("major", "u8"),
    ("minor", "u8"),
    ("docrev", "u8"),
    ("revision", "u8"),
    ("reserved", "u8"),
    ("table_max_size", "u32"),
    ("table_address", "u64"),
)
STRUCTURE_HEADER = Layout("<", ("type", "u8"), ("length", "u8"), ("handle", "u16"))
TYPE_SYSTEM, TYPE_END = 1, 127


@record
class SmbiosSystem:
    """SMBIOS type 1 as the firmware left it in the dump (``source`` ``"dump"``)."""

    manufacturer: str
    product: str
    version: str
    entry_point: int          # guest-physical address of the entry point read
    source: str = "dump"


def smbios_system(space: AddressSpace | None) -> SmbiosSystem | None:
    """The guest's SMBIOS system information, or ``None`` when the dump has no (valid) tables."""
    if space is None:
        return None
    # page by page, stopping at the first entry point that checks out: a bundle keeps what an
    # answer read, and SeaBIOS leaves the entry point some 22 KiB into the segment
    end = F_SEGMENT + F_SEGMENT_SIZE
    for page in range(F_SEGMENT, end, PAGE):
        seg = b""
        # with the next page's first bytes, for an entry point in a page's last 16 bytes
        for n in (min(PAGE + 0x20, end - page), PAGE):
            try:
                seg = bytes(space.read(page, n))
                break
            except (MissingData, CorruptInput):
                continue
        for off in range(0, min(PAGE, len(seg)), 16):
            found = _entry_at(space, seg, off)
            if found is not None:
                return SmbiosSystem(*found, entry_point=page + off)
    return None


def _entry_at(space: AddressSpace, seg: bytes, off: int) -> tuple[str, str, str] | None:
    head = seg[off:off + 5]
    if head == b"_SM3_":
        entry, size = ENTRY_30, 0x18
    elif head[:4] == b"_SM_":
        entry, size = ENTRY_21, 0x1F
    else:
        return None
    raw = seg[off:off + size]
    if len(raw) < size or sum(raw) & 0xFF:
        return None                       # the entry point's bytes sum to 0 (spec 5.2.1/5.2.2)
    try:
        ep = entry.parse(raw)
    except LayoutError:                   # an anchor that does not check out: not an entry point
        return None
    length = ep.table_length if entry is ENTRY_21 else ep.table_max_size
    return _system_in_table(space, ep.table_address, min(length, TABLE_LIMIT))


def _system_in_table(space: AddressSpace, addr: int, length: int) -> tuple[str, str, str] | None:
    try:
        table = bytes(space.read(addr, length))
    except (MissingData, CorruptInput):
        return None
    pos = 0
    while pos + STRUCTURE_HEADER.sizeof() <= len(table):
        h = STRUCTURE_HEADER.parse(table[pos:pos + 4])
        if h.length < 4 or pos + h.length > len(table):
            return None
        end = table.find(b"\0\0", pos + h.length)
        if end < 0:
            return None
        strings = table[pos + h.length:end].split(b"\0")
        if h.type == TYPE_SYSTEM and h.length >= 8:
            def text(i: int) -> str:
                s = strings[i - 1] if 0 < i <= len(strings) else b""
                return s[:256].decode("ascii", "replace")
            return text(table[pos + 4]), text(table[pos + 5]), text(table[pos + 6])
        if h.type == TYPE_END:
            return None
        pos = end + 2
    return None


_MACHINE = re.compile(r"pc-(?:q35|i440fx)-(\d+)\.(\d+)")


def machine_version(system: SmbiosSystem | None) -> tuple[int, int] | None:
    """``(10, 0)`` for QEMU's ``pc-q35-10.0``/``pc-i440fx-10.0``; ``None`` for other names (a
    distribution's own machine types, other firmware) or no tables."""
    m = _MACHINE.fullmatch(system.version) if system is not None else None
    return (int(m.group(1)), int(m.group(2))) if m else None


def machine_version_of(space: AddressSpace | None) -> Callable[[], tuple[int, int] | None]:
    """:func:`machine_version` of ``space``'s tables, read on the first call and remembered: the
    stages that may need it share one, and read nothing unless a rule asks."""
    return functools.cache(lambda: machine_version(smbios_system(space)))
