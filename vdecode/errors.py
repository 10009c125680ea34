"""The one exception tree of vdecode.

Every error that reaches the user is a :class:`VdecodeError`: an input vdecode cannot use, never a
vdecode bug. ``cli.py`` prints it as one line, ``vdecode: error: <message>``, and exits with the
status of its class. Any other exception is a bug and keeps its traceback.

::

    VdecodeError              input vdecode cannot use (never a vdecode bug)
    ├── InputError            unknown format, truncated, unreadable
    │   ├── CorruptInput      structure contradicts itself: magic, sizes, decompression
    │   └── UnsupportedInput  valid but not handled yet; says what is missing
    ├── MissingData           address not in the dump, excluded page (not corruption)
    ├── RingError             guest ring inconsistent where an answer needs it
    └── QmpLogError           a log record that is not understood

Messages put *where* before *why* (libkdumpfile's ``set_error`` habit): the file, then the offset
or line, then the reason.
"""

from __future__ import annotations


class VdecodeError(Exception):
    """Input vdecode cannot use.

    :param source: the file (or other input) the problem is in, as the user named it.
    :param reason: what is wrong, one line.
    :param offset: byte offset in ``source`` where it was found, if known.
    :param line: line number in ``source`` (logs), if known.
    """

    exit_status = 2

    def __init__(self, source: str, reason: str, *, offset: int | None = None,
                 line: int | None = None) -> None:
        self.source, self.reason, self.offset, self.line = source, reason, offset, line
        if offset is not None:
            where = f" at offset {offset:#x}"
        elif line is not None:
            where = f" line {line}"
        else:
            where = ""
        super().__init__(f"{source}{where}: {reason}")


class InputError(VdecodeError):
    """Unknown format, truncated or unreadable input."""


class CorruptInput(InputError):
    """The input's structure contradicts itself (magic, sizes, decompression)."""


class UnsupportedInput(InputError):
    """Valid input that vdecode does not handle yet; the reason says what is missing."""

    exit_status = 3


class MissingData(VdecodeError):
    """An address that is not in the dump, or a page the dump excluded. Not corruption."""

    exit_status = 4


class RingError(VdecodeError):
    """A guest ring is inconsistent where the requested answer needs it."""

    exit_status = 5


class QmpLogError(VdecodeError):
    """A QMP log record that is not understood."""
