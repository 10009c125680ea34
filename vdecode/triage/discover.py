"""Which files belong to which VM: the paths of ``vdecode triage`` grouped into jobs.

Folders are searched recursively, in sorted order. Each file is classified from its first bytes
(the magics of :data:`vdecode.sources.sniff.MAGICS`; the notes of an uncompressed ELF say whether
it is a bundle, a QEMU process core or a guest dump, :func:`~vdecode.sources.sniff.classify_elf`)
and, for text, from its first lines (:func:`vdecode.sources.qmp_log.sniff.sniff_format`). Names
only pair files, the way people name them:

* ``NAME.elf``, ``NAME.kdump``, ``NAME.core`` (compressed or not) and ``NAME.log``,
  ``NAME.qmp.jsonl`` anywhere under the paths, libvirt's ``/var/log/libvirt/qemu/NAME.log``
  included, are the VM ``NAME``;
* generic names (``dump.elf.zst``, ``qemu.core.zst``, ``early.jsonl``, ``instant.jsonl``: the
  capture layout, ``docs/new-captures.md``) are the VM of their folder;
* a bundle (``*.vdb``, or an ELF with a ``VDECODE`` note) is a VM alone: it carries its log.

Nothing here opens a dump for real: a job is only paths, so it can travel to a worker process or
a Dask worker.
"""

from __future__ import annotations

import os
from dataclasses import field, replace

from vdecode.errors import VdecodeError
from vdecode.frozen import record
from vdecode.sources.elf_dump import read_elf
from vdecode.sources.files import FileView
from vdecode.sources.qmp_log.lines import read_head
from vdecode.sources.qmp_log.sniff import sniff_format
from vdecode.sources.sniff import MAGICS, classify_elf

__all__ = ("VmJob", "discover", "classify_file", "vm_key")

COMPRESSED = (".zst", ".gz", ".xz")
DUMP_SUFFIXES = (".elf", ".core", ".kdump", ".vmcore", ".dump", ".vdb", ".img", ".mem")
LOG_SUFFIXES = (".log", ".jsonl", ".qmp", ".json")
TYPE_SUFFIXES = (*DUMP_SUFFIXES, ".log", ".jsonl", ".qmp", ".json", ".txt")
#: stems that name a kind of file, not a VM: such a file belongs to its folder's VM
GENERIC_STEMS = frozenset({"dump", "qemu", "core", "vmcore", "memory", "guest", "early", "instant",
                           "qmp", "monitor", "log", "transcript", "vm"})
#: files of the capture layout that are not inputs (manifest, truth, serial console, argv)
NOT_INPUTS = frozenset({"case.json", "truth.json", "qemu-argv.json"})


@record
class VmJob:
    """The inputs of one VM, as paths (what a worker needs to build its record).

    :param vm: the VM's name (a file stem, or the folder of a capture).
    :param dumps: ``(path, kind)`` in the order to try: QEMU cores first (they hold QEMU's own
        state), then guest dumps; ``kind`` is ``"qemu-core"``, ``"bundle"``, ``"dump"``.
    :param logs: QMP logs, by path.
    :param skipped: ``(path, reason)`` of files looked at and left out (a ``.log`` with no QMP).
    :param bad: ``(path, reason)`` of files that look like inputs and are none.
    """

    vm: str
    dumps: tuple[tuple[str, str], ...] = ()
    logs: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    bad: tuple[tuple[str, str], ...] = ()
    cache_dir: str | None = field(default=None, compare=False)


def _strip(name: str, suffixes: tuple[str, ...]) -> str:
    low = name.lower()
    for s in suffixes:
        if low.endswith(s) and len(name) > len(s):
            return name[:-len(s)]
    return name


def stem_of(name: str) -> str:
    """The VM part of a file name: compression and type suffixes stripped.

    >>> stem_of("web-01.example.com.qmp.jsonl"), stem_of("dump.kdump-zlib.zst"), stem_of("elf+early.vdb.zst")
    ('web-01.example.com', 'dump', 'elf+early')
    """
    name = _strip(name, COMPRESSED)
    while True:
        low = name.lower()
        cut = next((s for s in TYPE_SUFFIXES if low.endswith(s) and len(name) > len(s)), None)
        if cut is None:
            base, dot, ext = name.rpartition(".")     # dump.kdump-zlib: a kind with a variant
            if dot and base and ext.split("-")[0] in ("kdump", "elf", "core", "vmcore"):
                name = base
                continue
            return name
        name = name[:-len(cut)]


def vm_key(path: str) -> tuple[str, str]:
    """``(key, vm name)``: a named file pairs by name anywhere, a generic one within its folder."""
    folder, name = os.path.split(path)
    stem = stem_of(name)
    if stem.lower() in GENERIC_STEMS:
        parent = os.path.basename(os.path.normpath(folder)) if folder else "."
        return f"dir:{os.path.normpath(folder or '.')}", parent
    return f"name:{stem}", stem


def _magic(path: str) -> str | None:
    with open(path, "rb") as f:
        head = f.read(16)
    return next((kind for magic, kind in MAGICS if head.startswith(magic)), None)


