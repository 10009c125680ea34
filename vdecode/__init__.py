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


def __getattr__(name: str):
    """``vdecode.open`` (``docs/api.md``), imported when first used so that the command line,
    which does not need it, starts without it (PEP 562)."""
    if name == "open":
        from vdecode.api import open
        return open
    raise AttributeError(f"module 'vdecode' has no attribute {name!r}")
