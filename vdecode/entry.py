"""The installed ``vdecode`` command: the common one-dump answer without importing click.

``vdecode DUMP [GUEST_DUMP] [--log LOG]... [--queue N] [--device D] [--json] [--all] [-v]`` is
what users type most, often in a loop over queues or dumps. Reading it with click meant importing
click (with gettext, uuid and threading) for every answer: several milliseconds of a
``--queue`` answer's start-up (issue 27). :func:`quick_view_args` reads only that form, and only
when it is plainly valid (a queue 0-1023, no value that looks like an option, no folder where a
file is wanted); anything else (a sub-command, ``--help``, ``--queue=2``, an error click words)
goes to the click command line (:mod:`vdecode.cli`) as before. Both run the same view
(:func:`vdecode.command_line.run_view`), so the output, the messages and the statuses are the
same either way (``tests/test_entry.py`` runs each form both ways and compares).
"""

from __future__ import annotations

import os
import sys

from vdecode.command_line import echo, finish, run_view

__all__ = ("console_main", "quick_view_args", "COMMANDS")

#: ``vdecode``'s sub-commands (``vdecode.cli``'s group; a test checks the two agree): a first
#: argument naming one is the command, never a dump, and goes to click.
COMMANDS = frozenset({"bundle", "cache", "info", "log", "profile", "qmp", "record", "report",
                      "trace", "triage", "view"})

_FLAGS = {"--json": "as_json", "--all": "show_all", "-v": "verbose", "--verbose": "verbose"}
_VALUES = {"--log": "logs", "--device": "device", "--queue": "queue"}


def quick_view_args(argv: list[str]) -> dict | None:
    """The view's arguments from ``argv`` (without the program name) when it is the plain form,
    else ``None`` (click reads it)."""
    if not argv or argv[0].startswith("-") or argv[0] in COMMANDS:
        return None
    out: dict = {"dumps": [], "logs": [], "device": None, "queue": None, "as_json": False,
                 "show_all": False, "verbose": False}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _FLAGS:
            out[_FLAGS[arg]] = True
        elif arg in _VALUES:
            if i + 1 == len(argv):
                return None
            value = argv[i + 1]
            if not value or value.startswith("-"):
                return None
            if arg == "--queue":
                if not (value.isascii() and value.isdigit()) or int(value) > 1023:
                    return None                    # click words the range error
                out["queue"] = int(value)
            elif arg == "--log":
                out["logs"].append(value)
            else:
                out["device"] = value
            i += 1
        elif arg and not arg.startswith("-"):
            out["dumps"].append(arg)
        else:
            return None
        i += 1
    # click.Path(dir_okay=False) refuses a folder, with its own words
    if any(os.path.isdir(p) for p in (*out["dumps"], *out["logs"])):
        return None
    out["dumps"], out["logs"] = tuple(out["dumps"]), tuple(out["logs"])
    return out


def _utf8(stream) -> bool:
    """Whether ``stream`` writes UTF-8 (else click's echo would re-wrap it: click's path runs)."""
    import codecs

    try:
        return codecs.lookup(stream.encoding).name == "utf-8"
    except (AttributeError, LookupError, TypeError):
        return False


def _quick(args: dict) -> int:
    """The plain view's exit status, with the outcomes click's ``main`` and ``vdecode.cli`` give
    the same command: an error as one line, Ctrl-C as "aborted", a closed pipe as status 1."""
    import errno

    from vdecode.errors import VdecodeError

    try:
        run_view(**args)
    except VdecodeError as err:
        echo(f"vdecode: error: {err}", err=True)
        return err.exit_status
    except (EOFError, KeyboardInterrupt):
        echo("", err=True)                 # click's main ends the ^C line
        echo("vdecode: aborted", err=True)
        return 130
    except OSError as err:
        if err.errno != errno.EPIPE:
            raise
        # as click's main: quiet the flushes at exit, status 1
        sys.stdout, sys.stderr = _Pacified(sys.stdout), _Pacified(sys.stderr)
        raise SystemExit(1) from None
    return 0


class _Pacified:
    """A stream whose ``flush`` ignores a reader that went away (as click's
    ``_PacifyFlushWrapper``)."""

    def __init__(self, wrapped) -> None:
        self.wrapped = wrapped

    def flush(self) -> None:
        try:
            self.wrapped.flush()
        except BrokenPipeError:
            pass

    def __getattr__(self, name: str):
        return getattr(self.wrapped, name)


def console_main() -> None:
    """The installed ``vdecode`` and ``python -m vdecode``: the plain view without click, anything
    else through :mod:`vdecode.cli`; then :func:`vdecode.command_line.finish` (a quick exit)."""
    args = quick_view_args(sys.argv[1:])
    if args is not None and _utf8(sys.stdout) and _utf8(sys.stderr):
        status = _quick(args)
    else:
        from vdecode.cli import _run

        status = _run()
    finish(status)
