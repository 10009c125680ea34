"""
Opening a dump: pick the reader from the content
------------------------------------------------
:func:`open_dump` sniffs the file (``vdecode.sources.sniff``), decompresses ``.zst``/``.gz``/``.xz``
once into a cache, and hands the mapped file to the reader of its format: kdump
(``vdecode.space.paged``), a QEMU process core (``vdecode.space.qemu_core``), a ``vdecode bundle``
file (``vdecode.space.bundle_space``) or an ELF guest dump (``vdecode.space.elf_space``).
"""

from __future__ import annotations

import os

from vdecode.errors import CorruptInput, UnsupportedInput
from vdecode.sources.compressed import ProgressFn, decompress_to_cache
from vdecode.sources.elf_dump import read_elf
from vdecode.sources.files import FileView
from vdecode.sources.sniff import classify_elf, sniff
from vdecode.space.dump import Dump
from vdecode.space.elf_space import open_elf_dump

__all__ = ("open_dump", "open_dumps")

MAX_DECOMPRESS_LAYERS = 2        # a .zst of a .gz is odd but fine; deeper is a bomb


def open_dumps(paths, *, cache_dir: str | os.PathLike | None = None,
               progress: ProgressFn | None = None, binary: str | os.PathLike | None = None) -> Dump:
    """Open one input, or a QEMU process core and a guest dump of the same instant (any order,
    each recognised by its content) as one :class:`Dump`: QEMU's state from the core, guest RAM
    from the dump (:func:`~vdecode.space.dump.combine` checks that they belong together).

    :param binary: the ``qemu-system-*`` executable for a core (``--binary``).
    :raises UnsupportedInput: more than two inputs, or two that are not a core and a guest dump.
    :raises InputError: the two do not belong together.
    """
    from vdecode.space.dump import combine

    paths = list(paths)
    if not paths:
        raise UnsupportedInput("(no input)", "give a dump")
    if len(paths) > 2:
        raise UnsupportedInput(str(paths[2]), "at most two inputs: a QEMU process core and a "
                                              "guest dump of the same instant")
    opened: list[Dump] = []
    try:
        for p in paths:
            opened.append(open_dump(p, cache_dir=cache_dir, progress=progress, binary=binary))
        if len(opened) == 1:
            return opened[0]
        cores = [d for d in opened if d.format == "qemu-core"]
        guests = [d for d in opened if d.qemu is None and d.space is not None]
        if len(cores) != 1 or len(guests) != 1:
            kinds = ", ".join(f"{d.path} ({d.format})" for d in opened)
            raise UnsupportedInput(opened[1].path, f"two inputs must be a QEMU process core and a "
                                                   f"guest dump (ELF or kdump): got {kinds}")
        return _said(combine(cores[0], guests[0]))
    except BaseException:
        for d in opened:
            d.close()
        raise


def open_dump(path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
              progress: ProgressFn | None = None, binary: str | os.PathLike | None = None) -> Dump:
    """Open any dump vdecode reads, from its content.

    :param path: the dump, possibly ``.zst``/``.gz``/``.xz``-compressed.
    :param cache_dir: where compressed dumps are decompressed (default
        :func:`~vdecode.sources.compressed.default_cache_dir`).
    :param progress: called as decompression goes on (the CLI draws a bar with it).
    :param binary: for a QEMU process core, the ``qemu-system-*`` executable to read what the
        core left out (default: the path its ``NT_FILE`` note names, if the build-id matches).
    :raises InputError: not a dump this tool reads (or unreadable).
    :raises CorruptInput: the file contradicts itself.
    :raises UnsupportedInput: a dump kind whose reader is not available.
    :return: the opened :class:`Dump`; close it (or use ``with``).
    """
    name = str(path)
    view = FileView(path)
    layers = 0
    try:
        kind = sniff(view)
        while kind in ("zstd", "gzip", "xz"):
            layers += 1
            if layers > MAX_DECOMPRESS_LAYERS:
                raise CorruptInput(name, f"more than {MAX_DECOMPRESS_LAYERS} layers of compression")
            plain = decompress_to_cache(view.path, kind, cache_dir=cache_dir, progress=progress)
            view.close()
            view = FileView(plain)
            view.name = name if layers == 1 else view.name
            kind = sniff(view)
        if kind in ("kdump", "kdump-flattened"):
            try:
                from vdecode.space.paged import open_kdump
            except ModuleNotFoundError as err:
                if err.name != "vdecode.space.paged":
                    raise
                raise UnsupportedInput(name, "kdump-compressed dumps are not readable yet "
                                             "(vdecode.space.paged is missing)") from err
            dump = open_kdump(view)
        else:
            elf = read_elf(view)
            fmt = classify_elf(elf)
            if fmt == "bundle":
                from vdecode.space.bundle_space import open_bundle
                dump = open_bundle(view, elf)
            elif fmt == "qemu-core":
                try:
                    from vdecode.space.qemu_core import open_qemu_core
                except ModuleNotFoundError as err:
                    if err.name != "vdecode.space.qemu_core":
                        raise
                    raise UnsupportedInput(name, "QEMU process cores are not readable yet "
                                                 "(vdecode.space.qemu_core is missing)") from err
                dump = open_qemu_core(view, elf, binary=binary)
            else:
                dump = open_elf_dump(view, elf, fmt)
    except BaseException:
        view.close()
        raise
    if layers:
        dump.info.setdefault("decompressed_to", str(view.path))
    return _said(dump)


def _said(dump: Dump) -> Dump:
    """``vdecode info`` says what the input lacks too (one line a part, as the view's)."""
    if dump.absent is not None:
        dump.info["absent"] = [p.headline() for p in dump.absent.parts]
    return dump
