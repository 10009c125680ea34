"""What the two command lines share: click's (:mod:`vdecode.cli`) and the plain one that reads
``vdecode DUMP [--queue N]`` without click (:mod:`vdecode.entry`). The view's body, its warnings
and the process exit are here, once, so the two give the same output, messages and statuses.
"""

from __future__ import annotations

import os
import sys

__all__ = ("run_view", "open_machine", "terminal_width", "echo", "finish")


def terminal_width(default: int) -> int:
    """``shutil.get_terminal_size``'s columns (``$COLUMNS`` first), without importing ``shutil``,
    which loads the bz2 and lzma modules: a few milliseconds of every answer's start-up."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns or default


def echo(text: str, nl: bool = True, err: bool = False) -> None:
    """``click.echo`` for a UTF-8 stream (:func:`console_main` checks): the text, a newline, a
    flush. ``click.echo`` itself re-wraps a stream of another encoding, and strips colours when
    the stream is no terminal (the view is coloured only on a terminal)."""
    stream = sys.stderr if err else sys.stdout
    stream.write(text + "\n" if nl else text)
    stream.flush()


def open_machine(dumps: tuple[str, ...], logs: tuple[str, ...], log_format: str | None,
                 vm: str | None, cache_dir: str | None, binary: str | None,
                 qemu_release: str | None = None, trace: str | None = None, *, echo=echo):
    """The one :class:`vdecode.api.Machine` of a command's inputs (``vdecode.open``), with progress
    bars while a compressed dump is unpacked or guest RAM is scanned, and the log readers'
    warnings on stderr (through ``echo``: ``click.echo`` under click)."""
    from vdecode.api import open as open_machine_of
    from vdecode.render.text import progress_bar

    machine = open_machine_of(*dumps, log=logs, log_format=log_format, vm=vm, cache_dir=cache_dir,
                              qemu=qemu_release, binary=binary, progress=progress_bar,
                              trace=trace)
    for w in machine.warnings:
        echo(f"vdecode: warning: {w}", err=True)
    return machine


def run_view(dumps: tuple[str, ...], logs: tuple[str, ...] = (), *, log_format: str | None = None,
             vm: str | None = None, device: str | None = None, queue: int | None = None,
             as_json: bool = False, show_all: bool = False, verbose: bool = False,
             qemu_release: str | None = None, binary: str | None = None,
             cache_dir: str | None = None, trace: str | None = None, echo=echo) -> None:
    """``vdecode DUMP``: the post-mortem view on stdout (``vdecode.cli``'s ``view`` runs this,
    with ``click.echo`` as ``echo``)."""
    with open_machine(dumps, logs, log_format, vm, cache_dir, binary, qemu_release, trace,
                      echo=echo) as machine:
        view = machine.view(device, queue, show_all=show_all)
    if as_json:
        text = view.to_json()
    else:
        from vdecode.render.text import render_view_text

        tty = sys.stdout.isatty()
        width = terminal_width(80) if tty else 80
        text = render_view_text(view, width=max(40, width), color=tty, compact=not verbose,
                                show_all=show_all)
    echo(text, nl=False)


def finish(status: int) -> None:
    """End the process with ``status`` once the command is done: flush, run the ``atexit``
    handlers, and exit without tearing down the interpreter.

    Why: tearing down the interpreter (freeing numpy's and our modules) took about a tenth of a
    one-queue answer's run time, after its output was complete. Everything a normal exit does
    that anybody can observe still happens: the streams are flushed, ``atexit`` handlers run
    (``weakref.finalize`` ones included); only the freeing is skipped. Used only where nothing
    else lives in the process and no other thread is running (triage's worker pool has been shut
    down by then; if not, the normal exit joins it)."""
    import atexit

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        pass                               # the reader went away: nothing left to tell it
    # a thread can only have been started through threading (the plain view imports it not)
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        sys.exit(status)
    atexit._run_exitfuncs()
    os._exit(status)
