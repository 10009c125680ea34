"""Which queue a Linux driver leaves selected when it lets go of a device, by transport."""

from __future__ import annotations

from vdecode.sources.qemu_state import VirtIODeviceState, VirtQueueState
from vdecode.virtio.transport import queue_sel_after_removal

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
