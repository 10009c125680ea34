"""QEMU's trace as a per-queue timeline: what each virtqueue took, returned and held when the VM
paused (:mod:`.queues`)."""
