"""What a device's transport makes the guest's driver do to QEMU's registers.

Two facts the dump cannot show and the log shows only indirectly, read from the transport (PCI,
virtio-mmio or virtio-ccw), the negotiated features and the profile's ``transport.json``: whether
the guest's interrupt handler reads (and so clears) the ISR, and which queue a Linux driver leaves
selected when it lets go of a device.

The transport is not in QEMU's replies: a proxy's device sits at ``.../virtio-backend`` on PCI and
on virtio-ccw alike, a virtio-mmio device at its own path. What tells ccw from PCI is the target:
``qemu-system-s390x`` puts virtio devices on the channel subsystem (``s390-ccw-virtio``, its only
machine), so a guest dump of an s390x guest means ccw. (A virtio-pci device on s390x needs a zPCI
bridge added by hand; it would be taken as ccw.)
"""

from __future__ import annotations

from collections.abc import Callable

from vdecode.profiles import Profile
from vdecode.sources.qemu_state import VirtIODeviceState
from vdecode.virtio.device import VIRTIO_F_VERSION_1, has_feature

__all__ = ("CCW_MACHINES", "transport_of", "is_pci", "guest_reads_isr", "queue_sel_after_removal")

#: a guest dump's ``info["machine"]`` for an s390x guest, lower-cased: the ELF dump's
#: ``e_machine`` name (``EM_S390`` for both widths) or the kdump header's utsname machine
#: (``S390X`` as QEMU's ``dump-guest-memory`` writes it, ``s390x`` as makedumpfile does)
CCW_MACHINES = frozenset({"s390", "s390x"})


def transport_of(dev: VirtIODeviceState, guest_arch: str | None = None) -> str:
    """``"pci"``, ``"ccw"`` or ``"mmio"``: a proxy's device (``.../virtio-backend``) is ccw on an
    s390x guest (``guest_arch``: the guest dump's ``info["machine"]``), PCI elsewhere; a device at
    its own path is virtio-mmio."""
    if not dev.canonical_path.endswith("/virtio-backend"):
        return "mmio"
    return "ccw" if (guest_arch or "").lower() in CCW_MACHINES else "pci"


def is_pci(dev: VirtIODeviceState, guest_arch: str | None = None) -> bool:
    """A PCI proxy's device (see :func:`transport_of`)."""
    return transport_of(dev, guest_arch) == "pci"


def guest_reads_isr(dev: VirtIODeviceState, profile: Profile, logged_isr: int | None,
                    logged_used: list[int | None],
                    machine: Callable[[], tuple[int, int] | None] | None = None,
                    guest_arch: str | None = None) -> bool:
    """Whether the guest's interrupt handler reads (and so clears) ``vdev->isr``.

    virtio-ccw has no ISR to read: QEMU signals the guest through indicator bits
    (``virtio_ccw_notify``) and nothing but a reset (``virtio_reset``) clears ``vdev->isr``, so
    on ccw it keeps every bit set since (0x1 for a queue interrupt, 0x3 after a config change),
    as under MSI-X. Only the PCI proxy's ISR read (``virtio_pci_isr_read``, the legacy
    ``VIRTIO_PCI_ISR`` port) and virtio-mmio's InterruptACK clear it.

    PCI proxies without MSI-X: those of ``transport.json`` ``pci_no_msix_by_default``, and those of
    ``pci_no_msix_up_to_machine`` on a machine type up to the version named (``machine()``, from
    the guest's SMBIOS tables: :func:`~vdecode.space.firmware.machine_version_of`, called only
    for a device with such a row; unknown, the rule is not applied). Under MSI-X nothing clears the ISR once a queue interrupt set it, so a logged
    ISR of 0 on a device whose queues had already completed requests shows a guest that reads it
    (``vectors=0``, or a guest without MSI).
    """
    transport_kind = transport_of(dev, guest_arch)
    if transport_kind == "ccw":
        return False
    if transport_kind == "mmio":
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


def queue_sel_after_removal(dev: VirtIODeviceState, reads_isr: bool,
                            guest_arch: str | None = None) -> int:
    """``vdev->queue_sel`` once Linux's driver let go of ``dev`` (the logged device).

    The driver resets the device (QEMU ``virtio_reset``: ``queue_sel = 0``), then deletes its
    queues in the order it made them. On a modern transport deleting one selects it: virtio-mmio
    version 2 (``vm_del_vq`` writes QUEUE_SEL, then QUEUE_READY 0) and modern PCI under MSI-X
    (``del_vq`` → ``vp_modern_queue_vector`` writes ``queue_select``), so the last queue the driver
    had set up (the highest logged queue with a ring) stays selected. A modern PCI device without
    MSI-X (the guest reads its ISR) selects nothing: 0. Legacy transports select each queue and
    write its PFN as 0, which QEMU takes as a device reset (``virtio_ioport_write``,
    ``virtio_mmio_write`` QUEUE_PFN 0): 0 again. virtio-ccw never selects a queue (its CCWs name
    the queue): 0.
    """
    kind = transport_of(dev, guest_arch)
    if not has_feature(dev, VIRTIO_F_VERSION_1) or kind == "ccw" or (kind == "pci" and reads_isr):
        return 0
    set_up = [qn for qn, q in dev.queues.items() if q.desc]
    return max(set_up, default=0)
