"""What a device's transport makes the guest's driver do to QEMU's registers.

Two facts the dump cannot show and the log shows only indirectly, read from the transport (PCI
or virtio-mmio), the negotiated features and the profile's ``transport.json``: whether the
guest's interrupt handler reads (and so clears) the ISR, and which queue a Linux driver leaves
selected when it lets go of a device.
"""

from __future__ import annotations

from collections.abc import Callable

from vdecode.profiles import Profile
from vdecode.sources.qemu_state import VirtIODeviceState
from vdecode.virtio.device import VIRTIO_F_VERSION_1, has_feature

__all__ = ("is_pci", "guest_reads_isr", "queue_sel_after_removal")


def is_pci(dev: VirtIODeviceState) -> bool:
    """A PCI proxy's device (``.../virtio-backend``); otherwise virtio-mmio."""
    return dev.canonical_path.endswith("/virtio-backend")


def guest_reads_isr(dev: VirtIODeviceState, profile: Profile, logged_isr: int | None,
                    logged_used: list[int | None],
                    machine: Callable[[], tuple[int, int] | None] | None = None) -> bool:
    """Whether the guest's interrupt handler reads (and so clears) ``vdev->isr``.

    PCI proxies without MSI-X: those of ``transport.json`` ``pci_no_msix_by_default``, and those of
    ``pci_no_msix_up_to_machine`` on a machine type up to the version named (``machine()``, from
    the guest's SMBIOS tables: :func:`~vdecode.space.firmware.machine_version_of`, called only
    for a device with such a row; unknown, the rule is not applied). Under MSI-X nothing clears the ISR once a queue interrupt set it, so a logged
    ISR of 0 on a device whose queues had already completed requests shows a guest that reads it
    (``vectors=0``, or a guest without MSI).
    """
    if not is_pci(dev):
        return True                                   # virtio-mmio: vm_interrupt() reads it
    transport = profile.table("transport")
    if dev.name in transport["pci_no_msix_by_default"]:
        return True
    up_to = transport.get("pci_no_msix_up_to_machine", {}).get(dev.name)
    if up_to is not None and machine is not None:
        version = machine()
        if version is not None and version <= _version(up_to):
            return True
    return logged_isr == 0 and any(u for u in logged_used)


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


def queue_sel_after_removal(dev: VirtIODeviceState, reads_isr: bool) -> int:
    """``vdev->queue_sel`` once Linux's driver let go of ``dev`` (the logged device).

    The driver resets the device (QEMU ``virtio_reset``: ``queue_sel = 0``), then deletes its
    queues in the order it made them. On a modern transport deleting one selects it: virtio-mmio
    version 2 (``vm_del_vq`` writes QUEUE_SEL, then QUEUE_READY 0) and modern PCI under MSI-X
    (``del_vq`` → ``vp_modern_queue_vector`` writes ``queue_select``), so the last queue the driver
    had set up (the highest logged queue with a ring) stays selected. A modern PCI device without
    MSI-X (the guest reads its ISR) selects nothing: 0. Legacy transports select each queue and
    write its PFN as 0, which QEMU takes as a device reset (``virtio_ioport_write``,
    ``virtio_mmio_write`` QUEUE_PFN 0): 0 again.
    """
    if not has_feature(dev, VIRTIO_F_VERSION_1) or (is_pci(dev) and reads_isr):
        return 0
    set_up = [qn for qn, q in dev.queues.items() if q.desc]
    return max(set_up, default=0)
