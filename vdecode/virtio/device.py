"""The virtio model: QEMU's devices and queues beside the guest memory their rings live in.

:class:`VirtioMachine` pairs a :class:`~vdecode.sources.qemu_state.QemuVirtioState` (what QEMU
held) with a guest-physical :class:`~vdecode.space.base.AddressSpace` (what the guest wrote), and
reads single ring fields the way QEMU 7.2's accessors do (``vring_avail_idx``,
``vring_used_flags``, ``include/hw/virtio/virtio-access.h`` byte order). Bulk ring work is in
:mod:`vdecode.virtio.split_ring` and :mod:`vdecode.virtio.chains`.
"""

from __future__ import annotations


from vdecode.errors import MissingData
from vdecode.frozen import record
from vdecode.sources.qemu_state import (VIRTIO_DEVICE_ENDIAN_BIG, QemuVirtioState,
                                        VirtIODeviceState, VirtQueueState)
from vdecode.space.base import AddressSpace, Gpa

VIRTIO_F_VERSION_1 = 32
VIRTIO_F_RING_PACKED = 34
VIRTIO_RING_F_EVENT_IDX = 29
VIRTIO_CONFIG_S_DRIVER_OK = 0x04
VIRTIO_CONFIG_S_NEEDS_RESET = 0x40


def has_feature(dev: VirtIODeviceState, bit: int) -> bool:
    """``virtio_vdev_has_feature``: a bit of the *negotiated* (guest) features."""
    return bool((dev.guest_features or 0) >> bit & 1)


def guest_is_big_endian(devices) -> bool:
    """Whether the guest is big-endian (s390x): QEMU gives every device of a big-endian target
    ``device_endian`` big, whatever the device's virtio version; its driver's records in guest
    RAM are in that order."""
    return any(d.device_endian == VIRTIO_DEVICE_ENDIAN_BIG for d in devices)


def is_big_endian(dev: VirtIODeviceState) -> bool:
    """``virtio_access_is_big_endian``: little for VERSION_1, else the device's endianness.

    On little-endian targets a legacy device's ``device_endian`` is little, so this is QEMU's
    rule for every target (bi-endian ones follow the CPU mode at the last reset).
    """
    if has_feature(dev, VIRTIO_F_VERSION_1):
        return False
    return dev.device_endian == VIRTIO_DEVICE_ENDIAN_BIG


@record
class RingHeader:
    """The 16-bit fields QEMU reads one at a time: ``avail->flags/idx``, ``used->flags/idx``."""

    avail_flags: int
    avail_idx: int
    used_flags: int
    used_idx: int


@record
class VirtioMachine:
    """QEMU's virtio state plus guest memory, with the reads QEMU's ring accessors make.

    Frozen like the state it holds: a stage that changes the state returns a new machine
    (:meth:`with_state`), over the same guest memory.

    :param state: the devices as QEMU held them (from a core, a log, or both).
    :param space: guest-physical memory, ``None`` when the input has none (a core without RAM).
    """

    state: QemuVirtioState
    space: AddressSpace | None

    def with_state(self, state: QemuVirtioState) -> VirtioMachine:
        return VirtioMachine(state, self.space)

    def find_device(self, path: str) -> VirtIODeviceState | None:
        """``virtio_device_find``: the first device on ``virtio_list`` with exactly this path."""
        for dev in self.state.devices:
            if dev.canonical_path == path:
                return dev
        return None

    def read_u16(self, dev: VirtIODeviceState, gpa: int, what: str) -> int:
        """One ring field in the device's byte order.

        :raises MissingData: when the dump does not hold it (the message says which field).
        """
        if self.space is None:
            raise MissingData("(no guest memory)", f"{what} at guest-physical {gpa:#x}: the "
                                                   f"input holds no guest RAM")
        data = bytes(self._read(gpa, 2, what))
        return int.from_bytes(data, "big" if is_big_endian(dev) else "little")

    def read(self, gpa: int, n: int, what: str) -> bytes:
        return bytes(self._read(gpa, n, what))

    def _read(self, gpa: int, n: int, what: str):
        if self.space is None:
            raise MissingData("(no guest memory)", f"{what}: the input holds no guest RAM")
        try:
            return self.space.read(Gpa(gpa), n)
        except MissingData as err:
            raise MissingData(err.source, f"{what}: {err.reason}", offset=err.offset) from err

    def avail_ring(self, dev: VirtIODeviceState, q: VirtQueueState, slot: int) -> int:
        """``vring_avail_ring(vq, i)``: ``avail->ring[i]``."""
        return self.read_u16(dev, q.avail + 4 + 2 * slot, f"avail ring slot {slot} "
                                                         f"(queue {q.queue_index})")

    def header(self, dev: VirtIODeviceState, q: VirtQueueState) -> RingHeader:
        """The avail and used headers of a split ring."""
        i = q.queue_index
        return RingHeader(
            avail_flags=self.read_u16(dev, q.avail, f"avail flags (queue {i})"),
            avail_idx=self.read_u16(dev, q.avail + 2, f"avail idx (queue {i})"),
            used_flags=self.read_u16(dev, q.used, f"used flags (queue {i})"),
            used_idx=self.read_u16(dev, q.used + 2, f"used idx (queue {i})"))
