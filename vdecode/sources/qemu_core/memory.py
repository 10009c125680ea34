"""Reading QEMU's host-virtual memory in a core: pointer-checked reads, C strings, scans, and the
one message for a profile that does not fit."""

from __future__ import annotations

from typing import Any, Iterator, Protocol

import numpy as np
from construct import ConstructError

from vdecode.errors import CorruptInput, MissingData, UnsupportedInput
from vdecode.sources.qemu_core.layout import QemuLayout

__all__ = ("HostMemory", "CoreReader", "profile_mismatch", "scan_runs", "find_pointers", "printable")

PF_W = 2
MAX_STRING = 4096
MAX_DEVICES = 4096
MAX_RAMBLOCKS = 4096
NT_GNU_BUILD_ID = 3


class HostMemory(Protocol):
    """QEMU's host-virtual memory as the core holds it (a ``SegmentedSpace`` by ``p_vaddr``)."""

    name: str

    def read(self, addr: int, n: int) -> bytes | memoryview: ...

    def is_present(self, addr: int, n: int) -> bool: ...

    def mapping(self, addr: int, n: int) -> Iterator[tuple[int, int, int | None]]: ...


class CoreReader:
    """Pointer-checked reads of host memory; every failure names the core and the address.

    :param device_names: ``device_id`` → name as QEMU fills ``VirtIODevice.name`` (the profile's
        ``devices.json`` table; default the layout's own), for names the core does not hold.
    ``skipped`` collects the profile checks that could not run because their bytes are absent
    from the core (absent is not wrong: such a check is reported, never failed).
    """

    def __init__(self, mem: HostMemory, layout: QemuLayout,
                 device_names: dict[int, str] | None = None) -> None:
        self.mem, self.layout, self.name = mem, layout, mem.name
        self.device_names = device_names if device_names is not None else layout.device_names
        self.skipped: list[str] = []

    def skip(self, check: str, why: str) -> None:
        """Record a profile check that the core's absent bytes prevent (once per check)."""
        line = f"check {check!r} skipped: {why}"
        if not any(s.startswith(f"check {check!r} skipped") for s in self.skipped):
            self.skipped.append(line)

    def file_offset(self, addr: int) -> int | None:
        try:
            for _, _, off in self.mem.mapping(addr, 1):
                return off
        except MissingData:
            return None
        return None

    def valid(self, addr: int, n: int) -> bool:
        return addr != 0 and addr % 1 == 0 and self.mem.is_present(addr, n)

    def read(self, addr: int, n: int, what: str) -> bytes | memoryview:
        if addr == 0:
            raise CorruptInput(self.name, f"{what}: NULL pointer")
        try:
            return self.mem.read(addr, n)
        except MissingData as err:
            raise MissingData(self.name, f"{what} at host-virtual {addr:#x}+{n} is not in the "
                                         f"core") from err

    def struct(self, name: str, addr: int, what: str):
        size = self.layout.sizes[name]
        data = self.read(addr, size, what)
        try:
            return self.layout.structs[name].parse(data)
        except ConstructError as err:          # fixed-size scalars: only on a broken profile
            raise CorruptInput(self.name, f"{what} ({name}): {err}",
                               offset=self.file_offset(addr)) from err

    def held_struct(self, name: str, addr: int):
        """The ``name`` struct at ``addr``, or None when the core does not hold all of it (or
        ``addr`` is NULL): for candidates from pointer scans and ``container`` chains, where an
        unreadable one is skipped, not an error."""
        if not self.valid(addr, self.layout.sizes[name]):
            return None
        return self.struct(name, addr, f"{name} at {addr:#x}")

    def held_structs(self, name: str, addrs) -> Iterator[tuple[int, Any]]:
        """``(addr, struct)`` for each of ``addrs`` whose whole ``name`` struct the core holds
        (:meth:`held_struct`), in order: pointer-scan hits, the unreadable ones skipped."""
        for addr in addrs:
            st = self.held_struct(name, addr)
            if st is not None:
                yield addr, st

    def cstring(self, addr: int, what: str, limit: int = MAX_STRING) -> str:
        """A NUL-terminated string at ``addr`` (read up to the end of its run)."""
        if addr == 0:
            raise CorruptInput(self.name, f"{what}: NULL pointer")
        buf = b""
        pos = addr
        while len(buf) < limit:
            chunk_n = min(256, limit - len(buf))
            try:
                chunk = bytes(self.mem.read(pos, chunk_n))
            except MissingData:
                chunk = b""
                for n in (64, 16, 1):
                    if self.mem.is_present(pos, n):
                        chunk = bytes(self.mem.read(pos, n))
                        break
                if not chunk:
                    raise MissingData(self.name, f"{what}: string at host-virtual {addr:#x} is "
                                                 f"not in the core")
            nul = chunk.find(b"\0")
            if nul >= 0:
                return (buf + chunk[:nul]).decode("utf-8", "backslashreplace")
            buf += chunk
            pos += len(chunk)
        raise CorruptInput(self.name, f"{what}: string at host-virtual {addr:#x} has no NUL in "
                                      f"{limit} bytes", offset=self.file_offset(addr))


def profile_mismatch(layout: QemuLayout, mem: HostMemory, check: str, detail: str,
              offset: int | None = None) -> CorruptInput:
    return CorruptInput(mem.name, f"{layout.label} does not fit this core: check {check!r} "
                                  f"failed: {detail}", offset=offset)



def scan_runs(mem: HostMemory, runs: list[tuple[int, int]]) -> Iterator[tuple[int, memoryview]]:
    for start, size in runs:
        data = mem.read(start, size)
        yield start, (data if isinstance(data, memoryview) else memoryview(data))



def find_pointers(mem: HostMemory, runs: list[tuple[int, int]], values: list[int],
                  field_offset: int) -> dict[int, list[int]]:
    """For each pointer value, the addresses of structs whose field at ``field_offset`` holds it."""
    out: dict[int, list[int]] = {v: [] for v in values}
    if field_offset % 8:
        raise UnsupportedInput(mem.name, "pointer scan needs an 8-byte-aligned field")
    want = np.array(sorted(set(values)), dtype="<u8")
    for start, mv in scan_runs(mem, runs):
        n8 = len(mv) // 8
        w64 = np.frombuffer(mv[:n8 * 8], dtype="<u8")
        for v in want:
            for k in np.flatnonzero(w64 == v).tolist():
                out[int(v)].append(start + k * 8 - field_offset)
    return out


def printable(s: str) -> bool:
    return bool(s) and all(32 <= ord(c) < 127 for c in s)


