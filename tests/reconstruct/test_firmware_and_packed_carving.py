"""Without a log or core: the boot firmware's abandoned rings are labelled the firmware's (with
the evidence), not shown as more devices; a packed ring shows its decoded offset and wrap
counter, not the raw ``off_wrap``."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vdecode.cli import cli
from vdecode.reconstruct.postmortem.view_model import carved_view
from vdecode.reconstruct.rings.firmware_rings import firmware_evidence
from vdecode.reconstruct.rings.kinds import DeviceGroup
from vdecode.virtio.carved_ring import CarvedRing


class Ram:
    """A guest-physical space of the given RAM ranges (all firmware_evidence asks of it)."""

    def __init__(self, *ranges: tuple[int, int]) -> None:
        self._ranges = list(ranges)

    def ranges(self):
        return self._ranges


def ring(desc: int, *, flags: int = 0, va: int | None = None, layout: str = "legacy",
         avail_idx: int = 1, used_idx: int = 1, num: int = 256) -> CarvedRing:
    return CarvedRing(num, desc, desc + 0x1000, desc + 0x2000, flags, avail_idx, 0, used_idx,
                      0.78, layout, ("chains",), device_va=va)


RAM = Ram((0, 0xA000000), (0xFFFC0000, 0x40000))      # 160 MiB and the BIOS flash


def test_evidence_decides():
    kernel = ring(0x2C72000, va=0xFFFF0000)
    # SeaBIOS's high zone (the last MiB below the top of low RAM), polled, no driver record
    why = firmware_evidence(RAM, [ring(0x9FDD000, flags=1)], records_seen=True,
                            kernel_kinds={"virtio-blk"}, kind="virtio-blk")
    assert why is not None and any("0xa000000" in w for w in why)
    assert any("NO_INTERRUPT" in w for w in why) and any("kernel's own" in w for w in why)
    # below 1 MiB is the firmware's whatever else holds
    assert firmware_evidence(RAM, [ring(0x7000)], records_seen=False, kernel_kinds=set(),
                             kind=None) is not None
    # a ring a kernel driver record owns never is
    assert firmware_evidence(RAM, [kernel], records_seen=True, kernel_kinds=set(),
                             kind=None) is None
    # polled in the middle of RAM: the firmware's only when this kernel's records were read
    mid = ring(0x5000000, flags=1)
    assert firmware_evidence(RAM, [mid], records_seen=False, kernel_kinds=set(), kind=None) is None
    assert firmware_evidence(RAM, [mid], records_seen=True, kernel_kinds=set(), kind=None)
    # neither polled nor in a firmware area: not the firmware's
    assert firmware_evidence(RAM, [ring(0x5000000)], records_seen=True, kernel_kinds=set(),
                             kind=None) is None


def test_packed_ring_shows_decoded_offsets_and_wrap():
    # the carver keeps the event areas' off_wrap: 0x8047 is offset 71 on a lap with wrap 1
    r = ring(0x294F000, layout="packed", avail_idx=0x8047, used_idx=0x8047)
    (row,) = carved_view([DeviceGroup("virtio-blk", 1, [r])])[0].rings
    assert (row.avail_idx, row.used_idx, row.outstanding) == (71, 71, 0)
    assert row.packed.avail_wrap == row.packed.used_wrap == 1
    assert row.to_json_obj()["packed"]["driver_event"]["off_wrap"] == 0x8047
    # the device area 3 into the next lap (wrap 0), the driver's at 250 of the lap before
    r = ring(0x294F000, layout="packed", avail_idx=0x8000 | 250, used_idx=3)
    (row,) = carved_view([DeviceGroup("virtio-blk", 1, [r])])[0].rings
    assert (row.avail_idx, row.used_idx, row.outstanding) == (3, 250, 9)


def test_real_dumps_without_a_log(captures):
    want = {q["arguments"]["queue"]: r["return"]["last-avail-idx"] for q, r in captures["mixed"].truth
            if q.get("execute") == "x-query-virtio-queue-status" and "return" in r
            and "packedblk" in q["arguments"]["path"]}
    for name in ("basic", "mixed"):
        r = CliRunner().invoke(cli, [str(captures[name].dump("elf")), "--json"])
        assert r.exit_code == 0, r.output
        groups = json.loads(r.output)["carved"]
        firmware = [g for g in groups if g["firmware"]]
        # SeaBIOS booted from virtio-blk and virtio-scsi: its rings are the firmware's, and no
        # group is left without a driver record as if it were one more device
        assert {g["kind"] for g in firmware} >= {"virtio-blk", "virtio-scsi"}
        assert all(g["driver_device"] is not None for g in groups if not g["firmware"]), name
        assert all(any("no driver record" in w for w in g["firmware"]) for g in firmware)
        text = CliRunner().invoke(cli, [str(captures[name].dump("elf"))]).output
        assert "Boot firmware's rings" in text and "(no driver record)" not in text
        assert all(len(line) <= 80 for line in text.splitlines())
    packed = [r for g in groups for r in g["rings"] if r["packed"]]
    # mixed's packedblk: QEMU's last_avail_idx (the truth) is the decoded offset, not 32839
    assert sorted((r["index"], r["avail_idx"]) for r in packed) == sorted(want.items())
    assert all(r["packed"]["avail_wrap"] in (0, 1) and r["avail_idx"] < r["size"] for r in packed)