def classify_file(path: str) -> tuple[str, str]:
    """``(kind, reason)``: kind is ``"bundle"``, ``"qemu-core"``, ``"dump"``, ``"log"``,
    ``"skipped"``, ``"bad"`` or ``"ignored"`` (not an input, not mentioned)."""
    name = os.path.basename(path)
    low = name.lower()
    inner = _strip(low, COMPRESSED)
    try:
        magic = _magic(path)
    except OSError as err:
        return "bad", f"cannot read: {err.strerror or err}"
    if magic in ("zstd", "gzip", "xz"):
        if inner.endswith(LOG_SUFFIXES):
            if magic == "xz":
                return "bad", "an xz-compressed log: decompress it first (logs are read as " \
                              "text, or gzip/zstd)"
            return _log_kind(path, low)      # the log reader decompresses gzip and zstd itself
        if inner.endswith(".vdb"):
            return "bundle", ""
        return ("qemu-core" if _names_core(inner) else "dump"), ""
    if magic == "elf":
        try:
            view = FileView(path)
            try:
                fmt = classify_elf(read_elf(view))
            finally:
                view.close()
        except VdecodeError:
            return "dump", ""                 # the worker opens it and says what is wrong
        return (fmt if fmt in ("bundle", "qemu-core") else "dump"), ""
    if magic is not None:
        return "dump", ""
    if name in NOT_INPUTS:
        return "ignored", ""
    if inner.endswith(LOG_SUFFIXES):
        return _log_kind(path, low)
    if inner.endswith(DUMP_SUFFIXES):
        with open(path, "rb") as f:
            head = f.read(16)
        return "bad", ("empty file" if not head else
                       f"not a dump this tool reads (starts with {head!r})")
    return "ignored", ""


def _log_kind(path: str, low: str) -> tuple[str, str]:
    """A file named like a log: a log when its first lines are QMP traffic in a known format."""
    try:
        sniff_format(read_head(path), path)
    except VdecodeError as err:
        if low.endswith(".json"):
            return "ignored", ""
        return "skipped", f"not a QMP log: {err.reason}"
    except (OSError, UnicodeError) as err:
        return "bad", f"cannot read: {err}"
    return "log", ""


def _names_core(name: str) -> bool:
    return "core" in name.replace("-", ".").replace("_", ".").split(".")


def _walk(paths: list[str]) -> list[str]:
    files: set[str] = set()
    for p in paths:
        if os.path.isdir(p):
            for root, dirs, names in os.walk(p):
                dirs.sort()
                files.update(os.path.join(root, n) for n in names)
        else:
            files.add(p)
    return sorted(files)


def discover(paths: list[str], cache_dir: str | None = None) -> list[VmJob]:
    """The jobs for ``paths`` (files or folders), sorted by VM name then inputs.

    A path that does not exist is a job with an error, like any unreadable file.
    """
    groups: dict[str, dict] = {}
    alone: list[VmJob] = []
    for path in _walk(paths):
        if not os.path.exists(path):
            kind, reason = "bad", "no such file or directory"
        else:
            kind, reason = classify_file(path)
        if kind == "ignored":
            continue
        key, vm = vm_key(path)
        if kind == "bundle":
            alone.append(VmJob(vm=stem_of(os.path.basename(path)), dumps=((path, "bundle"),),
                               cache_dir=cache_dir))
            continue
        g = groups.setdefault(key, {"vm": vm, "dumps": [], "logs": [], "skipped": [], "bad": []})
        if kind in ("qemu-core", "dump"):
            g["dumps"].append((path, kind))
        elif kind == "log":
            g["logs"].append(path)
        else:
            g[kind].append((path, reason))
    jobs = [VmJob(vm=g["vm"], dumps=tuple(sorted(g["dumps"], key=_preference)),
                  logs=tuple(g["logs"]), skipped=tuple(g["skipped"]), bad=tuple(g["bad"]),
                  cache_dir=cache_dir)
            for g in groups.values() if g["dumps"] or g["logs"] or g["bad"]]
    names = [j.vm for j in jobs] + [j.vm for j in alone]
    alone = [j if names.count(j.vm) == 1 else replace(j, vm=_bundle_name(j.dumps[0][0]))
             for j in alone]
    return sorted(jobs + alone, key=lambda j: (j.vm, [d for d, _ in j.dumps], j.logs,
                                               [b for b, _ in j.bad]))


def _preference(d: tuple[str, str]) -> tuple[int, str]:
    """QEMU cores first (exact QEMU state), then ELF dumps (no page decompression), then the rest."""
    path, kind = d
    low = _strip(os.path.basename(path).lower(), COMPRESSED)
    rank = 0 if kind == "qemu-core" else 1 if low.endswith(".elf") else 2
    return rank, path


def _bundle_name(path: str) -> str:
    """A bundle whose stem another VM has too: folder and stem (``big/elf+early``; capture
    folders hold bundles of the same names)."""
    folder, name = os.path.split(path)
    parent = os.path.basename(os.path.normpath(folder)) if folder else ""
    return f"{parent}/{stem_of(name)}" if parent else stem_of(name)
