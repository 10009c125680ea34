"""An opened dump: its guest-physical address space, what the file said about itself, and (for a
QEMU process core or a bundle) QEMU's own virtio state.

Every reader's ``open_*`` returns a :class:`Dump`; ``vdecode.space.open.open_dump`` picks the
reader from the file's content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vdecode.sources.files import FileView
from vdecode.sources.qemu_state import QemuVirtioState
from vdecode.space.base import AddressSpace

if TYPE_CHECKING:                        # the log readers load only when a log is read
    from vdecode.sources.qmp_log.model import QmpLog


@dataclass
class Dump:
    """One opened input.

    :param path: the file as the user named it (for messages).
    :param format: ``"elf"``, ``"elf-paging"``, ``"vmcore"``, ``"kdump"``, ``"kdump-flattened"``,
        ``"qemu-core"`` or ``"bundle"``.
    :param space: guest-physical memory (``None`` for a QEMU core without guest RAM).
    :param info: format facts for ``vdecode info`` (JSON-able values only).
    :param qemu: QEMU's virtio state when the input holds it (process core, bundle).
    :param files: the mapped files, closed by :meth:`close`.
    :param qmp_log: a QMP log the input carries (a bundle's embedded log), used when the user
        gives no ``--log``.
    """

    path: str
    format: str
    space: AddressSpace | None
    info: dict[str, Any] = field(default_factory=dict)
    qemu: QemuVirtioState | None = None
    files: list[FileView] = field(default_factory=list)
    qmp_log: QmpLog | None = None

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> "Dump":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
