"""The guest-physical space of a QEMU process core: the same bytes as the ELF dump of the same
instant, a core without guest RAM still answers QEMU's state, truncated cores are refused."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from tests.guest_machines import MAIN_RAM, NOT_IN_GUEST_DUMPS
from vdecode.errors import CorruptInput, MissingData
from vdecode.sources.elf_dump import read_elf
from vdecode.sources.files import FileView
from vdecode.space.base import AddressSpace
from vdecode.space.open import open_dump
from vdecode.space.qemu_core import GuestRamSpace, open_qemu_core

PAGE = 4096


@pytest.fixture(scope="module")
def pair(capture):
    core = open_dump(capture.dump("qemu-core"))
    elf = open_dump(capture.dump("elf"))
    yield core, elf
    core.close()
    elf.close()


def ring_pages(truth) -> set[int]:
    pages = set()
    for req, rep in truth:
        r = rep.get("return")
        if req["execute"] == "x-query-virtio-queue-status" and r:
            for key in ("vring-desc", "vring-avail", "vring-used"):
                if r[key]:
                    pages.add(r[key] // PAGE * PAGE)
    return pages


def test_open_dump_picks_the_core_reader(pair):
    core, _ = pair
    assert core.format == "qemu-core"
    assert isinstance(core.space, GuestRamSpace) and isinstance(core.space, AddressSpace)
    assert core.qemu is not None and core.qemu.source == "core"
    assert core.info["guest_ram"] == "present"
    json.dumps(core.info)                                   # vdecode info can print it


def merged(ranges) -> list[tuple[int, int]]:
    """``(start, size)`` ranges sorted, adjacent ones joined (as a space lists them)."""
    out: list[tuple[int, int]] = []
    for start, size in sorted(ranges):
        if out and out[-1][0] + out[-1][1] == start:
            out[-1] = (out[-1][0], out[-1][1] + size)
        else:
            out.append((start, size))
    return out


def test_same_ranges_as_the_elf_dump(capture, pair):
    """The guest dump's RAM, plus the blocks dump-guest-memory leaves out (aarch64's pflash)."""
    core, elf = pair
    skipped = [(r["start"], r["size"]) for r in core.info["ram_ranges"]
               if r["block"] in NOT_IN_GUEST_DUMPS[capture.arch]]
    assert core.space.ranges() == merged(elf.space.ranges() + skipped)


def test_ring_pages_equal_the_elf_dump(capture, pair):
    core, elf = pair
    pages = ring_pages(capture.truth)
    assert len(pages) > 10
    for gpa in sorted(pages):
        assert bytes(core.space.read(gpa, PAGE)) == bytes(elf.space.read(gpa, PAGE)), hex(gpa)


def test_sampled_pages_equal_the_elf_dump(pair):
    core, elf = pair
    rng = np.random.default_rng(7)
    for start, size in elf.space.ranges():
        for off in rng.integers(0, size // PAGE, 300).tolist():
            gpa = start + off * PAGE
            assert bytes(core.space.read(gpa, PAGE)) == bytes(elf.space.read(gpa, PAGE)), hex(gpa)
    # a read across the last byte of the first RAM range (below 4 GiB) and one wholly outside
    start, size = elf.space.ranges()[0]
    last = start + size
    assert core.space.is_present(last - 8, 8) and not core.space.is_present(last - 8, 16)
    with pytest.raises(MissingData) as err:
        core.space.read(last, 4)
    assert str(err.value) == f"{core.path}: guest-physical {last:#x}+4 is not guest RAM"


def test_core_without_guest_ram_still_answers_qemu_state(capture, pair):
    """``dump-guest-core=off``: QEMU marks guest RAM MADV_DONTDUMP and gcore leaves it out."""
    core, _ = pair
    ram = [r for r in core.info["ram_ranges"]]
    view = FileView(capture.dump("qemu-core"))
    try:
        elf = read_elf(view)
        guest = [(int(r["hva"], 16), r["size"]) for r in ram]
        keep = np.array([not any(h <= int(v) < h + n for h, n in guest) or t != 1
                         for v, t in zip(elf.phdrs["p_vaddr"], elf.phdrs["p_type"])])
        no_ram = dataclasses.replace(elf, phdrs=elf.phdrs[keep])
        dump = open_qemu_core(view, no_ram)
        assert dump.space is None
        assert dump.info["guest_ram"] == "absent (dump-guest-core=off: give a guest dump as well)"
        assert [d.canonical_path for d in dump.qemu.devices] == \
            [d.canonical_path for d in core.qemu.devices]
        assert [d.queues[0].last_avail_idx for d in dump.qemu.devices] == \
            [d.queues[0].last_avail_idx for d in core.qemu.devices]
    finally:
        view.close()


def test_truncated_core(capture, tmp_path):
    src = capture.dump("qemu-core")
    cut = tmp_path / "cut.core"
    with open(src, "rb") as f, open(cut, "wb") as out:
        out.write(f.read(8 << 20))
    with pytest.raises(CorruptInput) as err:
        open_dump(cut)
    msg = str(err.value)
    assert msg.startswith(f"{cut} at offset 0x") and "runs past the end of the file (8388608 bytes)" in msg
    assert "\n" not in msg


def test_core_missing_part_of_guest_ram(capture, pair):
    """Only main RAM left out (``pc.bios``, aarch64's flash kept): reads there say the core lacks
    them."""
    core, _ = pair
    ram = next(r for r in core.info["ram_ranges"] if r["block"] == MAIN_RAM[capture.arch])
    kept = [r for r in core.info["ram_ranges"] if r is not ram]
    hva = int(ram["hva"], 16)
    view = FileView(capture.dump("qemu-core"))
    try:
        elf = read_elf(view)
        keep = ~((elf.phdrs["p_type"] == 1) & (elf.phdrs["p_vaddr"] == hva))
        dump = open_qemu_core(view, dataclasses.replace(elf, phdrs=elf.phdrs[keep]))
        if not kept:                         # s390x: main RAM is its only block
            assert dump.space is None and dump.info["guest_ram"].startswith("absent")
            return
        assert dump.space.ranges() == merged((r["start"], r["size"]) for r in kept)
        assert [r["in_core"] for r in dump.info["ram_ranges"]] == \
            [r is not ram for r in core.info["ram_ranges"]]
        at = ram["start"] + 0x1000
        with pytest.raises(MissingData) as err:
            dump.space.read(at, 2)
        assert str(err.value) == (f"{view.name}: guest-physical {at:#x}+2 is guest RAM that the "
                                  f"core does not hold")
    finally:
        view.close()
