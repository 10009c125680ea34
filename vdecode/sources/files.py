"""Read-only file access shared by every reader, and the address-space NewTypes.

Kept in stage 1 because readers map their files before any address space exists;
``vdecode.space.base`` re-exports these names.
"""

from __future__ import annotations

import errno
import mmap
import os
from pathlib import Path
from typing import NewType

from vdecode.errors import CorruptInput, InputError

Gpa = NewType("Gpa", int)            # guest-physical address
Hva = NewType("Hva", int)            # QEMU host-virtual address (process cores)
FileOffset = NewType("FileOffset", int)


class FileView:
    """A read-only memory map of one input file.

    The file is opened ``"rb"`` and mapped ``ACCESS_READ``: vdecode never writes its inputs. An
    empty file gives an empty view (``mmap`` refuses length 0).

    :param path: the file to map.
    :raises InputError: when the file cannot be opened.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.name = str(path)
        try:
            with open(self.path, "rb") as f:
                self.size = os.fstat(f.fileno()).st_size
                self._map = (mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                             if self.size else None)
        except OSError as err:
            raise InputError(self.name, f"cannot open: {err.strerror or err}") from err
        self._mv = memoryview(self._map) if self._map is not None else memoryview(b"")

    def view(self, offset: int, n: int, what: str = "data") -> memoryview:
        """Zero-copy bytes ``[offset, offset+n)`` of the file.

        :raises CorruptInput: when the range runs past the end of the file (a truncated input).
        """
        if offset < 0 or n < 0 or offset + n > self.size:
            raise CorruptInput(self.name, f"{what} ({n} bytes) runs past the end of the file "
                                          f"({self.size} bytes)", offset=offset)
        return self._mv[offset:offset + n]

    def memory(self) -> memoryview:
        """The whole file, zero-copy."""
        return self._mv

    def forget(self, offset: int = 0, n: int | None = None) -> None:
        """Let go of this process's mapping of ``[offset, offset+n)`` (default: to the end)
        after a bulk read (``MADV_DONTNEED``): the bytes stay in the page cache and come back
        when read again, and resident memory does not grow with the file as it is read."""
        end = self.size if n is None else min(self.size, offset + n)
        start = max(0, offset) // mmap.PAGESIZE * mmap.PAGESIZE
        if self._map is not None and end > start and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED, start, end - start)

    def holds_data(self, offset: int, n: int) -> bool:
        """Whether ``[offset, offset+n)`` may hold non-zero bytes: ``False`` only where the file
        system says it is a hole of a sparse file (``SEEK_DATA``), which reads as zeros."""
        seek_data = getattr(os, "SEEK_DATA", None)
        if n <= 0 or seek_data is None:
            return n > 0
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return True
        try:
            return os.lseek(fd, offset, seek_data) < offset + n
        except OSError as err:          # ENXIO: no data at or after offset
            return err.errno != errno.ENXIO
        finally:
            os.close(fd)

    def close(self) -> None:
        """Unmap the file; views still held by callers keep it mapped until they go."""
        self._mv.release()
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:       # a zero-copy read() result is still alive: let GC unmap
                pass

    def __enter__(self) -> "FileView":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_at(layout, view: FileView, offset: int, what: str = "header", *,
             sizeof: int | None = None, **params):
    """Parse one ``layout`` (a :class:`vdecode.binary.Layout` or a construct one) at ``offset`` of
    ``view`` (pyelftools' ``struct_parse``).

    The one place that turns a ``ConstructError`` (or a ``LayoutError``, its text the same) into
    :class:`CorruptInput`; the field path stays on the same line. The layout must have a fixed size (``sizeof()``): the bytes are bounds-checked
    against the file before parsing.

    :param sizeof: the layout's size when the caller knows it (``sizeof()`` walks the layout).
    :param params: values the layout reads as ``this._params``.
    :raises CorruptInput: when the bytes run past the end of the file or do not parse.
    """
    from vdecode.binary import Layout, LayoutError

    if isinstance(layout, Layout):          # no construct: an answer on a bundle never imports it
        data = view.view(offset, layout.size if sizeof is None else sizeof, what)
        try:
            return layout.parse(data)
        except LayoutError as err:
            raise CorruptInput(view.name, f"{what}: {' '.join(str(err).split())}",
                               offset=offset) from err
    from construct import ConstructError   # keep construct out of FileView's import cost

    size = sizeof
    if size is None:
        try:
            size = layout.sizeof(**params)
        except ConstructError:
            size = None
    data = view.view(offset, size, what) if size is not None else view.memory()[offset:]
    try:
        return layout.parse(data, **params)
    except ConstructError as err:
        # construct puts the field path and the reason on separate lines; keep one line
        reason = " ".join(str(err).split())
        raise CorruptInput(view.name, f"{what}: {reason}", offset=offset) from err
