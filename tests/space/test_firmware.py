"""The guest's SMBIOS system information, read from a real dump and from hostile tables."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.builders.rings import BytesSpace
from vdecode.space.firmware import (ENTRY_21, ENTRY_30, F_SEGMENT, machine_version,
                                    smbios_system)
from vdecode.space.open import open_dump

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "captures-10.0" / "oldmachine"
TABLE = 0x7FFF0000


def _type1(version: bytes, end: bool = True) -> bytes:
    body = struct.pack("<BBH4B", 1, 8, 0x100, 1, 2, 3, 0) + b"QEMU\0Standard PC\0" + version + b"\0\0"
    return body + (struct.pack("<BBH", 127, 4, 0xFFFF) + b"\0\0" if end else b"")


def _checksummed(raw: bytearray, at: int, length: int) -> bytes:
    raw[at] = (-sum(raw[:length])) & 0xFF
    return bytes(raw)


def _entry_30(table: bytes, addr: int = TABLE) -> bytes:
    raw = bytearray(ENTRY_30.build(dict(checksum=0, length=0x18, major=3, minor=0, docrev=0,
                                        revision=1, reserved=0, table_max_size=len(table),
                                        table_address=addr)))
    return _checksummed(raw, 5, 0x18)


def _entry_21(table: bytes, addr: int = TABLE) -> bytes:
    raw = bytearray(ENTRY_21.build(dict(checksum=0, length=0x1F, major=2, minor=8,
                                        max_structure_size=64, revision=0,
                                        formatted_area=bytes(5), intermediate_checksum=0,
                                        table_length=len(table), table_address=addr,
                                        structures=2, bcd_revision=0x28)))
    raw[0x15] = (-sum(raw[0x10:0x1F])) & 0xFF
    return _checksummed(raw, 4, 0x1F)


def _space(entry: bytes, table: bytes, at: int = 0x5A00) -> BytesSpace:
    seg = bytearray(0x10000)
    seg[at:at + len(entry)] = entry
    return BytesSpace({F_SEGMENT: bytes(seg), TABLE: table})


@pytest.mark.parametrize("entry", [_entry_30, _entry_21])
def test_both_entry_points_give_the_machine_type(entry):
    table = _type1(b"pc-q35-9.2")
    s = smbios_system(_space(entry(table), table))
    assert (s.manufacturer, s.product, s.version) == ("QEMU", "Standard PC", "pc-q35-9.2")
    assert machine_version(s) == (9, 2)


def test_what_does_not_check_out_is_no_smbios():
    table = _type1(b"pc-q35-9.2")
    bad_sum = bytearray(_entry_30(table))
    bad_sum[5] ^= 1
    assert smbios_system(_space(bytes(bad_sum), table)) is None
    assert smbios_system(_space(_entry_30(table), table, at=0x5A08)) is None     # not 16-aligned
    assert smbios_system(_space(_entry_30(table, addr=0x1234000), table)) is None  # not in dump
    cut = table[:12]                                   # strings never end
    assert smbios_system(_space(_entry_30(cut), cut)) is None
    zero = struct.pack("<BBH", 3, 0, 0) + bytes(60)    # a structure of length 0 cannot advance
    assert smbios_system(_space(_entry_30(zero), zero)) is None
    assert smbios_system(BytesSpace({0: bytes(16)})) is None and smbios_system(None) is None


def test_only_qemus_machine_names_give_a_version():
    for version, want in [(b"pc-i440fx-7.1", (7, 1)), (b"pc-q35-rhel9.4.0", None), (b"", None),
                          (b"pc-q35-10.0 ", None)]:
        table = _type1(version)
        assert machine_version(smbios_system(_space(_entry_30(table), table))) == want


def test_real_bundle_of_an_old_machine_type(tmp_path):
    """A QEMU 10.0.2 run with -machine pc-q35-9.2: its bundle kept the firmware's tables."""
    import zstandard
    raw = tmp_path / "b.vdb"
    with open(FIXTURE / "elf+early.vdb.zst", "rb") as src, open(raw, "wb") as dst:
        zstandard.ZstdDecompressor().copy_stream(src, dst)
    s = smbios_system(open_dump(str(raw)).space)
    assert s.version == "pc-q35-9.2" and machine_version(s) == (9, 2)


def test_an_entry_point_at_a_page_end():
    table = _type1(b"pc-q35-7.1")
    s = smbios_system(_space(_entry_30(table), table, at=0x5FF0))
    assert machine_version(s) == (7, 1) and s.entry_point == F_SEGMENT + 0x5FF0
