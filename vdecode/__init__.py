"""vdecode: QEMU's virtio QMP answers, after the VM is gone.

Data flows one way: sources (dumps, QEMU cores, QMP logs) -> guest-physical address space ->
virtio model -> reconstruction (QMP replies, findings) -> rendering (JSON, text, bundle).
"""

__version__ = "0.1.0"
