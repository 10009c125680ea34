"""Which queue a Linux driver leaves selected when it lets go of a device, and whether its
interrupt handler reads (clears) the ISR, by transport."""

from __future__ import annotations

from vdecode.sources.qemu_state import VirtIODeviceState, VirtQueueState
from vdecode.profiles import load_profile
from vdecode.virtio.transport import guest_reads_isr, queue_sel_after_removal, transport_of

MODERN = 1 << 32


def _dev(path: str, features: int) -> VirtIODeviceState:
    queues = {0: VirtQueueState(0, desc=0x1000), 1: VirtQueueState(1, desc=0x2000),
              2: VirtQueueState(2, desc=0x3000), 3: VirtQueueState(3, desc=0)}
    return VirtIODeviceState(path, guest_features=features, queues=queues)


def test_deleting_the_queues_selects_the_last_one_set_up():
    pci = "/machine/peripheral-anon/device[5]/virtio-backend"
    # modern PCI under MSI-X: del_vq -> vp_modern_queue_vector writes queue_select
    assert queue_sel_after_removal(_dev(pci, MODERN), reads_isr=False) == 2
    # modern PCI, INTx: nothing selects a queue after virtio_reset's 0
    assert queue_sel_after_removal(_dev(pci, MODERN), reads_isr=True) == 0
    # virtio-mmio version 2 selects each queue it deletes
    assert queue_sel_after_removal(_dev("/machine/peripheral/ctlser", MODERN), reads_isr=True) == 2
    # legacy PCI and mmio select it too, but write its PFN as 0: QEMU resets the device
    assert queue_sel_after_removal(_dev(pci, 0), reads_isr=False) == 0
    assert queue_sel_after_removal(_dev("/machine/peripheral/ctlser", 0), reads_isr=True) == 0
    # virtio-ccw names the queue in each CCW: queue_sel stays virtio_reset's 0
    ccw = _dev("/machine/peripheral/blk0/virtio-backend", MODERN)
    assert queue_sel_after_removal(ccw, reads_isr=False, guest_arch="s390") == 0
    assert queue_sel_after_removal(ccw, reads_isr=False, guest_arch="x86_64") == 2


def test_the_transport_is_the_path_and_the_guest_arch():
    backend = VirtIODeviceState("/machine/peripheral/bal0/virtio-backend")
    mmio = VirtIODeviceState("/machine/peripheral/rng0")
    assert transport_of(backend) == transport_of(backend, "x86_64") == "pci"
    assert transport_of(backend, "aarch64") == "pci"
    # an ELF dump's EM_S390, QEMU's kdump utsname "S390X", makedumpfile's "s390x"
    assert {transport_of(backend, a) for a in ("s390", "S390X", "s390x")} == {"ccw"}
    assert transport_of(mmio, "aarch64") == transport_of(mmio) == "mmio"


def test_no_guest_reads_a_ccw_devices_isr():
    """virtio-balloon-pci has no MSI-X (INTx: Linux's vp_interrupt reads the ISR); the same
    balloon on virtio-ccw has no ISR register, so its isr keeps every bit set since the last
    reset (real s390x capture: 0 at the log, 3 after a resize)."""
    profile = load_profile("7.2")
    bal = VirtIODeviceState("/machine/peripheral/bal0/virtio-backend", name="virtio-balloon")
    assert guest_reads_isr(bal, profile, 0, [0, 0, 0])
    assert not guest_reads_isr(bal, profile, 0, [0, 0, 0], guest_arch="s390")
    assert guest_reads_isr(VirtIODeviceState("/machine/peripheral/rng0", name="virtio-rng"),
                           profile, 1, [5], guest_arch="aarch64")
