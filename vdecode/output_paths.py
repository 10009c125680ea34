"""Output paths checked before any work: ``bundle -o``, ``profile -o``, ``qmp --socket``.

Why before: a bundle takes seconds to minutes to build, and writing over an input that is
memory-mapped (``bundle dump.elf -o dump.elf``) would truncate the file under the reader. Each
problem is one :class:`~vdecode.errors.OutputError` line naming the path and what is wrong with
it; the write itself can still fail later (a full disk), which the writers report the same way.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from vdecode.errors import OutputError

__all__ = ("check_output",)


def check_output(path: str, option: str, inputs: Iterable[str | None] = (), *,
                 socket: bool = False) -> None:
    """Raise :class:`OutputError` unless ``path`` can be created or replaced as ``option``'s file.

    :param inputs: the command's input files: the output must be none of them.
    :param socket: ``path`` is a unix socket to bind: an existing file there is replaced only if
        it is a socket (a stale one from an earlier run), never a regular file.
    """
    def fail(reason: str) -> OutputError:
        return OutputError(path, f"cannot write {option} here: {reason}")

    if not path:
        raise fail("the path is empty")
    if socket and len(os.fsencode(path)) > 107:    # sun_path is 108 bytes with its NUL (Linux)
        raise fail(f"{len(os.fsencode(path))} bytes long; a unix socket's path has at most 107")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        st = None                                   # a parent is a file: said below
    except OSError as err:
        raise fail(err.strerror or str(err)) from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise fail("it is a folder; give a file name in it")
        for given in inputs:
            if given and _same_file(path, given):
                raise fail(f"it is an input ({given}); writing would destroy it")
        if socket and not stat.S_ISSOCK(st.st_mode):
            raise fail("it is a file, not a socket; not replacing it")
        if not os.access(path, os.W_OK):
            raise fail("permission denied (the file is not writable)")
        return
    folder = os.path.dirname(path) or "."           # as the user wrote it, for the message
    if not os.path.exists(folder):
        missing = folder                            # the first folder of the path that is absent
        while os.path.dirname(missing) and not os.path.exists(os.path.dirname(missing)):
            missing = os.path.dirname(missing)
        raise fail(f"the folder {folder} does not exist"
                   + (f" ({missing} is missing)" if missing != folder else ""))
    if not os.path.isdir(folder):
        raise fail(f"{folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise fail(f"permission denied (cannot create files in {folder})")


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
