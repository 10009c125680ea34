"""A QEMU core and a guest dump of one VM: RAM that a memory device maps above 4 GiB."""

from __future__ import annotations

import pytest

from tests.builders.rings import BytesSpace
from vdecode.errors import InputError
from vdecode.space.dump import Dump, check_belong_together

GIB = 1 << 30


def _core(*regions: tuple[int, int, str, str]) -> Dump:
    ranges = [{"start": s, "end": e, "size": e - s, "block": b, "region": r} for s, e, b, r in regions]
    return Dump(path="qemu.core", format="qemu-core", space=None, info={"ram_ranges": ranges})


def _guest(*runs: tuple[int, int]) -> Dump:
    return Dump(path="guest.elf", format="elf", space=BytesSpace({s: bytes(n) for s, n in runs}),
                info={})


def test_plugged_virtio_mem_above_4g_belongs():
    """virtiomem (7.2 and 10.0 recordings): 256 MiB of RAM, a 512 MiB virtio-mem region at 4 GiB
    of which 256 MiB were plugged; the ELF dump holds the plugged part."""
    core = _core((0, GIB // 4, "pc.ram", "ram-below-4g"),
                 (4 * GIB, 4 * GIB + GIB // 2, "0000:00:01.0/vmem0", "vmem0"))
    guest = _guest((0, 4096), (4 * GIB, 4096), (4 * GIB + GIB // 4 - 4096, 4096))
    guest_small = _guest((0, GIB // 4), (4 * GIB, GIB // 4))
    assert check_belong_together(core, guest_small) == []
    with pytest.raises(InputError, match="short in this dump"):
        check_belong_together(core, guest)              # the main RAM is not all there


def test_ram_above_every_region_qemu_maps_does_not_belong():
    core = _core((0, GIB // 4, "pc.ram", "ram-below-4g"))
    with pytest.raises(InputError, match=r"the dump has RAM up to 0x108000000, QEMU's ends at "
                                         r"0x10000000"):
        check_belong_together(core, _guest((0, GIB // 4), (4 * GIB, GIB // 8)))
