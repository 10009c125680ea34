"""The one exception tree of vdecode.

Every error that reaches the user is a :class:`VdecodeError`: an input vdecode cannot use, never a
vdecode bug. ``cli.py`` prints it as one line, ``vdecode: error: <message>``, and exits with the
status of its class. Any other exception is a bug and keeps its traceback.

::

    VdecodeError              input vdecode cannot use (never a vdecode bug)
    ├── InputError            unknown format, truncated, unreadable
    │   ├── CorruptInput      structure contradicts itself: magic, sizes, decompression
    │   ├── UnsupportedInput  valid but not handled yet; says what is missing
    │   └── NotInInput        a device or queue asked for that the input does not have
    ├── MissingData           address not in the dump, excluded page (not corruption)
    ├── RingError             guest ring inconsistent where an answer needs it
    ├── QmpLogError           a log record that is not understood
    ├── OutputError           an output path that cannot be written (or is an input)
    └── SetupError            not the input: an optional extra missing, a service not answering

Exit statuses: 2 InputError, CorruptInput, QmpLogError, OutputError (and click's usage errors:
an option out of range, a missing argument); 3 UnsupportedInput, NotInInput; 4 MissingData;
5 RingError; 6 SetupError.

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


class NotInInput(InputError):
    """A device or queue the user asked for (``--device``, ``--queue``) that the input does not
    have; the reason lists what it has. Status 3, as for ``UnsupportedInput``: the input is
    valid, the question is not one it can answer (not a corrupt file, status 2)."""

    exit_status = 3


class MissingData(VdecodeError):
    """An address that is not in the dump, or a page the dump excluded. Not corruption."""

    exit_status = 4


class RingError(VdecodeError):
    """A guest ring is inconsistent where the requested answer needs it."""

    exit_status = 5


class QmpLogError(VdecodeError):
    """A QMP log record that is not understood."""


class OutputError(VdecodeError):
    """An output path (``-o``, ``--socket``) that cannot be written: its folder is missing, it is
    a folder, it is not writable, or it is one of the inputs (writing would destroy them)."""


class SetupError(VdecodeError):
    """Not the input's fault and not a bug: what the run needs around it is not there (an
    optional extra not installed, a service that does not answer). Trying again elsewhere or
    later may work; a distinct status lets a script tell this from bad input."""

    exit_status = 6
