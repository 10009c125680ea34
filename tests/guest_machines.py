"""Facts of the machines and QEMU builds the shared captures were recorded with, by guest
architecture: what a test of a real capture expects that the capture's own files do not say.
A capture of another architecture or build fails its test with the key to add here."""

from __future__ import annotations

# the machine's main RAM block: its MachineClass default_ram_id
MAIN_RAM = {"x86_64": "pc.ram", "aarch64": "mach-virt.ram", "s390x": "s390.ram"}

# where main RAM starts in guest-physical memory (hw/arm/virt.c: VIRT_MEM at 1 GiB)
RAM_BASE = {"x86_64": 0, "aarch64": 0x40000000, "s390x": 0}

# the region that maps main RAM into the system address space (x86: the below-4G alias)
RAM_REGION = {"x86_64": "ram-below-4g", "aarch64": "mach-virt.ram", "s390x": "s390.ram"}

# RAM blocks that dump-guest-memory leaves out: the virt board's pflash devices are ROM devices
# (memory_region_init_rom_device), not RAM, so a guest dump has no PT_LOAD for them; a QEMU core
# holds their RAMBlocks and maps them
NOT_IN_GUEST_DUMPS = {"x86_64": (), "aarch64": ("virt.flash0", "virt.flash1"), "s390x": ()}

# (package, architecture) -> the build-id of its qemu-system-* executable
BUILD_IDS = {
    ("Debian 1:7.2+dfsg-7+deb12u18+b3", "x86_64"): "d9541fd67c4ea37f9ca7fca0f5096f32b3b7e7e0",
    ("Debian 1:7.2+dfsg-7+deb12u18+b3", "aarch64"): "82d7bd349851e9d52ea18b5ecae68fbc9ca5a6b5",
    ("Debian 1:7.2+dfsg-7+deb12u18+b3", "s390x"): "a460093b2ef70044afccbdb8b60dda50799a97f7",
}


def build_id(capture) -> str:
    key = (capture.manifest["qemu"]["package"], capture.arch)
    assert key in BUILD_IDS, f"{capture.name}: no build-id known for {key}: add it to {__name__}"
    return BUILD_IDS[key]
