"""vdecode: QEMU's virtio QMP answers, after the VM is gone.

Data flows one way: sources (dumps, QEMU cores, QMP logs) -> guest-physical address space ->
virtio model -> reconstruction (QMP replies, findings) -> rendering (JSON, text, bundle).
"""

__version__ = "0.1.0"

from vdecode.errors import (CorruptInput, InputError, MissingData, NotInInput,  # noqa: E402
                            OutputError, QmpLogError, RingError, SetupError, UnsupportedInput,
                            VdecodeError)

__all__ = ("open", "VdecodeError", "InputError", "CorruptInput", "UnsupportedInput", "NotInInput",
           "MissingData", "RingError", "QmpLogError", "OutputError", "SetupError")


# the public API's names (docs/api.md), from vdecode.api
_API = frozenset({"open", "machine_of", "Machine", "View", "ViewInput", "Report", "Selection",
                  "Device", "Queue", "Rings", "Indices", "Notification", "PackedEvents", "Chain",
                  "Descriptor", "Preview", "UsedEntry", "Finding", "CarvedGroup", "CarvedQueue",
                  "CarvedPacked", "ViewTrace", "TracedQueue", "QueueTrace", "TracedElement",
                  "TraceMoment"})


def __getattr__(name: str):
    """``vdecode.open``, ``vdecode.Queue``... (``docs/api.md``), imported when first used so that
    the command line, which does not need them, starts without them (PEP 562)."""
    if name in _API:
        import vdecode.api
        return getattr(vdecode.api, name)
    raise AttributeError(f"module 'vdecode' has no attribute {name!r}")
