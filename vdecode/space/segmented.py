"""
Segmented address spaces: sorted runs of file bytes
---------------------------------------------------
An address space made of disjoint runs ``[start, start+size)``, each backed by the file at
``offset`` for its first ``filesz`` bytes and by zeros after that (an ELF PT_LOAD whose ``p_memsz``
exceeds ``p_filesz``). ELF guest dumps (by ``p_paddr``, guest-physical) and QEMU process cores
(by ``p_vaddr``, host-virtual) both end up here (volatility3's ``layers/segmented.py``).

A read is one ``numpy.searchsorted`` over the run starts; a read inside one file-backed run is a
zero-copy view of the mapped file, a read that straddles adjacent runs is assembled.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from vdecode.errors import CorruptInput, MissingData
from vdecode.sources.files import FileView

__all__ = ("SegmentedSpace", "all_mapped")

_ZERO = -1          # offset of a run whose bytes are all zeros (the p_memsz tail of a segment)


def all_mapped(pieces: Iterator) -> bool:
    """Whether a ``mapping``-style iterator of pieces runs to its end: such iterators raise
    :class:`MissingData` at the first byte they do not hold, so "present" is "no raise"."""
    try:
        for _ in pieces:
            pass
    except MissingData:
        return False
    return True


class SegmentedSpace:
    """Sorted, disjoint runs of an address space, backed by one mapped file.

    :param name: the file's name, for messages.
    :param file: the mapped file holding the bytes.
    :param starts: run start addresses, sorted ascending.
    :param sizes: run sizes in the address space (``p_memsz``), each > 0.
    :param offsets: file offset of each run's first byte (ignored where ``filesz`` is 0).
    :param filesz: bytes of each run that the file holds (``p_filesz``); the rest reads as zeros.
    :param kind: the address kind named in messages: ``"guest-physical"``, ``"host-virtual"``.

    The caller guarantees that the file holds every ``[offset, offset+filesz)`` (``read_elf``
    checks that for every program header). Runs are sorted here; runs that overlap or wrap raise
    :class:`CorruptInput` (ELF guest dumps resolve or report overlaps first, with the program
    header's offset: ``vdecode.space.elf_space.guest_runs``).

    Example::

        >>> import numpy as np
        >>> from vdecode.sources.files import FileView
        >>> import tempfile, os
        >>> fd, p = tempfile.mkstemp(); _ = os.write(fd, b"abcdefgh"); os.close(fd)
        >>> s = SegmentedSpace(p, FileView(p), [0x1000, 0x1004], [4, 8], [0, 4], [4, 2])
        >>> bytes(s.read(0x1002, 8)), s.ranges()
        (b'cdef\\x00\\x00\\x00\\x00', [(4096, 12)])
        >>> s.file.close(); os.unlink(p)
    """

    def __init__(self, name: str, file: FileView, starts, sizes, offsets, filesz, *,
                 kind: str = "guest-physical") -> None:
        self.name, self.file, self.kind = name, file, kind
        starts = np.asarray(starts, dtype=np.uint64)
        sizes = np.asarray(sizes, dtype=np.uint64)
        offsets = np.asarray(offsets, dtype=np.uint64).astype(np.int64)
        filesz = np.minimum(np.asarray(filesz, dtype=np.uint64), sizes)
        order = np.argsort(starts, kind="stable")
        starts, sizes, offsets, filesz = starts[order], sizes[order], offsets[order], filesz[order]
        ends = starts + sizes
        bad = np.flatnonzero(ends < starts)                            # uint64 wrapped
        if bad.size:
            i = int(bad[0])
            raise CorruptInput(name, f"{kind} run at {int(starts[i]):#x} of {int(sizes[i]):#x} "
                                     f"bytes wraps the address space")
        bad = np.flatnonzero(starts[1:] < ends[:-1])
        if bad.size:
            i = int(bad[0])
            raise CorruptInput(name, f"{kind} runs overlap: [{int(starts[i]):#x}, {int(ends[i]):#x}) "
                                     f"and [{int(starts[i + 1]):#x}, {int(ends[i + 1]):#x})")
        # Split every run into its file-backed head and its zero tail, so each run is one kind.
        head = filesz > 0
        tail = filesz < sizes
        self.starts = np.concatenate([starts[head], (starts + filesz)[tail]])
        self.sizes = np.concatenate([filesz[head], (sizes - filesz)[tail]])
        self.offsets = np.concatenate([offsets[head], np.full(int(tail.sum()), _ZERO, np.int64)])
        order = np.argsort(self.starts, kind="stable")
        self.starts, self.sizes, self.offsets = self.starts[order], self.sizes[order], self.offsets[order]
        self.ends = self.starts + self.sizes
        self._mem = file.memory()
        # The last run a read landed in, as Python ints: reads cluster (a ring, a page table), and
        # this check costs less than one searchsorted call. Runs never change, so it is safe.
        self._hot = (0, 0, _ZERO)

    def __repr__(self) -> str:
        return f"SegmentedSpace({self.name!r}, {len(self.starts)} runs, {self.kind})"

    def _find(self, addr: int) -> int:
        """Index of the run holding ``addr``, or -1."""
        if addr < 0 or addr >= 1 << 64:
            return -1
        i = int(np.searchsorted(self.starts, np.uint64(addr), side="right")) - 1
        if i < 0 or addr >= int(self.ends[i]):
            return -1
        return i

    def read(self, addr: int, n: int) -> bytes | memoryview:
        """``n`` bytes at ``addr``: a zero-copy view when one file-backed run holds them all.

        :raises MissingData: when some byte of ``[addr, addr+n)`` is in no run.
        """
        start, end, off = self._hot
        if start <= addr and addr + n <= end and off != _ZERO and n >= 0:
            at = off + addr - start
            return self._mem[at:at + n]
        i = self._find(addr)
        if i >= 0 and addr + n <= int(self.ends[i]):
            start, off = int(self.starts[i]), int(self.offsets[i])
            self._hot = (start, int(self.ends[i]), off)
            if off == _ZERO:
                return bytes(n)
            return self.file.view(off + addr - start, n)
        if n == 0 and i >= 0:
            return b""
        parts = []
        for start, size, off in self.mapping(addr, n):
            parts.append(bytes(size) if off is None else self.file.view(off, size))
        return b"".join(parts)

    def mapping(self, addr: int, n: int) -> Iterator[tuple[int, int, int | None]]:
        """``(addr, size, file_offset)`` pieces covering ``[addr, addr+n)`` (offset ``None``: zeros).

        :raises MissingData: at the first byte that is in no run.
        """
        i = self._find(addr)
        pos, end = addr, addr + n
        while pos < end:
            if i < 0 or i >= len(self.starts) or pos < int(self.starts[i]) or pos >= int(self.ends[i]):
                raise MissingData(self.name, f"{self.kind} {addr:#x}+{n} is not in the dump"
                                  + (f" (nothing at {pos:#x})" if pos != addr else ""))
            run_end = min(end, int(self.ends[i]))
            off = int(self.offsets[i])
            yield pos, run_end - pos, (None if off == _ZERO else off + pos - int(self.starts[i]))
            pos, i = run_end, i + 1

    def is_present(self, addr: int, n: int) -> bool:
        """Whether every byte of ``[addr, addr+n)`` is in some run."""
        return all_mapped(self.mapping(addr, n))

    def reads_as_zeros(self, addr: int, n: int) -> bool:
        """Whether ``[addr, addr+n)`` is known to read as zeros without reading it: zero runs (a
        ``p_memsz`` tail) and holes of a sparse file. ``False`` when in doubt."""
        try:
            pieces = list(self.mapping(addr, n))
        except MissingData:
            return False
        return all(off is None or not self.file.holds_data(off, size) for _, size, off in pieces)

    def forget(self, addr: int, n: int) -> None:
        """A bulk reader is done with ``[addr, addr+n)``: let go of its pages
        (:meth:`~vdecode.sources.files.FileView.forget`); reading them again still works."""
        try:
            for _, size, off in self.mapping(addr, n):
                if off is not None:
                    self.file.forget(off, size)
        except MissingData:
            pass

    def ranges(self) -> list[tuple[int, int]]:
        """Sorted ``(start, size)`` pairs, adjacent runs merged."""
        if not len(self.starts):
            return []
        gap = self.starts[1:] != self.ends[:-1]
        firsts = np.concatenate([[0], np.flatnonzero(gap) + 1])
        lasts = np.concatenate([np.flatnonzero(gap), [len(self.starts) - 1]])
        return [(int(self.starts[a]), int(self.ends[b] - self.starts[a])) for a, b in zip(firsts, lasts)]

    def runs(self) -> Iterator[tuple[int, int, int | None]]:
        """Every run as ``(start, size, file_offset)`` (offset ``None`` for zero runs), sorted."""
        for s, z, o in zip(self.starts.tolist(), self.sizes.tolist(), self.offsets.tolist()):
            yield s, z, (None if o == _ZERO else o)
