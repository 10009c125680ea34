"""Guest-physical address spaces: the interface every dump reader provides.

A source (ELF dump, kdump, QEMU process core, bundle) turns its file into an :class:`AddressSpace`:
bytes by guest-physical address, the RAM ranges, and whether a range is present. Readers never do
address arithmetic for their callers; the virtio model only ever talks to this interface.

Addresses carry their space in their type: :data:`Gpa` (guest-physical), :data:`Hva` (QEMU host
virtual, in process cores), :data:`FileOffset` (a byte offset in an input file).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from vdecode.sources.files import FileOffset, FileView, Gpa, Hva

__all__ = ("AddressSpace", "FileOffset", "FileView", "Gpa", "Hva")


@runtime_checkable
class AddressSpace(Protocol):
    """Guest-physical memory, however it is stored.

    ``name`` is the input file's name, for error messages. ``read`` raises
    :class:`~vdecode.errors.MissingData` for an address the dump does not hold (outside RAM,
    excluded page, filtered dump) and :class:`~vdecode.errors.CorruptInput` when the bytes
    exist but cannot be decoded.
    """

    name: str

    def read(self, gpa: Gpa, n: int) -> bytes | memoryview:
        """``n`` bytes at guest-physical ``gpa`` (zero-copy where the file has them contiguous)."""
        ...

    def ranges(self) -> list[tuple[Gpa, int]]:
        """The RAM ranges the dump covers, as sorted ``(start, size)`` pairs, merged where adjacent."""
        ...

    def is_present(self, gpa: Gpa, n: int) -> bool:
        """Whether every byte of ``[gpa, gpa+n)`` can be read."""
        ...
